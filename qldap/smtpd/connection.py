"""One client connection of the daemon: socket bytes glued to the sans-I/O Session.

:class:`Connection` moves bytes and answers the session's requests with the parts the
:class:`~qldap.smtpd.server.SmtpServer` shares (controls, rules, directory, resolver, queue, TLS).
Per connection, as tcpserver + qmail-smtpd did per process (qmail-smtpd(8), CLIENT RULES): the
limits are asked first, then PTR, rules, pbs and the controls make the session's frozen SmtpdConfig.

Why an :class:`asyncio.Protocol` and not streams: the client's bytes go straight into the SmtpReader
(no second buffer), which makes STARTTLS's "discard what was pipelined behind it" exact, and keeps
the per-command cost to one callback.  Input is paused past :data:`MAX_BUFFER` unprocessed bytes.
PIPELINING: replies the session marks as bufferable wait in a list and go out in one ``write`` before
the server waits for input; all others are written at once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from qldap.control.domains import Locals, RcptHosts
from qldap.control.files import ControlDir
from qldap.control.limits import Refusal
from qldap.control.rules import RulesError
from qldap.errors import ConfigError
from qldap.logs import printable
from qldap.metrics import recorder
from qldap.pbs.client import pbs_check
from qldap.queue.received import tls_protocol
from qldap.smtpd import replies
from qldap.smtpd.config import SmtpdConfig, per_session
from qldap.smtpd.policy import NO_FACTS, MxQuery, RblQuery, SpfQuery, VerifyQuery
from qldap.smtpd.queueing import MessageSpool, program_environment
from qldap.smtpd.reader import BareLF, Command, DataChunk, DataEnd, HeaderTooLong, SmtpReader, TooLong
from qldap.smtpd.session import Action, CheckLogin, CommitQueue, OpenQueue, Phase, PrepareTls, Send, Session
from qldap.smtpd.signatures import SignatureScanner

if TYPE_CHECKING:
    from qldap.smtpd.server import SmtpServer

MAX_BUFFER = 1 << 20


def client_ip(ip: str) -> str:
    """The peer address as TCPREMOTEIP shows it (IPv4-mapped IPv6 addresses as dotted quads)."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class Connection(asyncio.Protocol):
    """One client connection: its bytes into a SmtpReader, the Session's actions carried out."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.reader = SmtpReader()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.id = 0
        self.ip = ""
        self._admitted = False
        self.level = server.level
        self._loop = server.loop or asyncio.get_running_loop()  # the latter: a getpid() per call
        self._waiter: asyncio.Future[bool] | None = None
        self._out: list[bytes] = []
        self._eof = self._lost = self._closing = self._stopping = False
        self._read_paused = self._write_paused = self._tls = False
        self._env: dict[str, str] = {}
        self._relay: str | None = None
        self._spool: MessageSpool | None = None
        self._scanner: SignatureScanner | None = None
        self._metrics = recorder()  # a no-op unless $QLDAP_METRICS started an endpoint

    # -- asyncio.Protocol callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        self.ip = client_ip(str(peer[0])) if peer else "unknown"
        refusal = server.clients.admit(self.ip)
        if refusal is not None:
            busy = replies.SERVICE_UNAVAILABLE if refusal is Refusal.TOTAL else replies.TOO_MANY_FROM_IP
            transport.write(busy.to_bytes())
            transport.close()
            server.log(f"{refusal.value}, refused a connection from {self.ip}", 1)
            return
        self._admitted = True
        server.connections.add(self)
        self._metrics.session_opened()
        self.id = next(server.ids)
        self.task = self._loop.create_task(self._run())
        self.task.add_done_callback(self._finished)

    def data_received(self, data: bytes) -> None:
        self.reader.receive_data(data)
        if not self._read_paused and self.reader.buffered > MAX_BUFFER and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self.reader.receive_data(b"")
        self._wake()
        return not self._tls  # keep a plain transport open: replies to pipelined commands may follow

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- helpers --------------------------------------------------------------------------------
    def _wake(self, value: bool = True) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def request_stop(self) -> None:
        """SIGTERM: finish a message in progress, then say 421 instead of waiting for more."""
        self._stopping = True
        self._wake()

    async def _wait(self, timeout: float) -> bool:
        """Wait for input (or a write-buffer drain, EOF, loss, stop); False when *timeout* passed."""
        if self._read_paused and self.transport is not None:
            self.transport.resume_reading()
            self._read_paused = False
        waiter = self._loop.create_future()
        self._waiter = waiter
        handle = self._loop.call_later(timeout, self._wake, False)
        try:
            woken: bool = await waiter
            return woken
        finally:
            handle.cancel()
            self._waiter = None

    def _flush(self) -> None:
        if self._out and self.transport is not None and not self._lost:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self.transport.write(data)
        self._out.clear()

    def _log(self, text: str, level: int) -> None:
        if level <= self.level:
            self.server.write_log(f"{self.server.name} {self.id}: {text}")

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.server.connections.discard(self)
        if self._admitted:
            self._admitted = False
            self.server.clients.release(self.ip)
        self._metrics.session_closed()
        if self._spool is not None:
            self._spool.close()
        if self.transport is not None:
            self.transport.close()
        if not task.cancelled() and task.exception() is not None:
            self.server.log(f"session {self.id} failed: {task.exception()!r}", 1)

    # -- session setup --------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self.transport is not None
        server, parts = self.server, self.server.parts
        peer = self.transport.get_extra_info("peername")
        local = self.transport.get_extra_info("sockname")
        ip, local_ip = client_ip(str(peer[0])), client_ip(str(local[0]))
        host = await server.resolver.ptr(ip)
        try:
            rule = parts.rules.match(ip, host)
        except RulesError as exc:
            server.log(f"refused {ip}: {exc}", 1)
            return
        if rule is not None and not rule.allow:
            server.log(f"denied {ip} by rule {rule.address!r}", 3)
            return
        env = dict(server.options.environ)
        for name in ("TCPREMOTEHOST", "TCPREMOTEINFO"):
            env.pop(name, None)
        env.update(PROTO="TCP", TCPLOCALIP=local_ip, TCPLOCALPORT=str(local[1]), TCPREMOTEIP=ip,
                   TCPREMOTEPORT=str(peer[1]))  # fmt: skip
        if host:
            env["TCPREMOTEHOST"] = host
        ctl = parts.ctl.checked()  # this connection's look at the controls (qmail-smtpd(8))
        try:
            env["TCPLOCALHOST"] = ctl.me()
            if rule is not None:
                env = rule.environment(env)
            if parts.pbs is not None and "NOPBS" not in env:
                if isinstance(parts.pbs, ConfigError):
                    raise parts.pbs
                env.update(await pbs_check(parts.pbs, ip, log=lambda text: server.log(text, 3)))
        except ConfigError as exc:
            self._controls_unreadable(exc)
            return
        greeting_log = f"connection from {ip} ({printable(host or 'unknown')}) to {local_ip}"
        await self._begin(env, server.own_ips | {local_ip}, greeting_log, ctl)

    async def _begin(self, env: dict[str, str], own_ips: AbstractSet[str], greeting_log: str,
                     ctl: ControlDir | None = None) -> None:
        """The session's frozen configuration from *env* and the controls, then the dialogue.

        Shared by the daemon (which passes its :meth:`ControlDir.checked` view as *ctl*) and the
        stdin/stdout mode (one session per process: nothing to remember); locals and rcpthosts
        answers are kept for the session (:func:`per_session`), as qmail-smtpd(8) reads its controls
        once per connection.
        """
        parts = self.server.parts
        locals_, rcpthosts = (parts.locals, parts.rcpthosts) if ctl is None else (Locals(ctl), RcptHosts(ctl))
        try:
            cfg = SmtpdConfig.load(
                ctl or parts.ctl, env, own_ips=own_ips, dash_ext=parts.dash_ext,
                is_local=per_session(locals_.contains), rcpthosts_accepts=per_session(rcpthosts.accepts),
            )  # fmt: skip
        except ConfigError as exc:
            self._controls_unreadable(exc)
            return
        self._env, self.level = env, cfg.env.loglevel
        self._log(greeting_log, 2)
        await self._dialogue(Session(cfg))

    def _controls_unreadable(self, exc: ConfigError) -> None:
        assert self.transport is not None
        self.server.log(f"unable to read controls: {exc}", 1)
        self.transport.write(replies.UNABLE_TO_READ_CONTROLS.to_bytes())

    async def _dialogue(self, session: Session) -> None:
        await self._send(session, session.start())
        reader = self.reader
        limit = self.server.options.session_deadline
        deadline = self._loop.time() + limit if limit > 0 else None
        while not self._closing:
            event = reader.next_event()
            if event is None:
                if self._lost:
                    return
                self._flush()
                if self._write_paused and not await self._drained(session.read_timeout):
                    return
                if self._stopping and not reader.in_data:
                    await self._send(session, Send(replies.SERVICE_UNAVAILABLE, close=True))
                    return
                wait: float = session.read_timeout
                if deadline is not None:  # slowloris: a trickle of bytes must not last for ever
                    wait = min(wait, deadline - self._loop.time())
                    if wait <= 0:
                        self._log(f"session deadline of {limit:g} s reached, closing", 1)
                        self._drop_message()
                        await self._send(session, session.timeout())
                        return
                if not await self._wait(wait) and not self._lost:
                    if deadline is not None and self._loop.time() >= deadline:
                        continue  # the deadline, not the client's silence: logged above
                    await self._send(session, session.timeout())
                continue
            match event:
                case Command():
                    await self._command(session, event)
                case DataChunk(data=data):
                    if self._spool is not None:
                        self._spool.write(data)
                    if self._scanner is not None:
                        self._scanner.feed(data)
                case DataEnd():
                    await self._data_end(session, event)
                case BareLF():
                    self._drop_message()
                    await self._send(session, session.bare_lf())
                case TooLong() | HeaderTooLong():
                    self._drop_message()
                    await self._send(session, session.too_long())
                case _:  # Eof
                    return

    async def _drained(self, timeout: float) -> bool:
        """Wait until the client read our replies; False (close silently) after *timeout*."""
        deadline = self._loop.time() + timeout
        while self._write_paused and not self._lost:
            left = deadline - self._loop.time()
            if left <= 0 or not await self._wait(left):
                return False
        return not self._lost

    # -- commands -------------------------------------------------------------------------------
    async def _command(self, session: Session, cmd: Command) -> None:
        auth_phase = session.phase is Phase.AUTH
        if self.level >= 4 and not auth_phase:
            shown = cmd.line if cmd.verb != "AUTH" else f"AUTH {cmd.arg.split(' ', 1)[0]}"
            self._log(f"command: {printable(shown)}", 4)
        relay = session.relayclient  # the transaction's; DATA moves it out of the session
        try:
            action = await self._answer(session, cmd, relay)
        except ConfigError as exc:  # a control file broke mid-session (locals.cdb, rcpthosts.cdb …)
            self.server.log(f"unable to read controls: {exc}", 1)
            action = Send(replies.UNABLE_TO_READ_CONTROLS, close=True)
        await self._send(session, action)
        if self._metrics.enabled:
            self._metrics.smtp_reply(cmd.verb, action.reply.code, action.reply.text)
        if action.reply.code == 250 and not auth_phase:
            if cmd.verb == "MAIL":
                self._log(f"mail from: <{printable(session.transaction.sender or '')}>", 2)
            elif cmd.verb == "RCPT" and session.recipients:
                self._log(f"rcpt to: <{printable(session.recipients[-1])}>", 2)

    async def _answer(self, session: Session, cmd: Command, relay: str | None) -> Send:
        """Run *cmd* through the session, answering its lookup and setup requests until it replies."""
        facts = NO_FACTS
        action: Action = session.command(cmd, facts)
        while not isinstance(action, Send):
            if isinstance(action, VerifyQuery):
                facts = facts.add(await self.server.parts.verifier.verify(action.address))
            elif isinstance(action, RblQuery):
                facts = facts.add(await self.server.resolver.rbl(action.name))
            elif isinstance(action, MxQuery):
                facts = facts.add(await self.server.resolver.mx(action.domain))
            elif isinstance(action, SpfQuery):
                facts = facts.add(await self.server.checks.spf(session, action.sender))
            elif isinstance(action, OpenQueue):
                action = session.queue_opened(self._open_queue(session, relay))
                continue
            elif isinstance(action, CheckLogin):
                login = action.attempt.login
                action = session.auth_result(await self.server.parts.auth.authenticate(action.attempt))
                self._log(f"auth {'ok' if session.auth_user else 'failed'} for {printable(login)}", 3)
                continue
            elif isinstance(action, PrepareTls):
                action = session.tls_ready(self.server.tls(session.cfg) is not None)
                continue
            else:
                raise AssertionError(f"unexpected action {action!r}")  # CommitQueue comes at data end
            action = session.command(cmd, facts)
        return action

    def _open_queue(self, session: Session, relay: str | None) -> bool:
        head = session.trace_headers(datetime.now(UTC)).encode("utf-8", "surrogateescape")
        self._spool = self.server.handoff.new_spool(head)
        cfg = session.cfg
        self._scanner = SignatureScanner(cfg.signatures) if cfg.env.rejectexec and cfg.signatures else None
        self._relay = relay
        return True

    def _drop_message(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self._spool = self._scanner = None

    async def _data_end(self, session: Session, end: DataEnd) -> None:
        exec_hit = self._scanner.finish() if self._scanner is not None else False
        action = session.data_end(end, exec_hit)
        spool, self._spool, self._scanner = self._spool, None, None
        if isinstance(action, CommitQueue) and spool is not None:  # SPF/DKIM/DMARC (MAILAUTH)
            action = await self.server.checks.data_end(session.cfg, action, spool, lambda t: self._log(t, 2))
        if not isinstance(action, CommitQueue) or spool is None:
            if spool is not None:
                spool.close()
            assert isinstance(action, Send)
            await self._send(session, action)
            if self._metrics.enabled:
                self._metrics.smtp_reply("message", action.reply.code, action.reply.text)
            return
        program = session.cfg.env.qmailqueue or None
        environ = program_environment(self._env, self._relay, session.auth_user) if program else {}
        outcome = await self.server.signing.sign(session, spool, action.envelope, self._log) or (
            await self.server.handoff.commit(spool, action.envelope, program=program, environ=environ))
        now = int(time.time())
        if outcome.queued:
            self._log(f"message queued: {now} qp {outcome.qp} size {end.size} bytes", 2)
        done = session.queue_done(outcome.text, unix_time=now, qp=outcome.qp)
        await self._send(session, done)
        if self._metrics.enabled:
            self._metrics.smtp_reply("message", done.reply.code, done.reply.text)

    # -- replies --------------------------------------------------------------------------------
    async def _send(self, session: Session, send: Send) -> None:
        reply = send.reply
        if send.delay:
            self._flush()
            await asyncio.sleep(send.delay)
        if send.stutter:
            if not await self._stutter(session, send):
                return
        else:
            self._out.append(reply.to_bytes())
        if reply.code >= 400:
            self._log(f"reply: {reply.code} {reply.text}", 3)
        if send.begin_data is not None:
            self.reader.begin_data(send.begin_data)
        if send.flush or send.close or send.pause_after or send.start_tls:
            self._flush()
        if send.pause_after:
            await asyncio.sleep(send.pause_after)
        if send.close:
            self._closing = True
        elif send.start_tls:
            await self._start_tls(session)

    async def _stutter(self, session: Session, send: Send) -> bool:
        """GREETDELAY: the greeting prefix one character per second; DROPRUSHGREET polls meanwhile."""
        data = send.reply.to_bytes()
        count = min(send.stutter, len(replies.greeting_prefix(session.cfg.me)))
        assert self.transport is not None
        for i in range(count):
            if send.drop_rush:
                deadline = self._loop.time() + 1.0
                while not (self._eof or self._lost or self.reader.buffered):
                    left = deadline - self._loop.time()
                    if left <= 0 or not await self._wait(left):
                        break
                if self._eof or self._lost:
                    self._closing = True
                    return False
                if self.reader.buffered:
                    self._out.append(replies.PROTOCOL_VIOLATION.to_bytes())
                    self._flush()
                    self._closing = True
                    return False
            else:
                await asyncio.sleep(1.0)
            self.transport.write(data[i : i + 1])
        self._out.append(data[count:])
        return True

    async def _start_tls(self, session: Session) -> None:
        ctx = self.server.tls(session.cfg)
        transport = self.transport
        assert ctx is not None and transport is not None
        self.reader.discard_buffered()
        if self._read_paused:
            transport.resume_reading()
            self._read_paused = False
        try:
            new = await self._loop.start_tls(
                transport, self, ctx, server_side=True, ssl_handshake_timeout=session.read_timeout
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self._log(f"TLS handshake failed: {exc}", 3)
            self._closing = True
            return
        if new is None:
            self._closing = True
            return
        self.transport, self._tls = new, True
        # no second discard here: what arrived meanwhile came through TLS (a command sent right behind
        # the client's last handshake record); plaintext sent behind STARTTLS was dropped above
        sslobj = new.get_extra_info("ssl_object")
        cipher = sslobj.cipher() if sslobj is not None else None
        version = sslobj.version() if sslobj is not None else None
        session.tls_started(tls_protocol(version or "TLS", cipher[0] if cipher else "unknown", None))
        self._log(f"TLS started: {version} {cipher[0] if cipher else ''}", 3)

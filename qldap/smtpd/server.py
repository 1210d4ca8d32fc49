"""The asyncio SMTP daemon: listeners, one task per connection, socket bytes glued to the sans-I/O Session.

Everything SMTP decides lives in the sans-I/O core (:mod:`reader`, :mod:`session`, :mod:`policy`);
this module only moves bytes and answers the session's requests: DNS (:mod:`dns`), the verifier
(:mod:`verify`), the credential check (:mod:`auth`), the queue (:mod:`queueing`) and TLS.

Per connection, as tcpserver + qmail-smtpd did per process (qmail-smtpd(8), CLIENT RULES): past
``max_sessions`` the client gets ``421`` at once; a PTR lookup with a short timeout gives TCPREMOTEHOST; the
client rules pick allow/deny (deny, or an unparsable rules file, closes without a byte) and their variables;
the session environment is service defaults < TCP facts < rule variables; controls are re-read (stat-checked)
into a frozen SmtpdConfig.  A broken control file answers ``421 unable to read controls (#4.3.0)``.

Why an :class:`asyncio.Protocol` and not streams: the client's bytes go straight into the SmtpReader
(no second buffer), which makes STARTTLS's "discard what was pipelined behind it" exact, and keeps
the per-command cost to one callback.  Input is paused past :data:`MAX_BUFFER` unprocessed bytes.
PIPELINING: replies the session marks as bufferable wait in a list and go out in one ``write`` before
the server waits for input; all others are written at once.

Signals (wired by the CLI): :meth:`SmtpServer.reload` (SIGHUP) re-opens controls, rules and the
directory for new sessions; :meth:`SmtpServer.stop` (SIGTERM) stops accepting, answers idle
sessions ``421``, lets sessions in DATA finish within ``stop_grace`` seconds, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qldap.address import canonical_ipv4
from qldap.control.domains import Locals, RcptHosts
from qldap.control.files import ControlDir, path_signature
from qldap.control.limits import DEFAULT_DEADLINE, ClientCounter, Refusal, SessionLimits
from qldap.control.rules import RulesError, RulesFile
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.logs import printable
from qldap.mailauth.resolve import Dns
from qldap.metrics import recorder
from qldap.pbs.client import pbs_check
from qldap.pbs.config import PbsConfig, PbsRole, load_config
from qldap.queue.received import tls_protocol
from qldap.smtpd import replies
from qldap.smtpd.auth import Authenticator
from qldap.smtpd.config import SmtpdConfig, SmtpdEnv, per_session
from qldap.smtpd.dns import DnsResolver, Resolver
from qldap.smtpd.mailcheck import InboundChecks
from qldap.smtpd.policy import NO_FACTS, MxQuery, RblQuery, SpfQuery, VerifyQuery
from qldap.smtpd.queueing import MessageSpool, QueueHandoff, program_environment
from qldap.smtpd.reader import BareLF, Command, DataChunk, DataEnd, HeaderTooLong, SmtpReader, TooLong
from qldap.smtpd.session import Action, CheckLogin, CommitQueue, OpenQueue, Phase, PrepareTls, Send, Session
from qldap.smtpd.signatures import SignatureScanner
from qldap.smtpd.signing import SubmissionSigner
from qldap.smtpd.verify import Verifier

MAX_BUFFER = 1 << 20
DEFAULT_MAX_SESSIONS = 50
DEFAULT_LOOKUP_WORKERS = 4
DEFAULT_QUEUE_WORKERS = 8
RULES_FILE = "qmail-smtpd.rules"
_CIPHERS = {
    "secure": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM",
    "default": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM",
    "legacy": "DEFAULT:@SECLEVEL=1",
    "insecure": "ALL:@SECLEVEL=0",
    "all": "ALL:@SECLEVEL=0",
}  # "compat" keeps the ssl module's defaults; anything else is an OpenSSL cipher string

LogWriter = Callable[[str], None]


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How one ``qldap smtpd`` runs; ``environ`` holds the service-wide session variables."""

    root: Path
    listen: tuple[tuple[str, int], ...]
    rules: Path | None = None  # None: ROOT/control/qmail-smtpd.rules
    environ: Mapping[str, str] = field(default_factory=dict)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_per_ip: int = 0  # sessions from one client address; 0 = no limit (qldap-services(5) limits:)
    session_deadline: float = DEFAULT_DEADLINE  # seconds a whole session may last; 0 = none
    lookup_workers: int = DEFAULT_LOOKUP_WORKERS
    queue_workers: int = DEFAULT_QUEUE_WORKERS
    stop_grace: float = 30.0


def tls_context(cert: Path, ciphers: str) -> ssl.SSLContext:
    """A server context from a PEM file holding the chain and the key (qmail-smtpd(8), COMMANDS).

    Raises:
        OSError, ssl.SSLError: the file is unreadable or not a usable certificate and key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    chosen = _CIPHERS.get(ciphers.lower(), ciphers)
    if ciphers.lower() != "compat":
        ctx.set_ciphers(chosen)
    return ctx


class _Parts:
    """What a reload replaces: the controls, the rules, the directory and the checks built on it."""

    def __init__(
        self, options: ServerOptions, pool: ThreadPoolExecutor, log: Callable[[str], None] | None = None
    ) -> None:
        self.ctl = ControlDir(options.root)
        self.locals = Locals(self.ctl)
        self.rcpthosts = RcptHosts(self.ctl)
        self.rules = RulesFile(options.rules or self.ctl.path(RULES_FILE))
        directory: Directory | ConfigError
        try:
            directory = open_directory(self.ctl, log=log)
        except ConfigError as exc:
            directory = exc
        self.directory = directory
        self.dash_ext = directory.config.dash_ext if isinstance(directory, Directory) else False
        self.verifier = Verifier(directory, options.root, pool)
        self.auth = Authenticator(directory, pool, cleartext=self.ctl.boolean("cleartextpasswd", False))
        # POP-before-SMTP (pbscheck in-process): only when control/pbsservers exists
        self.pbs: PbsConfig | ConfigError | None = None
        if self.ctl.exists("pbsservers"):
            try:
                self.pbs = load_config(self.ctl, PbsRole.CLIENT)
            except ConfigError as exc:
                self.pbs = exc

    def close(self) -> None:
        self.verifier.close()
        if isinstance(self.directory, Directory):
            self.directory.close()


class SmtpServer:
    """The daemon: :meth:`start` the listeners, :meth:`reload` on SIGHUP, :meth:`stop` on SIGTERM."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        resolver: Resolver | None = None,
        log: LogWriter | None = None,
        handoff: QueueHandoff | None = None,
        authdns: Dns | None = None,
    ) -> None:
        self.options = options
        self.resolver: Resolver = resolver or DnsResolver()
        self.write_log = log or _stderr
        self.level = SmtpdEnv.from_environ(options.environ).loglevel
        self.lookup_pool = ThreadPoolExecutor(options.lookup_workers, thread_name_prefix="qldap-lookup")
        self.handoff = handoff or QueueHandoff(options.root, workers=options.queue_workers)
        self.parts = _Parts(options, self.lookup_pool, self.log)
        self.signing = SubmissionSigner(self.parts.ctl)  # DKIM for relayed mail (qldap-dkim(8))
        self.checks = InboundChecks.sharing(self.resolver, authdns)
        self.connections: set[_Connection] = set()
        self.clients = ClientCounter(SessionLimits(options.max_sessions, options.max_per_ip,
                                                   options.session_deadline))
        self.own_ips: frozenset[str] = frozenset({"127.0.0.1"})
        self.ids = itertools.count(1)
        self._servers: list[asyncio.Server] = []
        self._tls: dict[tuple[str, tuple[int, int, int], str], ssl.SSLContext] = {}

    def log(self, text: str, level: int = 1) -> None:
        """Write a daemon-wide ``qmail-smtpd: text`` line when *level* ≤ the service LOGLEVEL."""
        if level <= self.level:
            self.write_log(f"qmail-smtpd: {text}")

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listener; return the bound ``(host, port)`` pairs (port 0 → the chosen port).

        Raises:
            OSError: a listener cannot be bound.
        """
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        for host, port in self.options.listen:
            srv = await loop.create_server(
                lambda: _Connection(self), host, port, reuse_address=True, backlog=512
            )
            self._servers.append(srv)
            for sock in srv.sockets:
                name = sock.getsockname()
                bound.append((str(name[0]), int(name[1])))
        self.own_ips = self.own_ips | {h for h, _ in bound if canonical_ipv4(h) and h != "0.0.0.0"}
        return bound

    def reload(self) -> None:
        """SIGHUP: new sessions use freshly read controls, rules and directory settings."""
        old, self.parts = self.parts, _Parts(self.options, self.lookup_pool, self.log)
        self._tls.clear()
        old.close()  # its searcher reconnects if a running session still asks it
        self.log("reloaded controls, rules and directory settings", 2)

    def tls(self, cfg: SmtpdConfig) -> ssl.SSLContext | None:
        """The TLS context for *cfg*'s certificate (cached until the file changes); None on failure."""
        cert = cfg.cert_path
        if cert is None:
            return None
        key = (str(cert), path_signature(cert), cfg.tlsciphers)
        ctx = self._tls.get(key)
        if ctx is None:
            try:
                ctx = tls_context(cert, cfg.tlsciphers)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.log(f"unable to initialize TLS from {cert}: {exc}", 1)
                return None
            self._tls[key] = ctx
        return ctx

    async def stop(self) -> None:
        """Stop accepting; idle sessions get 421, sessions in DATA may finish within ``stop_grace``."""
        for srv in self._servers:
            srv.close()
        conns = list(self.connections)
        for conn in conns:
            conn.request_stop()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.options.stop_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for srv in self._servers:
            await srv.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Release thread pools and directory connections (blocking: waits for running hand-offs)."""
        self.handoff.close()
        self.checks.close()
        self.signing.close()
        self.lookup_pool.shutdown(wait=True)
        self.parts.close()


def _client_ip(ip: str) -> str:
    """The peer address as TCPREMOTEIP shows it (IPv4-mapped IPv6 addresses as dotted quads)."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class _Connection(asyncio.Protocol):
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
        self._loop = asyncio.get_running_loop()
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
        self.ip = _client_ip(str(peer[0])) if peer else "unknown"
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
            self.server.write_log(f"qmail-smtpd {self.id}: {text}")

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
        ip, local_ip = _client_ip(str(peer[0])), _client_ip(str(local[0]))
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
        try:
            env["TCPLOCALHOST"] = parts.ctl.me()
            if rule is not None:
                env = rule.environment(env)
            if parts.pbs is not None and "NOPBS" not in env:
                if isinstance(parts.pbs, ConfigError):
                    raise parts.pbs
                env.update(await pbs_check(parts.pbs, ip, log=lambda text: server.log(text, 3)))
            cfg = SmtpdConfig.load(
                parts.ctl, env, own_ips=server.own_ips | {local_ip}, dash_ext=parts.dash_ext,
                is_local=per_session(parts.locals.contains),
                rcpthosts_accepts=per_session(parts.rcpthosts.accepts),
            )  # fmt: skip
        except ConfigError as exc:
            server.log(f"unable to read controls: {exc}", 1)
            self.transport.write(replies.UNABLE_TO_READ_CONTROLS.to_bytes())
            return
        self._env, self.level = env, cfg.env.loglevel
        self._log(f"connection from {ip} ({printable(host or 'unknown')}) to {local_ip}", 2)
        await self._dialogue(Session(cfg))

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

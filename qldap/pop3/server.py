"""The POP3 daemon's asyncio glue: popup dialogue, login check in a thread, session as the mailbox owner.

One connection: :class:`~qldap.pop3.popup.Popup` answers the authorization state (STLS with the
stdlib ``ssl`` module when a certificate is configured); the credentials go to
:func:`qldap.auth.check.check_login` in the thread pool; after a success the POP-before-SMTP grant
is sent in-process (:func:`qldap.pbs.client.pbs_add`) and the transaction state starts.

Why the session runs in a child process when the daemon is root: every file access of a mailbox
must happen with its owner's credentials (ownership of renamed files, quota files, no symlink games
with root's rights), and credentials are per process.  The child (``python -m qldap.pop3.server``)
receives a pickled :class:`SessionJob` on stdin and the connection as an inherited descriptor — the
accepted socket itself, or for a TLS connection one end of a socketpair the daemon relays through
its TLS stream — drops to uid:gid, enters HOME exactly as the login modules do and serves the
session blocking.  A daemon already running as the owner's uid keeps the session in-process.

Bytes a client pipelined after PASS are handed on: reading is paused the moment the popup asks
for authentication, and whatever was received goes to the session as its first input.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from qldap.auth.check import Credentials, Forward, Refused, check_login
from qldap.auth.fd3 import AuthExit, Fd3Rejected, parse_pop
from qldap.auth.modules import (
    IDLE_TIMEOUT,
    MailboxSettings,
    Service,
    apply_environment,
    backend_login,
    drop_privileges,
    prepare_mailbox,
    resolve_mail_host,
)
from qldap.control.limits import ClientCounter, SessionLimits
from qldap.directory.lookup import Directory
from qldap.logs import printable
from qldap.metrics import recorder
from qldap.pbs.client import pbs_add
from qldap.pbs.config import PbsConfig
from qldap.pop3.popup import EXIT_REPLIES, Authenticate, Popup, StartTls
from qldap.pop3.reader import Close, Reply
from qldap.pop3.session import Pop3Session, SessionInfo, Transfer, open_session
from qldap.pop3.session import Refused as SessionRefused

TIMEOUT = 1200.0
DEFAULT_MAX_SESSIONS = 100
DEFAULT_FAILURE_DELAY = 2.0  # seconds before a failed login is answered, as SMTP AUTH pauses (qmail-pop3d(8))
DEADLINE_REPLY = b"-ERR session time limit exceeded\r\n"
CONNECT_TIMEOUT = 30.0  # seconds to reach a cluster backend (auth_pop(8))
Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Pop3dConfig:
    """What the daemon needs for every connection, read once at start."""

    hostname: str
    settings: MailboxSettings = field(default_factory=MailboxSettings)
    aliasempty: str = "./Maildir/"
    tls: ssl.SSLContext | None = None
    pbs: PbsConfig | None = None
    cleartext: bool = False
    loglevel: str = ""
    timeout: float = TIMEOUT
    limits: SessionLimits = field(default_factory=lambda: SessionLimits(DEFAULT_MAX_SESSIONS))
    failure_delay: float = DEFAULT_FAILURE_DELAY


@dataclass(frozen=True, slots=True)
class SessionJob:
    """Everything the session child needs; travels pickled on its stdin."""

    fd: int
    creds: Credentials
    environ: tuple[tuple[str, str], ...]
    aliasempty: str
    settings: MailboxSettings
    pending: bytes = b""
    timeout: float = TIMEOUT


# -- blocking session loop (the child, and qmail-pop3d) -------------------------------------------------


def write_fd(fd: int, data: bytes, timeout: float) -> None:
    """Write all of *data* to *fd*, waiting at most *timeout* seconds each time.

    Raises:
        TimeoutError: the peer accepts nothing for *timeout* seconds.
        OSError: the write failed.
    """
    view = memoryview(data)
    while view:
        if not select.select([], [fd], [], timeout)[1]:
            raise TimeoutError("write timeout")
        view = view[os.write(fd, view) :]


def serve_blocking(session: Pop3Session, fd_in: int, fd_out: int, *, initial: bytes = b"",
                   timeout: float = TIMEOUT) -> int:
    """Drive *session* until QUIT, EOF, timeout or a lost client; :meth:`Pop3Session.end` at the end.

    Every one of those ends is 0, as qmail-pop3d(8) exits: a client that leaves without QUIT is not a
    server fault, and a non-zero status would make qmail-popup answer ``-ERR error in server
    configuration`` after the session's last reply.
    """
    try:
        effects = session.start() + (session.receive(initial) if initial else [])
        while True:
            for effect in effects:
                if isinstance(effect, Reply):
                    write_fd(fd_out, effect.data, timeout)
                elif isinstance(effect, Transfer):
                    try:
                        for chunk in effect.stream:
                            write_fd(fd_out, chunk, timeout)
                    finally:
                        effect.stream.close()
                elif isinstance(effect, Close):
                    return 0
            if not select.select([fd_in], [], [], timeout)[0]:
                return 0
            data = os.read(fd_in, 65536)
            if not data:
                return 0
            effects = session.receive(data)
    except OSError:  # TimeoutError included: the client is gone
        return 0
    finally:
        session.end()


def run_job(job: SessionJob, log: Log) -> int:
    """The child's work: become the owner, enter HOME, open and serve the session on ``job.fd``."""
    environ = dict(job.environ)
    failure = drop_privileges(job.creds.uid, job.creds.gid)
    if failure is None:
        apply_environment(environ, job.creds)
        failure = prepare_mailbox(job.settings, job.creds, job.aliasempty, environ)
    if failure is not None:
        log(f"session for {printable(job.creds.login)} refused ({int(failure)})")
        write_fd(job.fd, EXIT_REPLIES.get(failure, b"-ERR temporary error\r\n"), job.timeout)
        return 1
    info = SessionInfo.from_env(environ, os.getpid())
    opened = open_session(job.aliasempty, environ, home=Path.cwd(), info=info, log=log)
    if isinstance(opened, SessionRefused):
        write_fd(job.fd, opened.reply, job.timeout)
        return 1
    return serve_blocking(opened, job.fd, job.fd, initial=job.pending, timeout=job.timeout)


def _child_main() -> int:
    job = pickle.loads(sys.stdin.buffer.read())
    if not isinstance(job, SessionJob):
        return 111

    def log(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return run_job(job, log)


# -- the asyncio side -----------------------------------------------------------------------------------


_DEADLINE = object()  # what _read returns once the session deadline has passed


class _Conn(asyncio.Protocol):
    """Received bytes into a queue (None = EOF); write back-pressure as an event."""

    def __init__(self, on_start: Callable[[_Conn, asyncio.BaseTransport], None]) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self._on_start: Callable[[_Conn, asyncio.BaseTransport], None] | None = on_start

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._on_start is not None:  # once: start_tls does not announce the TLS transport again
            self._on_start(self, transport)
            self._on_start = None

    def data_received(self, data: bytes) -> None:
        self.inbox.put_nowait(data)

    def eof_received(self) -> bool | None:
        self.inbox.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put_nowait(None)
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def take_buffered(self) -> bytes:
        """Everything received and not yet consumed (reading must be paused)."""
        out = b""
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if item is not None:
                out += item
        return out


class Pop3Server:
    """Serve POP3 connections with one directory and one thread pool."""

    def __init__(self, cfg: Pop3dConfig, directory: Directory, executor: Executor, log: Log) -> None:
        self.cfg = cfg
        self.directory = directory
        self.executor = executor
        self.log = log
        self.tasks: set[asyncio.Task[None]] = set()
        self.clients = ClientCounter(cfg.limits)

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one new connection (pass as ``protocol_factory``)."""
        return _Conn(self._start)

    def _start(self, conn: _Conn, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        refusal = self.clients.admit(ip)
        if refusal is not None:  # qldap-services(5) limits: sessions, per_ip
            cast(asyncio.WriteTransport, transport).write(b"-ERR " + refusal.value.encode() + b"\r\n")
            transport.close()
            self.log(f"pop3d: {refusal.value}, refused a connection from {ip}")
            return
        metrics = recorder()  # a no-op unless $QLDAP_METRICS started an endpoint
        metrics.session_opened()
        task = asyncio.get_running_loop().create_task(self._connection(conn, transport))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _t: self.clients.release(ip))
        task.add_done_callback(lambda _t: metrics.session_closed())

    async def _write(self, conn: _Conn, transport: asyncio.BaseTransport, data: bytes) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(data)
        await asyncio.wait_for(conn.can_write.wait(), self.cfg.timeout)

    def _deadline(self) -> float | None:
        """When the session must end (loop time), None without a deadline."""
        limit = self.cfg.limits.deadline
        return asyncio.get_running_loop().time() + limit if limit > 0 else None

    async def _read(self, conn: _Conn, deadline: float | None) -> bytes | object | None:
        """The next bytes (None at EOF); :data:`_DEADLINE` once the session deadline has passed.

        Why both a per-read timeout and a deadline: a client trickling one byte every few seconds
        never lets the per-read timeout fire, and would hold its session slot for ever.

        Raises:
            TimeoutError: the client sent nothing for the per-read timeout.
        """
        wait = self.cfg.timeout
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return _DEADLINE
            if left < wait:
                try:
                    return await asyncio.wait_for(conn.inbox.get(), left)
                except TimeoutError:
                    return _DEADLINE
        return await asyncio.wait_for(conn.inbox.get(), wait)

    async def _connection(self, conn: _Conn, transport: asyncio.BaseTransport) -> None:
        try:
            await self._dialogue(conn, transport)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.log(f"pop3d: connection ended: {exc!r}")
        finally:
            transport.close()

    async def _dialogue(self, conn: _Conn, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        # APOP needs the stored cleartext password: offered only with control/cleartextpasswd (auth_pop(8))
        popup = Popup(self.cfg.hostname, pid=os.getpid(), now=int(time.time()),
                      tls_available=self.cfg.tls is not None, apop=self.cfg.cleartext)
        await self._write(conn, transport, popup.greeting().data)
        deadline = self._deadline()
        while True:
            data = await self._read(conn, deadline)
            if data is None:
                return
            if data is _DEADLINE:
                await self._write(conn, transport, DEADLINE_REPLY)
                return
            assert isinstance(data, bytes)
            effects = popup.receive(data)
            if any(isinstance(e, StartTls) for e in effects):
                # the ClientHello follows our "+OK": it must stay in the socket for the TLS layer
                cast(asyncio.ReadTransport, transport).pause_reading()
            for effect in effects:
                if isinstance(effect, Reply):
                    await self._write(conn, transport, effect.data)
                elif isinstance(effect, Close):
                    return
                elif isinstance(effect, StartTls):
                    assert self.cfg.tls is not None
                    conn.take_buffered()
                    new = await loop.start_tls(cast(asyncio.WriteTransport, transport), conn, self.cfg.tls,
                                              server_side=True)
                    if new is None:
                        return
                    transport = new
                    popup.tls_started()
                elif isinstance(effect, Authenticate):
                    assert isinstance(transport, asyncio.ReadTransport)
                    transport.pause_reading()
                    pending = popup.pending_input() + conn.take_buffered()
                    await self._login(conn, transport, popup, effect, str(peer[0]), pending)
                    return

    async def _login(self, conn: _Conn, transport: asyncio.ReadTransport, popup: Popup, auth: Authenticate,
                     ip: str, pending: bytes) -> None:
        record = parse_pop(auth.record)
        password = ""
        if isinstance(record, Fd3Rejected):
            result: Credentials | Forward | Refused = Refused(record.exit, "bad record")
        else:
            login = record.login.decode("utf-8", "surrogateescape")
            password = record.password.decode("utf-8", "surrogateescape")
            stamp = record.timestamp.decode("utf-8", "surrogateescape") if auth.method.value == "apop" else ""
            result = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: check_login(self.directory, login, password, stamp,
                                                   cleartext=self.cfg.cleartext))
        if isinstance(result, Forward):
            failure = await self._forward(conn, transport, result, password, pending)
            if failure is None:
                return
            result = Refused(failure, f"cluster forwarding to {result.mail_host} failed")
        if isinstance(result, Refused):
            self.log(f"pop3d: login refused from {ip} ({int(result.exit)}): {printable(result.reason)}")
            await asyncio.sleep(self.cfg.failure_delay)  # guesses cost time: no answer before the delay
            for effect in popup.auth_done(int(result.exit)):
                if isinstance(effect, Reply):
                    await self._write(conn, transport, effect.data)
            return
        environ = self._environment(ip)
        if self.cfg.pbs is not None and "NOPBS" not in environ:
            login_env = dict(environ)
            apply_environment(login_env, result)
            await pbs_add(self.cfg.pbs, ip, login_env, self.log)
        if os.getuid() == 0:
            await self._child_session(conn, transport, result, environ, pending)
        elif os.getuid() == result.uid:
            await self._own_session(conn, transport, result, environ, pending)
        else:
            await self._write(conn, transport, b"-ERR temporary error\r\n")

    async def _forward(self, conn: _Conn, transport: asyncio.ReadTransport, fwd: Forward, password: str,
                       pending: bytes) -> AuthExit | None:
        """auth_pop(8): log in at the user's mailHost and relay both ways; None when it ran.

        The backend's answer to ``pass`` reaches the client through the relay, as in the pipeline form.
        """
        loop = asyncio.get_running_loop()

        def connect() -> socket.socket | AuthExit:
            ip = resolve_mail_host(fwd.mail_host)
            if ip is None:
                return AuthExit.MAILHOST
            try:
                sock = socket.create_connection((ip, Service.POP.value), timeout=CONNECT_TIMEOUT)
            except OSError:
                return AuthExit.MAILHOST
            failure = backend_login(Service.POP, sock, fwd.login, password, {})
            if failure is not None:
                sock.close()
                return failure
            return sock

        got = await loop.run_in_executor(self.executor, connect)
        if isinstance(got, AuthExit):
            return got
        self.log(f"pop3d: {printable(fwd.login)} forwarded to {printable(fwd.mail_host)}")
        got.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=got)
        if pending:
            writer.write(pending)
        transport.resume_reading()

        async def upstream() -> None:
            while (data := await conn.inbox.get()) is not None:
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # half-close: the backend still answers what was sent

        task = loop.create_task(upstream())
        try:
            while data := await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT):
                await self._write(conn, transport, data)
        except (TimeoutError, OSError):
            pass
        finally:
            task.cancel()
            writer.close()
        return None

    def _environment(self, ip: str) -> dict[str, str]:
        """The session's environment: the daemon's, minus per-user variables, plus the client's IP."""
        env = {k: v for k, v in os.environ.items() if k not in ("MAILDIR", "MAILDIRQUOTA", "DATASIZE")}
        env["TCPREMOTEIP"] = ip
        env["POP3_LOGLEVEL"] = self.cfg.loglevel
        return env

    async def _child_session(self, conn: _Conn, transport: asyncio.ReadTransport, creds: Credentials,
                             environ: Mapping[str, str], pending: bytes) -> None:
        tls = transport.get_extra_info("sslcontext") is not None
        if tls:
            ours, theirs = socket.socketpair()
        else:
            theirs = transport.get_extra_info("socket")
            ours = None
        fd = os.dup(theirs.fileno())
        try:
            job = SessionJob(fd, creds, tuple(environ.items()), self.cfg.aliasempty, self.cfg.settings,
                             pending, self.cfg.timeout)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qldap.pop3.server", stdin=asyncio.subprocess.PIPE, pass_fds=(fd,))
        finally:
            os.close(fd)
            if tls:
                theirs.close()
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(job))
        proc.stdin.close()
        if ours is None:
            transport.close()
            await proc.wait()
            return
        await self._relay(conn, transport, ours, proc)

    async def _relay(self, conn: _Conn, transport: asyncio.ReadTransport, inner: socket.socket,
                     proc: asyncio.subprocess.Process) -> None:
        reader, writer = await asyncio.open_connection(sock=inner)
        transport.resume_reading()

        async def upstream() -> None:
            while (data := await conn.inbox.get()) is not None:
                writer.write(data)
                await writer.drain()
            writer.write_eof()

        up = asyncio.create_task(upstream())
        try:
            while data := await reader.read(65536):
                await self._write(conn, transport, data)
        finally:
            up.cancel()
            writer.close()
            await proc.wait()

    async def _own_session(self, conn: _Conn, transport: asyncio.ReadTransport, creds: Credentials,
                           environ: Mapping[str, str], pending: bytes) -> None:
        loop = asyncio.get_running_loop()
        env = dict(environ)
        apply_environment(env, creds)
        home = Path(creds.home)
        if not home.is_dir():
            await self._write(conn, transport, EXIT_REPLIES[AuthExit.NO_MAILBOX])
            return
        info = SessionInfo.from_env(env, os.getpid())
        opened = await loop.run_in_executor(
            self.executor, lambda: open_session(self.cfg.aliasempty, env, home=home, info=info, log=self.log))
        if isinstance(opened, SessionRefused):
            await self._write(conn, transport, opened.reply)
            return
        transport.resume_reading()
        deadline = self._deadline()
        try:
            effects = opened.start() + (opened.receive(pending) if pending else [])
            while True:
                for effect in effects:
                    if isinstance(effect, Reply):
                        await self._write(conn, transport, effect.data)
                    elif isinstance(effect, Transfer):
                        chunks = iter(effect.stream)
                        while (chunk := await loop.run_in_executor(self.executor, next, chunks, None)):
                            await self._write(conn, transport, chunk)
                    elif isinstance(effect, Close):
                        return
                data = await self._read(conn, deadline)
                if data is _DEADLINE:
                    await self._write(conn, transport, DEADLINE_REPLY)
                    return
                if not isinstance(data, bytes):
                    return
                effects = await loop.run_in_executor(self.executor, opened.receive, data)
        finally:
            opened.end()


if __name__ == "__main__":
    # run the importable module's function so pickled classes resolve to qldap.pop3.server, not __main__
    from qldap.pop3.server import _child_main as child_main

    sys.exit(child_main())

"""One SMTP session of the asyncio daemon spoken over fd 0 and fd 1 (``qmail-smtpd``, ``sendmail -bs``).

Why a socket pair and two threads, and not a second SMTP loop: the daemon's per-connection handler
(:class:`qldap.smtpd.connection.Connection`) already carries out everything the sans-I/O session asks
for — lookups, the queue hand-off, PIPELINING's buffered replies, STARTTLS — and it wants an asyncio
transport.  fd 0 and fd 1 may be anything (a TCP socket under inetd/tcpserver, two pipes under
``sendmail -bs``, a regular file the event loop cannot poll), so plain blocking threads copy
fd 0 → one end of a ``socket.socketpair()`` and that end → fd 1, while the handler serves the other
end.  TLS records pass through the copiers unchanged, so STARTTLS works here as well.

What differs from a daemon connection: the session environment is the process environment as given
(PROTO, TCPLOCALIP/HOST/PORT, TCPREMOTEIP/HOST/INFO/PORT, RELAYCLIENT, DATABYTES …), not facts taken
from the socket.  The rules file is not consulted and no in-process POP-before-SMTP check is made:
whoever started this process (tcpserver with its rules, ``pbscheck``, sendmail) already decided those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import replace

from qldap.exitcodes import ExitCode
from qldap.fsutil import write_all
from qldap.logs import printable
from qldap.smtpd.connection import Connection
from qldap.smtpd.dns import Resolver
from qldap.smtpd.queueing import QueueHandoff
from qldap.smtpd.server import LogWriter, ServerOptions, SmtpServer

CHUNK = 65536


class StdioConnection(Connection):
    """The daemon's connection handler with the session environment taken from *environ*."""

    def __init__(self, server: SmtpServer, environ: Mapping[str, str]) -> None:
        super().__init__(server)
        self.environ = dict(environ)
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    async def _run(self) -> None:
        assert self.transport is not None
        env = self.environ
        remote_ip = env.get("TCPREMOTEIP") or "unknown"
        local_ip = env.get("TCPLOCALIP")
        own = self.server.own_ips | ({local_ip} if local_ip else set())
        host = printable(env.get("TCPREMOTEHOST") or "unknown")
        await self._begin(env, own, f"connection from {remote_ip} ({host}) to {local_ip or 'unknown'}")


def _copy_in(fd: int, sock: socket.socket) -> None:
    """fd → socket until EOF (then half-close, so the session sees the client's EOF) or an error."""
    try:
        while data := os.read(fd, CHUNK):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the session is over (socket shut) or fd 0 is unreadable: nothing more to carry
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _copy_out(sock: socket.socket, fd: int) -> None:
    """Socket → fd until the session closes its end; a vanished reader ends the session too."""
    try:
        while data := sock.recv(CHUNK):
            write_all(fd, data)
    except OSError:  # fd 1 closed by the client: make the session see a lost connection
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


async def _serve(server: SmtpServer, sock: socket.socket, environ: Mapping[str, str]) -> bool:
    """Run one session on *sock*; True when it ended without an internal error."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.connect_accepted_socket(lambda: StdioConnection(server, environ), sock)
    task = conn.task
    if task is None:  # refused at connect (cannot happen with one session); the reply is written
        await conn.closed
        return True
    await asyncio.wait({task})
    await conn.closed  # the transport flushed its last reply (221) and closed
    return task.cancelled() or task.exception() is None


def serve_stdio(
    options: ServerOptions,
    *,
    log: LogWriter | None = None,
    resolver: Resolver | None = None,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
) -> int:
    """Serve one SMTP session on *stdin_fd*/*stdout_fd* with ``options.environ`` as its environment.

    Returns ExitCode.OK when the session ended (QUIT, EOF, timeout, a refusal), TEMPORARY when it
    failed internally (the failure is logged).

    Raises:
        ConfigError: the daemon's parts cannot be set up (the caller reports ``fatal`` and 111).
    """
    opts = replace(options, listen=(), max_sessions=1, lookup_workers=1, queue_workers=1)
    # one session per process: the in-process injector on a thread; a queue writer helper's start
    # would cost more than its lock hand-overs save (qldap.smtpd.queueing)
    server = SmtpServer(opts, resolver=resolver, log=log, handoff=QueueHandoff(opts.root, workers=1))
    server.signing.workers = 0  # one session: DKIM signs on a thread, no worker process to start
    ours, theirs = socket.socketpair()
    feeder = threading.Thread(target=_copy_in, args=(stdin_fd, ours), name="qldap-stdin", daemon=True)
    printer = threading.Thread(target=_copy_out, args=(ours, stdout_fd), name="qldap-stdout", daemon=True)
    feeder.start()
    printer.start()
    try:
        ok = asyncio.run(_serve(server, theirs, opts.environ))
    finally:
        server.close()
        with contextlib.suppress(OSError):
            theirs.close()
    printer.join()
    if not feeder.is_alive():  # else it still waits on fd 0; the process is about to end anyway
        ours.close()
    return ExitCode.OK if ok else ExitCode.TEMPORARY

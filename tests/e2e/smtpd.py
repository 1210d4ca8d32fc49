"""Run the real SMTP daemon for a test: in-process on its own event-loop thread, plus a raw client.

``ServerThread`` starts :class:`qldap.smtpd.server.SmtpServer` on a free loopback port with an injected
DNS resolver (the daemon's seam) and collects its log lines; ``Client`` speaks raw SMTP over a socket
(optionally from another 127.x source address) and reads whole replies; ``queued`` lists what reached
``queue/todo`` with the matching ``mess`` file.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from qldap.mailauth.resolve import Dns
from qldap.queue.envelope import TodoEntry, parse_todo
from qldap.queue.layout import QueueLayout
from qldap.smtpd.dns import Resolver, StaticResolver
from qldap.smtpd.server import ServerOptions, SmtpServer

TIMEOUT = 30.0  # a hang guard for a reply or a start-up: never reached when things work, however slow


class ServerThread:
    """An SmtpServer running on a private event loop in a daemon thread."""

    def __init__(
        self, options: ServerOptions, resolver: Resolver | None = None, authdns: Dns | None = None
    ) -> None:
        self.options = options
        self.resolver = resolver or StaticResolver()
        self.authdns = authdns
        self.log: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: SmtpServer | None = None
        self.addr: tuple[str, int] = ("", 0)

    def start(self) -> ServerThread:
        self.thread.start()
        bound = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(TIMEOUT)
        self.addr = bound[0]
        return self

    async def _start(self) -> list[tuple[str, int]]:
        self.server = SmtpServer(
            self.options, resolver=self.resolver, log=self.log.append, authdns=self.authdns
        )
        return await self.server.start()

    def call(self, fn: object) -> None:
        """Run a plain callable on the server's loop (e.g. ``server.reload``) and wait for it."""

        async def go() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(TIMEOUT)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


def options(root: Path, env: Mapping[str, str] | None = None, **kw: object) -> ServerOptions:
    """Options listening on a free port of 127.0.0.1 for *root*, with session variables *env*."""
    base = ServerOptions(root=root, listen=(("127.0.0.1", 0),), environ=dict(env or {}))
    return replace(base, **kw)  # type: ignore[arg-type]


class Client:
    """A raw SMTP client socket; ``reply()`` returns one whole (possibly multi-line) reply as text."""

    def __init__(self, addr: tuple[str, int], source: str | None = None, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout,
                                             source_address=(source, 0) if source else None)  # fmt: skip
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace") + "\n"

    def reply(self) -> str:
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return "".join(lines).replace("\n", "\r\n").replace("\r\r\n", "\r\n")

    def cmd(self, data: bytes | str) -> str:
        self.send(data if (data.endswith(b"\n") if isinstance(data, bytes) else data.endswith("\n"))
                  else (data + b"\r\n" if isinstance(data, bytes) else data + "\r\n"))  # fmt: skip
        return self.reply()

    def rest(self) -> bytes:
        """Everything until EOF (raises on timeout)."""
        out = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return out
            out += chunk

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class Queued:
    """One message in ``todo``: its number, todo entry and the ``mess`` file's bytes."""

    number: int
    todo: TodoEntry
    message: bytes


def queued(root: Path) -> list[Queued]:
    """Every message in ``ROOT/queue/todo``, by number."""
    layout = QueueLayout.of(root)
    out = []
    for name in sorted(os.listdir(layout.dir("todo")), key=int):
        n = int(name)
        todo = parse_todo(Path(layout.todo(n)).read_bytes())
        out.append(Queued(n, todo, Path(layout.mess(n)).read_bytes()))
    return out


def mess_files(root: Path) -> list[str]:
    """Every file below ``ROOT/queue/mess`` (to prove nothing half-written stayed behind)."""
    layout = QueueLayout.of(root)
    return [os.path.join(d, f) for d, _, files in os.walk(layout.dir("mess")) for f in files]

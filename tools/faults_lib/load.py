"""Steady SMTP load that records the server's answer to every message it tried.

Why every attempt gets its own sequence number (``X-Fault-Seq``) instead of retrying one message
until it is accepted: accounting must tell "accepted, so the server owes a delivery or a bounce"
apart from "refused" and from "the connection died after the final dot" (the client cannot know;
such a message may or may not be delivered and is never counted as lost).  The generator runs its
own event loop in a thread so the caller can kill daemons and stop slapd meanwhile; connections
that die are reopened after a short pause, as a real MTA client would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from faults_lib.world import SENDER

REPLY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened to one message: the *stage* it ended at, the reply *code* (0 = no reply)."""

    seq: str
    stage: str  # mail | rcpt | data | dot (the reply to the final dot; 250 = accepted)
    code: int
    phase: str  # the caller's phase label when the reply came


def message(seq: str, rcpt: str, size: int = 1024) -> bytes:
    """A message carrying ``X-Fault-Seq: seq``, CRLF lines, dot-stuffing not needed."""
    head = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: fault run {seq}\r\n"
            f"Message-ID: <{seq}@faults.test>\r\nX-Fault-Seq: {seq}\r\n\r\n").encode()  # fmt: skip
    line = b"fault injection body line 0123456789 abcdefghijklmnopqrstuvwxyz\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


class _Closed(Exception):
    """The server closed the connection or did not answer in time."""


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        except (TimeoutError, OSError, ValueError) as exc:
            raise _Closed(str(exc)) from None
        if not line:
            raise _Closed("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3])
            except ValueError:
                raise _Closed(f"bad reply {line!r}") from None


class Load:
    """*connections* SMTP clients sending to 127.0.0.1:*port* at most *rate* messages/s in total.

    Runs until *goal* messages were accepted and the clock passed :attr:`not_before`, or until
    :meth:`stop`, or for *max_seconds*.  Each message goes to ``rcpt_for(n)`` with seq ``prefix-n``.
    """

    def __init__(self, port: int, prefix: str, rcpt_for: Callable[[int], str], goal: int, *,
                 connections: int = 4, rate: float = 50.0, phase: Callable[[], str] = lambda: "",
                 max_seconds: float = 900.0) -> None:  # fmt: skip
        self.port, self.prefix, self.rcpt_for, self.goal = port, prefix, rcpt_for, goal
        self.connections, self.rate, self.phase = connections, rate, phase
        self.max_seconds = max_seconds
        self.not_before = 0.0
        self.attempts: list[Attempt] = []
        self.connect_failures = 0
        self.rcpt_of: dict[str, str] = {}
        self._n = 0
        self._next_slot = 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.started = self.finished = 0.0

    # -- results ---------------------------------------------------------------------------------

    @property
    def accepted(self) -> list[str]:
        """Seqs answered 250 after the final dot."""
        return [a.seq for a in self.attempts if a.stage == "dot" and a.code == 250]

    @property
    def unacked(self) -> list[str]:
        """Seqs whose final dot was sent but whose reply never came (may or may not be delivered)."""
        return [a.seq for a in self.attempts if a.stage == "dot" and a.code == 0]

    def count(self, stage: str, code_class: int, phase: str | None = None) -> int:
        """Attempts that ended at *stage* with a reply of class *code_class* (4 → 4xx), in *phase*."""
        return sum(1 for a in self.attempts if a.stage == stage and a.code // 100 == code_class
                   and (phase is None or a.phase == phase))  # fmt: skip

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> Load:
        """Start the clients in their thread."""
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the clients to stop after their current message, and wait for them."""
        self._halt.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the clients to finish on their own."""
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the clients run."""
        return self._thread.is_alive()

    # -- clients ---------------------------------------------------------------------------------

    def _done(self) -> bool:
        now = time.monotonic()
        if self._halt.is_set() or now - self.started > self.max_seconds:
            return True
        return len(self.accepted) >= self.goal and now >= self.not_before

    async def _pace(self) -> None:
        now = time.monotonic()
        self._next_slot = max(self._next_slot + 1.0 / self.rate, now)
        if self._next_slot > now:
            await asyncio.sleep(self._next_slot - now)

    async def _main(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.connections)))
        self.finished = time.monotonic()

    async def _client(self) -> None:
        while not self._done():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
            except (OSError, TimeoutError):
                self.connect_failures += 1
                await asyncio.sleep(0.2)
                continue
            try:
                await self._session(reader, writer)
            except _Closed:
                await asyncio.sleep(0.1)
            finally:
                writer.close()

    def _record(self, seq: str, stage: str, code: int) -> None:
        self.attempts.append(Attempt(seq, stage, code, self.phase()))

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await _reply(reader) != 220:
            raise _Closed("no greeting")
        writer.write(b"EHLO faults.client\r\n")
        if await _reply(reader) != 250:
            raise _Closed("EHLO refused")
        while not self._done():
            await self._pace()
            n, self._n = self._n, self._n + 1
            seq, rcpt = f"{self.prefix}-{n:06d}", self.rcpt_for(n)
            self.rcpt_of[seq] = rcpt
            stage = "mail"
            try:
                writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
                code = await _reply(reader)
                if code == 250:
                    stage = "rcpt"
                    writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
                    code = await _reply(reader)
                if code == 250:
                    stage = "data"
                    writer.write(b"DATA\r\n")
                    code = await _reply(reader)
                if code == 354:
                    stage = "dot"
                    writer.write(message(seq, rcpt) + b".\r\n")
                    code = await _reply(reader)
            except _Closed:
                self._record(seq, stage, 0)
                raise
            self._record(seq, stage, code)
            if stage != "dot":
                writer.write(b"RSET\r\n")
                await _reply(reader)
        writer.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError):
            pass

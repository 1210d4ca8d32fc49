"""The SMTP load generator shared by every benchmark mode, and the Maildir tracker that sees delivery.

Each message goes to one directory user, carries a unique ``X-Bench-Id`` header, and is matched
against the file that appears in that user's ``Maildir/new``.  Its accept->delivered latency is the
file's ctime (set by the ``link()``/``rename()`` that publishes it in ``new/``) minus the wall-clock
time the 250 after DATA arrived, so the same measurement applies to any server that writes Maildirs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DOMAIN = "bench.example"
ID_HEADER = b"X-Bench-Id: "


def message(size: int) -> bytes:
    """A plain-text message of about *size* bytes, CRLF lines, no leading dots."""
    head = b"From: bench@bench.invalid\r\nTo: bench\r\nSubject: qldap bench\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789 qldap bench line.\r\n"
    body = bytearray(head)
    while len(body) < size:
        body += line
    return bytes(body[: max(size, len(head))]).rstrip(b"\r\n") + b"\r\n"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile *p* (0..100) of *values*; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One (possibly multi-line) SMTP reply: (code, text)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


class Tracker:
    """Messages sent to a server, matched by X-Bench-Id against the files in their recipient's Maildir/new.

    A message is announced with :meth:`expect` before its final dot is sent, because a fast server
    may publish the file before the client has even read the 250; :meth:`accepted` then gives the
    wall-clock time of that 250 (the start of its accept->delivered latency), :meth:`refused` takes
    back one that got no 250.  Only the Maildirs with outstanding messages are listed, so a pass
    costs a few syscalls per in-flight message, not one per user.
    """

    def __init__(self, mail_root: Path) -> None:
        self.mail_root = mail_root
        self._lock = threading.Lock()
        self._pending: dict[int, dict[str, float | None]] = {}  # user -> bench id -> 250 time (None: not yet)
        self._early: dict[str, float] = {}  # bench id -> ctime of a file found before its 250 was read
        self._seen: dict[int, set[str]] = {}
        self.latencies: list[float] = []
        self.last_ctime = 0.0
        self.delivered = 0
        self.stray = 0

    def new_dir(self, user: int) -> Path:
        return self.mail_root / f"u{user}" / "Maildir" / "new"

    def expect(self, user: int, bench_id: str) -> None:
        with self._lock:
            self._pending.setdefault(user, {})[bench_id] = None

    def accepted(self, user: int, bench_id: str, when: float) -> None:
        with self._lock:
            ctime = self._early.pop(bench_id, None)
            if ctime is None:
                self._pending.setdefault(user, {})[bench_id] = when
            else:
                self.latencies.append(max(0.0, ctime - when))

    def refused(self, user: int, bench_id: str) -> None:
        with self._lock:
            self._pending.get(user, {}).pop(bench_id, None)
            if self._early.pop(bench_id, None) is not None:  # delivered without a 250
                self.delivered -= 1
                self.stray += 1

    def outstanding(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def poll(self) -> None:
        with self._lock:
            users = [u for u, v in self._pending.items() if v]
        for user in users:
            seen = self._seen.setdefault(user, set())
            try:
                entries = [e for e in os.scandir(self.new_dir(user)) if e.name not in seen]
            except OSError:
                continue
            for e in entries:
                seen.add(e.name)
                try:
                    ctime = e.stat().st_ctime
                    with open(e.path, "rb") as fh:
                        head = fh.read(4096)
                except OSError:
                    continue
                at = head.find(ID_HEADER)
                bench_id = head[at + len(ID_HEADER): head.find(b"\n", at)].strip().decode() if at >= 0 else ""
                with self._lock:
                    mine = self._pending.get(user, {})
                    if bench_id not in mine:
                        self.stray += 1
                        continue
                    sent = mine.pop(bench_id)
                    self.delivered += 1
                    self.last_ctime = max(self.last_ctime, ctime)
                    if sent is None:
                        self._early[bench_id] = ctime
                    else:
                        self.latencies.append(max(0.0, ctime - sent))

    def clear(self, users: Sequence[int]) -> None:
        """Empty new/ of *users* and forget everything: the next run starts from the same Maildirs."""
        for user in set(users):
            d = self.new_dir(user)
            try:
                for e in os.scandir(d):
                    os.unlink(e.path)
            except OSError:
                pass
        with self._lock:
            self._pending.clear()
            self._early.clear()
            self._seen.clear()
            self.latencies = []
            self.last_ctime, self.delivered, self.stray = 0.0, 0, 0


class Poller(threading.Thread):
    """Calls :meth:`Tracker.poll` every *interval* seconds until stopped."""

    def __init__(self, tracker: Tracker, interval: float) -> None:
        super().__init__(daemon=True)
        self.tracker, self.interval, self._halt = tracker, interval, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.tracker.poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.tracker.poll()


@dataclass
class LoadResult:
    """What the client side saw: accepted count, accept latencies (MAIL..250 after DATA), failures."""

    accepted: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    greetings: list[float] = field(default_factory=list)  # connect() .. 220 received, per session


@dataclass(frozen=True)
class Load:
    """*workers* concurrent SMTP clients sending the messages to *recipients* (user numbers) in order.

    *per_session* messages per connection (0: one connection per worker for its whole share), so
    ``per_session=1`` measures connection set-up, greeting and EHLO as well.
    """

    port: int
    recipients: Sequence[int]
    workers: int
    per_session: int = 0
    size: int = 2048
    run_id: str = "r"
    max_seconds: float = 600.0


async def _session(load: Load, jobs: list[int], tracker: Tracker | None, body: bytes,
                   out: LoadResult, deadline: float) -> None:
    """Send messages from *jobs* (indexes into load.recipients) over one connection."""
    t_connect = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    except OSError as exc:
        out.failures.append(f"connect: {exc}")
        jobs.clear()
        return
    try:
        code, text = await reply(reader)
        out.greetings.append(time.perf_counter() - t_connect)
        if code != 220:
            out.failures.append(text)
            return
        writer.write(b"EHLO bench.invalid\r\n")
        await reply(reader)
        sent = 0
        while jobs and (load.per_session == 0 or sent < load.per_session):
            if time.monotonic() > deadline:
                jobs.clear()
                break
            k = jobs.pop()
            sent += 1
            user = load.recipients[k]
            bench_id = f"{load.run_id}.{k}"
            t0 = time.perf_counter()
            writer.write(f"MAIL FROM:<bench@bench.invalid>\r\nRCPT TO:<u{user}@{BENCH_DOMAIN}>\r\n".encode())
            mail_code, mail_text = await reply(reader)
            rcpt_code, rcpt_text = await reply(reader)
            if mail_code != 250 or rcpt_code != 250:
                out.failures.append(mail_text if mail_code != 250 else rcpt_text)
                writer.write(b"RSET\r\n")
                await reply(reader)
                continue
            writer.write(b"DATA\r\n")
            code, text = await reply(reader)
            if code != 354:
                out.failures.append(text)
                continue
            if tracker is not None:
                tracker.expect(user, bench_id)
            writer.write(ID_HEADER + bench_id.encode() + b"\r\n" + body + b".\r\n")
            try:
                code, text = await reply(reader)
            except BaseException:
                if tracker is not None:
                    tracker.refused(user, bench_id)
                raise
            if code == 250:
                out.accepted += 1
                if tracker is not None:
                    tracker.accepted(user, bench_id, time.time())
                out.latencies.append(time.perf_counter() - t0)
            else:
                out.failures.append(text)
                if tracker is not None:
                    tracker.refused(user, bench_id)
        writer.write(b"QUIT\r\n")
        await reply(reader)
    except (OSError, ConnectionError, ValueError) as exc:
        out.failures.append(f"session: {exc}")
    finally:
        writer.close()


async def _worker(load: Load, jobs: list[int], tracker: Tracker | None, body: bytes, out: LoadResult,
                  deadline: float) -> None:
    while jobs and time.monotonic() < deadline:
        await _session(load, jobs, tracker, body, out, deadline)


async def drive(load: Load, tracker: Tracker | None) -> LoadResult:
    """Run *load* to completion (or its deadline); each worker takes an equal share of the messages."""
    body = message(load.size)
    out = LoadResult()
    n = len(load.recipients)
    shares = [list(range(n))[w::load.workers][::-1] for w in range(load.workers)]
    deadline = time.monotonic() + load.max_seconds
    t0 = time.perf_counter()
    await asyncio.gather(*[_worker(load, s, tracker, body, out, deadline) for s in shares if s])
    out.seconds = time.perf_counter() - t0
    return out


async def _probe(port: int, rcpt: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reply(reader)
        writer.write(b"EHLO bench.invalid\r\n")
        await reply(reader)
        writer.write(f"MAIL FROM:<bench@bench.invalid>\r\nRCPT TO:<{rcpt}>\r\n".encode())
        await reply(reader)
        code, _ = await reply(reader)
        writer.write(b"QUIT\r\n")
        await reply(reader)
        return code
    finally:
        writer.close()


def rcpt_code(port: int, rcpt: str) -> int:
    """The reply code a server gives to RCPT TO *rcpt* (a check that unknown users are refused)."""
    return asyncio.run(_probe(port, rcpt))

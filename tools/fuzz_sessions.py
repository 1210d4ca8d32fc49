#!/usr/bin/env python3
"""Drive many random SMTP sessions against a running ``qldap smtpd`` and count crashes and hangs.

    tools/fuzz_sessions.py --smtp HOST:PORT [--sessions N] [--seed S] [--timeout T] [--pid PID]
                           [--concurrency C]

Each session is reproducible from ``(seed, index)``: a random mix of valid commands, tricky paths,
random verbs, random octets (NUL, CR, 8-bit), bare LF line ends, over-long lines, AUTH exchanges,
DATA with random bodies, partial lines sent slowly, and random disconnects (half of them with RST).

What counts (one JSON line on stdout, exit 1 unless crashes and hangs are both 0):

* **crash**: the server stopped accepting (connect refused, or no greeting within the hang time on a
  probe connection) or, with ``--pid``, the process exited.  The run stops at the first crash.
* **hang**: a complete line was sent in command mode and neither a reply line nor EOF came within
  ``timeout + 5`` seconds (``timeout`` = the server's ``timeoutsmtpd``, default 120).
* ``max_rss_kb``: the peak resident size (VmHWM) of ``--pid`` at the end, else 0.

Library use (``tools/faults --fuzz``): ``run(sessions, target, seed, timeout=…, pid=…) -> dict``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

DEFAULT_TIMEOUT = 120.0  # timeoutsmtpd's default
DEFAULT_CONCURRENCY = 16  # below the daemon's 50-session limit, so 421s stay rare
PROBE_EVERY = 500  # sessions between liveness probes

_PATH_CHARS = 'ab@%!":<>\\ .,[]\0\r\x80\xff*()'


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``.

    Raises:
        ValueError: no port.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def rss_kb(pid: int | None) -> int:
    """Peak resident set (VmHWM) of *pid* in KiB; 0 when unknown."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def alive(pid: int | None) -> bool:
    """True unless *pid* is given and that process has exited (a zombie counts as exited)."""
    if pid is None:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Tally:
    """Running figures of one fuzz run (turned into the JSON line)."""

    tries: int = 0
    commands: int = 0
    replies: int = 0
    disconnects: int = 0
    busy: int = 0  # sessions answered 421 at connect (session limit)
    crashes: int = 0
    hangs: int = 0
    max_rss_kb: int = 0
    seconds: float = 0.0
    seed: int = 0
    hang_samples: list[str] = field(default_factory=list)


def _word(rng: random.Random, alphabet: str, most: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, most)))


def _path(rng: random.Random) -> str:
    shapes: list[Callable[[], str]] = [
        lambda: f"<{_word(rng, 'abc', 6)}@{rng.choice(['example.org', 'elsewhere.test', '[127.0.0.1]'])}>",
        lambda: f"<{_word(rng, _PATH_CHARS, 30)}>",
        lambda: _word(rng, _PATH_CHARS, 30),
        lambda: f"<@{_word(rng, 'ab.', 5)}:{_word(rng, _PATH_CHARS, 10)}>",
        lambda: "<>",
        lambda: "<" + "a" * rng.randint(880, 920) + "@example.org>",
    ]
    return rng.choice(shapes)()


def _command(rng: random.Random) -> bytes:
    """One random command line (with its line end), or a random chunk without one."""
    r = rng.random()
    end = rng.choice([b"\r\n"] * 8 + [b"\n", b"\r\r\n"])
    if r < 0.35:
        verb = rng.choice(["HELO x", "EHLO x", "NOOP", "RSET", "VRFY x", "HELP", "EXPN a", "ETRN", "BDAT 3",
                           "STARTTLS", "QUIT", "DATA", "noop", "MaIl FrOm:<a@b.test>"])  # fmt: skip
        return verb.encode() + end
    if r < 0.6:
        verb = rng.choice(["MAIL FROM:", "RCPT TO:", "MAIL", "RCPT"])
        param = rng.choice([b"", b" SIZE=" + str(rng.randint(0, 10**9)).encode()])
        return (verb + _path(rng)).encode("utf-8", "surrogateescape") + param + end
    if r < 0.7:
        mech = rng.choice(["AUTH", "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "AUTH PLAIN !!!",
                           "AUTH PLAIN " + base64.b64encode(rng.randbytes(rng.randint(0, 40))).decode(),
                           "*", base64.b64encode(rng.randbytes(8)).decode()])  # fmt: skip
        return mech.encode() + end
    if r < 0.85:
        return rng.randbytes(rng.randint(0, 300)).replace(b"\n", b"") + end
    if r < 0.9:
        return bytes(rng.choice([0, 0x80, 0xFF, 0x0D, 0x1B]) for _ in range(rng.randint(1, 50))) + end
    if r < 0.93:
        return b"NOOP " + b"x" * rng.randint(16380, 20000) + end  # around the 16384 limit
    word = _word(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 12).encode()
    return word + b" " + rng.randbytes(20).replace(b"\n", b"") + end


def _data_body(rng: random.Random) -> bytes:
    choices = [b"Subject: x", b"", b"..", b"..x"]
    lines = [rng.choice([*choices, rng.randbytes(rng.randint(0, 80)).replace(b"\n", b"")])
             for _ in range(rng.randint(0, 6))]  # fmt: skip
    body = b"\r\n".join(lines) + b"\r\n"
    if rng.random() < 0.1:
        body += b"bare\nlf\r\n"
    return body + b".\r\n"


class _Session:
    """One client: sends random steps, waits for replies after complete lines, records hangs."""

    def __init__(self, rng: random.Random, hang: float, tally: Tally) -> None:
        self.rng, self.hang, self.tally = rng, hang, tally
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.in_data = False
        self.closed = False

    async def _replies(self, what: bytes, expected: int) -> bool:
        """Read *expected* final reply lines (or up to EOF); False on a hang (recorded)."""
        assert self.reader is not None
        while expected > 0:
            try:
                line = await asyncio.wait_for(self.reader.readline(), self.hang)
            except TimeoutError:
                self.tally.hangs += 1
                if len(self.tally.hang_samples) < 5:
                    self.tally.hang_samples.append(repr(what[:120]))
                return False
            except (ConnectionError, OSError):
                self.closed = True
                return True
            if not line:
                self.closed = True
                return True
            if line[3:4] == b"-":
                continue  # a continuation line of a multi-line reply
            self.tally.replies += 1
            expected -= 1
            if line.startswith(b"354"):
                self.in_data = True
        return True

    async def _send(self, data: bytes) -> bool:
        assert self.writer is not None
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.hang)
        except (ConnectionError, OSError, TimeoutError):
            self.closed = True
            return False
        return True

    async def run(self, host: str, port: int) -> bool:
        """Play one session; False when the server refused the connection (a crash sign)."""
        rng = self.rng
        try:
            reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=1 << 20), self.hang)
        except (ConnectionError, OSError, TimeoutError):
            return False
        self.reader = reader
        try:
            greeting = await asyncio.wait_for(reader.readline(), self.hang)
        except TimeoutError:
            self.tally.hangs += 1
            await self._close(rng.random() < 0.5)
            return True
        except (ConnectionError, OSError):
            return True
        if greeting.startswith(b"421"):
            self.tally.busy += 1
        for _ in range(rng.randint(0, 12)):
            if self.closed:
                break
            r = rng.random()
            if r < 0.05:  # disconnect in the middle
                self.tally.disconnects += 1
                if rng.random() < 0.5 and not self.in_data:
                    await self._send(_command(rng).rstrip(b"\n")[: rng.randint(0, 40)])
                break
            was_data = self.in_data
            if self.in_data:
                data = _data_body(rng)
                self.in_data = False
            elif r < 0.15:  # pipelined burst; DATA only alone, so what follows it is known to be data
                burst = (_command(rng) for _ in range(rng.randint(2, 6)))
                data = b"".join(c for c in burst if c[:4].upper() != b"DATA")
            else:
                data = _command(rng)
            if r > 0.97 and len(data) > 2:  # slowly: part of the line, a pause, the rest
                cut = rng.randint(1, len(data) - 1)
                if not await self._send(data[:cut]):
                    break
                await asyncio.sleep(rng.random() * 0.3)
                data = data[cut:]
            self.tally.commands += 1
            if not await self._send(data):
                break
            if not await self._replies(data, 1 if was_data else data.count(b"\n")):
                break
        await self._close(rng.random() < 0.5)
        return True

    async def _close(self, reset: bool) -> None:
        writer = self.writer
        if writer is None:
            return
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass


async def probe(host: str, port: int, hang: float) -> bool:
    """True when a new connection gets a ``220``/``421`` greeting within *hang* seconds."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), hang)
    except (ConnectionError, OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), hang)
        return line[:4] in (b"220 ", b"421 ")
    except (ConnectionError, OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def run_async(sessions: int, target: tuple[str, int], seed: int, *, timeout: float = DEFAULT_TIMEOUT,
                    pid: int | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> Tally:
    """The fuzz run on the current event loop; see :func:`run`."""
    host, port = target
    hang = timeout + 5.0
    tally = Tally(seed=seed)
    started = time.monotonic()
    next_index = 0
    stop = asyncio.Event()
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal next_index
        while not stop.is_set():
            async with lock:
                index = next_index
                if index >= sessions:
                    return
                next_index += 1
                tally.tries += 1
            ok = await _Session(random.Random(seed * 1_000_003 + index), hang, tally).run(host, port)
            check = not ok or (index + 1) % PROBE_EVERY == 0
            if check and not (alive(pid) and await probe(host, port, hang)):
                tally.crashes += 1
                stop.set()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    if not tally.crashes and not (alive(pid) and await probe(host, port, hang)):
        tally.crashes += 1
    tally.max_rss_kb = rss_kb(pid)
    tally.seconds = round(time.monotonic() - started, 1)
    return tally


def run(sessions: int, target: tuple[str, int] | str, seed: int, *, timeout: float = DEFAULT_TIMEOUT,
        pid: int | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, object]:
    """Play *sessions* random sessions against *target* (``(host, port)`` or ``"HOST:PORT"``).

    *timeout* is the server's ``timeoutsmtpd`` (a hang is no reply within timeout + 5 s); *pid*, when
    given, is watched for exit and its peak RSS reported.  Returns the figures of the JSON line:
    ``tries, commands, replies, disconnects, busy, crashes, hangs, max_rss_kb, seconds, seed,
    hang_samples``.
    """
    where = parse_hostport(target) if isinstance(target, str) else target
    tally = asyncio.run(run_async(sessions, where, seed, timeout=timeout, pid=pid, concurrency=concurrency))
    return asdict(tally)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the JSON line; exit 1 when there was a crash or a hang."""
    p = argparse.ArgumentParser(prog="fuzz_sessions", description=__doc__.split("\n", 1)[0])
    p.add_argument("--smtp", required=True, type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="the server's timeoutsmtpd")
    p.add_argument("--pid", type=int, help="the daemon's pid (exit detection, peak RSS)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ns = p.parse_args(argv)
    figures = run(ns.sessions, ns.smtp, ns.seed, timeout=ns.timeout, pid=ns.pid, concurrency=ns.concurrency)
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0 if figures["crashes"] == 0 and figures["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

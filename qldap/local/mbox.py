"""Append one message to an mbox file: From_ line, ``>From`` quoting, exclusive lock, fsync, rollback.

Why truncate on failure: an mbox is one shared file; a half-written entry would corrupt every later
message for the reader, so a failed append restores the previous length before reporting a deferral.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from qldap.errors import TemporaryFailure

_FROM_LINE = re.compile(rb"^>*From ")
LOCK_SECONDS = 30


def ufline(sender: str, now: float | None = None) -> bytes:
    """``From <sender> <date>``: blanks/newlines in the sender → ``-``, null sender → MAILER-DAEMON."""
    s = sender or "MAILER-DAEMON"
    s = re.sub(r"[ \t\n]", "-", s)
    date = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(now))
    return f"From {s} {date}\n".encode("utf-8", "surrogateescape")


def quote_from_lines(data: bytes, at_line_start: bool = True) -> tuple[bytes, bool]:
    """Prefix ``>`` to every line matching ``>*From ``; returns the text and whether it ended a line.

    Works on chunks: *at_line_start* says whether the chunk begins a line.
    """
    out = bytearray()
    start = 0
    n = len(data)
    bol = at_line_start
    while start < n:
        end = data.find(b"\n", start)
        line_end = n if end < 0 else end + 1
        line = data[start:line_end]
        if bol and _FROM_LINE.match(line):
            out += b">"
        out += line
        bol = end >= 0
        start = line_end
    return bytes(out), bol


def _lock(fd: int, seconds: int, sleep: Callable[[float], None]) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise TemporaryFailure("File has been locked for 30 seconds straight. (#4.3.0)") from None
            sleep(0.1)


def deliver_mbox(
    path: Path,
    chunks: Iterable[bytes],
    *,
    sender: str,
    prefix: bytes = b"",
    now: float | None = None,
    lock_seconds: int = LOCK_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Append a message to the mbox *path*; returns the bytes written.

    Raises:
        TemporaryFailure: open/lock/write/read errors, with the qmail-local texts; on write or read
        errors the file is truncated back to its old length.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TemporaryFailure(f"Unable to open {path}: {exc.strerror}. (#4.2.1)") from None
    try:
        _lock(fd, lock_seconds, sleep)
        old = os.lseek(fd, 0, os.SEEK_END)
        written = 0
        try:
            buf = bytearray(ufline(sender, now))
            buf += prefix
            bol = True
            last = b"\n"
            try:
                for chunk in chunks:
                    if not chunk:
                        continue
                    quoted, bol = quote_from_lines(chunk, bol)
                    buf += quoted
                    last = chunk[-1:]
                    if len(buf) >= 1 << 16:
                        written += os.write(fd, bytes(buf))
                        buf.clear()
            except OSError as exc:
                raise _ReadError(exc.strerror or str(exc)) from None
            if last != b"\n":
                buf += b"\n"
            buf += b"\n"
            written += os.write(fd, bytes(buf))
            os.fsync(fd)
        except _ReadError as exc:
            os.ftruncate(fd, old)
            raise TemporaryFailure(f"Unable to read message: {exc}. (#4.3.0)") from None
        except OSError as exc:
            try:
                os.ftruncate(fd, old)
            except OSError:
                pass
            raise TemporaryFailure(f"Unable to write {path}: {exc.strerror}. (#4.3.0)") from None
        return written
    finally:
        os.close(fd)


class _ReadError(Exception):
    pass

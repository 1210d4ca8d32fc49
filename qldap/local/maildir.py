"""Deliver one message into a Maildir: unique name in tmp/, fsync, link into new/, unlink tmp/.

Why link-then-unlink rather than rename: a crash at any point leaves either nothing in new/ or the
complete file (the tmp/ leftover is harmless and cleaned by readers after 36 h), and link() refuses to
overwrite, so two deliveries can never clobber each other even if a name repeated.  The new/ directory
is fsynced too: the delivery is reported done only when it survives a power loss.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qldap.errors import TemporaryFailure
from qldap.fsutil import ensure_maildir, fsync_dir

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _next_seq() -> int:
    with _counter_lock:
        return next(_counter)


def maildir_host(hostname: str | None = None) -> str:
    """The host part of Maildir file names, with ``/`` → ``\\057`` and ``:`` → ``\\072``."""
    host = hostname if hostname is not None else socket.gethostname()
    return host.replace("/", "\\057").replace(":", "\\072")


def unique_name(now: float | None = None, pid: int | None = None, host: str | None = None) -> str:
    """``<sec>.M<usec>P<pid>Q<n>.<host>``: unique among concurrent deliveries of this process.

    The Q counter makes names unique inside one process (many threads deliver at once); pid and
    microseconds make them unique across processes.
    """
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid() if pid is None else pid}Q{_next_seq()}.{maildir_host(host)}"



@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a message landed: the final path in new/ and the file size."""

    path: Path
    size: int



def deliver_maildir(
    maildir: Path,
    chunks: Iterable[bytes],
    *,
    prefix: bytes = b"",
    name: str | None = None,
    suffix: str = "",
) -> Delivered:
    """Write *prefix* (Return-Path/Delivered-To lines) and the message chunks into *maildir*.

    The final name is ``new/<unique>,S=<size><suffix>``.  The maildir is created if missing.

    Raises:
        TemporaryFailure: with the qmail-local texts (chdir, read, write errors); the tmp file is
        always removed.
    """
    ensure_maildir(maildir)
    base = name or unique_name()
    tmp = maildir / "tmp" / base
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        raise TemporaryFailure("Unable to chdir to maildir. (#4.2.1)") from None
    except OSError:
        raise TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)") from None
    size = 0
    try:
        try:
            with os.fdopen(fd, "wb", buffering=1 << 16) as f:
                if prefix:
                    f.write(prefix)
                    size += len(prefix)
                try:
                    for chunk in chunks:
                        f.write(chunk)
                        size += len(chunk)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                        raise
                    raise TemporaryFailure("Unable to read message. (#4.3.0)") from None
                f.flush()
                os.fsync(f.fileno())
        except TemporaryFailure:
            raise
        except OSError:
            raise TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)") from None
        final = maildir / "new" / f"{base},S={size}{suffix}"
        try:
            os.link(tmp, final)
            fsync_dir(maildir / "new")
        except OSError:
            raise TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return Delivered(final, size)

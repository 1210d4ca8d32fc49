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
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qldap.errors import TemporaryFailure
from qldap.fsutil import ensure_maildir, fsync_dir, write_all

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
    """Where a message landed: the final path in new/ (``location`` as a str) and the file size."""

    location: str
    size: int

    @property
    def path(self) -> Path:
        """The final path in new/."""
        return Path(self.location)


_MISSING_DIR = (errno.ENOENT, errno.ENOTDIR)


def _maildir_ready(md: str) -> bool:
    """True when ``cur/`` is a directory (so is the maildir); one ``stat`` instead of four.

    ``tmp/`` and ``new/`` are proven by the ``open`` and the ``link`` themselves: when either fails
    because a directory is missing or not one, :func:`ensure_maildir` runs and the step is retried,
    so a damaged maildir is repaired or reported exactly as before.
    """
    try:
        return stat.S_ISDIR(os.stat(os.path.join(md, "cur")).st_mode)
    except OSError:
        return False


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _open_failure(exc: OSError) -> TemporaryFailure:
    if isinstance(exc, FileNotFoundError):
        return TemporaryFailure("Unable to chdir to maildir. (#4.2.1)")
    return TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)")


def deliver_maildir(
    maildir: str | os.PathLike[str],
    chunks: Iterable[bytes],
    *,
    prefix: bytes = b"",
    name: str | None = None,
    suffix: str = "",
) -> Delivered:
    """Write *prefix* (Return-Path/Delivered-To lines) and the message chunks into *maildir*.

    The final name is ``new/<unique>,S=<size><suffix>``.  The maildir is created if missing.

    Why str paths and unbuffered writes: this runs once per delivered message, and pathlib objects
    and a 64 KiB buffered writer cost more Python time than the system calls they wrap.

    Raises:
        TemporaryFailure: with the qmail-local texts (chdir, read, write errors); the tmp file is
        always removed.
    """
    md = os.fspath(maildir)
    ensured = not _maildir_ready(md)
    if ensured:
        ensure_maildir(md)
    base = name or unique_name()
    tmp = os.path.join(md, "tmp", base)
    try:
        fd = os.open(tmp, _CREATE, 0o600)
    except OSError as exc:
        if ensured or exc.errno not in _MISSING_DIR:
            raise _open_failure(exc) from None
        ensure_maildir(md)  # tmp/ missing or not a directory: repaired, or reported as corrupt
        try:
            fd = os.open(tmp, _CREATE, 0o600)
        except OSError as again:
            raise _open_failure(again) from None
    size = 0
    try:
        try:
            try:
                pending = prefix
                for chunk in chunks:
                    if pending:  # the header lines go out with the first chunk: one write fewer
                        chunk, pending = pending + chunk, b""
                    write_all(fd, chunk)
                    size += len(chunk)
                if pending:
                    write_all(fd, pending)
                    size += len(pending)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    raise
                raise TemporaryFailure("Unable to read message. (#4.3.0)") from None
            os.fsync(fd)
        except TemporaryFailure:
            raise
        except OSError:
            raise TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)") from None
        finally:
            os.close(fd)
        new = os.path.join(md, "new")
        final = os.path.join(new, f"{base},S={size}{suffix}")
        try:
            try:
                os.link(tmp, final)
            except OSError as exc:
                if exc.errno not in _MISSING_DIR:
                    raise
                ensure_maildir(md)  # new/ missing or not a directory: repaired, or reported as corrupt
                os.link(tmp, final)
            fsync_dir(new)
        except OSError:
            raise TemporaryFailure("Temporary error on maildir delivery. (#4.3.0)") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return Delivered(final, size)

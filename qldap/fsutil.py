"""File-system primitives every writer shares: write a buffer completely, make a directory entry durable.

Why one module: the injector, the Maildir writer, cdb, tcpto, the group secretary and the auth modules
all need "write everything" and "fsync the directory"; five private copies drifted in details (one
forgot ``O_CLOEXEC``), so they live once, below every package (docs/architecture.md, core modules).

This module is a core module: it imports nothing of qldap but ``errors``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qldap.errors import TemporaryFailure


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write *data* to *fd* completely (``os.write`` may write less than asked).

    Raises:
        OSError: the write failed; what was written before stays written.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_small(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a (usually small) file with open, read, close and nothing else.

    Why not ``open(path, "rb").read()``: the buffered reader adds an fstat, an ioctl and two lseeks
    per file, and the queue manager reads a few small files for every message.

    Raises:
        OSError: the file cannot be opened or read (FileNotFoundError when it is absent).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        first = os.read(fd, 65536)
        if len(first) < 65536:  # a short read of a regular file is its end
            return first
        chunks = [first]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory *path*, so a file created, linked or renamed in it survives a crash.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_maildir(path: str | os.PathLike[str]) -> None:
    """Create the maildir and its tmp/new/cur (mode 0700) when missing.

    The texts name the maildir as pathlib spells it (``/home/u/Maildir``, whatever ``./`` or trailing
    ``/`` the delivery instruction had).

    Raises:
        TemporaryFailure: a non-directory is in the way, or creation fails.
    """
    base = os.fspath(path)
    for p in (base, os.path.join(base, "tmp"), os.path.join(base, "new"), os.path.join(base, "cur")):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            try:
                os.mkdir(p, 0o700)
            except FileExistsError:
                st = os.stat(p)
            except OSError:
                raise TemporaryFailure(f"Unable to create maildir '{Path(base)}' (#4.3.0)") from None
            else:
                continue
        except OSError:
            raise TemporaryFailure(f"Unable to create maildir '{Path(base)}' (#4.3.0)") from None
        if not stat.S_ISDIR(st.st_mode):
            raise TemporaryFailure(f"The maildir '{Path(base)}' seems to be corrupted. (#4.2.1)")

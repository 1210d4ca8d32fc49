"""Read access to one queued message through an open file descriptor.

Why a descriptor and not a path: as in qmail, the spawner opens the queue file and the agent — possibly
a child running under the mailbox owner's uid, who may not open the queue — reads it through the
inherited descriptor.  ``pread`` keeps the offset untouched so one descriptor serves every instruction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 16


class MessageFile:
    """A queued message readable many times (maildir copies, programs, forwards)."""

    def __init__(self, fd: int, *, owned: bool = False) -> None:
        self.fd = fd
        self._owned = owned

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> MessageFile:
        """Open *path* read-only; the returned object closes it."""
        return cls(os.open(Path(path), os.O_RDONLY | os.O_CLOEXEC), owned=True)

    @property
    def size(self) -> int:
        """The message size in bytes."""
        return os.fstat(self.fd).st_size

    def chunks(self) -> Iterator[bytes]:
        """The whole message in chunks, from the start."""
        offset = 0
        while True:
            data = os.pread(self.fd, CHUNK, offset)
            if not data:
                return
            offset += len(data)
            yield data

    def head(self, limit: int = 1 << 20) -> bytes:
        """The header block (through the first empty line), at most *limit* bytes."""
        # chunk by chunk: one ``limit``-sized read would allocate (and map) a megabyte per delivery
        data = b""
        while len(data) < limit:
            chunk = os.pread(self.fd, min(CHUNK, limit - len(data)), len(data))
            if not chunk:
                break
            start = max(0, len(data) - 1)
            data += chunk
            end = data.find(b"\n\n", start)
            if end >= 0:
                return data[: end + 1]
        return data

    def read_all(self) -> bytes:
        """The whole message."""
        return b"".join(self.chunks())

    def rewound(self) -> int:
        """The descriptor positioned at the start, for a program's stdin."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        return self.fd

    def close(self) -> None:
        """Close the descriptor if this object opened it."""
        if self._owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> MessageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

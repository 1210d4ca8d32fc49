"""qmail-pop3d's view of one Maildir: the message list, sizes, UIDs, streamed retrieval, deletes at QUIT.

Rules (qmail-pop3d(8), SESSION): ``new/`` and ``cur/`` are listed, dot names skipped; a message's time is the
leading number of its name when non-zero and followed by ``.``, else its mtime; messages dated now or
later are not listed (a delivery still in progress must not shift the numbering); the order is by
time, ties by path.  The size is the number after the first ``,S=`` in the name, else the stat size:
stored LF byte counts, not the CRLF-expanded transfer size (kept from qmail).

Why deletes wait for :meth:`Maildrop.commit`: POP3 applies DELE only at QUIT, so a dropped connection
leaves the maildrop untouched.  Commit then unlinks, records ``-SIZE -1`` lines in an existing
``maildirsize`` and moves the remaining ``new/X`` to ``cur/X:2,`` (they have been seen).

Retrieval is a :class:`MessageStream`: the file is read in chunks and transformed line by line (CRLF
line ends, dot-stuffing, the TOP line limit), so a large message never sits in memory.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qldap.errors import QldapError, TemporaryFailure
from qldap.local.quota import parse_quota, quota_root, read_maildirsize, recalculate

TMP_MAX_AGE = 129600  # seconds since last access after which tmp/ leftovers are removed
CHUNK = 65536
_CARRY = 8192  # an unterminated line shorter than this is held back until its end is seen
_SIZE = re.compile(r",S=(\d*)")
_LEADING = re.compile(r"(\d+)\.")


class NoMaildir(QldapError):
    """The maildir does not exist or cannot be entered."""


class ScanFailed(QldapError):
    """``new/`` or ``cur/`` cannot be read."""


@dataclass(frozen=True, slots=True)
class Message:
    """One listed message: *path* relative to the maildir (``new/NAME`` or ``cur/NAME``)."""

    path: str
    size: int
    time: float

    @property
    def uid(self) -> str:
        """The UIDL value: the name without its directory and without the text from the first ``:``."""
        return self.path.split("/", 1)[1].split(":", 1)[0]


def name_size(name: str) -> int | None:
    """The digits after the first ``,S=`` in *name* (no digits → 0), or None without ``,S=``."""
    m = _SIZE.search(name)
    if m is None:
        return None
    return int(m.group(1)) if m.group(1) else 0


def name_time(name: str) -> int | None:
    """The delivery time encoded at the start of a maildir name (``1000.1.host``), None if absent or 0."""
    m = _LEADING.match(name)
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1))


def clean_tmp(root: Path, now: float) -> None:
    """Remove ``tmp/`` entries (not dot names) last accessed more than 36 hours ago; errors are ignored."""
    try:
        names = os.listdir(root / "tmp")
    except OSError:
        return
    for name in names:
        if name.startswith("."):
            continue
        path = root / "tmp" / name
        try:
            if now > os.stat(path).st_atime + TMP_MAX_AGE:
                os.unlink(path)
        except OSError:
            continue


def scan(root: Path, now: float) -> list[Message]:
    """List ``new/`` and ``cur/`` of *root* per the module rules.

    Raises:
        ScanFailed: a subdirectory cannot be read.
    """
    found: list[Message] = []
    for sub in ("new", "cur"):
        try:
            names = os.listdir(root / sub)
        except OSError as exc:
            raise ScanFailed(f"unable to scan $MAILDIR/{sub}: {exc.strerror}") from exc
        for name in names:
            if name.startswith("."):
                continue
            path = root / sub / name
            stamp: float | None = name_time(name)
            size = name_size(name)
            if stamp is None or size is None:
                try:
                    st = os.lstat(path)
                except OSError:
                    if stamp is None:
                        continue  # vanished meanwhile: not listed, as qmail
                    st = None
                if stamp is None and st is not None:
                    stamp = st.st_mtime
                if size is None:
                    size = st.st_size if st is not None else 0
            if stamp is None or stamp >= now:
                continue
            found.append(Message(f"{sub}/{name}", size, stamp))
    found.sort(key=lambda m: (m.time, m.path))
    return found


class TransferEncoder:
    """Stored message bytes → POP3 transfer bytes (CRLF, dot-stuffing, TOP limit), fed in any chunks.

    Mirrors qmail-pop3d: every LF-terminated line and a final unterminated one is sent with CRLF;
    a line starting with ``.`` gets one more ``.``; with a limit, only the headers, the blank line and
    *limit* body lines are sent.  **Decision:** a CR stored before the LF is not doubled.
    """

    def __init__(self, body_lines: int | None) -> None:
        self._remaining = None if body_lines is None else body_lines + 1  # qmail's "limit" counter
        self._in_headers = True
        self._open = False  # inside a line whose start has been emitted
        self._carry = b""
        self.done = False
        self.line_bytes = 0  # content + CRLF per line, as qmail's byte count

    def _begin(self, line_start: bytes, out: bytearray) -> bool:
        """Line-start rules; False when the limit ends the transfer here."""
        if self._remaining is not None and not self._in_headers:
            self._remaining -= 1
            if self._remaining == 0:
                self.done = True
                return False
        if line_start in (b"", b"\r"):
            self._in_headers = False
        elif line_start[:1] == b".":
            out += b"."
        self._open = True
        return True

    def _end_line(self, content: bytes, out: bytearray) -> None:
        if content.endswith(b"\r"):
            content = content[:-1]
        out += content
        out += b"\r\n"
        self.line_bytes += len(content) + 2
        self._open = False

    def feed(self, data: bytes) -> bytes:
        """Transform the next stored bytes; returns what can be sent now."""
        buf = self._carry + data
        self._carry = b""
        out = bytearray()
        pos = 0
        while not self.done:
            lf = buf.find(b"\n", pos)
            if lf >= 0:
                segment = buf[pos:lf]
                if not self._open and not self._begin(segment, out):
                    break
                self._end_line(segment, out)
                pos = lf + 1
                continue
            rest = buf[pos:]
            if not self._open:
                if len(rest) < _CARRY:
                    self._carry = rest
                    break
                if not self._begin(rest, out):
                    break
            # the line goes on: send it, holding back a final CR that may precede the LF
            if rest.endswith(b"\r"):
                rest, self._carry = rest[:-1], b"\r"
            out += rest
            self.line_bytes += len(rest)
            break
        return bytes(out)

    def finish(self) -> bytes:
        """End of the stored message: the final unterminated line, then ``\\r\\n.\\r\\n``."""
        out = bytearray()
        if not self.done and (self._open or self._carry) and (self._open or self._begin(self._carry, out)):
            self._end_line(self._carry, out)
        self._carry = b""
        self.done = True
        out += b"\r\n.\r\n"
        return bytes(out)


def transcode(data: bytes, body_lines: int | None = None) -> bytes:
    """The whole transfer form of a stored message held in memory (tests, small messages)."""
    t = TransferEncoder(body_lines)
    return t.feed(data) + t.finish()


class MessageStream:
    """An opened message, iterated as transfer chunks; closes its file when exhausted or closed."""

    def __init__(self, path: Path, body_lines: int | None) -> None:
        """Open *path*: a regular file, never through a symlink.

        Why: a session may run with more privileges than the mailbox owner, who could otherwise plant
        ``cur/x -> /etc/shadow``; deliveries never create links, so refusing them costs nothing.

        Raises:
            OSError: the file cannot be opened, is a symlink or is not a regular file.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            self._file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        self._codec = TransferEncoder(body_lines)

    @property
    def line_bytes(self) -> int:
        """Bytes of message lines sent so far (for the logout accounting line)."""
        return self._codec.line_bytes

    def __iter__(self) -> Iterator[bytes]:
        try:
            while not self._codec.done:
                data = self._file.read(CHUNK)
                if not data:
                    break
                out = self._codec.feed(data)
                if out:
                    yield out
            yield self._codec.finish()
        finally:
            self.close()

    def close(self) -> None:
        """Release the file (idempotent)."""
        self._file.close()


class Maildrop:
    """The messages of one session and their deletion marks (0-based indexes)."""

    def __init__(self, root: Path, messages: list[Message]) -> None:
        self.root = root
        self.messages = tuple(messages)
        self._deleted: set[int] = set()

    @classmethod
    def open(cls, root: Path, *, now: float | None = None) -> Maildrop:
        """Clean ``tmp/`` and scan *root* (an absolute maildir path).

        Raises:
            NoMaildir: *root* is not an accessible directory.
            ScanFailed: ``new/`` or ``cur/`` cannot be read.
        """
        if not os.path.isdir(root) or not os.access(root, os.X_OK):
            raise NoMaildir(f"unable to enter {root}")
        stamp = time.time() if now is None else now
        clean_tmp(root, stamp)
        return cls(root, scan(root, stamp))

    def __len__(self) -> int:
        return len(self.messages)

    def is_deleted(self, index: int) -> bool:
        """True when message *index* carries a deletion mark."""
        return index in self._deleted

    def delete(self, index: int) -> None:
        """Mark message *index* for deletion at commit."""
        self._deleted.add(index)

    def reset(self) -> None:
        """Remove every deletion mark (RSET)."""
        self._deleted.clear()

    def stat(self) -> tuple[int, int]:
        """(count, total size) of the messages not marked deleted."""
        live = [m for i, m in enumerate(self.messages) if i not in self._deleted]
        return len(live), sum(m.size for m in live)

    def listing(self) -> list[tuple[int, Message]]:
        """(1-based number, message) for every message not marked deleted."""
        return [(i + 1, m) for i, m in enumerate(self.messages) if i not in self._deleted]

    def open_message(self, index: int, body_lines: int | None = None) -> MessageStream:
        """Open message *index* for transfer; *body_lines* limits the body as TOP does.

        Raises:
            OSError: the file cannot be opened (the session answers ``unable to open that message``).
        """
        return MessageStream(self.root / self.messages[index].path, body_lines)

    def commit(self, quota_text: str | None, *, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Apply the deletion marks (QUIT); False when some message could not be unlinked.

        *quota_text* is ``MAILDIRQUOTA``.  ``maildirsize`` is rebuilt from disk first when a quota is
        set and the file is missing or was written for other limits; with neither quota nor file
        nothing is recorded.  **Decision:** a journal line is written only for a message this call
        actually unlinked, and a message already gone (another session removed it) is not a failure.
        """
        size_file = self._size_file(quota_text, sleep)
        ok = True
        removed: list[int] = []
        for i in sorted(self._deleted):
            message = self.messages[i]
            try:
                os.unlink(self.root / message.path)
            except FileNotFoundError:
                continue
            except OSError:
                ok = False
                continue
            removed.append(message.size)
        if size_file is not None and removed:
            _append(size_file, "".join(f"-{size} -1\n" for size in removed))
        for i, message in enumerate(self.messages):
            if i not in self._deleted and message.path.startswith("new/"):
                try:
                    os.rename(self.root / message.path, self.root / f"cur/{message.path[4:]}:2,")
                except OSError:
                    pass  # still listed next time from new/
        self._deleted.clear()
        return ok

    def _size_file(self, quota_text: str | None, sleep: Callable[[float], None]) -> Path | None:
        quota = parse_quota(quota_text)
        try:
            root = quota_root(self.root)
        except TemporaryFailure:
            return None
        current = read_maildirsize(root)
        if quota.active and (current is None or parse_quota(current[0]) != quota):
            try:
                recalculate(root, quota, sleep=sleep)
            except TemporaryFailure:
                return None
        elif current is None:
            return None
        return root / "maildirsize"


def _append(path: Path, text: str) -> None:
    """Append *text* to the journal and sync it; best effort (the next recount repairs a failure).

    Never through a symlink, for the reason given in :class:`MessageStream`.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""The NUL-terminated one-letter record codec shared by the queue, the manager and smtpd.

qmail's envelopes and channel files are sequences of records ``<letter><value>\\0`` (``Fa@x\\0Tb@y\\0``)
with no newlines and no escaping: a value can never contain NUL.  Everything is bytes because
addresses may carry any 8-bit byte; text conversion (UTF-8 with ``surrogateescape``, so every byte
string round-trips) is offered by :func:`to_text` / :func:`to_bytes` for the callers that want ``str``.

An empty record (a lone NUL) is meaningful in one place — the end marker of the injector's fd-1
envelope — so :func:`iterate` yields it as a :class:`Record` with ``code == ""`` and lets the caller
decide.  :class:`Splitter` is the incremental form for reading a stream with a per-record size bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from qldap.errors import QldapError

NUL = b"\0"
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class RecordError(QldapError):
    """Record data is malformed: an unterminated tail, a NUL inside a value, a bad record letter."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record: its letter (``""`` for the empty end marker), its value, and where it starts.

    ``offset`` is the position of the letter in the decoded data, so a channel file's ``T`` can be
    overwritten in place by ``D``.
    """

    code: str
    value: bytes
    offset: int = 0

    @property
    def text(self) -> str:
        """The value as text (UTF-8, undecodable bytes kept as surrogates)."""
        return to_text(self.value)


def to_text(value: bytes) -> str:
    """Bytes → str losslessly (UTF-8 with ``surrogateescape``)."""
    return value.decode(_ENCODING, _ERRORS)


def to_bytes(value: str | bytes) -> bytes:
    """str → bytes, the exact inverse of :func:`to_text`; bytes pass through."""
    return value if isinstance(value, bytes) else value.encode(_ENCODING, _ERRORS)


def encode(code: str, value: str | bytes = b"") -> bytes:
    """One record: ``code`` + ``value`` + NUL.

    Raises:
        RecordError: *code* is not one ASCII letter, or the value contains NUL.
    """
    if len(code) != 1 or not code.isascii() or not code.isalpha():
        raise RecordError(f"record code must be one ASCII letter, not {code!r}")
    raw = to_bytes(value)
    if NUL in raw:
        raise RecordError("record value contains NUL")
    return code.encode("ascii") + raw + NUL


def encode_all(records: Iterable[tuple[str, str | bytes]]) -> bytes:
    """Several records concatenated, each as :func:`encode` makes it.

    Raises:
        RecordError: as :func:`encode`.
    """
    return b"".join(encode(code, value) for code, value in records)


def iterate(data: bytes) -> Iterator[Record]:
    """Each NUL-terminated record of *data* in order; an empty one has ``code == ""``.

    Raises:
        RecordError: *data* ends with bytes not terminated by NUL (a truncated record).
    """
    pos = 0
    end = len(data)
    while pos < end:
        nul = data.find(NUL, pos)
        if nul < 0:
            raise RecordError(f"unterminated record at byte {pos}")
        if nul == pos:
            yield Record("", b"", pos)
        else:
            yield Record(chr(data[pos]), data[pos + 1 : nul], pos)
        pos = nul + 1


def decode(data: bytes) -> tuple[Record, ...]:
    """Every record of *data* (see :func:`iterate`).

    Raises:
        RecordError: a truncated final record.
    """
    return tuple(iterate(data))


class Splitter:
    """Incremental splitter: stream chunks in, complete records (without their NUL) out.

    Sans-I/O: the caller reads, feeds and asks :attr:`pending` at EOF.  A record may be at most
    *limit* bytes before its NUL (letter included).  A longer one stops the splitter as soon as that is
    certain, without buffering the rest of a hostile stream: the records before it are still returned
    (callers check them in order first), and :attr:`overflow` then holds the start of the long record.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.overflow: bytes | None = None

    @property
    def pending(self) -> bytes:
        """Bytes received after the last NUL (non-empty at EOF means a truncated record)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return the records it completed, each without its terminating NUL.

        After an overflow nothing more is returned; see :attr:`overflow`.
        """
        out: list[bytes] = []
        if self.overflow is not None:
            return out
        start = 0
        while True:
            nul = data.find(NUL, start)
            if nul < 0:
                break
            if self._buf:
                self._buf += data[start:nul]
                rec = bytes(self._buf)
                self._buf.clear()
            else:
                rec = data[start:nul]
            if len(rec) > self.limit:
                self.overflow = rec[:16]
                return out
            out.append(rec)
            start = nul + 1
        self._buf += data[start:]
        if len(self._buf) > self.limit:
            self.overflow = bytes(self._buf[:16])
            self._buf.clear()
        return out

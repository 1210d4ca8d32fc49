"""Turn the client's bytes into SMTP events: command lines, then DATA chunks; no sockets, no policy.

The reader is sans-I/O (h11 style): the glue calls :meth:`SmtpReader.receive_data` with whatever the
socket produced (``b""`` at EOF) and then :meth:`SmtpReader.next_event` until it returns None (more
bytes needed).  Events are handed out one at a time because the glue changes the reader's mode in
between: after ``354`` it calls :meth:`begin_data`, after ``STARTTLS`` it calls
:meth:`discard_buffered`.  Bytes a pipelining client sent behind a command simply wait in the buffer.

Command lines (qmail-smtpd(8), COMMANDS): a line ends at LF, one CR before it is dropped, and everything
from its first NUL on is ignored, as qmail-smtpd's C strings ignored it (so a NUL can never reach the
NUL-separated queue envelope, nor an LF a log line); a line over 16384 octets is :class:`TooLong`.

DATA (qmail-smtpd(8), DATA) is the hot path, so the body is converted in bulk with
``bytes.find``/``replace``/``count`` over all complete lines at once, never per line: CRLF → LF, a leading dot
removed, a lone CR kept, the end at CRLF ``.`` CRLF (data start counts as after CRLF), any LF without CR →
:class:`BareLF` (this blocks ``\\n.\\n`` smuggling).  Only the header (before the first empty line) is walked
line by line, for the 10000-octet header line limit and the ``Received``/``Delivered`` hop count.  Converted
bytes leave as :class:`DataChunk` events as soon as they are complete, so a 20 MB message is never held
twice; bytes beyond ``databytes`` are counted but dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_COMMAND = 16384  # octets in a command line, terminator not counted
MAX_HEADER_LINE = 10000  # octets in a header line including its CRLF
_SPILL = 65536  # a body line longer than this is passed on before its end arrives


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: ``verb`` upper-cased, ``arg`` after the first space (blanks skipped).

    ``line`` is the whole line (without CR LF): the AUTH exchange reads its responses from it.
    Text is decoded as UTF-8 with ``surrogateescape`` so arbitrary octets survive a round trip.
    """

    verb: str
    arg: str
    line: str


@dataclass(frozen=True, slots=True)
class TooLong:
    """A command line over 16384 octets: answer ``500 Text line too long.`` and close."""


@dataclass(frozen=True, slots=True)
class Eof:
    """The client closed its side (any unfinished line is dropped)."""


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Converted message bytes (LF line ends) to append to the queued message, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The final ``.`` arrived: what the data-end verdict needs.

    ``size`` counts every converted octet, including those dropped after ``databytes`` was passed.
    """

    size: int
    hops: int
    too_big: bool


@dataclass(frozen=True, slots=True)
class BareLF:
    """An LF without CR in the data: answer the smtplf.html 451 and close; nothing is queued."""


@dataclass(frozen=True, slots=True)
class HeaderTooLong:
    """A header line over 10000 octets including CRLF: answer ``500 Text line too long.`` and close."""


Event = Command | TooLong | Eof | DataChunk | DataEnd | BareLF | HeaderTooLong


class _Stop(enum.Enum):
    """Why a conversion pass stopped early."""

    END = "end"
    BARE_LF = "bare-lf"
    TOO_LONG = "too-long"


class _Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    DEAD = "dead"  # a fatal event was produced; the connection is closing


class SmtpReader:
    """Client bytes in, command and DATA events out; see the module docstring for the protocol."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._mode = _Mode.COMMAND
        self._reset_data(0)

    # -- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the client; ``b""`` means EOF."""
        if data:
            self._buf += data
        else:
            self._eof = True

    def discard_buffered(self) -> None:
        """Forget unread input (STARTTLS: commands pipelined behind it must not be obeyed)."""
        self._buf.clear()

    def begin_data(self, databytes: int = 0) -> None:
        """Switch to the DATA phase (after ``354``); *databytes* ≠ 0 limits the stored size."""
        self._mode = _Mode.DATA
        self._reset_data(databytes)

    @property
    def in_data(self) -> bool:
        """True between :meth:`begin_data` and the :class:`DataEnd` (or fatal) event."""
        return self._mode is _Mode.DATA

    @property
    def buffered(self) -> int:
        """Octets received but not yet turned into events."""
        return len(self._buf)

    # -- output ---------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed."""
        if self._mode is _Mode.COMMAND:
            return self._next_command()
        if self._mode is _Mode.DATA:
            return self._next_data()
        return None

    def _next_command(self) -> Event | None:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > MAX_COMMAND:
                self._mode = _Mode.DEAD
                return TooLong()
            if self._eof:
                self._mode = _Mode.DEAD
                buf.clear()
                return Eof()
            return None
        end = nl - 1 if nl and buf[nl - 1] == 13 else nl
        if end > MAX_COMMAND:
            self._mode = _Mode.DEAD
            return TooLong()
        raw = bytes(buf[:end])
        del buf[: nl + 1]
        nul = raw.find(b"\0")
        if nul >= 0:
            raw = raw[:nul]
        line = raw.decode("utf-8", "surrogateescape")
        sp = line.find(" ")
        if sp < 0:
            return Command(line.upper(), "", line)
        return Command(line[:sp].upper(), line[sp + 1 :].lstrip(" "), line)

    # -- DATA -----------------------------------------------------------------------------------

    def _reset_data(self, databytes: int) -> None:
        self._databytes = databytes
        self._size = 0
        self._hops = 0
        self._in_header = True
        self._line_start = True  # the next byte begins a line (data start counts as after CRLF)
        self._pending: DataEnd | None = None  # the end, held back until its last chunk is taken

    def _next_data(self) -> Event | None:
        if self._pending is not None:
            end, self._pending = self._pending, None
            self._mode = _Mode.COMMAND
            return end
        out = bytearray()
        stop = self._header_lines(out) if self._in_header else None
        if stop is None and not self._in_header:
            stop = self._body(out)
        if stop is _Stop.BARE_LF or stop is _Stop.TOO_LONG:
            self._mode = _Mode.DEAD
            return BareLF() if stop is _Stop.BARE_LF else HeaderTooLong()
        self._account(out)
        if stop is _Stop.END:
            self._pending = self._data_end()
        if out:
            return DataChunk(bytes(out))
        if self._pending is not None:
            return self._next_data()
        if self._eof:
            self._mode = _Mode.DEAD
            return Eof()
        return None

    def _account(self, out: bytearray) -> None:
        """Count *out* against databytes; keep in it only the octets that still fit."""
        before = self._size
        self._size += len(out)
        limit = self._databytes
        if limit and self._size > limit:
            del out[max(0, limit - before) :]

    def _data_end(self) -> DataEnd:
        return DataEnd(self._size, self._hops, bool(self._databytes) and self._size > self._databytes)

    def _header_lines(self, out: bytearray) -> _Stop | None:
        """Convert whole header lines into *out* until the header ends, the data ends or bytes run out."""
        buf = self._buf
        pos = 0
        result: _Stop | None = None
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_HEADER_LINE:
                    result = _Stop.TOO_LONG
                break
            if nl == pos or buf[nl - 1] != 13:
                result = _Stop.BARE_LF
                break
            length = nl + 1 - pos
            if length > MAX_HEADER_LINE:
                result = _Stop.TOO_LONG
                break
            start = pos
            if self._line_start and buf[pos] == 46:  # "."
                if length == 3:  # ".\r\n": end of data
                    pos = nl + 1
                    result = _Stop.END
                    break
                start += 1
            self._count_hop(buf, start)
            out += buf[start : nl - 1]
            out += b"\n"
            pos = nl + 1
            self._line_start = True
            if nl - 1 == start:  # the empty line: the header is over
                self._in_header = False
                break
        del buf[:pos]
        return result

    def _count_hop(self, buf: bytearray, start: int) -> None:
        first = buf[start : start + 9].lower()
        if first.startswith(b"received") or first == b"delivered":
            self._hops += 1

    def _body(self, out: bytearray) -> _Stop | None:
        """Convert every complete body line in bulk into *out*; stop at the end marker."""
        buf = self._buf
        if self._line_start and buf[:3] == b".\r\n":
            del buf[:3]
            return _Stop.END
        marker = buf.find(b"\r\n.\r\n")
        if marker >= 0:
            seg_end, consumed, result = marker + 2, marker + 5, _Stop.END
        else:
            last = buf.rfind(b"\n")
            if last < 0 and len(buf) > _SPILL:
                self._spill(out)
                return None
            seg_end, consumed, result = last + 1, last + 1, None
        if seg_end <= 0:
            return None
        seg = bytes(buf[:seg_end])
        del buf[:consumed]
        if seg.count(b"\n") != seg.count(b"\r\n") or seg[0] == 10:
            return _Stop.BARE_LF
        if self._line_start and seg[0] == 46:
            seg = seg[1:]
        seg = seg.replace(b"\r\n.", b"\r\n").replace(b"\r\n", b"\n")
        out += seg
        self._line_start = True
        return result

    def _spill(self, out: bytearray) -> None:
        """Pass on most of a very long unfinished body line (no LF yet), keeping a trailing CR."""
        buf = self._buf
        start = 1 if self._line_start and buf[0] == 46 else 0
        cut = len(buf) - 1 if buf[-1] == 13 else len(buf)
        out += buf[start:cut]
        del buf[:cut]
        self._line_start = False

"""Sans-I/O POP3 framing: client bytes in, command events out, plus the effects both POP3 machines emit.

The framing follows qmail's shared command loop: a line ends at LF and one CR before it is dropped;
the verb is everything up to the first space and is matched case-insensitively; the argument is the
rest after the run of spaces.  A NUL ends the line early, as the C string handling did (so a NUL can
never smuggle a field separator into the descriptor-3 record).

**Decision:** qmail had no line limit; here a line longer than :data:`MAX_LINE` bytes is dropped up to
its LF and reported once as :class:`TooLong`, so a client cannot make the server buffer without bound.

The effect records (:class:`Reply`, :class:`Close`) live here because both ``popup`` and ``session``
emit them and the asyncio glue consumes them from either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINE = 1024  # bytes including the LF; RFC 2449 asks for 255, passwords may need more


@dataclass(frozen=True, slots=True)
class Command:
    """One complete command line: *verb* lower-cased (ASCII), *arg* as sent after the spaces.

    *line* is the whole line as sent (SASL responses are not commands); neither it nor *arg* appears
    in the repr, since either may hold a password.
    """

    verb: str
    arg: bytes = field(repr=False)
    line: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line over :data:`MAX_LINE` bytes was discarded."""


Event = Command | TooLong


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes to write to the client, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Flush what was emitted so far, then end the connection."""


def parse_line(line: bytes) -> Command:
    """Split one line (LF and CR already removed) into verb and argument as qmail's command loop does."""
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    verb, _sep, rest = line.partition(b" ")
    return Command(verb.lower().decode("latin-1"), rest.lstrip(b" "), line)


class CommandReader:
    """Client bytes in, :data:`Event` records out; no sockets, no policy."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._discarding = False

    def receive(self, data: bytes) -> None:
        """Append *data* to the buffer without parsing it yet."""
        self._buf += data

    def next_event(self) -> Event | None:
        """The next complete event, or None when more bytes are needed."""
        while True:
            lf = self._buf.find(b"\n")
            if lf < 0:
                if len(self._buf) >= self._max:
                    self._buf.clear()
                    if not self._discarding:
                        self._discarding = True
                        return TooLong()
                return None
            if self._discarding:
                self._discarding = False
                del self._buf[: lf + 1]
                continue
            if lf + 1 > self._max:
                del self._buf[: lf + 1]
                return TooLong()
            line = bytes(self._buf[:lf])
            del self._buf[: lf + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            return parse_line(line)

    def feed(self, data: bytes) -> list[Event]:
        """Append *data* and return every event completed by it (possibly none)."""
        self.receive(data)
        events: list[Event] = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def take_pending(self) -> bytes:
        """Remove and return the bytes after the last complete line (input for the next stage)."""
        if self._discarding:
            self._buf.clear()
            return b""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def discard(self) -> None:
        """Forget everything buffered; used at STLS so plaintext sent early is never honoured."""
        self._buf.clear()
        self._discarding = False

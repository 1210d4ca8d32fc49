"""The envelope and its four on-disk shapes: injector fd 1, ``todo``/``intd``, ``info``, channel files.

Formats (qldap-queue(5), Records), all NUL-terminated one-letter records (:mod:`qldap.records`):

* injector input: ``F<sender>\\0`` ``T<rcpt>\\0``… then one extra ``\\0``;
* ``todo/N`` (= ``intd/N``): ``u<uid>\\0p<pid>\\0F<sender>\\0T<rcpt>\\0``… (no final extra NUL);
* ``info/S/N``: ``F<sender>\\0``;
* ``local/S/N``, ``remote/S/N``: ``T<addr>\\0`` per recipient, the ``T`` becoming ``D`` when done.

The injector-input reader is sans-I/O (:class:`InputReader`) and maps format errors to the injector's
exit codes exactly as qmail-queue checks them, in stream order: a wrong first letter is 91 even if the
record is also too long, a record longer than 1002 address bytes is 11, EOF before the end is 54.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from qldap.address import Address
from qldap.queue.codes import QueueError, QueueExit
from qldap.records import NUL, Record, RecordError, Splitter, decode, encode, to_bytes, to_text

MAX_ADDRESS = 1002  # bytes in one envelope address; one more is exit 11
_READ_SIZE = 8192


@dataclass(frozen=True, slots=True)
class Envelope:
    """Sender (``""`` for the null sender) and recipients, in order."""

    sender: str
    recipients: tuple[str, ...]


def check_address(address: str) -> bytes:
    """*address* as envelope bytes.

    Raises:
        QueueError: 11 when longer than 1002 bytes, 91 when it contains NUL.
    """
    raw = to_bytes(address)
    if len(raw) > MAX_ADDRESS:
        raise QueueError(QueueExit.ADDRESS_TOO_LONG, f"address of {len(raw)} bytes")
    if NUL in raw:
        raise QueueError(QueueExit.ENVELOPE_FORMAT, "NUL in address")
    return raw


def format_input(envelope: Envelope) -> bytes:
    """The injector's fd-1 input for *envelope*: ``F…\\0T…\\0…\\0``.

    Raises:
        RecordError: an address contains NUL.
    """
    parts = [encode("F", envelope.sender)]
    parts.extend(encode("T", rcpt) for rcpt in envelope.recipients)
    parts.append(NUL)
    return b"".join(parts)


class InputReader:
    """Sans-I/O reader of the injector's fd-1 envelope; feed chunks, then :meth:`finish` at EOF.

    Once :attr:`done` is true the envelope is complete; bytes after the final NUL are ignored.
    """

    def __init__(self) -> None:
        self._splitter = Splitter(MAX_ADDRESS + 1)
        self._sender: str | None = None
        self._recipients: list[str] = []
        self.done = False

    def feed(self, data: bytes) -> None:
        """Consume *data*.

        Raises:
            QueueError: 91 (record letter), 11 (address too long).
        """
        if self.done:
            return
        for rec in self._splitter.feed(data):
            if self._take(rec):
                return
        overflow = self._splitter.overflow
        if overflow is not None:
            self._check_letter(overflow[:1])
            raise QueueError(QueueExit.ADDRESS_TOO_LONG, "envelope address over 1002 bytes")

    def _check_letter(self, letter: bytes) -> None:
        want = b"F" if self._sender is None else b"T"
        if letter and letter != want:
            raise QueueError(QueueExit.ENVELOPE_FORMAT, f"expected {want.decode()} record")

    def _take(self, rec: bytes) -> bool:
        """Consume one record; True when it was the final empty one."""
        if not rec:
            if self._sender is None:  # qmail-queue: the first byte must be F
                raise QueueError(QueueExit.ENVELOPE_FORMAT, "expected F record")
            self.done = True
            return True
        self._check_letter(rec[:1])
        if self._sender is None:
            self._sender = to_text(rec[1:])
        else:
            self._recipients.append(to_text(rec[1:]))
        return False

    def finish(self) -> Envelope:
        """The envelope, at EOF.

        Raises:
            QueueError: 91 when the pending bytes start with a wrong letter, else 54 (EOF before the
                final NUL).
        """
        if not self.done:
            pending = self._splitter.pending
            if pending:
                self._check_letter(pending[:1])
            raise QueueError(QueueExit.READ_ERROR, "envelope ended before its final NUL")
        assert self._sender is not None
        return Envelope(self._sender, tuple(self._recipients))


def read_input(read: Callable[[int], bytes]) -> Envelope:
    """Read the fd-1 envelope with *read* (``os.read``-like: ``b""`` at EOF) until its final NUL.

    Raises:
        QueueError: 91, 11, or 54 (EOF too early or a read error).
    """
    reader = InputReader()
    while not reader.done:
        try:
            chunk = read(_READ_SIZE)
        except OSError as exc:
            raise QueueError(QueueExit.READ_ERROR, f"envelope: {exc.strerror or exc}") from exc
        if not chunk:
            return reader.finish()
        reader.feed(chunk)
    return reader.finish()


def bigbrother_copies(envelope: Envelope, watch: Mapping[str, str]) -> tuple[str, ...]:
    """The extra recipients ``control/bigbrother`` adds for *envelope* (qmail-queue(8)).

    For the sender, then each recipient: the whole address (case-insensitive), else ``@domain``;
    a hit with a non-empty value adds that copy address once for this envelope address.
    *watch* has lower-case keys (as :meth:`ControlDir.mapping` returns them).
    """
    if not watch:
        return ()
    out: list[str] = []
    for addr in (envelope.sender, *envelope.recipients):
        key = addr.lower()
        copy = watch.get(key)
        if copy is None and "@" in key:
            copy = watch.get("@" + Address.parse(key).domain)
        if copy:
            out.append(copy)
    return tuple(out)


# -- todo / intd --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TodoEntry:
    """The content of ``todo/N``: injecting uid, injector pid (``qp``), envelope."""

    uid: int
    pid: int
    envelope: Envelope


class UnknownRecord(RecordError):
    """A queue file holds a record letter its format does not know (logged, message retried later)."""

    def __init__(self, letter: str) -> None:
        super().__init__(f"unknown record type {letter!r}")
        self.letter = letter


def format_todo(entry: TodoEntry, extra: Iterable[str] = ()) -> bytes:
    """``u…\\0p…\\0F…\\0T…\\0``… with *extra* recipients (bigbrother copies) after the envelope's.

    Raises:
        RecordError: an address contains NUL.
    """
    parts = [encode("u", str(entry.uid)), encode("p", str(entry.pid)), encode("F", entry.envelope.sender)]
    parts.extend(encode("T", rcpt) for rcpt in entry.envelope.recipients)
    parts.extend(encode("T", rcpt) for rcpt in extra)
    return b"".join(parts)


def _number(rec: Record) -> int:
    if not rec.value.isdigit():
        raise RecordError(f"bad {rec.code} record {rec.value!r}")
    return int(rec.value)


def parse_todo(data: bytes) -> TodoEntry:
    """Parse ``todo/N``; a missing ``u``/``p`` reads as 0.

    Raises:
        UnknownRecord: a letter other than u, p, F, T.
        RecordError: truncated data, no ``F`` record, a non-numeric ``u``/``p``.
    """
    uid = pid = 0
    sender: str | None = None
    rcpts: list[str] = []
    for rec in decode(data):
        if rec.code == "u":
            uid = _number(rec)
        elif rec.code == "p":
            pid = _number(rec)
        elif rec.code == "F":
            sender = rec.text
        elif rec.code == "T":
            rcpts.append(rec.text)
        else:
            raise UnknownRecord(rec.code)
    if sender is None:
        raise RecordError("no F record")
    return TodoEntry(uid, pid, Envelope(sender, tuple(rcpts)))


# -- info ---------------------------------------------------------------------------------------


def format_info(sender: str) -> bytes:
    """``info/S/N``: ``F<sender>\\0``.

    Raises:
        RecordError: the sender contains NUL.
    """
    return encode("F", sender)


def parse_info(data: bytes) -> str:
    """The sender recorded in ``info/S/N``.

    Raises:
        UnknownRecord: a letter other than F.
        RecordError: truncated, or no F record.
    """
    for rec in decode(data):
        if rec.code != "F":
            raise UnknownRecord(rec.code)
        return rec.text
    raise RecordError("no F record")


# -- local / remote channel files ---------------------------------------------------------------

DONE = b"D"
NOT_DONE = b"T"


@dataclass(frozen=True, slots=True)
class ChannelEntry:
    """One recipient of a channel file; ``offset`` is where its letter is, for the in-place mark."""

    address: str
    done: bool
    offset: int


def format_channel(addresses: Iterable[str]) -> bytes:
    """``T<addr>\\0`` per recipient (all not done).

    Raises:
        RecordError: an address contains NUL.
    """
    return b"".join(encode("T", addr) for addr in addresses)


def parse_channel(data: bytes) -> tuple[ChannelEntry, ...]:
    """Every recipient of a ``local``/``remote`` file with its done mark and offset.

    Raises:
        UnknownRecord: a letter other than T and D.
        RecordError: a truncated final record.
    """
    out: list[ChannelEntry] = []
    for rec in decode(data):
        if rec.code not in ("T", "D"):
            raise UnknownRecord(rec.code)
        out.append(ChannelEntry(rec.text, rec.code == "D", rec.offset))
    return tuple(out)

"""QMQP client (qmail-qmqpc's role): hand one message with its envelope to a QMQP server, get a caller text.

QMQP is qmail's cluster transport: one request, a netstring holding the message netstring, the
sender netstring and one netstring per recipient; one reply, a netstring whose first ``K``/``Z``/``D``
decides.  The result is expressed as qmail-qmqpc's exit code turned into the caller text of
qmail-queue(8) EXIT STATUS (:func:`~qldap.queue.codes.caller_text`): ``""`` accepted, ``D…`` refused for good
(31, also for a host that does not exist), ``Z…`` try later (71 refused for now or DNS trouble,
72/73 connect timed out/refused, 74 the dialogue broke).

Why parts instead of bytes: cluster forwarding sends a new header line in front of a queued
message file; a netstring needs the total length up front, which the parts give without reading the
file into memory (:class:`MessageParts`).  The netstring codec here is shared with ``qmail-qmqpd``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qldap.control.files import ControlDir
from qldap.queue.codes import QueueExit, caller_text
from qldap.records import to_bytes
from qldap.remote.dns import DnsResolver, Resolver
from qldap.remote.routes import DnsStatus, ip_literal

QMQP_PORT = 628
IO_TIMEOUT = 60
CHUNK = 65536
MAX_LENGTH_DIGITS = 12  # a netstring length prefix longer than this is not a length


class NetstringError(ValueError):
    """Bytes that are not a well-formed netstring (sequence)."""


def netstring(data: bytes) -> bytes:
    """``<len>:<data>,``."""
    return b"%d:%s," % (len(data), data)


def parse_netstrings(data: bytes) -> list[bytes]:
    """Split a concatenation of netstrings into their payloads.

    Raises:
        NetstringError: a length prefix, colon, payload or comma is missing or wrong.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        colon = data.find(b":", pos, pos + MAX_LENGTH_DIGITS + 1)
        digits = data[pos:colon]
        if colon < 0 or not digits.isdigit():
            raise NetstringError("bad netstring length")
        end = colon + 1 + int(digits)
        if end >= len(data) or data[end : end + 1] != b",":
            raise NetstringError("netstring without its comma")
        out.append(data[colon + 1 : end])
        pos = end + 1
    return out


async def read_netstring_length(reader: asyncio.StreamReader) -> int:
    """Read ``<len>:`` from *reader*.

    Raises:
        NetstringError: no digits, too many digits, or another byte than ``:`` after them.
        asyncio.IncompleteReadError: the stream ended.
    """
    digits = b""
    while True:
        ch = await reader.readexactly(1)
        if ch == b":":
            break
        if not ch.isdigit() or len(digits) >= MAX_LENGTH_DIGITS:
            raise NetstringError("bad netstring length")
        digits += ch
    if not digits:
        raise NetstringError("empty netstring length")
    return int(digits)


@dataclass(frozen=True, slots=True)
class MessageParts:
    """A message as byte strings and files to be sent in order (files are streamed, not loaded)."""

    parts: tuple[bytes | Path, ...]

    @classmethod
    def of(cls, message: bytes | Path | MessageParts) -> MessageParts:
        """Wrap bytes or a file; parts stay as they are."""
        return message if isinstance(message, MessageParts) else cls((message,))

    def size(self) -> int:
        """Total bytes.

        Raises:
            OSError: a file cannot be examined.
        """
        return sum(len(p) if isinstance(p, bytes) else os.stat(p).st_size for p in self.parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes in pieces of at most :data:`CHUNK` (files read off the event loop).

        Raises:
            OSError: a file cannot be read.
        """
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
                continue
            with open(part, "rb") as fh:
                while chunk := await asyncio.to_thread(fh.read, CHUNK):
                    yield chunk


@dataclass(frozen=True, slots=True)
class QmqpSettings:
    """Client settings: source address (``qmqpcip``), connect and I/O timeouts, server port."""

    bind: str = "0.0.0.0"
    timeoutconnect: float = 60
    timeout: float = IO_TIMEOUT
    port: int = QMQP_PORT

    @classmethod
    def from_control(cls, ctl: ControlDir, port: int = QMQP_PORT) -> QmqpSettings:
        """``qmqpcip`` (an unparsable value means the wildcard) and ``timeoutconnect``.

        Raises:
            ConfigError: a control file is unreadable.
        """
        bind = ctl.line("qmqpcip") or "0.0.0.0"
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            bind = "0.0.0.0"
        return cls(bind=bind, timeoutconnect=ctl.integer("timeoutconnect", 60), port=port)


def encode_envelope(sender: str, recipients: Sequence[str]) -> bytes:
    """The netstrings after the message: the sender's, then one per recipient."""
    return netstring(to_bytes(sender)) + b"".join(netstring(to_bytes(r)) for r in recipients)


async def _servers(target: str | Sequence[str], resolver: Resolver | None) -> list[str] | int:
    """The addresses to try, or the exit code when DNS decides already."""
    if not isinstance(target, str):
        return [ip for ip in (ip_literal(t) for t in target) if ip is not None]
    literal = ip_literal(target)
    if literal is not None:
        return [literal]
    answer = await (resolver or DnsResolver()).addresses(target)
    if answer.status is DnsStatus.TEMPFAIL:
        return QueueExit.REJECTED_TEMPORARILY
    if answer.status is DnsStatus.NXDOMAIN or not answer.addresses:
        return QueueExit.REJECTED_PERMANENTLY
    return [answer.addresses[0]]


class _ReadFailed(Exception):
    """The message could not be read while sending it."""


async def _body_chunks(body: MessageParts) -> AsyncIterator[bytes]:
    try:
        async for chunk in body.chunks():
            yield chunk
    except OSError as exc:
        raise _ReadFailed(str(exc)) from exc


async def _one_server(ip: str, body: MessageParts, size: int, tail: bytes, settings: QmqpSettings) -> int:
    """Submit to one server: its exit code; 72/73 mean it did not connect (the next one is tried).

    Raises:
        _ReadFailed: the message could not be read.
    """
    bind = ipaddress.ip_address(settings.bind)
    same_family = bind.version == ipaddress.ip_address(ip).version
    local = (settings.bind, 0) if same_family and not bind.is_unspecified else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ip, settings.port, local_addr=local), settings.timeoutconnect
        )
    except TimeoutError:
        return QueueExit.CONNECT_TIMEOUT
    except OSError:
        return QueueExit.CONNECT_REFUSED
    try:
        inner = len(str(size)) + 1 + size + 1 + len(tail)  # netstring(message) + envelope netstrings
        writer.write(b"%d:%d:" % (inner, size))
        async for chunk in _body_chunks(body):
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), settings.timeout)
        writer.write(b"," + tail + b",")
        await asyncio.wait_for(writer.drain(), settings.timeout)
        while ch := await asyncio.wait_for(reader.read(1), settings.timeout):
            code = _REPLY_CODES.get(ch)  # the length prefix and ':' are skipped like any other byte
            if code is not None:
                return code
        return QueueExit.DIALOGUE_FAILED
    except (OSError, TimeoutError):
        return QueueExit.DIALOGUE_FAILED
    finally:
        writer.close()


_REPLY_CODES = {
    b"K": QueueExit.OK,
    b"Z": QueueExit.REJECTED_TEMPORARILY,
    b"D": QueueExit.REJECTED_PERMANENTLY,
}
_NOT_CONNECTED = frozenset({QueueExit.CONNECT_TIMEOUT, QueueExit.CONNECT_REFUSED})


async def qmqp_send(
    target: str | Sequence[str],
    message: bytes | Path | MessageParts,
    sender: str,
    recipients: Sequence[str],
    *,
    settings: QmqpSettings | None = None,
    resolver: Resolver | None = None,
) -> str:
    """Submit *message* via QMQP; the caller text: ``""`` accepted, else ``D…``/``Z…`` (qmail-queue(8), EXIT
    STATUS).

    *target* is a host name (its first A record; NXDOMAIN → 31, DNS trouble → 71) or an IP, or a
    sequence of IPs (``qmqpservers``) tried in order until one connects.  A message file that cannot
    be read is ``Zqq read error``.
    """
    opts = settings or QmqpSettings()
    servers = await _servers(target, resolver)
    if isinstance(servers, int):
        return caller_text(servers)
    body = MessageParts.of(message)
    try:
        size = body.size()
    except OSError:
        return caller_text(QueueExit.READ_ERROR)
    tail = encode_envelope(sender, recipients)
    code: int = QueueExit.CONFIG  # no usable server listed
    for ip in servers:
        try:
            code = await _one_server(ip, body, size, tail, opts)
        except _ReadFailed:
            return caller_text(QueueExit.READ_ERROR)
        if code not in _NOT_CONNECTED:
            break
    return caller_text(code)

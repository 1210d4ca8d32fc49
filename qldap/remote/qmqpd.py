"""QMQP server (qmail-qmqpd's role): queue what cluster peers submit, with a Received line, answer K/Z/D.

A QMQP server trusts its network position instead of checking relaying: it accepts any envelope
from any peer (qmail-qmqpd(8)), so it must only listen where cluster members can reach it.  Each
connection carries one request — a netstring of the message, sender and recipient netstrings — and
gets one netstring reply: ``Kok <time> qp <qp>`` once the message is durably queued, the queue's
caller text (``D…``/``Z…``) when injection failed, ``Dsorry, I can't accept addresses like that
(#5.1.3)`` for an address containing NUL, CR or LF (qmail-qmqpd refused NUL only; a line break
would reach a ``Delivered-To:`` or bounce header, or the next hop's ``RCPT TO``).  A request that
is not well-formed QMQP gets no reply: the connection is closed and the client reports a dialogue
failure.

Decision: ``databytes`` (0 = unlimited) bounds the request size, since the whole request is held in
memory while it is checked; a larger one is answered ``Dsorry, that message size exceeds my
databytes limit (#5.3.4)`` without being read.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from qldap.control.files import ControlDir
from qldap.control.limits import ClientCounter, SessionLimits
from qldap.dates import qmail_date
from qldap.metrics import recorder
from qldap.queue.codes import QueueError
from qldap.queue.envelope import Envelope
from qldap.queue.inject import Injector, how_invoked
from qldap.queue.layout import QmailIds, resolve_ids
from qldap.queue.received import safe
from qldap.records import to_text
from qldap.remote.qmqp import (
    CHUNK,
    IO_TIMEOUT,
    QMQP_PORT,
    NetstringError,
    netstring,
    parse_netstrings,
    read_netstring_length,
)

BAD_ADDRESS = "Dsorry, I can't accept addresses like that (#5.1.3)"
TOO_BIG = "Dsorry, that message size exceeds my databytes limit (#5.3.4)"
_INDENT = " " * 10
DEFAULT_MAX_SESSIONS = 100

HostLookup = Callable[[str], Awaitable[str | None]]


def qmqp_received(host: str | None, ip: str, local: str, when: float) -> bytes:
    """``Received: from <host> ([<ip>])`` and ``          by <local> (qmail-ldap-1.03) with QMQP; <date>``.

    An unknown host is written ``unknown``; client-supplied text is made header-safe.
    """
    return (
        f"Received: from {safe(host or 'unknown')} ([{safe(ip)}])\n"
        f"{_INDENT}by {safe(local)} (qmail-ldap-1.03) with QMQP; {qmail_date(when)}\n"
    ).encode()


@dataclass(frozen=True, slots=True)
class QmqpRequest:
    """One submission: the message bytes and the envelope."""

    message: bytes
    envelope: Envelope


def parse_request(payload: bytes) -> QmqpRequest | str:
    """The request inside the outer netstring, or the ``D…`` reply for an address with NUL, CR or LF.

    Raises:
        NetstringError: the payload is not a message netstring followed by envelope netstrings.
    """
    parts = parse_netstrings(payload)
    if len(parts) < 2:
        raise NetstringError("no sender netstring")
    message, addresses = parts[0], parts[1:]
    if any(b"\0" in a or b"\n" in a or b"\r" in a for a in addresses):
        return BAD_ADDRESS  # CR/LF too: they would reach Delivered-To:, bounces and RCPT TO (qmail-qmqpd(8))
    return QmqpRequest(message, Envelope(to_text(addresses[0]), tuple(to_text(a) for a in addresses[1:])))


class QmqpServer:
    """The per-connection handler; pass :meth:`handle` to ``asyncio.start_server``.

    Args:
        injector: the queue to inject into (its thread pool runs the blocking injection).
        local: the name in the ``by`` part of the Received line (``me``).
        how, uid: the injector's ``Received: (qmail … invoked <how>)`` and the ``u`` record.
        max_bytes: the largest request accepted, 0 = any.
        timeout: seconds allowed for each read and write.
        remote_host: looks up the peer's name for the Received line; None writes ``unknown``.
        clients: counts sessions against the services.yaml ``limits:`` (qldap-services(5)); past a
            limit the connection gets ``Z…too many sessions…`` at once, and reading a request stops
            at the session deadline however the client trickles its bytes.
    """

    def __init__(
        self,
        injector: Injector,
        local: str,
        *,
        how: str,
        uid: int,
        max_bytes: int = 0,
        timeout: float = IO_TIMEOUT,
        clock: Callable[[], float] = time.time,
        remote_host: HostLookup | None = None,
        clients: ClientCounter | None = None,
    ) -> None:
        self.injector, self.local, self.how, self.uid = injector, local, how, uid
        self.max_bytes, self.timeout, self.clock, self.remote_host = max_bytes, timeout, clock, remote_host
        self.clients = clients or ClientCounter(SessionLimits(DEFAULT_MAX_SESSIONS))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: read one request, answer once, close."""
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        refusal = self.clients.admit(ip)
        if refusal is not None:
            writer.write(netstring(f"Z{refusal.value} (#4.3.2)".encode()))
            writer.close()
            return
        metrics = recorder()  # a no-op unless $QLDAP_METRICS started an endpoint
        metrics.session_opened()
        limit = self.clients.limits.deadline
        until = asyncio.get_running_loop().time() + limit if limit > 0 else None
        try:
            reply = await self._answer(reader, ip, until)
            if reply is not None:
                writer.write(netstring(reply.encode("utf-8", "surrogateescape")))
                await asyncio.wait_for(writer.drain(), self.timeout)
        except (NetstringError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass  # not QMQP, too slow, or gone: closing without a reply is the protocol's answer
        finally:
            writer.close()
            metrics.session_closed()
            self.clients.release(ip)

    async def _answer(self, reader: asyncio.StreamReader, ip: str, until: float | None) -> str | None:
        length = await asyncio.wait_for(read_netstring_length(reader), self._wait(until))
        if self.max_bytes and length > self.max_bytes:
            # Read and drop the rest first: closing with unread input would reset the connection
            # and could destroy the reply before the client reads it.
            await self._read(reader, length + 1, until, keep=False)
            return TOO_BIG
        payload = await self._read(reader, length + 1, until, keep=True)
        if payload[-1:] != b",":
            raise NetstringError("request without its comma")
        request = parse_request(bytes(payload[:-1]))
        if isinstance(request, str):
            return request
        host = await self.remote_host(ip) if self.remote_host is not None else None
        received = qmqp_received(host, ip, self.local, self.clock())
        try:
            queued = await self.injector.inject_async(
                (received, request.message), request.envelope, how=self.how, uid=self.uid
            )
        except QueueError as exc:
            return exc.text
        return f"Kok {int(self.clock())} qp {queued.qp}"

    def _wait(self, until: float | None) -> float:
        """The time this read may take: the I/O timeout, cut short by the session deadline *until*.

        Raises:
            TimeoutError: the deadline has passed.
        """
        if until is None:
            return self.timeout
        left = until - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError("session deadline")
        return min(self.timeout, left)

    async def _read(self, reader: asyncio.StreamReader, count: int, until: float | None, *,
                    keep: bool) -> bytearray:
        data = bytearray()
        left = count
        while left:
            chunk = await asyncio.wait_for(reader.read(min(CHUNK, left)), self._wait(until))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), count)
            left -= len(chunk)
            if keep:
                data += chunk
        return data


async def serve_qmqpd(
    root: str | os.PathLike[str],
    host: str = "0.0.0.0",
    port: int = QMQP_PORT,
    *,
    ids: QmailIds | None = None,
    remote_host: HostLookup | None = None,
    clients: ClientCounter | None = None,
) -> tuple[asyncio.Server, Injector]:
    """Listen for QMQP on *host*:*port* and queue into ``ROOT/queue``; close both results to stop.

    ``me`` names this host in the Received line, ``databytes`` bounds requests.

    Raises:
        ConfigError: ``me`` is missing or a control file is unreadable.
        OSError: the address cannot be bound.
    """
    ctl = ControlDir(Path(root))
    qmail_ids = ids or resolve_ids()
    injector = Injector(root, ids=qmail_ids)
    server = QmqpServer(
        injector, ctl.me(), how=how_invoked(os.getuid(), qmail_ids), uid=os.getuid(),
        max_bytes=ctl.integer("databytes", 0), remote_host=remote_host, clients=clients,
    )  # fmt: skip
    try:
        listener = await asyncio.start_server(server.handle, host, port)
    except OSError:
        injector.close()
        raise
    return listener, injector

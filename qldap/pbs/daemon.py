"""pbsdbd's endpoint: one asyncio UDP socket applying :func:`~qldap.pbs.cache.handle_datagram`.

The per-datagram rule (what to store, what to answer, what to warn about) is the pure
:func:`qldap.pbs.cache.handle_datagram`; this module only binds ``pbsip:pbsport``, feeds it each
datagram with the sender's address and sends the reply back to that address and port.  The cache
lives in memory only: a restart forgets every grant, as the original did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from qldap.pbs.cache import PbsCache, handle_datagram
from qldap.pbs.config import PbsConfig

Log = Callable[[str], None]


class PbsProtocol(asyncio.DatagramProtocol):
    """Answer Query datagrams from the cache, store authorised Add datagrams."""

    def __init__(self, cache: PbsCache, secret: bytes, log: Log) -> None:
        self.cache = cache
        self.secret = secret
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        outcome = handle_datagram(self.cache, data, self.secret)
        if outcome.warning is not None:
            self.log(f"pbsdbd: warning: {outcome.warning} from {addr[0]}")
        if outcome.reply is not None and self.transport is not None:
            self.transport.sendto(outcome.reply, addr)

    def error_received(self, exc: Exception) -> None:
        self.log(f"pbsdbd: warning: {exc}")


async def open_endpoint(cfg: PbsConfig, log: Log, cache: PbsCache | None = None) -> tuple[
    asyncio.DatagramTransport, PbsProtocol
]:
    """Bind ``cfg.ip:cfg.port`` and start answering.

    Raises:
        OSError: the socket cannot be created or bound.
    """
    loop = asyncio.get_running_loop()
    store = cache if cache is not None else PbsCache(cfg.cachesize, cfg.timeout)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: PbsProtocol(store, cfg.secret, log), local_addr=(cfg.ip, cfg.port)
    )
    return transport, protocol

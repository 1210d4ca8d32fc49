"""pbsdbd's endpoint: one asyncio UDP socket applying :func:`~qldap.pbs.cache.handle_datagram`.

The per-datagram rule (what to store, what to answer, what to warn about) is the pure
:func:`qldap.pbs.cache.handle_datagram`; this module only binds ``pbsip:pbsport``, feeds it each
datagram with the sender's address and sends the reply back to that address and port.  The cache
lives in memory only: a restart forgets every grant, as the original did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from qldap.pbs.cache import PbsCache, handle_datagram
from qldap.pbs.config import PbsConfig

Log = Callable[[str], None]

WARNINGS_PER_SECOND = 10  # beyond this, refused datagrams are counted and summarised once a second


class WarningLimiter:
    """At most *rate* warning lines per second; the rest become one ``N more …`` line.

    Why: every refused datagram is worth a warning, but a flood of spoofed adds must neither fill
    the disk with log lines nor block the daemon on a full stderr pipe.
    """

    def __init__(self, log: Log, rate: int = WARNINGS_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.rate, self.clock = log, rate, clock
        self._window = -1
        self._count = 0
        self._suppressed = 0

    def warn(self, text: str) -> None:
        """Log *text* unless this second's budget is spent."""
        window = int(self.clock())
        if window != self._window:
            if self._suppressed:
                self.log(f"pbsdbd: warning: {self._suppressed} more refused datagrams not logged")
            self._window, self._count, self._suppressed = window, 0, 0
        if self._count < self.rate:
            self._count += 1
            self.log(text)
        else:
            self._suppressed += 1


class PbsProtocol(asyncio.DatagramProtocol):
    """Answer Query datagrams from the cache, store authorised Add datagrams."""

    def __init__(self, cache: PbsCache, secret: bytes, log: Log) -> None:
        self.cache = cache
        self.secret = secret
        self.log = log
        self.warnings = WarningLimiter(log)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        outcome = handle_datagram(self.cache, data, self.secret)
        if outcome.warning is not None:
            self.warnings.warn(f"pbsdbd: warning: {outcome.warning} from {addr[0]}")
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

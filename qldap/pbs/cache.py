"""pbsdbd's memory: a byte-bounded, expiring, oldest-first cache of relay grants, and the datagram rule.

Why a byte budget modelled on a ring: the original keeps entries in one fixed buffer of
``pbscachesize`` bytes — an index of the smallest power of two ≥ 4 above ``pbscachesize/32`` bytes,
then entries of 13 + L + env-block bytes written one after another and overwritten oldest first when
the writer wraps.  Operators size the cache with that arithmetic, so the capacity here follows it
exactly: positions are tracked as integers (no byte array), a replaced entry keeps occupying its old
space until the writer passes it, and the tail left unused at a wrap stays unused for that round.
The original's "hash flooding" guard has no counterpart: a dict with randomised hashing is used.

:func:`handle_datagram` is pbsdbd's per-datagram rule over a cache (pure apart from the cache): it
returns the reply to send, if any, and the warning to log, if any.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from qldap.pbs.packets import Add, PacketTooLarge, Query, Rejected, Response, encode, encode_env, parse

ENTRY_OVERHEAD = 13  # link 4, expiry 4, env length 4, address length 1
DEFAULT_SIZE = 1048576
DEFAULT_TIMEOUT = 600


def index_size(cachesize: int) -> int:
    """Bytes the original spends on its hash index: smallest power of two ≥ 4 above ``cachesize/32``."""
    size = 4
    while size <= cachesize >> 5:
        size <<= 1
    return size


def entry_cost(address: bytes, env: tuple[bytes, ...]) -> int:
    """Bytes one entry occupies: 13 + L + env block."""
    return ENTRY_OVERHEAD + len(address) + len(encode_env(env))


@dataclass(slots=True)
class _Slot:
    """One written entry; *live* turns False when a re-add supersedes it."""

    position: int
    cost: int
    address: bytes
    expiry: float
    env: tuple[bytes, ...]
    live: bool = True


class PbsCache:
    """Address → env entries with expiry; ``add`` refreshes, the oldest written entries go first."""

    def __init__(
        self,
        cachesize: int = DEFAULT_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cachesize = cachesize
        self.timeout = timeout
        self._clock = clock
        self._start = index_size(cachesize)
        self._writer = self._start
        self._oldest = cachesize  # == self._unused: nothing live after the writer
        self._unused = cachesize
        self._ring: deque[_Slot] = deque()
        self._index: dict[bytes, _Slot] = {}

    @property
    def capacity(self) -> int:
        """Bytes available for entries."""
        return max(0, self.cachesize - self._start)

    def __len__(self) -> int:
        """Entries stored (expired ones included until overwritten)."""
        return len(self._index)

    def add(self, address: bytes, env: tuple[bytes, ...] = ()) -> bool:
        """Grant relaying to *address* until now + timeout, replacing an earlier grant.

        Returns False (nothing stored or changed) when the entry alone exceeds the capacity.
        """
        cost = entry_cost(address, env)
        if cost > self.capacity:
            return False
        old = self._index.pop(address, None)
        if old is not None:
            old.live = False
        while self._writer + cost > self._oldest:
            if self._oldest == self._unused:  # wrap: the tail after the writer is left unused
                self._unused = self._writer
                self._oldest = self._writer = self._start
                continue
            victim = self._ring.popleft()
            if victim.live:
                del self._index[victim.address]
            self._oldest += victim.cost
            if self._oldest == self._unused:
                self._oldest = self._unused = self.cachesize
        slot = _Slot(self._writer, cost, address, self._clock() + self.timeout, env)
        self._ring.append(slot)
        self._index[address] = slot
        self._writer += cost
        return True

    def lookup(self, address: bytes) -> tuple[bytes, ...] | None:
        """The env entries of a valid grant for *address* (expiry ≥ now), else None."""
        slot = self._index.get(address)
        if slot is None or slot.expiry < self._clock():
            return None
        return slot.env


@dataclass(frozen=True, slots=True)
class DatagramOutcome:
    """What pbsdbd does with one datagram: *reply* to send back, *warning* to log (either may be None)."""

    reply: bytes | None = None
    warning: str | None = None


def handle_datagram(cache: PbsCache, data: bytes, secret: bytes) -> DatagramOutcome:
    """Apply one received datagram to *cache* (pbsdbd(8))."""
    packet = parse(data)
    if isinstance(packet, Rejected):
        return DatagramOutcome(warning=packet.value)
    if isinstance(packet, Query):
        env = cache.lookup(packet.address)
        answer = Response(packet.address, env is not None, env or ())
        try:
            return DatagramOutcome(reply=encode(answer))
        except PacketTooLarge:
            return DatagramOutcome(warning=Rejected.ENV_OVERFLOW.value)
    if isinstance(packet, Add):
        if not hmac.compare_digest(packet.secret, secret):
            return DatagramOutcome(warning="no authorized add packet")
        if not cache.add(packet.address, packet.env):
            return DatagramOutcome(warning="entry larger than the cache, dropped")
        return DatagramOutcome()
    return DatagramOutcome(warning="response recived")

"""A short-lived, bounded cache of lookup answers (``control/ldapcachettl`` seconds; 0 = off).

Why only Found and NotFound: an error must be retried at the next message, never replayed from memory,
and an Ambiguous answer is a data problem the administrator is expected to fix right away.  The TTL
bounds how long a directory edit stays invisible; the size bound keeps an address-harvesting client
from growing the daemon's memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from qldap.directory.base import Found, LookupResult, NotFound

DEFAULT_SIZE = 4096


class ResultCache:
    """Thread-safe TTL cache with least-recently-used eviction."""

    def __init__(
        self, ttl: float, maxsize: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.maxsize = max(1, maxsize)
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[float, LookupResult]] = OrderedDict()

    def get(self, key: Hashable) -> LookupResult | None:
        """The cached answer for *key* if it is younger than the TTL, else None."""
        now = self._clock()
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, result: LookupResult) -> None:
        """Remember *result* for *key* unless it is an error or ambiguous answer."""
        if not isinstance(result, Found | NotFound):
            return
        expires = self._clock() + self.ttl
        with self._lock:
            self._data[key] = (expires, result)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

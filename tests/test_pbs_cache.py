"""pbsdbd's cache: expiry with a fake clock, byte accounting and oldest-first eviction."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qldap.pbs.cache import PbsCache, entry_cost, handle_datagram, index_size
from qldap.pbs.packets import Add, Query, Response, decode, encode


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ip(n: int) -> bytes:
    return bytes([10, 0, n // 256, n % 256])


ENV = (b"USER=joe",)


def test_index_size_follows_the_original_arithmetic() -> None:
    assert index_size(1048576) == 65536
    assert index_size(100) == 4
    assert index_size(128) == 8  # 128/32 = 4 → smallest power of two above it
    assert index_size(127) == 4
    assert PbsCache(1048576).capacity == 1048576 - 65536


def test_entry_cost() -> None:
    assert entry_cost(ip(1), ENV) == 13 + 4 + 10
    assert entry_cost(bytes(16), ()) == 13 + 16 + 1


def test_expiry_and_refresh_check_40() -> None:
    clock = Clock()
    cache = PbsCache(timeout=2, clock=clock)
    add = encode(Add(ip(1), b"", ENV))
    query = encode(Query(ip(1)))

    def answer() -> bool:
        reply = handle_datagram(cache, query, b"").reply
        assert reply is not None
        decoded = decode(reply)
        assert isinstance(decoded, Response)
        return decoded.may_relay

    start = clock.now
    handle_datagram(cache, add, b"")
    clock.now = start + 1
    assert answer() is True
    clock.now = start + 2
    assert answer() is True  # expiry ≥ now still hits
    clock.now = start + 3
    assert answer() is False

    clock.now = start + 10
    handle_datagram(cache, add, b"")
    clock.now = start + 11
    handle_datagram(cache, add, b"")  # re-add at 1 s
    clock.now = start + 13
    assert answer() is True
    clock.now = start + 13.5
    assert answer() is False


def test_readd_replaces_the_environment() -> None:
    cache = PbsCache(clock=Clock())
    cache.add(ip(1), (b"USER=joe",))
    cache.add(ip(1), (b"USER=ann",))
    assert cache.lookup(ip(1)) == (b"USER=ann",)
    assert len(cache) == 1


def test_cache_for_three_entries_evicts_the_first_of_four_check_44() -> None:
    cost = entry_cost(ip(1), ENV)
    size = 4 + 3 * cost + cost - 1  # index 4 bytes, room for 3 entries but not 4
    cache = PbsCache(cachesize=size, clock=Clock())
    assert cache.capacity // cost == 3
    for n in (1, 2, 3):
        assert cache.add(ip(n), ENV)
    assert [cache.lookup(ip(n)) for n in (1, 2, 3)] == [ENV, ENV, ENV]
    cache.add(ip(4), ENV)
    assert cache.lookup(ip(1)) is None
    assert [cache.lookup(ip(n)) for n in (2, 3, 4)] == [ENV, ENV, ENV]


def test_oldest_inserted_goes_first_even_when_refreshed_later() -> None:
    """A re-add writes a new entry; the superseded copy still occupies space until overwritten."""
    cost = entry_cost(ip(1), ENV)
    cache = PbsCache(cachesize=4 + 3 * cost, clock=Clock())
    cache.add(ip(1), ENV)
    cache.add(ip(2), ENV)
    cache.add(ip(1), ENV)  # ring: [1 (dead), 2, 1]
    cache.add(ip(3), ENV)  # overwrites the dead copy of 1 only
    assert cache.lookup(ip(1)) == ENV and cache.lookup(ip(2)) == ENV and cache.lookup(ip(3)) == ENV
    cache.add(ip(4), ENV)  # overwrites 2, the oldest live entry
    assert cache.lookup(ip(2)) is None
    assert cache.lookup(ip(1)) == ENV and cache.lookup(ip(4)) == ENV


def test_entry_larger_than_the_cache_is_refused() -> None:
    cache = PbsCache(cachesize=40, clock=Clock())
    assert cache.add(ip(1), (b"X=" + b"y" * 100,)) is False
    assert len(cache) == 0
    outcome = handle_datagram(cache, encode(Add(ip(1), b"", (b"X=" + b"y" * 100,))), b"")
    assert outcome.warning == "entry larger than the cache, dropped"


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 120)), max_size=300))
def test_never_holds_more_bytes_than_capacity_and_recent_entries_survive(adds: list[tuple[int, int]]) -> None:
    cache = PbsCache(cachesize=600, clock=Clock())
    expected: dict[bytes, tuple[bytes, ...]] = {}
    for n, vlen in adds:
        env = (b"V=" + b"v" * vlen,)
        assert cache.add(ip(n), env)
        expected[ip(n)] = env
    for address, env in expected.items():
        found = cache.lookup(address)
        assert found is None or found == env
    live = [a for a in expected if cache.lookup(a) is not None]
    assert sum(entry_cost(a, expected[a]) for a in live) <= cache.capacity
    if adds:  # the newest add always survives
        n, _ = adds[-1]
        assert cache.lookup(ip(n)) == expected[ip(n)]

"""The lock/tcpto table (qmail-tcpto(8)): pure model and the locked file; two timeouts skip an address."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from qldap.remote.tcpto import (
    ENTRIES,
    SIZE,
    TcptoTable,
    clear_table,
    down_interval,
    read_table,
    update_table,
)

IP = "198.51.100.10"
T0 = 1_700_000_000


def test_down_interval_is_64_to_97_minutes() -> None:
    assert down_interval(0) == 60 * 64
    assert down_interval(31) == 91 * 64
    assert down_interval(32) == down_interval(0)
    assert {down_interval(p) for p in range(64)} == {(60 + k) * 64 for k in range(32)}


def test_check_46_two_timeouts_120s_apart_mark_the_address_down() -> None:
    table = TcptoTable().record_timeout(IP, T0)
    assert not table.is_down(IP, T0 + 1, pid=0)  # one timeout is not enough
    table = table.record_timeout(IP, T0 + 120)
    assert table.is_down(IP, T0 + 121, pid=0)
    assert table.report(T0 + 130) == [f"{IP} timed out 10 seconds ago; # recent timeouts: 2"]
    # the down period depends on the pid and ends
    last = T0 + 120
    assert table.is_down(IP, last + down_interval(5) - 1, pid=5)
    assert not table.is_down(IP, last + down_interval(5), pid=5)
    # qmail-tcpok
    assert not TcptoTable().is_down(IP, T0 + 121, pid=0)


def test_timeouts_closer_than_120s_count_once() -> None:
    table = TcptoTable().record_timeout(IP, T0).record_timeout(IP, T0 + 119)
    assert table.entries()[0].count == 1
    assert table.entries()[0].when == T0
    assert not table.is_down(IP, T0 + 120, pid=0)


def test_count_is_capped_at_10() -> None:
    table = TcptoTable()
    for i in range(15):
        table = table.record_timeout(IP, T0 + 200 * i)
    assert table.entries()[0].count == 10


def test_success_resets_an_existing_entry_only() -> None:
    table = TcptoTable().record_timeout(IP, T0).record_timeout(IP, T0 + 200)
    reset = table.record_success(IP)
    assert not reset.is_down(IP, T0 + 201, pid=0)
    assert reset.entries() == ()
    assert TcptoTable().record_success(IP) == TcptoTable()
    # after a reset the next timeout counts again from 1
    assert reset.record_timeout(IP, T0 + 201).entries()[0].count == 1


def test_binary_layout_is_qmails() -> None:
    table = TcptoTable().record_timeout("1.2.3.4", 0x01020304)
    assert len(table.data) == SIZE == 1024
    assert table.data[:16] == bytes([1, 2, 3, 4, 1, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0])
    assert table.data[16:] == bytes(SIZE - 16)


def test_full_table_replaces_the_least_valuable_entry() -> None:
    table = TcptoTable()
    for i in range(ENTRIES):
        table = table.record_timeout(f"10.0.0.{i}", T0 + i)
    # make entry 10.0.0.0 heavy (count 2): now 10.0.0.1 has the smallest when + 1024*count
    table = table.record_timeout("10.0.0.0", T0 + 300)
    table = table.record_timeout("203.0.113.1", T0 + 400)
    ips = {e.ip for e in table.entries()}
    assert len(ips) == ENTRIES
    assert "203.0.113.1" in ips and "10.0.0.1" not in ips and "10.0.0.0" in ips


def test_ipv6_is_not_remembered() -> None:
    table = TcptoTable().record_timeout("2001:db8::1", T0).record_timeout("2001:db8::1", T0 + 200)
    assert table == TcptoTable()
    assert not table.is_down("2001:db8::1", T0 + 201, pid=0)


def test_file_round_trip_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "tcpto"
    assert read_table(path) == TcptoTable()
    update_table(path, lambda t: t.record_timeout(IP, T0))
    update_table(path, lambda t: t.record_timeout(IP, T0 + 150))
    assert path.stat().st_size == 1024
    assert read_table(path).is_down(IP, T0 + 151, pid=0)
    clear_table(path)
    assert path.read_bytes() == bytes(1024)


def _bump(path: str, ip: str) -> None:
    for i in range(20):
        update_table(path, lambda t, i=i: t.record_timeout(ip, T0 + 1000 * i))  # type: ignore[misc]


def test_concurrent_updates_do_not_lose_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "tcpto")
    procs = [multiprocessing.Process(target=_bump, args=(path, f"10.1.0.{n}")) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    entries = read_table(path).entries()
    assert sorted(e.ip for e in entries) == [f"10.1.0.{n}" for n in range(4)]
    assert all(e.count == 10 for e in entries)

"""Scheduling (qmail-send(8), SCHEDULING): retry times, queue lifetime, concurrency, holds, ALRM, clean stop.

The manager runs in-process on a real queue; only the spawners and (for hours of schedule) the clock
are test doubles.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from qldap.reports import Letter
from qldap.send.preprocess import Channel
from qldap.send.state import Schedule, Slots
from tests.test_send_manager_support import (
    FakeClock,
    TestSpawners,
    always,
    make_root,
    put,
    queue_files,
    running_manager,
    settle,
    until,
)

DEFER = always(Letter.TEMPORARY, "try later\n")


# -- the pure parts --------------------------------------------------------------------------------


def test_schedule_orders_per_channel_and_alrm_makes_everything_due() -> None:
    s = Schedule()
    s.add(1, Channel.REMOTE, 500.0)
    s.add(2, Channel.REMOTE, 100.0)
    s.add(3, Channel.LOCAL, 300.0)
    assert s.next_time() == 100.0
    assert s.next_time(Channel.LOCAL) == 300.0
    assert s.pop_due(Channel.REMOTE, 99.0) is None
    due = s.pop_due(Channel.REMOTE, 100.0)
    assert due is not None and due.number == 2
    s.all_due(200.0)
    assert s.pop_due(Channel.REMOTE, 200.0) is not None
    assert s.pop_due(Channel.LOCAL, 200.0) is not None
    assert len(s) == 0


def test_slots_are_first_come_first_served_and_close_refuses() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        assert slots.try_acquire()
        assert not slots.can_start()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert slots.waiting == 2
        slots.release()
        assert await first is True
        assert not second.done()
        slots.close()
        assert await second is False
        assert not slots.try_acquire()

    asyncio.run(scenario())


# -- retry schedule --------------------------------------------------------------------------------


def _birth(root: Path, number: int) -> int:
    return int(os.stat(root / "queue" / "info" / str(number % 23) / str(number)).st_mtime)


@pytest.mark.parametrize(
    ("rcpt", "offsets"),
    [("r@far.example", (400, 1600, 3600)), ("joe@mx1.example.com", (100, 400, 900))],
)
def test_deferred_recipient_is_retried_on_the_square_schedule(
    tmp_path: Path, rcpt: str, offsets: tuple[int, ...]
) -> None:
    """Remote at 0, 400, 1600, 3600 s after birth; local at 0, 100, 400, 900 s."""
    root = tmp_path / "q"
    make_root(root)
    clock = FakeClock()
    sp = TestSpawners(clock=clock, local_rule=DEFER, remote_rule=DEFER)

    async def scenario() -> None:
        async with running_manager(root, sp, clock) as run:
            number = put(root, "a@b.example", [rcpt])
            await until(lambda: len(sp.to(rcpt)) == 1, "first attempt")
            birth = _birth(root, number)
            for k, offset in enumerate(offsets, start=2):
                clock.now = birth + offset - 1
                run.manager.poke()
                await settle()
                assert len(sp.to(rcpt)) == k - 1, f"attempt {k} came before {offset} s"
                clock.now = birth + offset
                run.manager.poke()
                await until(lambda k=k: len(sp.to(rcpt)) == k, f"attempt {k} at {offset} s")
            assert [c.at - birth for c in sp.to(rcpt)][1:] == list(offsets)

    asyncio.run(scenario())


def test_queuelifetime_turns_the_last_deferral_into_a_bounce(tmp_path: Path) -> None:
    """Lifetime 1000 s; the attempt at 1600 s is a failure ending ``too_long./`` and bounces."""
    root = tmp_path / "q"
    make_root(root, {"queuelifetime": "1000"})
    clock = FakeClock()
    sp = TestSpawners(clock=clock, remote_rule=DEFER)

    async def scenario() -> None:
        async with running_manager(root, sp, clock) as run:
            number = put(root, "alice@sender.example", ["r@far.example"])
            await until(lambda: len(sp.to("r@far.example")) == 1, "first attempt")
            birth = _birth(root, number)
            clock.now = birth + 400
            run.manager.poke()
            await until(lambda: len(sp.to("r@far.example")) == 2, "second attempt")
            assert not run.matching(r"failure:")
            clock.now = birth + 1600
            run.manager.poke()
            await until(lambda: sp.to("alice@sender.example"), "the bounce")
            failure = run.matching(r"^delivery 3: failure: ")
            assert failure and failure[0].endswith("too_long./")
            assert failure[0] == (
                "delivery 3: failure: try_later/I'm_not_going_to_try_again;"
                "_this_message_has_been_in_the_queue_too_long./"
            )
            bounce = sp.to("alice@sender.example")[0]
            assert bounce.sender == ""
            assert b"<r@far.example>:\ntry later\nI'm not going to try again;" in bounce.message
            assert run.matching(rf"^end msg {number}$")

    asyncio.run(scenario())


# -- concurrency and holds -------------------------------------------------------------------------


def test_concurrencyremote_zero_holds_the_remote_channel(tmp_path: Path) -> None:
    """No remote delivery starts, status shows ``remote 0/0``, the message stays."""
    root = tmp_path / "q"
    layout = make_root(root, {"concurrencyremote": "0"})
    sp = TestSpawners()

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            number = put(root, "a@b.example", ["r@far.example", "joe@mx1.example.com"])
            await until(lambda: sp.to("joe@mx1.example.com"), "the local delivery")
            await settle()
            assert sp.to("r@far.example") == []
            assert run.matching(r"remote 0/0$")
            assert not run.matching(r"remote [1-9]")
            assert f"remote/{number % 23}/{number}" in queue_files(layout)
            assert f"info/{number % 23}/{number}" in queue_files(layout)

    asyncio.run(scenario())


def test_holdremote_is_lifted_by_hup(tmp_path: Path) -> None:
    """``holdremote`` 1 acts as concurrency 0; removing it and HUP lets the delivery start."""
    root = tmp_path / "q"
    layout = make_root(root, {"holdremote": "1"})
    sp = TestSpawners()

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            put(root, "a@b.example", ["r@far.example"])
            await until(lambda: run.matching(r"^new msg "), "preprocessing")
            await settle()
            assert sp.to("r@far.example") == []
            (root / "control" / "holdremote").unlink()
            run.manager.request_reload()
            await until(lambda: sp.to("r@far.example"), "the released delivery")
            await until(lambda: queue_files(layout) == [], "an empty queue")

    asyncio.run(scenario())


def test_concurrencylocal_bounds_simultaneous_local_deliveries(tmp_path: Path) -> None:
    """concurrencylocal 2 and 5 slow recipients: never more than 2 at once, all delivered."""
    root = tmp_path / "q"
    layout = make_root(root, {"concurrencylocal": "2"})
    sp = TestSpawners(local_delay=0.2)
    rcpts = [f"u{i}@mx1.example.com" for i in range(5)]

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            put(root, "a@b.example", rcpts)
            await until(lambda: all(sp.to(r) for r in rcpts), "five deliveries")
            await until(lambda: queue_files(layout) == [], "an empty queue")
            assert sp.max_local == 2
            assert run.matching(r"^status: local 2/2 ")
            assert not run.matching(r"^status: local [3-9]")

    asyncio.run(scenario())


# -- signals, in-process ---------------------------------------------------------------------------


def test_alrm_makes_deferred_entries_due_now(tmp_path: Path) -> None:
    """In-process: after a retry request every deferred message is attempted again."""
    root = tmp_path / "q"
    make_root(root)
    clock = FakeClock()
    sp = TestSpawners(clock=clock, local_rule=DEFER, remote_rule=DEFER)

    async def scenario() -> None:
        async with running_manager(root, sp, clock) as run:
            put(root, "a@b.example", ["r@far.example"])
            put(root, "a@b.example", ["joe@mx1.example.com"])
            await until(lambda: len(sp.calls) == 2, "first attempts")
            await settle()
            assert len(sp.calls) == 2
            run.manager.request_retry()
            await until(lambda: len(sp.calls) == 4, "retried attempts")
            assert {c.recipient for _, c in sp.calls[2:]} == {"r@far.example", "joe@mx1.example.com"}

    asyncio.run(scenario())


def test_clean_stop_stores_next_attempt_and_restart_honours_it(tmp_path: Path) -> None:
    """In-process: the channel file's mtime is the next attempt; a restart waits for it."""
    root = tmp_path / "q"
    layout = make_root(root)
    clock = FakeClock()
    sp = TestSpawners(clock=clock, local_rule=DEFER)
    number = 0

    async def first_run() -> None:
        nonlocal number
        async with running_manager(root, sp, clock) as run:
            number = put(root, "a@b.example", ["joe@mx1.example.com"])
            await until(lambda: sp.to("joe@mx1.example.com"), "first attempt")
            await until(lambda: run.matching(r"^delivery 1: deferral"), "the deferral")
        assert run.lines[-1] == "status: exiting"

    asyncio.run(first_run())
    birth = _birth(root, number)
    local_file = Path(layout.local(number))
    assert int(local_file.stat().st_mtime) == birth + 100

    async def second_run() -> None:
        async with running_manager(root, sp, clock) as run:
            clock.now = birth + 99
            run.manager.poke()
            await settle()
            assert len(sp.to("joe@mx1.example.com")) == 1
            clock.now = birth + 100
            run.manager.poke()
            await until(lambda: len(sp.to("joe@mx1.example.com")) == 2, "the stored attempt")

    asyncio.run(second_run())

"""What the manager finds on disk at start (qmail-send(8) restart, qldap-queue(5) Crash behaviour cleanups)
and HUP trouble."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from qldap.queue.cleanup import OSSIFIED
from qldap.queue.layout import QueueLayout
from qldap.reports import Letter
from tests.test_send_manager_support import (
    TestSpawners,
    always,
    make_root,
    put,
    queue_files,
    running_manager,
    settle,
    until,
)


def _preprocessed(root: Path, layout: QueueLayout, sender: str, rcpts: list[str]) -> int:
    """A message taken to S5 by a manager run whose deliveries all defer (then stopped cleanly)."""
    sp = TestSpawners(
        local_rule=always(Letter.TEMPORARY, "later\n"), remote_rule=always(Letter.TEMPORARY, "l\n")
    )
    number = 0

    async def scenario() -> None:
        nonlocal number
        async with running_manager(root, sp) as run:
            number = put(root, sender, rcpts)
            await until(lambda: len(run.matching(r"^delivery \d+: deferral")) == len(rcpts), "deferrals")

    asyncio.run(scenario())
    return number


def test_restart_eliminates_a_message_whose_channels_are_done_and_sends_its_bounce(tmp_path: Path) -> None:
    """A crash after the last mark but before elimination: the restart bounces and removes it."""
    root = tmp_path / "q"
    layout = make_root(root)
    number = _preprocessed(root, layout, "alice@example.com", ["x@far.example"])
    Path(
        layout.remote(number)
    ).unlink()  # every recipient done: the file went, the crash came before the rest
    Path(layout.bounce(number)).write_text("<x@far.example>:\nno such user\n\n")
    sp = TestSpawners()

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            await until(lambda: sp.to("alice@example.com"), "the bounce")
            assert run.matching(rf"^bounce msg {number} qp \d+$")
            assert run.matching(rf"^end msg {number}$")
            await until(lambda: queue_files(layout) == [], "an empty queue")

    asyncio.run(scenario())
    assert b"<x@far.example>:\nno such user\n" in sp.to("alice@example.com")[0].message


def test_restart_skips_done_recipients(tmp_path: Path) -> None:
    root = tmp_path / "q"
    layout = make_root(root)
    number = _preprocessed(root, layout, "a@b.example", ["x@far.example", "y@far.example"])
    remote = Path(layout.remote(number))
    remote.write_bytes(b"D" + remote.read_bytes()[1:])  # x was delivered and marked
    os.utime(remote, (0, 0))  # due at once
    sp = TestSpawners()

    async def scenario() -> None:
        async with running_manager(root, sp):
            await until(lambda: queue_files(layout) == [], "an empty queue")

    asyncio.run(scenario())
    assert [c.recipient for _, c in sp.calls] == ["y@far.example"]


def test_start_removes_36_hour_old_garbage_only(tmp_path: Path) -> None:
    root = tmp_path / "q"
    layout = make_root(root)
    old = time.time() - OSSIFIED - 10
    orphan, young = Path(layout.mess(4600)), Path(layout.mess(4601))
    for path in (orphan, young):
        path.write_bytes(b"half injected\n")
    os.utime(orphan, (old, old))
    stale_pid = Path(layout.pid("1.2.3"))
    stale_pid.write_bytes(b"")
    os.utime(stale_pid, (old, old))

    async def scenario() -> None:
        async with running_manager(root, TestSpawners()):
            await until(lambda: not orphan.exists() and not stale_pid.exists(), "the cleanup")
            await settle()
            assert young.exists()

    asyncio.run(scenario())


def test_failed_hup_keeps_the_old_values(tmp_path: Path) -> None:
    root = tmp_path / "q"
    layout = make_root(root, {"virtualdomains": "example.org:vuser"})
    sp = TestSpawners()

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            (root / "control" / "virtualdomains").unlink()
            (root / "control" / "virtualdomains").mkdir()  # exists but cannot be read
            run.manager.request_reload()
            await until(lambda: run.matching(r"^alert: unable to reread "), "the alert")
            assert run.matching(r"^alert: unable to reread control/virtualdomains$")
            put(root, "a@b.example", ["joe@example.org"])
            await until(lambda: sp.to("vuser-joe@example.org"), "delivery with the old virtualdomains")
            await until(lambda: queue_files(layout) == [], "an empty queue")

    asyncio.run(scenario())


def test_unknown_record_in_a_channel_file_is_retried_not_lost(tmp_path: Path) -> None:
    root = tmp_path / "q"
    layout = make_root(root)
    number = _preprocessed(root, layout, "a@b.example", ["x@far.example"])
    remote = Path(layout.remote(number))
    good = remote.read_bytes()
    remote.write_bytes(b"Qjunk\0" + good)
    os.utime(remote, (0, 0))

    async def scenario() -> None:
        async with running_manager(root, TestSpawners()) as run:
            await until(lambda: run.matching(r"^warning: unknown record type in remote/"), "the warning")
            assert f"warning: unknown record type in remote/{number % 23}/{number}" in run.lines
            await settle()
            assert Path(layout.info(number)).exists()
            assert remote.read_bytes() == b"Qjunk\0" + good

    asyncio.run(scenario())

"""The trigger FIFO: an injection's byte reaches a waiting reader, sync and asyncio."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from qldap.queue.envelope import Envelope
from qldap.queue.inject import inject
from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from qldap.queue.trigger import TriggerReader, pull, pull_queue
from tests.conftest import QRoot


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def test_pull_without_reader_is_ignored(layout: QueueLayout) -> None:
    assert pull(layout.trigger) is False  # ENXIO: nobody listening, never blocks
    assert pull(layout.trigger + ".missing") is False


def test_pull_reaches_reader(layout: QueueLayout) -> None:
    with TriggerReader(layout.trigger) as reader:
        assert reader.wait_blocking(0) is False
        assert pull_queue(layout.root) is True
        assert pull(layout.trigger) is True
        assert reader.wait_blocking(5) is True
        assert reader.wait_blocking(0) is False  # drained: two pulls, one wake-up


def test_reader_blocks_until_pulled_from_another_thread(layout: QueueLayout) -> None:
    with TriggerReader(layout.trigger) as reader:
        started = threading.Event()

        def injector() -> None:
            started.wait()
            inject(layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1, bigbrother={})

        th = threading.Thread(target=injector)
        th.start()
        started.set()
        assert reader.wait_blocking(60) is True
        th.join()
        assert len(os.listdir(layout.dir("todo"))) == 1


def test_async_wait(layout: QueueLayout) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        with TriggerReader(layout.trigger) as reader:
            quiet = await reader.wait(0.05)
            loop = asyncio.get_running_loop()
            waiter = asyncio.create_task(reader.wait(60))
            await asyncio.sleep(0)
            await loop.run_in_executor(
                None,
                lambda: inject(
                    layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=2, bigbrother={}
                ),
            )
            woke = await waiter
            again = await reader.wait(0)
            return quiet, woke, again

    assert asyncio.run(scenario()) == (False, True, False)


def test_no_trigger_when_asked_not_to(layout: QueueLayout) -> None:
    with TriggerReader(layout.trigger) as reader:
        inject(
            layout, b"x\n", Envelope("a@x", ()), how="by uid 0", uid=0, pid=3, bigbrother={}, trigger=False
        )
        assert reader.drain() == 0

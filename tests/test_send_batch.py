"""The manager's batched hand-offs (qldap.send.batch): jobs queued behind a running batch go together,
every job's result or exception reaches its own awaiter, and a backlog behind a slow job starts a
second batch instead of waiting for it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from qldap.send.batch import Batcher


def test_jobs_waiting_behind_a_batch_share_one_hand_off() -> None:
    release = threading.Event()
    order: list[int] = []

    def slow() -> str:
        release.wait(60)  # released by the test; the bound only keeps a failure from hanging
        return "slow"

    def quick(i: int) -> int:
        order.append(i)
        return i * i

    async def main() -> None:
        with ThreadPoolExecutor(4) as pool:
            batcher = Batcher(pool, width=1)
            first = batcher.run(slow)
            rest = [batcher.run(quick, i) for i in range(5)]
            await asyncio.sleep(0.05)
            release.set()
            assert await first == "slow"
            assert await asyncio.gather(*rest) == [0, 1, 4, 9, 16]
            assert order == [0, 1, 2, 3, 4]
            assert batcher.batches == 2  # the slow job alone, then the five together

    asyncio.run(main())


def test_an_exception_reaches_only_its_own_awaiter() -> None:
    def boom() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(pool)
            bad, good = batcher.run(boom), batcher.run(lambda: 7)
            with pytest.raises(OSError):
                await bad
            assert await good == 7

    asyncio.run(main())


def test_a_backlog_behind_a_slow_job_starts_a_second_batch() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(60)  # released by the test; the bound only keeps a failure from hanging
        return "slow"

    async def main() -> None:
        with ThreadPoolExecutor(4) as pool:
            batcher = Batcher(pool, width=2)
            first = batcher.run(slow)
            await asyncio.sleep(0.05)  # the slow batch is running
            quick = [batcher.run(lambda i=i: i) for i in range(2)]  # a backlog of two
            # done while the slow job still blocks the first batch
            # (were they queued behind it, they could end only when it does: 60 s, past this bound)
            assert await asyncio.wait_for(asyncio.gather(*quick), 30) == [0, 1]
            assert not first.done()
            release.set()
            assert await first == "slow"

    asyncio.run(main())


def test_lanes_run_jobs_on_at_most_size_threads_and_hand_back_results_and_exceptions() -> None:
    from qldap.lanes import Lanes

    names: set[str] = set()
    gate = threading.Barrier(3, timeout=30)

    def job(i: int) -> int:
        names.add(threading.current_thread().name)
        if i < 3:
            gate.wait()  # three jobs at once: three lanes must exist
        if i == 7:
            raise ValueError("seven")
        return i * 2

    async def main() -> list[object]:
        lanes = Lanes(3, "t-lane")
        out = await asyncio.gather(*(lanes.run(job, i) for i in range(10)), return_exceptions=True)
        lanes.shutdown()
        with pytest.raises(RuntimeError):
            lanes.run(job, 0)
        return out

    out = asyncio.run(main())
    assert [x for i, x in enumerate(out) if i != 7] == [i * 2 for i in range(10) if i != 7]
    assert isinstance(out[7], ValueError)
    assert len(names) == 3 and all(n.startswith("t-lane_") for n in names)

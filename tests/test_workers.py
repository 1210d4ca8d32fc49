"""qldap.workers: helper processes driven from an event loop (real processes, real socket pairs)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from qldap.workers import ProcessPool, WorkerCrashed, frame

HELPER = [sys.executable, str(Path(__file__).with_name("worker_echo.py"))]
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone: its job is over and the pool reaps it
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_frame_is_length_prefixed() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"


def test_jobs_run_in_helpers_that_stay_and_are_reaped_at_close() -> None:
    async def main() -> tuple[list[bytes], list[int]]:
        pool = ProcessPool(HELPER, 2, env=ENV)
        answers = await asyncio.gather(*(pool.call(b"echo:%d" % i) for i in range(6)))
        pids = pool.pids()
        assert pool.running == 2
        await pool.close()
        return answers, pids

    answers, pids = run(main())
    assert [a.split()[0] for a in answers] == [b"%d" % i for i in range(6)]
    used = {int(a.split()[1]) for a in answers}
    assert used == set(pids) and len(used) == 2  # two helpers served six jobs
    assert os.getpid() not in used
    assert not any(alive(p) for p in pids)


def test_a_helper_dying_mid_job_is_reported_and_replaced() -> None:
    async def main() -> tuple[str, bytes, int]:
        pool = ProcessPool(HELPER, 1, env=ENV)
        first = int((await pool.call(b"echo:a")).split()[1])
        with pytest.raises(WorkerCrashed) as info:
            await pool.call(b"die")
        again = await pool.call(b"echo:b")
        await pool.close()
        return str(info.value), again, first

    text, again, first = run(main())
    assert "died" in text
    assert again.split()[0] == b"b" and int(again.split()[1]) != first


def test_renew_retires_helpers_after_their_current_job() -> None:
    async def main() -> tuple[int, bytes, int]:
        pool = ProcessPool(HELPER, 1, env=ENV)
        old = int((await pool.call(b"echo:x")).split()[1])
        slow = asyncio.ensure_future(pool.call(b"sleep:0.3"))
        await asyncio.sleep(0.1)
        pool.renew()  # the busy helper finishes its job first
        assert await slow == b"slept"
        new = int((await pool.call(b"echo:y")).split()[1])
        await pool.close()
        return old, b"", new

    old, _, new = run(main())
    assert old != new
    assert not alive(old)


def test_max_jobs_retires_a_helper() -> None:
    async def main() -> set[int]:
        pool = ProcessPool(HELPER, 1, env=ENV, max_jobs=2)
        pids = {int((await pool.call(b"echo:z")).split()[1]) for _ in range(4)}
        await pool.close()
        return pids

    assert len(run(main())) == 2


def test_jobs_beyond_size_wait_for_a_free_helper() -> None:
    async def main() -> list[bytes]:
        pool = ProcessPool(HELPER, 1, env=ENV)
        out = await asyncio.gather(pool.call(b"sleep:0.2"), pool.call(b"echo:after"))
        assert pool.running == 1
        await pool.close()
        return out

    slept, after = run(main())
    assert slept == b"slept" and after.startswith(b"after ")


def test_helpers_ignore_group_signals_and_keep_their_environment() -> None:
    async def main() -> bytes:
        pool = ProcessPool(HELPER, 1, env=dict(ENV, QLDAP_TEST_MARK="m1"))
        pid = int((await pool.call(b"echo:q")).split()[1])
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGHUP)
        answer = await pool.call(b"env:QLDAP_TEST_MARK")  # the same helper, still alive
        assert pool.pids() == [pid]
        await pool.close()
        return answer

    assert run(main()) == b"m1"


def test_a_helper_that_cannot_start_is_a_crash() -> None:
    async def main() -> None:
        pool = ProcessPool(["/nonexistent/helper"], 1, env=ENV)
        with pytest.raises(WorkerCrashed):
            await pool.call(b"echo:a")
        await pool.close()

    run(main())

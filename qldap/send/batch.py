"""Run the manager's small blocking jobs in batches: one thread hand-off for many jobs.

Why: every ``run_in_executor`` costs a futex wake of a pool thread, a self-pipe write and an epoll
wake back, and on a loaded two-core machine that is 50–150 µs of CPU — more than unlinking a
finished message's four files.  Jobs submitted while a batch runs wait for it and then go together
into the next one, so under load many messages share one hand-off each way, while a lone job still
starts at once.  Order within a batch is submission order; jobs of different batches may run on
different threads at the same time, so callers must not depend on an order between them (the
manager only batches work on distinct messages).

Up to *width* batches run at once: when jobs pile up behind a running batch (a slow job, such as a
bounce injection with its fsyncs), another batch starts, so one slow job does not hold up every other
message's clean-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from qldap.lanes import resolve

T = TypeVar("T")

_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(done: list[_Done]) -> None:
    for fut, value, exc in done:
        resolve(fut, value, exc)


class Batcher:
    """Batches blocking calls onto *pool*; create and use from one event loop."""

    def __init__(self, pool: Executor, *, width: int = 2) -> None:
        self._pool = pool
        self._width = max(1, width)
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # how many hand-offs were made (for tests and curiosity)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in the pool, batched with other calls; await the returned future."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.append((fn, args, fut))
            # a second batch only once a backlog forms behind a running one (a slow job)
            start = self._running == 0 or (self._running < self._width and len(self._queue) >= 2)
            if start:
                self._running += 1
        if start:
            try:
                self._pool.submit(self._drain)
            except BaseException:
                with self._lock:
                    self._running -= 1
                    self._queue = [item for item in self._queue if item[2] is not fut]
                raise
        return fut

    def _drain(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            with self._lock:
                items, self._queue = self._queue, []
                if not items:
                    self._running -= 1
                    return
                self.batches += 1
            done: list[_Done] = []
            for fn, args, fut in items:
                try:
                    done.append((fut, fn(*args), None))
                except BaseException as exc:  # handed to the awaiting coroutine, as run_in_executor does
                    done.append((fut, None, exc))
            loop.call_soon_threadsafe(_settle, done)


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
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(done: list[_Done]) -> None:
    for fut, value, exc in done:
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


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


_Job = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _resolve(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class Lanes:
    """*size* threads running blocking jobs for one event loop; :meth:`run` returns an asyncio future.

    Why not ``loop.run_in_executor`` on a ``ThreadPoolExecutor``: that bridges a
    ``concurrent.futures.Future`` into an asyncio one through a chain of callbacks and locks, about
    35–50 µs of CPU per job on this machine, where a plain queue and one ``call_soon_threadsafe``
    cost ≈ 13 µs (docs/benchmarks.md).  Local deliveries are one job each, so this is paid per
    message.  Threads start on first use (up to *size*) and run *initializer* first (the manager
    blocks its signals there).  Create and use from one event loop.
    """

    def __init__(self, size: int, name: str, initializer: Callable[[], None] | None = None) -> None:
        self.size = max(1, size)
        self.name = name
        self._initializer = initializer
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on a lane; await the returned future.  Raises RuntimeError after shutdown."""
        if self._closed:
            raise RuntimeError("lanes are shut down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            start = self._idle == 0 and len(self._threads) < self.size
            if not start:
                self._idle -= 1 if self._idle else 0
        self._jobs.put((fut, fn, args))
        if start:
            t = threading.Thread(target=self._work, args=(loop,), name=f"{self.name}_{len(self._threads)}",
                                 daemon=True)  # fmt: skip
            self._threads.append(t)
            t.start()
        return fut

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            try:
                value, exc = fn(*args), None
            except BaseException as caught:  # handed to the awaiting coroutine, as run_in_executor does
                value, exc = None, caught
            try:
                loop.call_soon_threadsafe(_resolve, fut, value, exc)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits any more
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True) -> None:
        """Let queued jobs finish, then end every lane (joined when *wait*)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join()

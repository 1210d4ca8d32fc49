"""Threads for blocking jobs of one event loop, cheaper per job than ``run_in_executor``.

Why: ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` bridges a ``concurrent.futures.Future``
into an asyncio one through a chain of callbacks and locks — about 35–50 µs of CPU per job on the
benchmark machine — where a plain queue and one ``call_soon_threadsafe`` cost ≈ 13 µs
(docs/benchmarks.md, "send: the delivery hand-off").  The daemons hand one job per message to
threads (a local delivery, a queue injection), so this is paid per message.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def resolve(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    """Hand a job's result or exception to its future (in the loop's thread), unless it was cancelled."""
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class Lanes:
    """*size* threads running blocking jobs for one event loop; :meth:`run` returns an asyncio future.

    Threads start on first use (up to *size*) and run *initializer* first (the queue manager blocks
    its signals there).  Jobs run in submission order as lanes come free.  Create and use from one
    event loop at a time (each job remembers its loop, so a later loop may use the same lanes).
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
        self._jobs.put((loop, fut, fn, args))
        if start:
            t = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()
        return fut

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, fn, args = job
            try:
                value, exc = fn(*args), None
            except BaseException as caught:  # handed to the awaiting coroutine, as run_in_executor does
                value, exc = None, caught
            try:
                loop.call_soon_threadsafe(resolve, fut, value, exc)
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

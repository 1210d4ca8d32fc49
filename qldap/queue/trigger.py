"""The ``lock/trigger`` FIFO: the injector pulls it, the manager waits on it (qldap-queue(5), Crash
behaviour).

Pulling is best effort by design: it opens the FIFO non-blocking for writing and writes one byte; with
no reader (manager down, ``ENXIO``) or a full pipe the byte is simply lost, because the manager scans
``todo/`` on start and every 1500 s anyway.  The reader keeps its own write end open, so the FIFO
never reports end-of-file to it (qmail-send does the same): it only has to drain the bytes after
each wake-up instead of reopening the FIFO.
"""

from __future__ import annotations

import asyncio
import os
import select

from qldap.queue.layout import QueueLayout

PULL_BYTE = b"\0"


def pull(trigger_path: str) -> bool:
    """Wake the manager; True when the byte was written (failures are ignored, never raised)."""
    try:
        fd = os.open(trigger_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.write(fd, PULL_BYTE) == 1
    except OSError:
        return False
    finally:
        os.close(fd)


def pull_queue(root: str | os.PathLike[str] | QueueLayout) -> bool:
    """:func:`pull` on the trigger of the queue under *root*."""
    return pull(QueueLayout.of(root).trigger)


class TriggerReader:
    """The manager's end of the trigger: wait until some injector pulled it, or a timeout passed.

    Usable from asyncio (:meth:`wait`) or from a plain thread (:meth:`wait_blocking`).  Close it with
    :meth:`close` or as a context manager.

    Raises:
        OSError: from the constructor, when the FIFO cannot be opened.
    """

    def __init__(self, trigger_path: str) -> None:
        self.path = trigger_path
        self._rfd = os.open(trigger_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._wfd = os.open(trigger_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(self._rfd)
            raise

    def fileno(self) -> int:
        """The read descriptor (for custom event loops)."""
        return self._rfd

    def drain(self) -> int:
        """Consume every pending byte; the number of pulls seen since the last drain."""
        total = 0
        while True:
            try:
                chunk = os.read(self._rfd, 4096)
            except BlockingIOError:
                return total
            if not chunk:
                return total
            total += len(chunk)

    def wait_blocking(self, timeout: float | None) -> bool:
        """Block until pulled (True, after draining) or *timeout* seconds passed (False)."""
        if self.drain():
            return True
        ready, _, _ = select.select([self._rfd], [], [], timeout)
        return bool(ready) and self.drain() > 0

    async def wait(self, timeout: float | None) -> bool:
        """Await a pull (True, after draining) or *timeout* seconds (False), without blocking the loop."""
        if self.drain():
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(self._rfd, ready)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return self.drain() > 0
        finally:
            loop.remove_reader(self._rfd)
        return self.drain() > 0

    def close(self) -> None:
        """Close both descriptors; idempotent."""
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._rfd = self._wfd = -1

    def __enter__(self) -> TriggerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

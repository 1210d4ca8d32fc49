"""The preprocessor (qmail-todo's role): notice ``todo/`` entries and hand each to preprocessing once.

It wakes on the trigger FIFO (an injector's pull) or every 1500 s, lists ``todo/`` once per wake-up
(pulls that arrive during a scan cause exactly one more scan, never one per message), and runs
:func:`qldap.send.channels.read_todo` on the loop and
:func:`qldap.send.channels.write_preprocessed` on the manager's file pool (or hands a message with one
local recipient to the manager's fast path).  A number is never preprocessed
twice at once, nor while the manager still holds a message with that number (numbers are inode
numbers and are reused after ``end msg N``); an entry seen in such a moment is looked at again as
soon as the number is free.  A failed preprocessing is retried after 123 s.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from functools import partial
from typing import Protocol

from qldap.queue.inject import DirSyncer
from qldap.queue.layout import QueueLayout
from qldap.send import channels
from qldap.send.channels import PrepFailed, PrepHook, Preprocessed
from qldap.send.config import SendConfig
from qldap.send.schedule import RETRY_TROUBLE

SCAN_INTERVAL = 1500
INLINE_LIST_BYTES = 64 * 1024  # a directory this size holds at most a few thousand entries
TROUBLE_PAUSE = 10


class TodoHost(Protocol):
    """What the preprocessor needs from the manager."""

    layout: QueueLayout
    stopping: bool

    def current_config(self) -> SendConfig:
        """The config to preprocess with (signals applied first)."""

    def has_message(self, number: int) -> bool:
        """True while the manager holds a message with this number."""

    def preprocessed(self, done: Preprocessed) -> None:
        """Take over a message that reached S5."""

    def work(self, coro: Coroutine[object, object, object]) -> None:
        """Run queue work (awaited at a clean stop)."""

    def background(self, coro: Coroutine[object, object, object]) -> None:
        """Run a watcher (cancelled at a clean stop)."""

    def later(self, delay: float, callback: Callable[[], object]) -> None:
        """Call *callback* after *delay* seconds unless stopping."""

    def fast_track(self, routed: channels.Routed) -> bool:
        """Deliver a read ``todo/N`` before preprocessing it (True), or decline (False)."""


class Todo:
    """The ``todo/`` watcher of one manager; used from the event loop only."""

    def __init__(
        self, host: TodoHost, files: Executor, log: Callable[[str], None], hook: PrepHook | None = None
    ) -> None:
        self.host = host
        self._files = files
        self.log = log
        self._hook = hook
        self.syncer = DirSyncer()
        self._running: set[int] = set()
        self._recheck: set[int] = set()  # entries seen while their number was busy
        self._scanning = False
        self._again = False

    async def watch(self, trigger: Callable[[float], Awaitable[bool]] | None) -> None:
        """Scan now, then after every pull of *trigger* (or every 1500 s without one); until cancelled."""
        while True:
            self.scan()
            if trigger is None:
                await asyncio.sleep(SCAN_INTERVAL)
            else:
                await trigger(SCAN_INTERVAL)

    def scan(self) -> None:
        """List ``todo/`` and submit what is new (coalesced with a scan already running)."""
        if self.host.stopping:
            return
        if self._scanning:
            self._again = True
            return
        self._scanning = True
        self.host.background(self._scan())

    async def _scan(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    names = await self._list(self.host.layout.dir("todo"))
                except OSError as exc:
                    self.log(f"alert: unable to opendir todo: {exc.strerror}; sleeping...")
                    await asyncio.sleep(TROUBLE_PAUSE)
                    continue
                for number in sorted(int(n) for n in names if n.isdigit()):
                    self.submit(number)
                if not self._again:
                    return
        finally:
            self._scanning = False

    async def _list(self, path: str) -> list[str]:
        """The names in ``todo/``: on the loop while the directory is small (a listing costs less than
        a thread hand-off and back), on the file pool once a backlog has grown it.

        Raises:
            OSError: the directory cannot be read.
        """
        await asyncio.sleep(0)  # let the pulls that arrived meanwhile coalesce into this scan
        if os.stat(path).st_size <= INLINE_LIST_BYTES:
            return os.listdir(path)
        return await asyncio.get_running_loop().run_in_executor(self._files, os.listdir, path)

    def submit(self, number: int) -> None:
        """Preprocess ``todo/N`` unless that number is busy (then it is looked at when it is free)."""
        if self.host.stopping:
            return
        if number in self._running or self.host.has_message(number):
            self._recheck.add(number)
            return
        self._running.add(number)
        self.host.work(self._preprocess(number))

    def number_free(self, number: int) -> None:
        """*number* left preprocessing or the queue: look again if its ``todo`` entry was seen meanwhile."""
        if number in self._recheck:
            self._recheck.discard(number)
            if os.path.lexists(self.host.layout.todo(number)):
                self.submit(number)

    async def _preprocess(self, number: int) -> None:
        cfg = self.host.current_config()  # a HUP sent before the injection applies to it
        try:
            # reading and routing on the loop: a small read costs less than a thread hand-off
            routed = channels.read_todo(self.host.layout, number, cfg)
            if routed is None:
                done = None
            elif self.host.fast_track(routed):
                self._running.discard(number)  # the manager holds the number now
                return
            else:
                job = partial(channels.write_preprocessed, self.host.layout, routed, self.log,
                              syncer=self.syncer, hook=self._hook)  # fmt: skip
                done = await asyncio.get_running_loop().run_in_executor(self._files, job)
        except PrepFailed as exc:
            self.log(exc.line)
            self._running.discard(number)
            self.host.later(RETRY_TROUBLE, partial(self.submit, number))
            return
        self._running.discard(number)
        if done is None:
            self.number_free(number)
        else:
            self.host.preprocessed(done)

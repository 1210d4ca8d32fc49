"""The queue manager's event loop (qmail-send's role): preprocess, schedule passes, deliver, mark, eliminate.

One asyncio process does what qmail splits over qmail-send, qmail-todo and qmail-clean.  Blocking file
work (preprocessing, eliminations with their bounce injection, cleanups) runs on a small thread pool
so concurrent fsyncs overlap; local deliveries run on their own pool of ``concurrencylocal`` threads
(the spawner blocks: LDAP lookup, agent child); remote deliveries are asyncio tasks.  The decisions
are delegated to pure modules (``schedule``, ``reports``, ``bounce``, :mod:`qldap.send.state`), every
file step to :mod:`qldap.send.channels`, whose order is what makes crashes harmless, the ``todo/``
watching to :mod:`qldap.send.todo` and the deliveries of a pass to :mod:`qldap.send.passes`.

The two delivery seams are passed in (:class:`LocalDelivery`, :class:`RemoteDelivery`), as is the
clock, so tests drive hours of retry schedule without sleeping and swap the network for a test double.
Signals only set flags (:meth:`Manager.request_reload` …) and wake the loop; the flags are applied
before any new preprocessing or pass starts, so a HUP sent before an injection always applies to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from qldap import reports
from qldap.errors import ConfigError
from qldap.lanes import Lanes
from qldap.metrics import QueueFigures
from qldap.queue.cleanup import CLEANUP_INTERVAL, clean_all
from qldap.queue.layout import SPLIT, QueueLayout
from qldap.reports import Action
from qldap.send import channels
from qldap.send.batch import Batcher
from qldap.send.channels import BounceInjector, CrashHook, PrepFailed, Preprocessed
from qldap.send.config import SendConfig
from qldap.send.passes import Passes
from qldap.send.preprocess import Channel
from qldap.send.schedule import RETRY_TROUBLE, is_last_pass, next_retry
from qldap.send.state import (
    Clock,
    LocalDelivery,
    MessageState,
    Reloader,
    RemoteDelivery,
    Schedule,
    Slots,
    system_clock,
)
from qldap.send.todo import Todo

TROUBLE_PAUSE = 10  # after an alert: …sleeping...
FAST_BACKLOG = 50
"""Fast-path messages in flight per local slot before new ones take the usual path.  Large on purpose:
under a burst the fast path is the cheaper one, and switching to the dearer path exactly when the
manager falls behind would make it fall further behind; the bound only keeps a queue found at start
(100,000 messages after a stop) from becoming that many waiting coroutines."""
FILE_WORKERS = 8
MANAGER_SIGNALS = frozenset({signal.SIGHUP, signal.SIGALRM, signal.SIGTERM, signal.SIGINT})


def _quiet(_line: str) -> None:
    """A log that drops lines (preprocessing after a fast-path attempt: new msg was logged already)."""


def block_signals() -> None:
    """Keep the manager's signals away from worker threads (pool initializer).

    Then the kernel delivers HUP/ALRM/TERM to the main thread, whose handler runs before that thread
    looks at any other event: a HUP sent before an injection is seen before the injection's trigger.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, MANAGER_SIGNALS)


class Manager:
    """The running queue manager of one queue; create, then ``await run()`` in the loop's main thread."""

    def __init__(
        self,
        layout: QueueLayout,
        cfg: SendConfig,
        *,
        local: LocalDelivery,
        remote: RemoteDelivery,
        inject_bounce: BounceInjector,
        log: Callable[[str], None],
        reload: Reloader | None = None,
        clock: Clock = system_clock,
        hook: CrashHook | None = None,
        fast: bool = False,
    ) -> None:
        self.layout = layout
        self.cfg = cfg
        self.fast = fast
        self.log = log
        self.clock = clock
        self._inject_bounce = inject_bounce
        self._reload = reload
        self._hook = hook
        self.messages: dict[int, MessageState] = {}
        self.schedule = Schedule()
        self.slots = {Channel.LOCAL: Slots(cfg.local_slots), Channel.REMOTE: Slots(cfg.remote_slots)}
        self._files = ThreadPoolExecutor(FILE_WORKERS, "qldap-send-files", block_signals)
        self._local_pool = Lanes(max(1, cfg.concurrencylocal), "qldap-local", block_signals)
        self._ends = Batcher(self._files)  # the ends of messages: unlinks and eliminations, batched
        self._passes = Passes(
            layout, self.slots, local=local, remote=remote, local_pool=self._local_pool, files=self._files,
            log=log, status=self._log_status, released=self._kick, stopping=lambda: self.stopping, hook=hook,
        )  # fmt: skip
        self._tasks: set[asyncio.Future[object]] = set()
        self._watchers: set[asyncio.Future[object]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._want_reload = self._want_retry = self._want_stop = False
        self._fast_count = 0  # fast-path messages waiting for a slot or being delivered
        self._retry_epoch = 0  # SIGALRMs applied so far (a fast-path deferral being written catches up)
        self.stopping = False
        self._todo = Todo(self, self._files, log, hook)

    # -- requests from signal handlers and tests ----------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: re-read the reloadable controls before starting anything new."""
        self._want_reload = True
        self.poke()

    def request_retry(self) -> None:
        """SIGALRM: every scheduled channel entry becomes due now."""
        self._want_retry = True
        self.poke()

    def request_stop(self) -> None:
        """SIGTERM: start nothing new, finish running deliveries, store next-attempt times, exit."""
        self._want_stop = True
        self.poke()

    def poke(self) -> None:
        """Wake the scheduler (safe from signal handlers and other threads; a no-op before :meth:`run`)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- main loop ---------------------------------------------------------------------------------

    async def run(self, trigger: Callable[[float], Awaitable[bool]] | None = None) -> int:
        """Run until a stop request; returns 0 after ``status: exiting``.

        *trigger* waits for an injector's pull (``TriggerReader.wait``) up to the given seconds; without
        it ``todo/`` is only scanned at start and every 1500 s.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._log_status()
        await self._startup()
        self.background(self._todo.watch(trigger))
        self.background(self._cleanups())
        while True:
            self._apply_requests()
            if self.stopping:
                break
            timeout = self._start_due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        await self._shutdown()
        return 0

    def work(self, coro: Coroutine[object, object, object]) -> None:
        """Run *coro* as queue work: passes, preprocessing, eliminations (awaited at a clean stop)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Future[object]) -> None:
        """Forget a finished task; a bug in it is logged (the message waits for the next restart)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log(f"alert: internal error: {task.exception()!r}; a message may wait for a restart")

    def background(self, coro: Coroutine[object, object, object]) -> None:
        """Run *coro* as a watcher (todo scans, cleanups): cancelled at a clean stop."""
        task = asyncio.ensure_future(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _kick(self) -> None:
        """Wake the scheduler from inside the event loop."""
        if self._wake is not None:
            self._wake.set()

    def later(self, delay: float, callback: Callable[[], object]) -> None:
        """Call *callback* after *delay* seconds unless the manager is stopping by then."""
        assert self._loop is not None

        def fire() -> None:
            self._timers.discard(handle)
            if not self.stopping:
                callback()

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)

    def _log_status(self) -> None:
        lo, re = self.slots[Channel.LOCAL], self.slots[Channel.REMOTE]
        self.log(reports.status_line(lo.busy, lo.limit, re.busy, re.limit, exitasap=self.stopping))

    def _apply_requests(self) -> None:
        if self._want_stop:
            self._want_stop = False
            self.stopping = True
        if self._want_reload:
            self._want_reload = False
            self._do_reload()
        if self._want_retry:
            self._want_retry = False
            self._retry_epoch += 1
            self.schedule.all_due(self.clock())

    def _do_reload(self) -> None:
        if self._reload is None:
            return
        try:
            self.cfg = self._reload(self.cfg)
        except ConfigError as exc:
            text = str(exc)
            what = text.split(": ", 1)[0].removeprefix("unable to read ") if "control/" in text else text
            self.log(f"alert: unable to reread {what}")
            return
        self.slots[Channel.LOCAL].set_limit(self.cfg.local_slots)
        self.slots[Channel.REMOTE].set_limit(self.cfg.remote_slots)

    def _start_due(self) -> float | None:
        """Start every due pass a free slot allows; seconds until the next possible start, or None."""
        now = self.clock()
        timeout: float | None = None
        for channel, slots in self.slots.items():
            while slots.can_start():
                due = self.schedule.pop_due(channel, now)
                if due is None:
                    break
                msg = self.messages.get(due.number)
                if msg is None or channel not in msg.channels or channel in msg.busy:
                    continue
                slots.try_acquire()
                msg.busy.add(channel)
                self.work(self._pass(msg, channel))
            nxt = self.schedule.next_time(channel)
            if nxt is not None and slots.can_start():
                wait = max(0.0, nxt - now)
                timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    # -- start: info/ scan, todo/ watching, cleanups -----------------------------------------------

    async def _startup(self) -> None:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._files, channels.load_all, self.layout)
        for number, loaded in found:
            if isinstance(loaded, channels.Loaded):
                self._adopt(loaded)
            else:
                self.log(f"warning: trouble reading info/{number % SPLIT}/{number}: {loaded}; will try later")
                self.later(RETRY_TROUBLE, partial(self._retry_load, number))

    async def _reload_one(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(self._files, channels.load_ready, self.layout, number)
        if isinstance(loaded, channels.Loaded):
            self._adopt(loaded)
        elif loaded is not None:
            self.later(RETRY_TROUBLE, partial(self._retry_load, number))

    def _retry_load(self, number: int) -> None:
        self.work(self._reload_one(number))

    def _adopt(self, loaded: channels.Loaded) -> None:
        if loaded.number in self.messages:
            return
        msg = MessageState(loaded.number, loaded.sender, loaded.birth, {c for c, _ in loaded.due})
        self.messages[loaded.number] = msg
        for channel, when in loaded.due:
            self.schedule.add(loaded.number, channel, when)
        if not msg.channels:
            self.work(self._eliminate(msg))
        self._kick()

    def current_config(self) -> SendConfig:
        """The config for new work, after applying pending signal requests."""
        self._apply_requests()
        return self.cfg

    def queue_figures(self) -> QueueFigures:
        """Messages held and the oldest birth, for the metrics endpoint's thread.

        ``list(dict.values())`` copies under the GIL in one step, so the loop may keep changing
        ``messages`` meanwhile.
        """
        states = list(self.messages.values())
        return QueueFigures(len(states), min((m.birth for m in states), default=None))

    def has_message(self, number: int) -> bool:
        """True while message *number* is preprocessed and not yet eliminated."""
        return number in self.messages

    def preprocessed(self, done: Preprocessed) -> None:
        """Take over a message that reached S5: every channel is due now; none → eliminate."""
        msg = MessageState(done.number, done.sender, done.birth, set(done.channels))
        self.messages[done.number] = msg
        now = self.clock()
        for channel in done.channels:
            self.schedule.add(done.number, channel, now)
        if not msg.channels:
            self.work(self._eliminate(msg))
        self._kick()

    # -- the fast path: deliver first, preprocess only when the delivery did not succeed --------------

    def fast_track(self, routed: channels.Routed) -> bool:
        """Take a message with one local recipient straight from ``todo/N`` to its delivery.

        Why: preprocessing writes and fsyncs ``info`` and the channel file (two files, two
        directories) so that a message's progress survives a crash, then removes them again after
        the delivery.  When the one delivery succeeds at once, that progress never had to survive
        anything: until ``todo/N`` is unlinked a crash simply starts the message over, and the
        delivery is at-least-once either way (qmail-send(8), FAST PATH).  So a single local
        recipient is delivered first; only a deferral or a bounce makes the manager preprocess the
        message as usual (with the recipient marked done for a bounce).  Declined (False) unless
        enabled (``qldap send`` enables it; the crash tests' managers keep the usual path), when
        local deliveries are held, and after a stop has begun.
        """
        if not self.fast or self.stopping or self.cfg.local_slots == 0:
            return False
        if self._fast_count >= FAST_BACKLOG * self.cfg.local_slots:
            return False  # a backlog (send was stopped, a burst): the usual path, which scales to any size
        recipient = routed.single_local()
        if recipient is None or routed.number in self.messages:
            return False
        if os.path.lexists(self.layout.info(routed.number)):
            # left by a preprocessing that a crash interrupted: the usual path replaces it, where a
            # fast success would leave it behind without its message
            return False
        msg = MessageState(routed.number, routed.sender, routed.birth, {Channel.LOCAL}, {Channel.LOCAL})
        self.messages[routed.number] = msg
        self._fast_count += 1
        self.work(self._fast(msg, routed, recipient))
        return True

    async def _fast(self, msg: MessageState, routed: channels.Routed, recipient: str) -> None:
        try:
            await self._fast_delivery(msg, routed, recipient)
        finally:
            self._fast_count -= 1

    async def _fast_delivery(self, msg: MessageState, routed: channels.Routed, recipient: str) -> None:
        if not await self.slots[Channel.LOCAL].acquire():  # a clean stop: todo/N waits for the next start
            self._forget(msg)
            return
        channels.log_new(routed, self.log)
        now = int(self.clock())
        cfg = self.cfg
        last = is_last_pass(msg.birth, now, cfg.queuelifetime)
        report = await self._passes.attempt(msg, Channel.LOCAL, recipient, cfg, last)
        epoch = self._retry_epoch
        if report is not None and report.action is Action.MARK_DONE:
            await self._ends.run(channels.remove_delivered, self.layout, msg.number, self.log)
            self._forget(msg)
            self._kick()
            return
        # deferred or failed: preprocess now, so the retry schedule or the bounce has its files
        job = partial(channels.write_preprocessed, self.layout, routed, _quiet, syncer=self._todo.syncer)
        try:
            done = await asyncio.get_running_loop().run_in_executor(self._files, job)
        except PrepFailed as exc:
            self.log(exc.line)
            self._forget(msg, free=False)  # todo/N stays: the message starts over (delivery included)
            self.later(RETRY_TROUBLE, partial(self._todo.submit, msg.number))
            return
        msg.birth = done.birth  # as a restart would read it from info/
        path = channels.channel_path(self.layout, msg.number, Channel.LOCAL)
        # an ALRM while the files were being written applies to this deferral too, as it would have
        # had the entry been in the schedule already
        when: float = now if self._retry_epoch != epoch else next_retry(msg.birth, now, Channel.LOCAL)
        bounce = report if report is not None and report.action is Action.BOUNCE else None
        if bounce is not None and await self._passes.settle(msg.number, path, 0, bounce, recipient, cfg):
            when = now  # the next pass finds nothing left and ends the message: the bounce goes
        msg.busy.discard(Channel.LOCAL)
        self.schedule.add(msg.number, Channel.LOCAL, when)
        self._kick()

    def _forget(self, msg: MessageState, *, free: bool = True) -> None:
        if self.messages.get(msg.number) is msg:
            del self.messages[msg.number]
        if free:
            self._todo.number_free(msg.number)

    async def _cleanups(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._files, lambda: clean_all(self.layout))
            except OSError as exc:
                self.log(f"warning: qmail-clean unable to clean up: {exc.strerror}")
            else:
                for path in result.failed:
                    self.log(reports.clean_warning(os.path.relpath(path, self.layout.queue)))
            await asyncio.sleep(CLEANUP_INTERVAL)

    # -- passes and deliveries ---------------------------------------------------------------------

    async def _pass(self, msg: MessageState, channel: Channel) -> None:
        """One pass (the first slot is already held), then the channel's end or its next due time."""
        result = await self._passes.run(msg, channel, self.cfg, int(self.clock()))
        remaining = result.remaining
        if remaining == 0:
            path = channels.channel_path(self.layout, msg.number, channel)
            last = msg.channels == {channel} and not msg.eliminating
            if last:
                # the usual end of a message: unlink the channel file and eliminate in one hand-off
                msg.eliminating = True
                unlinked, done = await self._ends.run(self._finish_job(msg), path, time.time())
                msg.eliminating = False
                if not unlinked:
                    self.log(reports.clean_warning(os.path.relpath(path, self.layout.queue)))
                    remaining = 1
                else:
                    msg.busy.discard(channel)
                    msg.channels.discard(channel)
                    self._eliminated(msg, done)
                    self._kick()
                    return
            elif not await self._ends.run(channels.unlink_done, path):
                self.log(reports.clean_warning(os.path.relpath(path, self.layout.queue)))
                remaining = 1
        msg.busy.discard(channel)
        if remaining:
            self.schedule.add(msg.number, channel, result.when)
        else:
            msg.channels.discard(channel)
            if not msg.channels:
                self.work(self._eliminate(msg))
        self._kick()

    def _finish_job(self, msg: MessageState) -> Callable[[str, float], tuple[bool, bool]]:
        """Blocking: unlink the last channel file, then (only if that worked) eliminate the message."""
        layout, cfg, inject, log = self.layout, self.cfg, self._inject_bounce, self.log

        def job(path: str, now: float) -> tuple[bool, bool]:
            if not channels.unlink_done(path):
                return False, False
            return True, channels.eliminate(layout, msg.number, msg.sender, cfg, inject, log, now)

        return job

    # -- elimination -------------------------------------------------------------------------------

    async def _eliminate(self, msg: MessageState) -> None:
        if msg.eliminating:
            return
        msg.eliminating = True
        cfg = self.cfg
        job = partial(
            channels.eliminate, self.layout, msg.number, msg.sender, cfg, self._inject_bounce, self.log
        )
        done = await self._ends.run(job, time.time())
        msg.eliminating = False
        self._eliminated(msg, done)

    def _eliminated(self, msg: MessageState, done: bool) -> None:
        """After an elimination attempt: forget the message, or try again later."""
        if not done:
            self.later(RETRY_TROUBLE, lambda: self.work(self._eliminate(msg)))
            return
        if self.messages.get(msg.number) is msg:
            del self.messages[msg.number]
        self._todo.number_free(msg.number)

    # -- clean stop --------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for slots in self.slots.values():
            slots.close()
        self._log_status()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        while self._tasks:  # running passes finish their deliveries; eliminations complete
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._files.shutdown(wait=True)
        self._local_pool.shutdown(wait=True)
        for due in self.schedule.entries():
            path = channels.channel_path(self.layout, due.number, due.channel)
            try:
                os.utime(path, (due.when, due.when))
            except FileNotFoundError:
                pass
            except OSError:
                self.log(reports.utime_warning(os.path.relpath(path, self.layout.queue)))
        self.log(reports.EXITING_LINE)

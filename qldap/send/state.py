"""The manager's in-memory bookkeeping: which channel of which message is due when, and free job slots.

Why pure: qmail-send(8) SCHEDULING is arithmetic over times (birth, pass start, next attempt) and counts (busy
slots per channel).  Keeping it free of files and of asyncio's clock lets tests walk retry schedules
of hours with an injected clock, and lets the event loop ask one question per wake-up: "what is due
now, and may I start it?"  The on-disk truth stays in the queue (channel-file mtimes at a clean stop,
info mtime as birth); this is only the view of a running manager.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from qldap.reports import Letter, Report
from qldap.send.config import SendConfig
from qldap.send.preprocess import Channel


class Clock(Protocol):
    """Seconds since the epoch; the manager's only source of "now" for scheduling decisions."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The real clock."""
    return time.time()


@dataclass
class MessageState:
    """A preprocessed message (S5) as the manager tracks it.

    ``channels`` holds the channels whose file still exists; when it is empty the message is
    eliminated.  ``busy`` holds the channels that have a pass running.
    """

    number: int
    sender: str
    birth: int
    channels: set[Channel] = field(default_factory=set)
    busy: set[Channel] = field(default_factory=set)
    eliminating: bool = False


@dataclass(frozen=True, slots=True)
class Due:
    """One scheduled pass: message *number*'s *channel* is due at *when*."""

    when: float
    number: int
    channel: Channel


class Schedule:
    """Channel entries waiting for their next pass, one heap per channel; earliest first.

    An entry is present at most once per (message, channel) as long as callers add it only when it is
    not scheduled and not in a pass; the manager keeps that invariant.
    """

    def __init__(self) -> None:
        self._heaps: dict[Channel, list[tuple[float, int, int]]] = {c: [] for c in Channel}
        self._seq = itertools.count()

    def add(self, number: int, channel: Channel, when: float) -> None:
        """Schedule message *number* on *channel* at *when*."""
        heapq.heappush(self._heaps[channel], (when, next(self._seq), number))

    def next_time(self, channel: Channel | None = None) -> float | None:
        """The earliest due time (of one channel, or of all); None when nothing is scheduled."""
        channels = (channel,) if channel is not None else tuple(Channel)
        times = [self._heaps[c][0][0] for c in channels if self._heaps[c]]
        return min(times) if times else None

    def pop_due(self, channel: Channel, now: float) -> Due | None:
        """Remove and return the earliest entry of *channel* if it is due at *now*."""
        heap = self._heaps[channel]
        if not heap or heap[0][0] > now:
            return None
        when, _seq, number = heapq.heappop(heap)
        return Due(when, number, channel)

    def all_due(self, now: float) -> None:
        """SIGALRM: every scheduled entry becomes due at *now* (order kept)."""
        for channel, heap in self._heaps.items():
            self._heaps[channel] = [(min(when, now), seq, number) for when, seq, number in heap]
            heapq.heapify(self._heaps[channel])

    def entries(self) -> Iterator[Due]:
        """Every scheduled entry, in no particular order (for the clean stop)."""
        for channel, heap in self._heaps.items():
            for when, _seq, number in heap:
                yield Due(when, number, channel)

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())


class Slots:
    """Job slots of one channel: at most ``limit`` deliveries at once, handed out first come first served.

    The limit can change at run time (a HUP toggling ``holdlocal``); lowering it never interrupts a
    running delivery, it only delays the next ones.  After :meth:`close` (clean stop) nobody gets a
    slot any more.  Must be used from the event loop's thread.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.closed = False
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def waiting(self) -> int:
        """How many acquirers are queued."""
        return len(self._waiters)

    def can_start(self) -> bool:
        """True when a newcomer would get a slot at once (open, nobody queued, one free)."""
        return not self.closed and not self._waiters and self.busy < self.limit

    def try_acquire(self) -> bool:
        """Take a slot if :meth:`can_start`; True when taken."""
        if not self.can_start():
            return False
        self.busy += 1
        return True

    async def acquire(self) -> bool:
        """Wait for a slot and take it; False (no slot held) once the slots are closed."""
        if self.try_acquire():
            return True
        if self.closed:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # the slot was handed over just before the cancellation
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back and hand it to the first waiter when the limit allows."""
        self.busy -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        """Change the limit; waiters get the slots a higher limit frees."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.busy < self.limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self.busy += 1
            fut.set_result(True)

    def close(self) -> None:
        """Refuse every queued and future acquirer (clean stop: start nothing new)."""
        self.closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(False)


# -- the manager's seams ------------------------------------------------------------------------


class ReportLike(Protocol):
    """What a spawner returns: a K/Z/D letter (enum or one-letter string) and the report text."""

    @property
    def letter(self) -> Letter | str: ...

    @property
    def text(self) -> str: ...


class LocalDelivery(Protocol):
    """Deliver one local recipient; blocking, thread-safe, never raises for delivery outcomes."""

    def __call__(self, recipient: str, sender: str, message: Path) -> ReportLike: ...


class RemoteDelivery(Protocol):
    """Deliver one remote recipient with the current config; never raises for delivery outcomes."""

    def __call__(
        self, cfg: SendConfig, sender: str, recipient: str, message: Path
    ) -> Awaitable[ReportLike]: ...


Reloader = Callable[[SendConfig], SendConfig]
"""SIGHUP: the config with the reloadable values re-read; raises ConfigError (old values stay)."""


def to_report(raw: ReportLike) -> Report | None:
    """A spawner's answer as a :class:`Report`; None when the letter is not K, Z or D (mangled).

    The text is newline-terminated as qmail's spawners write it (the log shows it as a final ``/``).
    """
    letter = raw.letter.value if isinstance(raw.letter, Letter) else raw.letter
    text = raw.text if raw.text == "" or raw.text.endswith("\n") else raw.text + "\n"
    return Report.parse(letter + text) if len(letter) == 1 else None


def reloader(ctl_reader: Callable[[], SendConfig]) -> Reloader:
    """A :data:`Reloader` taking the HUP-reloadable values (qmail-send(8), PREPROCESSING) from a fresh read,
    keeping the rest."""

    def reload(old: SendConfig) -> SendConfig:
        new = ctl_reader()
        return dataclasses.replace(
            old,
            is_local=new.is_local,
            virtualdomains=new.virtualdomains,
            bouncemaxbytes=new.bouncemaxbytes,
            custombouncetext=new.custombouncetext,
            holdlocal=new.holdlocal,
            holdremote=new.holdremote,
        )

    return reload

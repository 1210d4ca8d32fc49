"""Delivery passes over one channel file: one delivery per not-done recipient, then the marks (qmail-send(8),
SCHEDULING).

A pass is the unit the scheduler starts.  It reads the channel file, fixes the pass's facts at its
start (the next retry time, whether this is the last pass of an old message), and starts one
delivery per ``T`` record as the channel's job slots allow.  Each report is logged, then acted on in
the order that keeps crashes harmless: a ``D`` report's paragraph is appended to ``bounce/N`` before
the recipient is marked, and nothing is marked before its report came back.

The channel file is read and a success is marked on the event loop itself (small reads and one-byte
writes, never an fsync); appending to ``bounce/N`` and the deliveries run on threads.

Why the spawners are seams: the local spawner blocks (LDAP lookup, agent child) and runs on a thread
pool; remote delivery is a coroutine.  Both come in as plain callables, so tests can make a delivery
defer, fail or stall on command.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from qldap import reports
from qldap.lanes import Lanes
from qldap.metrics import recorder
from qldap.queue.envelope import ChannelEntry, UnknownRecord
from qldap.queue.layout import QueueLayout
from qldap.records import RecordError
from qldap.reports import Action, Report
from qldap.send import channels
from qldap.send.bounce import bounce_paragraph
from qldap.send.channels import CrashHook, SendStep
from qldap.send.config import SendConfig
from qldap.send.preprocess import Channel, display_recipient
from qldap.send.schedule import RETRY_TROUBLE, is_last_pass, next_retry, verp_sender
from qldap.send.state import LocalDelivery, MessageState, RemoteDelivery, Slots, to_report

BOUNCE_APPEND_PAUSE = 10


@dataclass(frozen=True, slots=True)
class PassResult:
    """How a pass ended: recipients still not done, and when the channel is due again."""

    remaining: int
    when: float


class Passes:
    """Runs passes for the manager; used from the event loop only."""

    def __init__(
        self,
        layout: QueueLayout,
        slots: dict[Channel, Slots],
        *,
        local: LocalDelivery,
        remote: RemoteDelivery,
        local_pool: Lanes,
        files: Executor,
        log: Callable[[str], None],
        status: Callable[[], None],
        released: Callable[[], None],
        stopping: Callable[[], bool],
        hook: CrashHook | None = None,
    ) -> None:
        self.layout = layout
        self.slots = slots
        self._local = local
        self._remote = remote
        self._local_pool = local_pool
        self._files = files
        self.log = log
        self._status = status
        self._released = released
        self._stopping = stopping
        self._hook = hook
        self._numbers = itertools.count(1)  # delivery numbers start at 1 per manager run
        self._metrics = recorder()  # a no-op unless $QLDAP_METRICS started an endpoint

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.layout.queue)

    async def run(self, msg: MessageState, channel: Channel, cfg: SendConfig, now: int) -> PassResult:
        """One pass over *msg*'s *channel* file starting at *now*; the caller already holds one slot."""
        slots = self.slots[channel]
        next_time = next_retry(msg.birth, now, channel)
        last = is_last_pass(msg.birth, now, cfg.queuelifetime)
        path = channels.channel_path(self.layout, msg.number, channel)
        try:
            # a small read with no fsync: cheaper on the loop than a thread hand-off and back
            entries = channels.read_channel(path)
        except FileNotFoundError:
            entries = ()
        except UnknownRecord:
            self.log(f"warning: unknown record type in {self._rel(path)}")
            slots.release()
            return PassResult(1, now + RETRY_TROUBLE)
        except (OSError, RecordError) as exc:
            self.log(f"warning: trouble reading {self._rel(path)}: {exc}")
            slots.release()
            return PassResult(1, now + RETRY_TROUBLE)
        pending = [e for e in entries if not e.done]
        jobs: list[asyncio.Future[bool]] = []
        held, interrupted = True, False
        for entry in pending:
            if not held and not await slots.acquire():
                interrupted = True  # clean stop: the rest is due at once after the restart
                break
            held = False
            jobs.append(asyncio.ensure_future(self._deliver(msg, channel, path, entry, cfg, last)))
        if held:
            slots.release()
        results = await asyncio.gather(*jobs)
        return PassResult(len(pending) - sum(results), now if interrupted else next_time)

    async def _deliver(
        self, msg: MessageState, channel: Channel, path: str, entry: ChannelEntry, cfg: SendConfig, last: bool
    ) -> bool:
        """One delivery with a held slot; True when the recipient is done (success or bounce)."""
        report = await self.attempt(msg, channel, entry.address, cfg, last)
        if report is None or report.action is Action.KEEP:
            return False
        return await self.settle(msg.number, path, entry.offset, report, entry.address, cfg)

    async def attempt(
        self, msg: MessageState, channel: Channel, address: str, cfg: SendConfig, last: bool
    ) -> Report | None:
        """One delivery with a held slot (released here), logged; its report, None when mangled."""
        number = next(self._numbers)
        self.log(reports.starting_delivery_line(number, msg.number, channel.value, address))
        self._status()
        sender = verp_sender(msg.sender, address)
        mess = Path(self.layout.mess(msg.number))
        try:
            report = await self._spawn(channel, cfg, sender, address, mess)
        finally:
            self.slots[channel].release()
            self._released()
        if report is None:
            self.log(reports.delivery_line(number, None))
            self._status()
            return None
        report = reports.when_dying(reports.truncate(report), last)
        self.log(reports.delivery_line(number, report))
        if self._metrics.enabled:
            self._metrics.delivery(channel.value, report.letter.value)
        self._status()
        if self._hook is not None:
            self._hook(SendStep.REPORTED)
        return report

    async def settle(
        self, number: int, path: str, offset: int, report: Report, address: str, cfg: SendConfig
    ) -> bool:
        """Act on a success or a failure report: the failure paragraph first, then the mark."""
        paragraph = None
        if report.action is Action.BOUNCE:
            paragraph = bounce_paragraph(display_recipient(address, cfg.virtualdomains), report.text)
        return await self._settle(number, path, offset, paragraph)

    async def _spawn(
        self, channel: Channel, cfg: SendConfig, sender: str, rcpt: str, mess: Path
    ) -> Report | None:
        try:
            if channel is Channel.LOCAL:
                raw = await self._local_pool.run(self._local, rcpt, sender, mess)
            else:
                raw = await self._remote(cfg, sender, rcpt, mess)
        except Exception:  # a spawner bug is that spawner crashing (qmail-send(8) SCHEDULING texts): defer,
        # never lose mail
            crashed = reports.LOCAL_CRASHED if channel is Channel.LOCAL else reports.REMOTE_CRASHED
            return Report.parse(crashed)
        return to_report(raw)

    async def _settle(self, number: int, path: str, offset: int, paragraph: str | None) -> bool:
        """Append the failure paragraph (if any), then mark; retried while the disk is full, False at stop.

        A bare mark (one ``pwrite`` of one byte, no fsync) is made right here on the loop: handing it
        to a thread and back costs more than the write, in CPU and in context switches.
        """
        if paragraph is None:
            return self._append_and_mark(number, path, offset, None)
        loop = asyncio.get_running_loop()
        while True:
            done = await loop.run_in_executor(
                self._files, self._append_and_mark, number, path, offset, paragraph
            )
            if done:
                return True
            self.log(reports.BOUNCE_APPEND_ALERT)
            if self._stopping():
                return False
            await asyncio.sleep(BOUNCE_APPEND_PAUSE)

    def _append_and_mark(self, number: int, path: str, offset: int, paragraph: str | None) -> bool:
        """Blocking: paragraph to ``bounce/N`` first, then the ``D`` mark; False when the append failed."""
        if paragraph is not None:
            try:
                channels.append_bounce(self.layout, number, paragraph)
            except OSError:
                return False
        if not channels.mark_done(path, offset):
            self.log(reports.marking_warning(self._rel(path)))
        return True

"""``qldap send --root DIR``: the queue manager daemon, wired to the real spawners, injector and signals.

Only one manager may run per queue: it holds a non-blocking exclusive lock on ``lock/sendmutex`` for
its whole life (a second one logs ``alert: cannot start: qmail-send is already running`` and exits
111).  Log lines (qmail-send(8), LOG) go to stderr, one ``write`` per line so concurrent threads never
interleave; ``qldap send: ready`` follows once the queue is being served.

Remote delivery is found lazily (``qldap.remote.deliver.deliver_remote``); without it remote
recipients are deferred, never bounced.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Protocol, cast

from qldap import reports
from qldap.cli._run import parse_root_args, run, start_metrics
from qldap.control.domains import Locals
from qldap.control.files import ControlDir, find_root
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.local import creds
from qldap.local.spawn import LocalSpawner
from qldap.logs import stamper
from qldap.mailauth.dkimsign import DkimSigner
from qldap.metrics import QueueFigures
from qldap.queue.codes import QueueError
from qldap.queue.envelope import Envelope
from qldap.queue.inject import Injector, QueuedMessage, how_invoked
from qldap.queue.layout import QueueLayout, resolve_ids
from qldap.queue.trigger import TriggerReader
from qldap.reports import Letter, Report
from qldap.send.config import SendConfig
from qldap.send.manager import Manager, block_signals
from qldap.send.signing import signing_bounces
from qldap.send.state import RemoteDelivery, ReportLike, reloader

PROG = "qldap send"
ALREADY_RUNNING = "qmail-send is already running"
BOUNCE_HOW = "for bounce"  # the bounce's Received line (qmail-send(8), BOUNCES), whoever runs the manager
REMOTE_MISSING = Report(Letter.TEMPORARY, "Remote delivery is not available on this host. (#4.3.0)\n")


class _DeliverRemote(Protocol):
    def __call__(
        self, root: Path, cfg: SendConfig, sender: str, recipient: str, message: Path
    ) -> Awaitable[ReportLike]: ...


class StderrLog:
    """Whole lines to stderr: the loop's lines of one iteration in one ``write``, other threads' at once.

    Why: a delivered message makes seven log lines (qmail-send(8), LOG), each a ``write`` that hands
    the GIL over; the loop's lines are collected and written together at the start of the loop's next
    iteration (microseconds later).  A line from another thread first writes what the loop collected,
    in the same ``write``, so the file keeps the order in which lines were logged.  :meth:`flush` runs
    before the program exits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp = stamper(os.environ)  # LOGTIMESTAMPS
        self._pending: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._scheduled = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Collect the lines logged in *loop*'s thread (call from that thread)."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def __call__(self, line: str) -> None:
        data = (self._stamp() + line + "\n").encode("utf-8", "surrogateescape")
        loop = self._loop
        if loop is not None and threading.get_ident() == self._loop_thread and not loop.is_closed():
            with self._lock:
                self._pending.append(data)
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.flush)
            return
        with self._lock:
            pending, self._pending = self._pending, []
            self._write(b"".join(pending) + data if pending else data)

    def flush(self) -> None:
        """Write what the loop collected."""
        self._scheduled = False
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                self._write(b"".join(pending))

    @staticmethod
    def _write(data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(2, view) :]
        except OSError:
            pass


def remote_delivery(root: Path) -> RemoteDelivery:
    """The real remote delivery when ``qldap.remote.deliver`` exists, else a seam that defers."""
    try:
        module = importlib.import_module("qldap.remote.deliver")
        deliver = cast(_DeliverRemote, module.deliver_remote)
    except (ImportError, AttributeError):

        async def missing(cfg: SendConfig, sender: str, recipient: str, message: Path) -> ReportLike:
            return REMOTE_MISSING

        return missing

    def real(cfg: SendConfig, sender: str, recipient: str, message: Path) -> Awaitable[ReportLike]:
        return deliver(root, cfg, sender, recipient, message)

    return real


def read_config(ctl: ControlDir) -> SendConfig:
    """The manager's config; ``locals.cdb`` is consulted per lookup.

    Raises:
        ConfigError: a control file is unreadable or ``me`` is missing.
    """
    return SendConfig.from_control(ctl, is_local=Locals(ctl).contains)


def lock_sendmutex(layout: QueueLayout) -> int | None:
    """The descriptor holding ``lock/sendmutex`` exclusively; None when another manager holds it.

    Raises:
        OSError: the lock file cannot be opened.
    """
    fd = os.open(layout.sendmutex, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _parse(args: Sequence[str]) -> str | None:
    try:
        return parse_root_args(args)
    except ValueError as exc:
        raise ConfigError(f"usage: qldap send [--root DIR] ({exc})") from None


async def _serve(root: Path, layout: QueueLayout, log: StderrLog) -> int:
    log.attach(asyncio.get_running_loop())
    try:
        return await _serve_attached(root, layout, log)
    finally:
        log.flush()


async def _serve_attached(root: Path, layout: QueueLayout, log: StderrLog) -> int:
    ctl = ControlDir(root)
    try:
        cfg = read_config(ctl)
    except ConfigError as exc:
        log(reports.cannot_start_line(str(exc)))
        return ExitCode.TEMPORARY
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="qldap-send", initializer=block_signals))
    ids = resolve_ids()
    injector = Injector(root, workers=2, ids=ids)
    uid = os.getuid()
    how = how_invoked(uid, ids)

    def inject_bytes(data: bytes, sender: str, recipients: tuple[str, ...]) -> int:
        try:
            return injector.inject(data, Envelope(sender, recipients), how=how, uid=uid).qp
        except QueueError as exc:
            raise exc.failure() from None

    def inject_bounce(chunks: Iterable[bytes], envelope: Envelope) -> QueuedMessage:
        return injector.inject(chunks, envelope, how=BOUNCE_HOW, uid=uid)

    signed_bounce = signing_bounces(inject_bounce, DkimSigner(ctl), log)

    held: list[Manager] = []  # the endpoint may be scraped before the manager exists
    start_metrics(
        PROG, "send", os.environ, queue=lambda: held[0].queue_figures() if held else QueueFigures(0, None)
    )
    creds.drop_groups()  # root's supplementary groups must not leak into deliveries made as users
    spawner = LocalSpawner(root, inject_bytes, log=log)

    def reload(old: SendConfig) -> SendConfig:
        new = reloader(lambda: read_config(ctl))(old)
        spawner.reload()
        return new

    manager = Manager(layout, cfg, local=spawner.deliver, remote=remote_delivery(root),
                      inject_bounce=signed_bounce, log=log, reload=reload, fast=True)  # fmt: skip
    held.append(manager)
    handlers = {
        signal.SIGHUP: manager.request_reload,
        signal.SIGALRM: manager.request_retry,
        signal.SIGTERM: manager.request_stop,
    }
    for signum, request in handlers.items():
        # Python-level handlers (not loop.add_signal_handler): they run in the main thread before it
        # processes the next event, so a HUP always precedes a later injection's trigger.
        signal.signal(signum, _handler(request))
    try:
        trigger = TriggerReader(layout.trigger)
    except OSError as exc:
        log(reports.cannot_start_line(f"unable to open lock/trigger: {exc.strerror}"))
        return ExitCode.TEMPORARY
    try:
        log.flush()  # lines logged so far come before the ready line
        sys.stderr.write(f"{PROG}: ready\n")
        sys.stderr.flush()
        return await manager.run(trigger.wait)
    finally:
        trigger.close()
        injector.close()
        spawner.reload()


def _handler(request: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        request()

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``qldap send [--root DIR]``."""

    def body(args: Sequence[str]) -> int:
        if list(args) in (["-h"], ["--help"]):
            print("usage: qldap send [--root DIR]  (the queue manager; SIGHUP reload, SIGALRM retry now, "
                  "SIGTERM stop)")
            return ExitCode.OK
        root = find_root(_parse(args))
        layout = QueueLayout.of(root)
        log = StderrLog()
        try:
            lock = lock_sendmutex(layout)
        except OSError as exc:
            log(reports.cannot_start_line(f"unable to open lock/sendmutex: {exc.strerror}"))
            return ExitCode.TEMPORARY
        if lock is None:
            log(reports.cannot_start_line(ALREADY_RUNNING))
            return ExitCode.TEMPORARY
        try:
            return asyncio.run(_serve(root, layout, log))
        finally:
            os.close(lock)

    return run(PROG, body, argv)

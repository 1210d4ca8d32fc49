"""``qldap smtpd --processes N``: N forked worker processes serving the same listeners.

Why several processes: one asyncio process holds one GIL, so ``qldap smtpd`` alone uses one core
however many sessions it serves.  The parent parses the options once, reserves every listening
address, forks the workers and then only supervises: a worker that dies is forked again (at most
one restart per second and worker), SIGHUP is passed on to every worker, SIGTERM/SIGINT stop them all
and the parent exits 0 when the last one has stopped.  It signals and waits for its own workers only,
by the pids :func:`os.fork` returned.

Why SO_REUSEPORT and not one inherited listening socket: with one shared socket every idle worker's
event loop is woken for each new connection and whichever process calls ``accept`` first wins, which
on Linux piles the connections onto the least busy-looking loop (often one) and wastes wake-ups.
With SO_REUSEPORT each worker listens on its own socket bound to the same address, and the kernel
spreads new connections evenly over them by a hash of the client's address and port.  The cost: the
connections waiting in a dead worker's accept queue are reset (the client retries; nothing was
accepted, so no mail is at stake).  The parent keeps one bound, never listening socket per address
with SO_REUSEPORT set: it turns ``PORT`` 0 into one port that every worker binds, keeps that port
reserved while a worker is restarted, and a port used by another program fails at start.

What is per worker (qmail-smtpd(8), qldap-services(5)): ``--max-sessions`` and ``--max-per-ip`` and
the session numbers in the log, whose lines then read ``qmail-smtpd[PID] N:``.  Metrics (``$QLDAP_METRICS``)
are served once by the parent in prometheus-client's multiprocess mode, summing what every worker
records (:func:`qldap.metrics.prepare_multiprocess`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from qldap import metrics
from qldap.cli._run import run, start_metrics
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.smtpd.server import ServerOptions

PROG = "qldap smtpd"
RESTART_PAUSE = 1.0
"""Seconds between a worker's death and its next fork when it lived shorter than that (a crash loop)."""

Ready = Callable[[Sequence[tuple[str, int]]], None]
ServeOne = Callable[[ServerOptions, Ready], int]


def reserve(listen: Sequence[tuple[str, int]]) -> tuple[list[socket.socket], tuple[tuple[str, int], ...]]:
    """One bound SO_REUSEPORT socket per address (never listening) and the addresses with real ports.

    Raises:
        ConfigError: an address cannot be bound (in use by another program, not local …).
    """
    held: list[socket.socket] = []
    concrete: list[tuple[str, int]] = []
    try:
        for host, port in listen:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(info[4])
            concrete.append((host, int(sock.getsockname()[1])))
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ConfigError(f"unable to listen: {exc.strerror or exc}") from exc
    return held, tuple(concrete)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the parent dies, so no orphan keeps serving the port."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class _Workers:
    """The parent's bookkeeping: which pid serves which slot, since when, and whether we are stopping."""

    def __init__(self, options: ServerOptions, serve_one: ServeOne, held: list[socket.socket]) -> None:
        self.options = options
        self.serve_one = serve_one
        self.held = held
        self.parent = os.getpid()
        self.pids: dict[int, tuple[int, float]] = {}  # pid → (slot, monotonic start)
        self.stopping = False

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self.parent:  # a worker between fork and its own handlers
            return
        if signum != signal.SIGHUP:
            self.stopping = True
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM if signum != signal.SIGHUP else signal.SIGHUP)
            except ProcessLookupError:
                pass

    def spawn(self, slot: int) -> tuple[int, int]:
        """Fork the worker for *slot*; (its pid, the read end of its readiness pipe)."""
        rfd, wfd = os.pipe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code: int = ExitCode.TEMPORARY
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                os.close(rfd)
                for sock in self.held:
                    sock.close()
                _die_with_parent()

                def ready(_bound: Sequence[tuple[str, int]]) -> None:
                    try:
                        os.write(wfd, b"R")
                    except OSError:
                        pass  # the parent is gone: its death signal follows
                    os.close(wfd)

                code = run(PROG, lambda _args: self.serve_one(self.options, ready), [])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(wfd)
        self.pids[pid] = (slot, time.monotonic())
        if self.stopping:  # TERM arrived while forking
            os.kill(pid, signal.SIGTERM)
        return pid, rfd


def _await_ready(rfd: int) -> bool:
    """True when the worker said it listens; False when it ended first (its pipe closed)."""
    try:
        while True:
            try:
                return os.read(rfd, 1) == b"R"
            except InterruptedError:
                continue
    finally:
        os.close(rfd)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited {os.waitstatus_to_exitcode(status)}"


def serve_workers(options: ServerOptions, count: int, serve_one: ServeOne, announce: Ready) -> int:
    """Run *count* workers of ``serve_one`` until SIGTERM/SIGINT; 0 after a clean stop, 111 when a
    worker could not start.

    Raises:
        ConfigError: a listener cannot be reserved, or the metrics endpoint cannot be served.
    """
    held, listen = reserve(options.listen)
    options = replace(options, listen=listen, worker=True)
    metrics_dir: Path | None = None
    endpoint = None
    try:
        if options.environ.get(metrics.ENV):
            metrics_dir = Path(tempfile.mkdtemp(prefix="qldap-smtpd-metrics."))
            metrics.prepare_multiprocess(metrics_dir)
            endpoint = start_metrics(PROG, "smtpd", options.environ)
        workers = _Workers(options, serve_one, held)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, workers.on_signal)
        started = [workers.spawn(slot) for slot in range(count)]
        failed = [pid for pid, rfd in started if not _await_ready(rfd)] and not workers.stopping
        if failed:  # its own fatal line said why
            workers.on_signal(signal.SIGTERM, None)
        else:
            announce(listen)
            sys.stderr.write(f"{PROG}: {count} worker processes: {' '.join(map(str, workers.pids))}\n")
            sys.stderr.flush()
        _supervise(workers)
        return ExitCode.TEMPORARY if failed else ExitCode.OK
    finally:
        for sock in held:
            sock.close()
        if endpoint is not None:
            metrics.stop(endpoint)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(workers: _Workers) -> None:
    """Reap workers until none is left; fork a dead one again unless stopping."""
    while workers.pids:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        entry = workers.pids.pop(pid, None)
        if entry is None:
            continue
        metrics.worker_exited(pid)
        if workers.stopping:
            continue
        slot, since = entry
        sys.stderr.write(f"{PROG}: worker {pid} {_status(status)}; starting another\n")
        sys.stderr.flush()
        lived = time.monotonic() - since
        if lived < RESTART_PAUSE:
            time.sleep(RESTART_PAUSE - lived)
        if not workers.stopping:
            new, rfd = workers.spawn(slot)
            if _await_ready(rfd):
                sys.stderr.write(f"{PROG}: worker {new} started\n")
                sys.stderr.flush()

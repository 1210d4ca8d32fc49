"""Helper processes that do blocking jobs one at a time, driven from an asyncio daemon.

Why processes and not a thread pool: CPython hands its global lock over at every blocking system call.
A daemon whose pool threads each make a dozen small calls per message (open, write, fsync, link,
unlink, a directory round trip) spends most of its kernel time waking and parking threads: profiles
of ``qldap send`` showed about 500 futex calls per delivered message and more system than user time
(docs/benchmarks.md).  A helper process has one thread, so its calls contend with nobody, and the
daemon's own process is left with its event loop; the kernel also spreads the helpers over every core.
This is qmail's shape again — qmail-send hands local deliveries to qmail-lspawn, qmail-smtpd hands the
message to qmail-queue — with the difference that a helper serves many jobs instead of one.

Protocol (on a Unix stream socket pair): the parent writes one frame, the helper answers with one frame;
a frame is a 4-byte big-endian length and that many bytes.  The helper's job is whatever *handler*
its program passes to :func:`serve`.  A helper that dies mid-job makes :meth:`ProcessPool.call` raise
:class:`WorkerCrashed` (the caller defers, it never guesses an outcome) and is replaced on the next call.

Helpers ignore HUP, INT, TERM and ALRM: the daemon decides when to stop, finishes its jobs and closes
the sockets; a helper that reads end-of-file exits.  So a signal sent to the whole process group (a
Ctrl-C, a supervisor) never kills a delivery half-way, and a killed daemon leaves no helper behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
FD_ENV = "QLDAP_WORKER_FD"
"""The environment variable naming the helper's end of the socket pair."""

IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


class WorkerCrashed(Exception):
    """The helper died or broke the protocol before it answered; the job's outcome is unknown."""


def frame(payload: bytes) -> bytes:
    """*payload* with its length prefix."""
    if len(payload) > MAX_FRAME:
        raise ValueError("frame too large")
    return _HEADER.pack(len(payload)) + payload


# ---- the helper's side ------------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    """*n* bytes, or None at end-of-file before the first byte; raises EOFError on a cut frame."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            if got == 0:
                return None
            raise EOFError("frame cut short")
        got += k
    return bytes(buf)


def serve(handler: Callable[[bytes], bytes], fd: int | None = None) -> int:
    """The helper's main loop: answer each request frame with ``handler(request)`` until end-of-file.

    *handler* must not raise for a job's outcome (encode it in the answer); an exception escaping it
    ends the helper, which the daemon sees as :class:`WorkerCrashed`.  Returns the exit code (0).
    """
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if fd is None:
        fd = int(os.environ[FD_ENV])
    sock = socket.socket(fileno=fd)
    with sock:
        while True:
            head = _recv_exactly(sock, _HEADER.size)
            if head is None:
                return 0
            (n,) = _HEADER.unpack(head)
            body = _recv_exactly(sock, n) if n else b""
            if body is None:
                raise EOFError("frame cut short")
            sock.sendall(frame(handler(body)))


# ---- the daemon's side ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    generation: int
    jobs: int = 0


@dataclass(eq=False)
class _State:
    idle: list[_Worker] = field(default_factory=list)
    busy: set[_Worker] = field(default_factory=set)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    starting: int = 0


class ProcessPool:
    """Up to *size* helper processes running *argv*; :meth:`call` sends one job to an idle helper.

    Helpers start on demand (the first jobs wait for the interpreter to start) and stay.  *max_jobs*
    (0: unlimited) retires a helper after that many jobs, bounding what a slow leak can grow to.
    :meth:`renew` (the daemon's SIGHUP) retires every helper once its current job is done, so jobs
    after it run in helpers that read the configuration afresh.  Use from one event loop only.
    """

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        *,
        env: Mapping[str, str] | None = None,
        max_jobs: int = 0,
        cwd: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one helper")
        self.argv = list(argv)
        self.size = size
        self.env = dict(os.environ if env is None else env)
        self.max_jobs = max_jobs
        self.cwd = cwd
        self._generation = 0
        self._state = _State()
        self._closed = False
        self._reaping: set[asyncio.Future[int]] = set()

    @property
    def running(self) -> int:
        """Helpers alive now (idle, busy or starting)."""
        s = self._state
        return len(s.idle) + len(s.busy) + s.starting

    def pids(self) -> list[int]:
        """The helpers' process ids (for metrics and tests)."""
        return [w.proc.pid for w in (*self._state.idle, *self._state.busy)]

    async def call(self, request: bytes) -> bytes:
        """Run one job; raises :class:`WorkerCrashed` when the helper died before answering."""
        worker = await self._acquire()
        try:
            worker.writer.write(frame(request))
            await worker.writer.drain()
            head = await worker.reader.readexactly(_HEADER.size)
            (n,) = _HEADER.unpack(head)
            answer = await worker.reader.readexactly(n) if n else b""
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._discard(worker)
            raise WorkerCrashed(f"helper {worker.proc.pid} died during a job") from exc
        except BaseException:
            self._discard(worker)  # cancelled mid-job: its answer would confuse the next caller
            raise
        worker.jobs += 1
        self._release(worker)
        return answer

    def renew(self) -> None:
        """Retire every helper after its current job (idle ones now)."""
        self._generation += 1
        idle, self._state.idle = self._state.idle, []
        for worker in idle:
            self._retire(worker)

    async def close(self) -> None:
        """Stop accepting jobs, wait for running ones, end every helper and reap it."""
        self._closed = True
        self.renew()
        while self._state.busy or self._state.starting:
            await asyncio.sleep(0.05)
        for fut in self._state.waiters:
            if not fut.done():
                fut.cancel()
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        s = self._state
        while True:
            if self._closed:
                raise WorkerCrashed("the pool is closed")
            if s.idle:
                worker = s.idle.pop()
                s.busy.add(worker)
                return worker
            if self.running < self.size:
                s.starting += 1
                try:
                    worker = await self._spawn()
                finally:
                    s.starting -= 1
                s.busy.add(worker)
                return worker
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            s.waiters.append(fut)
            try:
                await fut
            finally:
                if fut in s.waiters:
                    s.waiters.remove(fut)

    def _wake_one(self) -> None:
        for fut in self._state.waiters:
            if not fut.done():
                fut.set_result(None)
                return

    def _release(self, worker: _Worker) -> None:
        self._state.busy.discard(worker)
        stale = worker.generation != self._generation or self._closed
        if stale or (self.max_jobs and worker.jobs >= self.max_jobs):
            self._retire(worker)
        else:
            self._state.idle.append(worker)
        self._wake_one()

    def _discard(self, worker: _Worker) -> None:
        self._state.busy.discard(worker)
        self._retire(worker)
        self._wake_one()

    def _retire(self, worker: _Worker) -> None:
        """Close the helper's socket (it exits at end-of-file) and reap it in the background."""
        worker.writer.close()
        fut = asyncio.get_running_loop().run_in_executor(None, worker.proc.wait)
        self._reaping.add(fut)
        fut.add_done_callback(self._reaping.discard)

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = dict(self.env)
            env[FD_ENV] = str(child.fileno())
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, pass_fds=(child.fileno(),), env=env, cwd=self.cwd
            )
        except OSError as exc:
            parent.close()
            raise WorkerCrashed(f"unable to start a helper: {exc.strerror}") from exc
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=1 << 20)
        return _Worker(proc, reader, writer, self._generation)


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter: helpers run the same code as the daemon."""
    return [sys.executable, "-m", module, *args]

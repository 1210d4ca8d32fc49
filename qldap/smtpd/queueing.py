"""Hand a received message to the queue: queue writer helpers, the in-process injector, or QMAILQUEUE.

qmail-smtpd(8) DATA "Queue hand-off" and qmail-queue(8), EXIT STATUS.  The glue collects the message in a
:class:`MessageSpool` while DATA streams in, then :meth:`QueueHandoff.commit` queues it and returns a
:class:`QueueOutcome`: queued (with ``qp``) or the ``D…``/``Z…`` caller text that
:meth:`~qldap.smtpd.session.Session.queue_done` turns into ``554``/``451``.

Why spool first and queue at the final dot, instead of streaming into the queue during DATA: a
queue writer is busy for the whole of a message, and a slow client would then hold one for
minutes; spooled, the writer is busy only for the disk writes and fsyncs.  Nothing reaches the queue
before the message is complete and accepted by the data-end checks, so a dropped connection or a
``kill -9`` mid-DATA leaves nothing behind.  Memory stays bounded: past :data:`SPILL_AT` bytes the
spool moves to a temporary file (``pid/spool.*``, next to the queue's scratch files), so a 20 MB
message is held once, on disk, and never twice in memory; a writer helper reads it there by name.

Who writes (qmail-smtpd(8), OPTIONS ``--queue-workers``): by default the in-process injector on a few
threads, which share one DirSyncer so the directory fsyncs of concurrent messages overlap (group
commit).  With ``--queue-workers N`` the daemon hands each message to one of N helper processes
(:mod:`qldap.queue.writer`, driven by :class:`~qldap.workers.ProcessPool`), so its event loop never
shares the interpreter lock with threads doing file-system calls; a helper that dies mid-message makes
the reply the temporary ``451 qq write error or disk full (#4.3.0)`` and is replaced.  Why not the
default: on two busy cores the helpers cost more CPU in all than the hand-overs they remove
(docs/benchmarks.md).  The stdin/stdout mode always writes in-process.  ``qp`` is the injector's or
this hand-off's per-process counter, or the pid of the external program.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import IO

from qldap.queue.codes import QueueError, QueueExit, caller_text
from qldap.queue.external import run_queue_program
from qldap.queue.inject import Injector, how_invoked
from qldap.queue.layout import QmailIds, QueueLayout, resolve_ids
from qldap.queue.writer import MODULE as WRITER_MODULE
from qldap.queue.writer import FileSegment, Segment, WriteAnswer, WriteRequest, parse_envelope
from qldap.workers import ProcessPool, WorkerCrashed, python_argv

SPILL_AT = 1 << 20  # bytes kept in memory before the spool moves to a temporary file
SPILL_PREFIX = "spool."  # pid/spool.XXXX: never a name of the pid/<qp>.<time>.<seq> scratch files
_READ = 1 << 16


@dataclass(frozen=True, slots=True)
class QueueOutcome:
    """The queue's answer: ``text`` None = queued; else the ``D…``/``Z…`` caller text."""

    text: str | None
    qp: int
    number: int | None = None

    @property
    def queued(self) -> bool:
        """True when the message is durably queued."""
        return self.text is None


class MessageSpool:
    """One message on its way to the queue: trace headers + converted DATA, in memory or spilled.

    A write error while spilling (disk full) is remembered, the rest of the data is discarded, and
    the commit reports ``Zqq write error or disk full (#4.3.0)``.
    """

    def __init__(self, head: bytes, *, spill_at: int = SPILL_AT, spill_dir: str | None = None) -> None:
        self._chunks: list[bytes] = [head] if head else []
        self._head_len = len(head)
        self._prefix = b""
        self._header: tuple[int, bytes] | None = None  # (client header length, replacement)
        self._memory = len(head)
        self._spill_at = spill_at
        self._dir = spill_dir
        self._file: IO[bytes] | None = None
        self._path: str | None = None  # the spill file's name: a queue writer helper reads it there
        self.failed = False

    @property
    def spilled(self) -> bool:
        """True once the spool lives in a temporary file."""
        return self._file is not None

    def write(self, data: bytes) -> None:
        """Append converted message bytes."""
        if self.failed or not data:
            return
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._chunks.append(data)
            self._memory += len(data)
            if self._memory > self._spill_at:
                self._spill()
        except OSError:
            self.failed = True
            self.close()

    def _spill(self) -> None:
        try:
            fd, path = tempfile.mkstemp(prefix=SPILL_PREFIX, dir=self._dir)
        except OSError:
            fd, path = tempfile.mkstemp(prefix=SPILL_PREFIX)  # the queue directory refused; try the default
        self._path = path
        f = self._file = os.fdopen(fd, "w+b")
        for chunk in self._chunks:
            f.write(chunk)
        self._chunks, self._memory = [], 0

    def prepend(self, data: bytes) -> None:
        """Put *data* in front of the message (DKIM-Signature lines made over what is spooled)."""
        self._prefix = data + self._prefix

    def client_data(self, limit: int = -1) -> bytes:
        """The message as the client sent it (after the trace head), at most *limit* bytes when
        not negative, for the inbound checks."""
        end = None if limit < 0 else self._head_len + limit
        if self._file is None:
            return b"".join(self._chunks)[self._head_len : end]
        f = self._file
        f.flush()
        f.seek(self._head_len)
        return f.read(limit)

    def amend(self, prefix: bytes, header_len: int, header: bytes) -> None:
        """Queue *prefix* before the trace head, and *header* instead of the client's first
        *header_len* bytes (Authentication-Results added, forged ones removed: qmail-smtpd(8))."""
        self._prefix = prefix + self._prefix
        self._header = (header_len, header)

    def source(self) -> bytes | Iterable[bytes]:
        """The whole message: bytes when in memory (one ``writev`` for the injector), else chunks."""
        if self._file is None:
            data = b"".join(self._chunks)
            if self._header is None:
                return self._prefix + data if self._prefix else data
            cut, header = self._header
            head = self._head_len
            return b"".join((self._prefix, data[:head], header, data[head + cut :]))
        f = self._file
        f.flush()
        f.seek(0)
        if self._header is None and not self._prefix:
            return iter(partial(f.read, _READ), b"")
        cut, header = self._header or (0, b"")
        first = self._prefix + f.read(self._head_len) + header
        f.seek(self._head_len + cut)
        return itertools.chain((first,), iter(partial(f.read, _READ), b""))

    def segments(self) -> tuple[Segment, ...]:
        """The whole message for a queue writer helper: bytes, and the spill file by name from the
        offset where the client's data continues unchanged (qldap.queue.writer: never copied)."""
        if self._file is None or self._path is None:
            source = self.source()
            assert isinstance(source, bytes)
            return (source,)
        f = self._file
        f.flush()
        if self._header is None and not self._prefix:
            return (FileSegment(self._path, 0),)
        cut, header = self._header or (0, b"")
        f.seek(0)
        first = self._prefix + f.read(self._head_len) + header
        return (first, FileSegment(self._path, self._head_len + cut))

    def close(self) -> None:
        """Drop the data (the temporary file disappears with its descriptor)."""
        self._chunks, self._memory = [], 0
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError:
                pass
        if self._path is not None:
            path, self._path = self._path, None
            try:
                os.unlink(path)
            except OSError:
                pass  # left to the 36-hour pid/ cleanup (qldap-queue(5))


def program_environment(
    session_env: Mapping[str, str], relayclient: str | None, auth_user: str | None
) -> dict[str, str]:
    """The external queue program's environment: the session's, with this transaction's RELAYCLIENT
    (absent when the transaction may not relay) and SMTPAUTHUSER after AUTH."""
    env = dict(session_env)
    env.pop("RELAYCLIENT", None)
    if relayclient is not None:
        env["RELAYCLIENT"] = relayclient
    if auth_user is not None:
        env["SMTPAUTHUSER"] = auth_user
    return env


class QueueHandoff:
    """Queues messages for one root: through *writers* queue writer helper processes, or with 0 on the
    in-process injector's *workers* threads; external QMAILQUEUE programs run on *workers* threads
    either way."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        workers: int = 16,
        writers: int = 0,
        ids: QmailIds | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = os.fspath(root)
        self.ids = ids or resolve_ids()
        self.layout = QueueLayout.of(self.root)
        self.how = how_invoked(self.ids.qmaild, self.ids)
        self.log = log
        self.writers: ProcessPool | None = None
        self.injector: Injector | None = None
        if writers > 0:
            self.writers = ProcessPool(python_argv(WRITER_MODULE, "--root", self.root), writers)
        else:
            self.injector = Injector(root, workers=workers, ids=self.ids)
        self._qp = itertools.count(1)
        self._programs = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qldap-qmailqueue")

    @property
    def spill_dir(self) -> str:
        """Where spools of large messages go (the queue's scratch directory)."""
        return self.layout.dir("pid")

    def new_spool(self, head: bytes) -> MessageSpool:
        """A spool for one message starting with *head* (the X-RBL and Received lines)."""
        return MessageSpool(head, spill_dir=self.spill_dir)

    async def commit(
        self, spool: MessageSpool, envelope: bytes, *, program: str | None, environ: Mapping[str, str]
    ) -> QueueOutcome:
        """Queue the spooled message for *envelope*; *program* (QMAILQUEUE) runs with *environ*.

        Never raises for queue failures: they come back as the outcome's text.
        """
        try:
            if spool.failed:
                return QueueOutcome(caller_text(QueueExit.WRITE_ERROR), 0)
            if program is not None:
                return await self._external(program, spool, envelope, environ)
            if self.writers is not None:
                return await self._write(spool, envelope)
            return await self._inject(spool, envelope)
        finally:
            spool.close()

    async def _write(self, spool: MessageSpool, envelope: bytes) -> QueueOutcome:
        """One job for a queue writer helper; its death is a temporary write error (qmail-queue(8))."""
        assert self.writers is not None
        request = WriteRequest(next(self._qp), self.ids.qmaild, self.how, envelope, spool.segments())
        try:
            answer = WriteAnswer.decode(await self.writers.call(request.encode()))
        except (WorkerCrashed, ValueError) as exc:
            if self.log is not None:
                self.log(f"queue writer failed: {exc}")
            return QueueOutcome(caller_text(QueueExit.WRITE_ERROR), 0)
        if answer.code:
            return QueueOutcome(caller_text(answer.code), 0)
        return QueueOutcome(None, answer.qp, answer.number)

    async def _inject(self, spool: MessageSpool, envelope: bytes) -> QueueOutcome:
        assert self.injector is not None
        try:
            env = parse_envelope(envelope)
            queued = await self.injector.inject_async(spool.source(), env, how=self.how, uid=self.ids.qmaild)
        except QueueError as exc:
            return QueueOutcome(exc.text, 0)
        return QueueOutcome(None, queued.qp, queued.number)

    async def _external(
        self, program: str, spool: MessageSpool, envelope: bytes, environ: Mapping[str, str]
    ) -> QueueOutcome:
        job = partial(run_queue_program, program, spool.source(), envelope, env=environ, cwd=self.root)
        result = await asyncio.get_running_loop().run_in_executor(self._programs, job)
        return QueueOutcome(result.text or None, result.pid)

    def renew(self) -> None:
        """SIGHUP: queue writers finish their current message and are replaced, so the next ones read
        the qmail users and the controls afresh."""
        if self.writers is not None:
            self.writers.renew()

    async def aclose(self) -> None:
        """Stop the queue writers after their running jobs (on the event loop, before :meth:`close`)."""
        if self.writers is not None:
            await self.writers.close()

    def close(self) -> None:
        """Wait for running hand-offs and stop the thread pools."""
        if self.injector is not None:
            self.injector.close()
        self._programs.shutdown(wait=True)

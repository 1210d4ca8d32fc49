"""The in-process injector: one message from nothing (S1) to durably queued in ``todo`` (S4).

Steps and exit codes follow qmail-queue (qmail-queue(8)): a ``pid/`` scratch file created exclusively
gives the message number (its inode), hard-linked to ``mess/S/N`` (S2); the ``Received:`` line and the
message are written and fsynced; ``intd/N`` is created exclusively with the envelope (S3), fsynced, and
hard-linked to ``todo/N`` (S4: accepted).  Any failure removes what this call created and raises
:class:`QueueError` with the exit code the submitter reports; "accepted" is only returned after the
message file, its ``mess/S`` directory entry, the envelope file and the ``todo`` entry are on disk.

Why no lock: the file system provides every exclusion needed (exclusive creates, inode numbers), so
concurrent injections from a thread pool only share :class:`DirSyncer`, which lets one directory fsync
cover every link made before it started — concurrent messages' fsyncs overlap instead of queueing.

Crash semantics are testable through :data:`StepHook`: it is called after each step inside that step's
error handling, so an ``OSError`` from it is that step's failure, and a hook that kills the process
there is a crash at exactly that point.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Protocol, TypeVar, runtime_checkable

from qldap.control.files import ControlDir
from qldap.dates import qmail_date
from qldap.errors import ConfigError
from qldap.fsutil import fsync_dir, write_all
from qldap.lanes import Lanes
from qldap.queue.codes import QueueError, QueueExit
from qldap.queue.envelope import Envelope, TodoEntry, bigbrother_copies, check_address, format_todo
from qldap.queue.layout import MESSAGE_FILE_MODE, QmailIds, QueueLayout
from qldap.queue.trigger import pull

T = TypeVar("T")

_COPY_SIZE = 65536
_SEQ_TRIES = range(1, 10)  # pid/<pid>.<time>.<seq>, seq 1–9


class Step(Enum):
    """The points of an injection, in order; :data:`StepHook` is called after each."""

    PID_CREATED = "pid created"  # S1 (scratch name only)
    MESS_LINKED = "mess linked"  # S2
    PID_UNLINKED = "pid unlinked"
    MESS_WRITTEN = "mess written"
    MESS_SYNCED = "mess synced"
    MESS_DIR_SYNCED = "mess dir synced"
    INTD_CREATED = "intd created"  # S3
    INTD_WRITTEN = "intd written"
    INTD_SYNCED = "intd synced"
    TODO_LINKED = "todo linked"  # S4: accepted once the todo directory is synced
    TODO_SYNCED = "todo synced"


StepHook = Callable[[Step], None]
EnvelopeSource = Envelope | Callable[[], Envelope]


@runtime_checkable
class Readable(Protocol):
    """A binary stream: anything with ``read(n) -> bytes``."""

    def read(self, size: int = -1, /) -> bytes: ...


MessageSource = bytes | bytearray | memoryview | Readable | Iterable[bytes]


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """An accepted message: its queue number and the injector id logged as ``qp``."""

    number: int
    qp: int


def received_line(pid: int, how: str, when: float) -> bytes:
    """``Received: (qmail <pid> invoked <how>); <date>\\n``."""
    return f"Received: (qmail {pid} invoked {how}); {qmail_date(when)}\n".encode()


def how_invoked(uid: int, ids: QmailIds) -> str:
    """The ``<how>`` of the Received line for a submitter with real uid *uid*.

    Only with the real qmail users (multi-user) do ``alias``/``qmaild``/``qmails`` get their words;
    in single-user mode every role is one uid and ``by uid <uid>`` is the honest answer.
    """
    if ids.multiuser:
        if uid == ids.alias:
            return "by alias"
        if uid == ids.qmaild:
            return "from network"
        if uid == ids.qmails:
            return "for bounce"
    return f"by uid {uid}"


@dataclass
class _DirState:
    started: int = 0
    done: int = 0
    running: bool = False
    failures: dict[int, OSError] = field(default_factory=dict)


class DirSyncer:
    """fsync directories for many threads at once: one fsync covers every entry made before it began.

    A thread that just linked a name calls :meth:`sync`; if a sync of that directory is already running
    (it may have started before the link) the thread waits for the next one, which a single waiter runs
    for everybody waiting.  Thread-safe; one instance per process is enough.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._dirs: dict[str, _DirState] = {}

    def sync(self, path: str) -> None:
        """Return once an fsync of directory *path* that started after this call has succeeded.

        Raises:
            OSError: that fsync (or opening the directory) failed.
        """
        with self._cond:
            st = self._dirs.setdefault(path, _DirState())
            need = st.started + 1
            while st.done < need:
                if not st.running:
                    st.running = True
                    st.started += 1
                    gen = st.started
                    self._cond.release()
                    error: OSError | None = None
                    try:
                        fsync_dir(path)
                    except OSError as exc:
                        error = exc
                    finally:
                        self._cond.acquire()
                    st.running = False
                    st.done = gen
                    if error is not None:
                        st.failures[gen] = error
                        while len(st.failures) > 64:
                            st.failures.pop(min(st.failures))
                    self._cond.notify_all()
                else:
                    self._cond.wait()
            failed = st.failures.get(need)
        if failed is not None:
            raise failed


class _Attempt:
    """The files one injection created, so a failure can remove exactly those."""

    def __init__(self) -> None:
        self.pid_path: str | None = None
        self.mess_path: str | None = None
        self.intd_path: str | None = None
        self.fd = -1

    def close_fd(self) -> None:
        """Close the open file (its close error is the caller's step failure)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def cleanup(self) -> None:
        """Truncate and unlink what was made, intd before mess (never an intd without its mess).

        Errors here cannot be reported better than the failure being handled; whatever stays behind
        is in state S2/S3 and removed by the 36-hour cleanup.
        """
        for path in (self.intd_path, self.mess_path, self.pid_path):
            if path is None:
                continue
            try:
                os.truncate(path, 0)
            except OSError:
                pass
            try:
                os.unlink(path)
            except OSError:
                return
        if self.fd >= 0:
            try:
                self.close_fd()
            except OSError:
                pass


def _step(code: QueueExit, what: str, action: Callable[[], T], hook: StepHook | None, step: Step) -> T:
    """Run one step; its OSError (or the hook's) becomes ``QueueError(code)``."""
    try:
        result = action()
        if hook is not None:
            hook(step)
    except OSError as exc:
        raise QueueError(code, f"{what}: {exc.strerror or exc}") from exc
    return result


def inject(
    root: str | os.PathLike[str] | QueueLayout,
    message: MessageSource,
    envelope: EnvelopeSource,
    *,
    how: str,
    uid: int,
    pid: int,
    bigbrother: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    hook: StepHook | None = None,
    syncer: DirSyncer | None = None,
    ids: QmailIds | None = None,
    trigger: bool = True,
) -> QueuedMessage:
    """Queue *message* for *envelope*; return once it is durably in ``todo`` (exit 0).

    Args:
        root: the qmail root (``ROOT/queue`` is used), or its layout.
        message: the whole message with LF line ends: bytes, a binary stream, or chunks.
        envelope: the envelope, or a function producing it after the message was read (the
            ``qmail-queue`` program reads fd 1 only then); it may raise :class:`QueueError`.
        how: ``by alias``, ``from network``, ``for bounce`` or ``by uid <uid>`` (:func:`how_invoked`).
        uid, pid: the submitter's uid and the injector id (``qp``) recorded in ``todo``.
        bigbrother: ``control/bigbrother`` as a lower-cased map; None reads it from ``ROOT/control``.
        ids: when given with :attr:`QmailIds.chown`, new files are given to ``qmailq``.
        trigger: pull ``lock/trigger`` after success.

    Raises:
        QueueError: with the exit code; nothing this call created remains (see the module docstring
            for the one exception, a failed fsync of ``todo`` after the link).
    """
    layout = QueueLayout.of(root)
    sync = syncer or DirSyncer()
    if isinstance(envelope, Envelope):
        _validate(envelope)  # fail before creating anything
    if bigbrother is None:
        try:
            bigbrother = ControlDir(layout.root).mapping("bigbrother")
        except ConfigError as exc:
            raise QueueError(QueueExit.CONFIG, str(exc)) from exc
    now = clock()
    att = _Attempt()
    try:
        number = _create_number(layout, att, pid, int(now), hook, ids)
        _write_message(att, received_line(pid, how, now), message, hook)
        mess_dir = layout.split_dir("mess", number)
        _step(QueueExit.MESS_FILE, "sync mess dir", lambda: sync.sync(mess_dir), hook, Step.MESS_DIR_SYNCED)
        _step(QueueExit.WRITE_ERROR, "close mess", att.close_fd, None, Step.MESS_DIR_SYNCED)
        env = envelope if isinstance(envelope, Envelope) else envelope()
        if env is not envelope:
            _validate(env)
        data = format_todo(TodoEntry(uid, pid, env), bigbrother_copies(env, bigbrother))
        _write_intd(layout, att, number, data, hook, ids)
        intd, todo = layout.intd(number), layout.todo(number)
        _step(QueueExit.TODO_FILE, "link todo", lambda: os.link(intd, todo), None, Step.TODO_LINKED)
    except BaseException:
        att.cleanup()
        raise
    # Linked: from here the manager may already be preprocessing it, so nothing is removed any more.
    # A failed directory sync is reported (the submitter retries: a possible duplicate, never a loss).

    def sync_todo() -> None:
        if hook is not None:
            hook(Step.TODO_LINKED)
        sync.sync(layout.dir("todo"))

    _step(QueueExit.TODO_FILE, "sync todo", sync_todo, hook, Step.TODO_SYNCED)
    if trigger:
        pull(layout.trigger)
    return QueuedMessage(number, pid)


def _validate(env: Envelope) -> None:
    check_address(env.sender)
    for rcpt in env.recipients:
        check_address(rcpt)


def _open_new(path: str, ids: QmailIds | None) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MESSAGE_FILE_MODE)
    try:
        os.fchmod(fd, MESSAGE_FILE_MODE)  # independent of the daemon's umask
        if ids is not None and ids.chown:
            os.fchown(fd, ids.qmailq, ids.gid)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def _create_number(
    layout: QueueLayout, att: _Attempt, pid: int, now: int, hook: StepHook | None, ids: QmailIds | None
) -> int:
    last: OSError | None = None
    for seq in _SEQ_TRIES:
        path = layout.pid(f"{pid}.{now}.{seq}")
        try:
            att.fd = _open_new(path, ids)
        except FileExistsError as exc:
            last = exc
            continue
        except OSError as exc:
            code = QueueExit.QUEUE_DIR if not os.path.isdir(layout.queue) else QueueExit.PID_FILE
            raise QueueError(code, f"create pid file: {exc.strerror}") from exc
        att.pid_path = path
        break
    else:
        raise QueueError(QueueExit.PID_FILE, f"pid file names taken: {last}")

    fd = att.fd
    number = _step(QueueExit.PID_FILE, "fstat pid file", lambda: os.fstat(fd).st_ino, hook, Step.PID_CREATED)
    mess = layout.mess(number)

    def link() -> None:
        os.link(path, mess)
        att.mess_path = mess

    _step(QueueExit.MESS_FILE, "link mess", link, hook, Step.MESS_LINKED)

    def unlink_pid() -> None:
        os.unlink(path)
        att.pid_path = None

    _step(QueueExit.PID_FILE, "unlink pid file", unlink_pid, hook, Step.PID_UNLINKED)
    return number


def _write_message(att: _Attempt, received: bytes, message: MessageSource, hook: StepHook | None) -> None:
    fd = att.fd

    def write() -> None:
        if isinstance(message, bytes | bytearray | memoryview):
            _writev_all(fd, received, message)
            return
        write_all(fd, received)
        for chunk in _read_chunks(message):
            write_all(fd, chunk)

    _step(QueueExit.WRITE_ERROR, "write mess", write, hook, Step.MESS_WRITTEN)
    _step(QueueExit.WRITE_ERROR, "fsync mess", lambda: os.fsync(fd), hook, Step.MESS_SYNCED)


def _read_chunks(message: Readable | Iterable[bytes]) -> Iterator[bytes]:
    """The source's chunks; a read error becomes ``QueueError(54)`` (not a write error)."""
    if isinstance(message, Readable):
        stream = message
        source: Iterator[bytes] = iter(partial(stream.read, _COPY_SIZE), b"")
    else:
        source = iter(message)
    while True:
        try:
            chunk = next(source, None)
        except OSError as exc:
            raise QueueError(QueueExit.READ_ERROR, f"read message: {exc.strerror or exc}") from exc
        if chunk is None:
            return
        if chunk:
            yield chunk


def _writev_all(fd: int, head: bytes, body: bytes | bytearray | memoryview) -> None:
    n = os.writev(fd, [head, body])
    if n < len(head):
        write_all(fd, head[n:])
        write_all(fd, body)
    elif n < len(head) + len(body):
        write_all(fd, memoryview(body)[n - len(head) :])


def _write_intd(
    layout: QueueLayout, att: _Attempt, number: int, data: bytes, hook: StepHook | None, ids: QmailIds | None
) -> None:
    path = layout.intd(number)

    def create() -> None:
        att.fd = _open_new(path, ids)
        att.intd_path = path

    _step(QueueExit.INTD_FILE, "create intd", create, hook, Step.INTD_CREATED)
    fd = att.fd
    _step(QueueExit.WRITE_ERROR, "write intd", lambda: write_all(fd, data), hook, Step.INTD_WRITTEN)
    _step(QueueExit.WRITE_ERROR, "fsync intd", lambda: os.fsync(fd), hook, Step.INTD_SYNCED)
    _step(QueueExit.WRITE_ERROR, "close intd", att.close_fd, None, Step.INTD_SYNCED)


class Injector:
    """A daemon's long-lived injector: one queue, a shared :class:`DirSyncer`, ``qp`` numbers, a pool.

    ``qp`` numbers come from a per-process counter (qmail-smtpd(8): "a unique numeric id from the queue
    layer"); they also name the ``pid/`` scratch file, where a clash with another process only costs a
    retry with the next sequence number.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, workers: int = 8, ids: QmailIds | None = None
    ) -> None:
        self.layout = QueueLayout.of(root)
        self.ids = ids
        self.controls = ControlDir(self.layout.root)
        self.syncer = DirSyncer()
        self._qp = itertools.count(1)
        self._qp_lock = threading.Lock()
        self._lanes = Lanes(workers, "qldap-inject")

    def next_qp(self) -> int:
        """A new injector id, unique within this process."""
        with self._qp_lock:
            return next(self._qp)

    def inject(self, message: MessageSource, envelope: Envelope, *, how: str, uid: int) -> QueuedMessage:
        """Blocking, thread-safe :func:`inject` into this queue with a fresh ``qp``.

        Raises:
            QueueError: with the exit code.
        """
        try:
            watch = self.controls.mapping("bigbrother")
        except ConfigError as exc:
            raise QueueError(QueueExit.CONFIG, str(exc)) from exc
        return inject(
            self.layout, message, envelope, how=how, uid=uid, pid=self.next_qp(),
            bigbrother=watch, syncer=self.syncer, ids=self.ids,
        )  # fmt: skip

    async def inject_async(
        self, message: MessageSource, envelope: Envelope, *, how: str, uid: int
    ) -> QueuedMessage:
        """:meth:`inject` on the injector's threads (qldap.lanes), so concurrent messages' fsyncs overlap.

        Raises:
            QueueError: with the exit code.
        """
        return await self._lanes.run(partial(self.inject, message, envelope, how=how, uid=uid))

    def close(self) -> None:
        """Wait for running injections and stop the pool."""
        self._lanes.shutdown(wait=True)

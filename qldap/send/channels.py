"""The manager's file work on one message: preprocessing, loading at restart, marks, bounce files, removal.

Every function here is blocking and touches only the files of one message number, so the manager can
run many of them at once on a thread pool while its event loop keeps scheduling.  Order and fsyncs
follow qmail-send(8) exactly, because they are what makes a crash at any instant harmless:

* preprocessing writes and fsyncs ``info`` and every channel file (and their directory entries)
  before ``intd`` and then ``todo`` go, so until ``todo/N`` is gone a crash simply redoes it from
  scratch, and after that the channel files are durable (S5);
* a recipient's ``T`` becomes ``D`` only after success, or after its failure paragraph was appended
  to ``bounce/N``, so a crash can repeat a delivery but never skip one;
* removal unlinks ``info`` before ``mess``, so a half-removed message is never delivered again and
  is left to the 36-hour cleanup.

:data:`PrepHook` is called after each preprocessing step, so a test can kill the process exactly there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from qldap import reports
from qldap.errors import ConfigError, TemporaryFailure
from qldap.fsutil import read_small
from qldap.queue.codes import QueueError
from qldap.queue.envelope import (
    ChannelEntry,
    Envelope,
    TodoEntry,
    UnknownRecord,
    format_info,
    parse_channel,
    parse_info,
    parse_todo,
)
from qldap.queue.inject import DirSyncer, QueuedMessage
from qldap.queue.layout import SPLIT, QueueLayout
from qldap.records import RecordError, encode
from qldap.send.bounce import BouncePlan, Discard, plan_bounce
from qldap.send.config import SendConfig
from qldap.send.preprocess import Channel, rewrite_recipient

Log = Callable[[str], None]
FILE_MODE = 0o600
_COPY = 65536


class PrepStep(Enum):
    """Points of preprocessing, in order; :data:`PrepHook` is called after each."""

    INFO_CREATED = "info created"
    CHANNELS_WRITTEN = "channels written"
    SYNCED = "synced"
    INTD_UNLINKED = "intd unlinked"
    TODO_UNLINKED = "todo unlinked"  # S5


class SendStep(Enum):
    """Manager points a crash test can stop at (besides :class:`PrepStep`)."""

    REPORTED = "delivery reported, not yet marked"


PrepHook = Callable[[PrepStep], None]
CrashHook = Callable[[PrepStep | SendStep], None]

BounceInjector = Callable[[Iterable[bytes], Envelope], QueuedMessage]
"""Blocking injection of a bounce (chunks, envelope); raises QueueError."""


class PrepFailed(Exception):
    """Preprocessing of one message failed; ``todo/N`` stays and is retried later.

    ``line`` is the log line to write (a ``warning: qmail-todo: …`` text).
    """

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


@dataclass(frozen=True, slots=True)
class Preprocessed:
    """A message that reached S5: its sender, birth (info mtime) and the channels it has files in."""

    number: int
    sender: str
    birth: int
    channels: tuple[Channel, ...]


@dataclass(frozen=True, slots=True)
class Loaded:
    """A message found in ``info/`` at start: sender, birth and each channel file's mtime (due time)."""

    number: int
    sender: str
    birth: int
    due: tuple[tuple[Channel, float], ...]


def channel_path(layout: QueueLayout, number: int, channel: Channel) -> str:
    """``queue/local/S/N`` or ``queue/remote/S/N``."""
    return layout.local(number) if channel is Channel.LOCAL else layout.remote(number)


def _unlink_missing_ok(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_new(path: str, data: bytes) -> int:
    """Create *path* exclusively and write *data*; returns the open descriptor (caller closes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _rewrite_all(recipients: tuple[str, ...], cfg: SendConfig) -> dict[Channel, list[str]]:
    out: dict[Channel, list[str]] = {}
    for rcpt in recipients:
        try:
            rewritten = rewrite_recipient(rcpt, cfg)
        except (ConfigError, TemporaryFailure):
            raise PrepFailed("warning: qmail-todo: unable to read control/locals.cdb") from None
        out.setdefault(rewritten.channel, []).append(rewritten.address)
    return out


@dataclass(frozen=True, slots=True)
class Routed:
    """``todo/N`` read and its recipients routed: everything preprocessing writes, decided, nothing written.

    ``birth`` is the mtime of ``todo/N`` (when the injector finished); a message that is preprocessed
    gets its ``info`` mtime instead, a moment later.
    """

    number: int
    entry: TodoEntry
    size: int
    birth: int
    routed: dict[Channel, list[str]]

    @property
    def sender(self) -> str:
        return self.entry.envelope.sender

    def single_local(self) -> str | None:
        """The recipient when the message has exactly one, and it is local; else None."""
        if len(self.routed) == 1 and len(self.routed.get(Channel.LOCAL, ())) == 1:
            return self.routed[Channel.LOCAL][0]
        return None


def read_todo(layout: QueueLayout, number: int, cfg: SendConfig) -> Routed | None:
    """Read ``todo/N`` and route its recipients; None when ``todo/N`` is already gone.

    Raises:
        PrepFailed: ``todo/N`` unreadable or malformed, ``mess/N`` missing, routing failed.
    """
    todo = layout.todo(number)
    try:
        fd = os.open(todo, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PrepFailed(f"warning: qmail-todo: unable to open todo/{number}: {exc.strerror}") from exc
    try:
        birth = int(os.fstat(fd).st_mtime)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise PrepFailed(f"warning: qmail-todo: unable to open todo/{number}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    try:
        entry = parse_todo(data)
    except UnknownRecord:
        raise PrepFailed(f"warning: qmail-todo: unknown record type in todo/{number}") from None
    except RecordError:
        raise PrepFailed(f"warning: qmail-todo: trouble reading todo/{number}") from None
    try:
        size = os.stat(layout.mess(number)).st_size
    except OSError as exc:
        raise PrepFailed(f"warning: qmail-todo: unable to stat mess/{number}: {exc.strerror}") from exc
    routed = _rewrite_all(entry.envelope.recipients, cfg)
    return Routed(number, entry, size, birth, routed)


def log_new(routed: Routed, log: Log) -> None:
    """``new msg N`` and ``info msg N: …`` (qmail-send(8), LOG)."""
    log(reports.new_msg_line(routed.number))
    entry = routed.entry
    log(reports.info_msg_line(routed.number, routed.size, entry.envelope.sender, entry.pid, entry.uid))


def write_preprocessed(
    layout: QueueLayout,
    routed: Routed,
    log: Log,
    *,
    syncer: DirSyncer,
    hook: PrepHook | None = None,
) -> Preprocessed:
    """Write ``info`` and the channel files of *routed*, fsync them and their directories, then unlink
    ``intd`` and ``todo`` (S4 → S5); logs ``new msg N`` and ``info msg N`` as it goes (*log* may be a
    no-op when the lines were logged already).

    Raises:
        PrepFailed: anything went wrong; ``todo/N`` is left for a later attempt (which unlinks what
            this one created before starting over).
    """
    number = routed.number
    info = layout.info(number)
    paths = {c: channel_path(layout, number, c) for c in Channel}
    fds: list[int] = []
    try:
        for path in (paths[Channel.LOCAL], paths[Channel.REMOTE], info):
            _unlink_missing_ok(path)
        fds.append(_write_new(info, format_info(routed.sender)))
        log(reports.new_msg_line(number))
        if hook is not None:
            hook(PrepStep.INFO_CREATED)
        entry = routed.entry
        log(reports.info_msg_line(number, routed.size, entry.envelope.sender, entry.pid, entry.uid))
        for channel in Channel:
            if channel in routed.routed:
                data = b"".join(encode("T", addr) for addr in routed.routed[channel])
                fds.append(_write_new(paths[channel], data))
        if hook is not None:
            hook(PrepStep.CHANNELS_WRITTEN)
        for fd in fds:
            os.fsync(fd)
        syncer.sync(layout.split_dir("info", number))
        for channel in routed.routed:
            syncer.sync(layout.split_dir(channel.value, number))
        birth = int(os.fstat(fds[0]).st_mtime)
        if hook is not None:
            hook(PrepStep.SYNCED)
        _unlink_missing_ok(layout.intd(number))
        if hook is not None:
            hook(PrepStep.INTD_UNLINKED)
        os.unlink(layout.todo(number))
        if hook is not None:
            hook(PrepStep.TODO_UNLINKED)
    except RecordError:
        raise PrepFailed(f"warning: qmail-todo: NUL in an address of todo/{number}") from None
    except OSError as exc:
        raise PrepFailed(
            f"warning: qmail-todo: trouble preprocessing msg {number}: {exc.strerror or exc}"
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)
    return Preprocessed(number, routed.sender, birth, tuple(c for c in Channel if c in routed.routed))


def remove_delivered(layout: QueueLayout, number: int, log: Log) -> None:
    """The end of a message delivered before it was preprocessed: ``end msg N``, then ``todo`` (so a
    crash from here on never delivers it again), ``intd`` and ``mess``.

    What cannot be removed is logged and left to the 36-hour cleanup (a ``mess`` with neither
    ``todo`` nor ``info``).
    """
    _end(layout, number, (layout.todo(number), layout.intd(number), layout.mess(number)), log)


def _end(layout: QueueLayout, number: int, paths: tuple[str, ...], log: Log) -> None:
    """``end msg N``, then *paths* unlinked in order; each that cannot be removed is logged
    (``warning: qmail-clean unable to clean up FILE``) and left to the 36-hour cleanup."""
    log(reports.end_msg_line(number))
    for path in paths:
        try:
            _unlink_missing_ok(path)
        except OSError:
            log(reports.clean_warning(os.path.relpath(path, layout.queue)))


def load(layout: QueueLayout, number: int) -> Loaded:
    """A preprocessed message as found at start: sender from ``info``, birth, channel files' mtimes.

    Raises:
        OSError: ``info`` cannot be read or a channel file cannot be examined.
        RecordError: ``info`` is malformed (``UnknownRecord`` for an unknown letter).
    """
    info = layout.info(number)
    with open(info, "rb") as fh:
        sender = parse_info(fh.read())
        birth = int(os.fstat(fh.fileno()).st_mtime)
    due: list[tuple[Channel, float]] = []
    for channel in Channel:
        try:
            due.append((channel, os.stat(channel_path(layout, number, channel)).st_mtime))
        except FileNotFoundError:
            continue
    return Loaded(number, sender, birth, tuple(due))


def load_ready(layout: QueueLayout, number: int) -> Loaded | str | None:
    """:func:`load` for a message whose preprocessing is complete; None when it has ``todo/N`` (to be
    preprocessed again) or no ``info`` any more, the error text when it cannot be read now."""
    if os.path.lexists(layout.todo(number)):
        return None
    try:
        return load(layout, number)
    except FileNotFoundError:
        return None
    except (OSError, RecordError) as exc:
        return str(exc)


def load_all(layout: QueueLayout) -> list[tuple[int, Loaded | str]]:
    """The restart scan of ``info/``: :func:`load_ready` for every message number found there."""
    out: list[tuple[int, Loaded | str]] = []
    for i in range(SPLIT):
        try:
            names = os.listdir(f"{layout.dir('info')}/{i}")
        except FileNotFoundError:
            continue
        for number in sorted(int(n) for n in names if n.isdigit()):
            loaded = load_ready(layout, number)
            if loaded is not None:
                out.append((number, loaded))
    return out


def read_channel(path: str) -> tuple[ChannelEntry, ...]:
    """The recipients of a channel file with their marks and offsets.

    Raises:
        OSError: the file cannot be read.
        RecordError: malformed (``UnknownRecord`` for an unknown letter).
    """
    return parse_channel(read_small(path))


def mark_done(path: str, offset: int) -> bool:
    """Overwrite the ``T`` at *offset* of *path* with ``D`` (one byte, no fsync); False on failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.pwrite(fd, b"D", offset) == 1
    except OSError:
        return False
    finally:
        os.close(fd)


def unlink_done(path: str) -> bool:
    """Remove a channel file whose recipients are all done; False when it could not be removed."""
    try:
        _unlink_missing_ok(path)
    except OSError:
        return False
    return True


def append_bounce(layout: QueueLayout, number: int, paragraph: str) -> None:
    """Append one failure paragraph to ``bounce/N`` (created when missing).

    Raises:
        OSError: the paragraph could not be written completely.
    """
    data = reports.to_bytes(paragraph)
    fd = os.open(layout.bounce(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_bounce(layout: QueueLayout, number: int) -> str | None:
    """The paragraphs collected in ``bounce/N``; None when there is no such file.

    Raises:
        OSError: the file exists but cannot be read.
    """
    try:
        with open(layout.bounce(number), "rb") as fh:
            return reports.from_bytes(fh.read())
    except FileNotFoundError:
        return None


def bounce_chunks(plan: BouncePlan, mess_path: str) -> Iterator[bytes]:
    """The bounce message as chunks: the head, the allowed part of ``mess``, the stripped marker.

    Raises:
        OSError: ``mess`` cannot be read (surfaces through the injector as a read error).
    """
    with open(mess_path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        yield plan.head
        left = plan.copy_size(size)
        while left > 0:
            chunk = fh.read(min(_COPY, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        tail = plan.tail(size)
        if tail:
            yield tail


def remove(layout: QueueLayout, number: int, log: Log) -> None:
    """The end of elimination: ``end msg N``, then ``info`` (S2), ``intd`` and ``mess`` (S1) unlinked.

    A path that cannot be removed is logged (``warning: qmail-clean unable to clean up FILE``); what
    stays is garbage for the 36-hour cleanup, never a message that is delivered again.
    """
    _end(layout, number, (layout.info(number), layout.intd(number), layout.mess(number)), log)


def eliminate(
    layout: QueueLayout,
    number: int,
    sender: str,
    cfg: SendConfig,
    inject: BounceInjector,
    log: Log,
    now: float,
) -> bool:
    """Elimination (qmail-send(8)): send the bounce if ``bounce/N`` exists, then :func:`remove`.

    Returns False when it must be tried again later (``bounce/N`` unreadable, injection failed);
    nothing has been removed then.  A failed unlink of ``bounce/N`` after a successful injection is
    only logged: the message is finished, and an extra attempt would send the bounce twice.
    """
    try:
        paragraphs = read_bounce(layout, number)
    except OSError:
        log(f"warning: unable to read bounce/{number}; will try later")
        return False
    if paragraphs is not None:
        plan = plan_bounce(cfg, sender, paragraphs, now)
        if isinstance(plan, Discard):
            log(reports.triple_bounce_line(number))
        else:
            try:
                queued = inject(
                    bounce_chunks(plan, layout.mess(number)), Envelope(plan.sender, (plan.recipient,))
                )
            except QueueError:
                log("warning: trouble injecting bounce message, will try later")
                return False
            log(reports.bounce_msg_line(number, queued.qp))
        try:
            os.unlink(layout.bounce(number))
        except OSError:
            log(reports.clean_warning(f"bounce/{number}"))
    remove(layout, number, log)
    return True

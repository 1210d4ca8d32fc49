"""The queue writer: a long-lived helper process that queues messages for a daemon, one at a time.

``python -m qldap.queue.writer --root ROOT`` is qmail-queue(8) turned into a helper of
:mod:`qldap.workers`: each request carries a whole message and its envelope, and the helper runs the
same :func:`~qldap.queue.inject.inject` as every other injector — ``pid/`` scratch file, ``mess``
written and fsynced, its directory synced, ``intd`` written and fsynced, ``todo`` linked and its
directory synced — before it answers.  So the durability contract is unchanged: the daemon says
``250`` only after the helper answered that the files and their directory entries are on disk.

Why a process and not the daemon's thread pool: each of the dozen blocking system calls of an
injection made the pool thread give the interpreter lock back and take it again, and in ``qldap
smtpd`` those hand-overs between the event loop and sixteen pool threads were two thirds of its CPU
time (docs/benchmarks.md, "smtpd: queue writes in helper processes").  A helper has one thread; the
daemon's part of a message is one frame written and one read on a socket pair.

What a request carries (:class:`WriteRequest`): the ``qp`` the daemon assigned (it also names the
``pid/`` scratch file, as a per-process counter did before), the submitter's uid and ``how`` for the
``Received:`` line, the raw envelope (``F…\\0T…\\0\\0``, parsed here so malformed ones fail with
qmail-queue's codes), and the message as segments.  Decision: a message small enough to stay in the
daemon's memory travels inline in the frame; one the daemon already spilled to a file travels as the
*path* of that file and an offset (:class:`FileSegment`), and the helper reads it from there — never
a copy through the socket.  A path and not a passed descriptor because the pool's frames carry bytes
only; the spill file is therefore a named, mode 0600 file in the queue's ``pid/`` directory (the
daemon removes it after the answer, and a crash leaves it to the 36-hour ``pid/`` cleanup), and the
helper runs under the daemon's uid, so it may open it.

The answer (:class:`WriteAnswer`) is the message number and ``qp``, or the QueueExit code and the
detail for the log; the daemon turns the code into the caller text with
:func:`~qldap.queue.codes.caller_text`, so the ``451``/``554`` replies are byte for byte those of the
in-process injector.  A helper that dies mid-job tells the daemon nothing: the daemon reports a
temporary write error (the client retries; at worst a duplicate, never a loss).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.queue.codes import QueueError, QueueExit
from qldap.queue.envelope import Envelope, InputReader
from qldap.queue.inject import DirSyncer, MessageSource, QueuedMessage, inject
from qldap.queue.layout import QmailIds, QueueLayout, resolve_ids
from qldap.workers import serve

MODULE = "qldap.queue.writer"
_CHUNK = 1 << 16
_HEAD = struct.Struct(">QIHIH")  # qp, uid, len(how), len(envelope), segment count
_INLINE = struct.Struct(">I")
_FILE = struct.Struct(">QH")  # offset, len(path)
_QUEUED = struct.Struct(">QQ")  # qp, message number
_FAILED = struct.Struct(">H")  # QueueExit code


@dataclass(frozen=True, slots=True)
class FileSegment:
    """The bytes of the file at *path* from *offset* to its end (a spilled message body)."""

    path: str
    offset: int = 0


Segment = bytes | FileSegment


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One message to queue; see the module docstring."""

    qp: int
    uid: int
    how: str
    envelope: bytes
    message: tuple[Segment, ...]

    def encode(self) -> bytes:
        """The request frame's payload."""
        how = self.how.encode("utf-8", "surrogateescape")
        parts: list[bytes] = [
            _HEAD.pack(self.qp, self.uid, len(how), len(self.envelope), len(self.message)),
            how,
            self.envelope,
        ]
        for seg in self.message:
            if isinstance(seg, FileSegment):
                path = os.fsencode(seg.path)
                parts += (b"F", _FILE.pack(seg.offset, len(path)), path)
            else:
                parts += (b"B", _INLINE.pack(len(seg)), seg)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> WriteRequest:
        """Parse a request payload.

        Raises:
            ValueError: the payload is malformed (a daemon of another version; the helper exits).
        """
        view = memoryview(data)
        qp, uid, how_len, env_len, count = _HEAD.unpack_from(view)
        pos = _HEAD.size
        how = bytes(view[pos : pos + how_len]).decode("utf-8", "surrogateescape")
        pos += how_len
        envelope = bytes(view[pos : pos + env_len])
        pos += env_len
        segments: list[Segment] = []
        for _ in range(count):
            kind = bytes(view[pos : pos + 1])
            pos += 1
            if kind == b"B":
                (n,) = _INLINE.unpack_from(view, pos)
                pos += _INLINE.size
                segments.append(bytes(view[pos : pos + n]))
                pos += n
            elif kind == b"F":
                offset, n = _FILE.unpack_from(view, pos)
                pos += _FILE.size
                segments.append(FileSegment(os.fsdecode(bytes(view[pos : pos + n])), offset))
                pos += n
            else:
                raise ValueError(f"unknown segment kind {kind!r}")
        if pos != len(data):
            raise ValueError("trailing bytes in a queue write request")
        return cls(qp, uid, how, envelope, tuple(segments))


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    """The writer's answer: ``code`` 0 with the queued message, or a QueueExit code and its detail."""

    code: int
    qp: int = 0
    number: int = 0
    detail: str = ""

    def encode(self) -> bytes:
        """The answer frame's payload."""
        if self.code == 0:
            return b"K" + _QUEUED.pack(self.qp, self.number)
        return b"E" + _FAILED.pack(self.code) + self.detail.encode("utf-8", "replace")

    @classmethod
    def decode(cls, data: bytes) -> WriteAnswer:
        """Parse an answer payload.

        Raises:
            ValueError: malformed (treated like a dead helper by the caller).
        """
        if data[:1] == b"K" and len(data) == 1 + _QUEUED.size:
            qp, number = _QUEUED.unpack_from(data, 1)
            return cls(0, qp, number)
        if data[:1] == b"E" and len(data) >= 1 + _FAILED.size:
            (code,) = _FAILED.unpack_from(data, 1)
            return cls(code, detail=data[1 + _FAILED.size :].decode("utf-8", "replace"))
        raise ValueError("malformed queue writer answer")

    def result(self) -> QueuedMessage:
        """The queued message.

        Raises:
            QueueError: the write failed with :attr:`code`.
        """
        if self.code:
            raise QueueError(self.code, self.detail)
        return QueuedMessage(self.number, self.qp)


def parse_envelope(data: bytes) -> Envelope:
    """``F…\\0T…\\0\\0`` as an Envelope.

    Raises:
        QueueError: 11 (an address over 1002 bytes) or 91/54 (malformed), as qmail-queue would exit.
    """
    reader = InputReader()
    reader.feed(data)
    return reader.finish()


def _file_chunks(seg: FileSegment) -> Iterator[bytes]:
    fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = seg.offset
        while True:
            chunk = os.pread(fd, _CHUNK, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


def message_source(segments: Sequence[Segment]) -> MessageSource:
    """The segments as what :func:`inject` reads: one bytes object when all are inline (one
    ``writev``), else chunks (an unreadable file is the injector's read error, 54)."""
    if all(isinstance(seg, bytes) for seg in segments):
        inline = [seg for seg in segments if isinstance(seg, bytes)]
        return inline[0] if len(inline) == 1 else b"".join(inline)

    def chunks() -> Iterator[bytes]:
        for seg in segments:
            if isinstance(seg, FileSegment):
                yield from _file_chunks(seg)
            else:
                yield seg

    return chunks()


class Writer:
    """The helper's state between jobs: the queue, its controls, the qmail ids, a directory syncer."""

    def __init__(self, root: str | os.PathLike[str], ids: QmailIds | None = None) -> None:
        self.layout = QueueLayout.of(root)
        self.controls = ControlDir(self.layout.root)
        self.ids = ids or resolve_ids()
        self.syncer = DirSyncer()

    def write(self, request: WriteRequest) -> WriteAnswer:
        """Queue one message; every queue failure is an answer, never an exception."""
        try:
            envelope = parse_envelope(request.envelope)
            try:
                watch = self.controls.mapping("bigbrother")
            except ConfigError as exc:
                raise QueueError(QueueExit.CONFIG, str(exc)) from exc
            queued = inject(
                self.layout, message_source(request.message), envelope, how=request.how,
                uid=request.uid, pid=request.qp, bigbrother=watch, syncer=self.syncer, ids=self.ids,
            )  # fmt: skip
        except QueueError as exc:
            return WriteAnswer(exc.code, request.qp, detail=exc.detail)
        return WriteAnswer(0, queued.qp, queued.number)

    def handle(self, payload: bytes) -> bytes:
        """:func:`qldap.workers.serve`'s handler."""
        return self.write(WriteRequest.decode(payload)).encode()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qldap.queue.writer --root ROOT``: serve the daemon on the socket it passed."""
    p = argparse.ArgumentParser(prog="qldap queue writer", description="queue writer helper (qmail-queue)")
    p.add_argument("--root", required=True, help="the qmail root (queue/, control/)")
    ns = p.parse_args(argv)
    return serve(Writer(ns.root).handle)


if __name__ == "__main__":
    sys.exit(main())

"""qldap.queue.writer: the request and answer frames, and the writer's jobs on a real queue directory
(the daemon's side and real helper processes are in tests/test_smtpd_queue_writers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qldap.queue.codes import QueueError, QueueExit, caller_text
from qldap.queue.layout import create_queue
from qldap.queue.writer import FileSegment, WriteAnswer, Writer, WriteRequest
from tests.conftest import QRoot
from tests.e2e.smtpd import mess_files, queued

ENVELOPE = b"Fx@remote.test\0Talice@example.org\0\0"


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    create_queue(qroot.path)
    return qroot


def test_requests_and_answers_survive_their_encoding() -> None:
    req = WriteRequest(7, 1001, "from network", ENVELOPE, (b"head\n", FileSegment("/q/pid/spool.x", 12), b""))
    assert WriteRequest.decode(req.encode()) == req
    for answer in (WriteAnswer(0, 7, 123456), WriteAnswer(53, detail="fsync mess: No space left on device")):
        assert WriteAnswer.decode(answer.encode()) == answer
    with pytest.raises(ValueError):
        WriteRequest.decode(req.encode() + b"x")
    with pytest.raises(ValueError):
        WriteAnswer.decode(b"?")


def test_inline_and_file_segments_make_one_message(root: QRoot, tmp_path: Path) -> None:
    spill = tmp_path / "spool"
    spill.write_bytes(b"CLIENT-HEADER\nbody line\n")
    writer = Writer(root.path)
    segments = (b"X-New: 1\n", FileSegment(str(spill), 14))
    answer = writer.write(WriteRequest(5, 0, "by uid 0", ENVELOPE, segments))
    assert answer.code == 0 and answer.qp == 5
    (msg,) = queued(root.path)
    assert msg.number == answer.number and msg.todo.pid == 5
    assert msg.message.split(b"\n", 1)[1] == b"X-New: 1\nbody line\n"  # after qmail-queue's Received line
    assert writer.write(WriteRequest(6, 0, "by uid 0", ENVELOPE, (b"x\n",))).result().qp == 6


def test_failures_are_answers_with_the_injector_codes(root: QRoot, tmp_path: Path) -> None:
    """A missing spill file is the read error (54), a bad envelope 91: nothing stays in the queue."""
    writer = Writer(root.path)
    gone = writer.write(WriteRequest(1, 0, "by uid 0", ENVELOPE, (b"h\n", FileSegment(str(tmp_path / "no")))))
    assert gone.code == QueueExit.READ_ERROR
    bad = writer.write(WriteRequest(2, 0, "by uid 0", b"Tnobody\0\0", (b"h\n",)))
    assert bad.code == QueueExit.ENVELOPE_FORMAT
    with pytest.raises(QueueError) as info:
        bad.result()
    assert info.value.text == caller_text(91) == "Zqq internal bug (#4.3.0)"
    assert queued(root.path) == [] and mess_files(root.path) == []

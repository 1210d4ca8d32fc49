"""mbox delivery: From_ line, >From quoting, final newline, locking, rollback."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from qldap.errors import TemporaryFailure
from qldap.local.mbox import deliver_mbox, quote_from_lines, ufline


def test_entry_layout_for_null_sender(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    prefix = b"Return-Path: <>\nDelivered-To: alice@example.com\n"
    deliver_mbox(box, [b"Subject: x\n\nFrom here\n>From x\nlast"], sender="", prefix=prefix, now=1704359103)
    data = box.read_bytes()
    assert data.startswith(b"From MAILER-DAEMON Thu Jan 04 09:05:03 2024\n" + prefix)
    assert b"\n>From here\n" in data
    assert b"\n>>From x\n" in data
    assert data.endswith(b"last\n\n")
    assert os.stat(box).st_mode & 0o777 == 0o600


def test_quoting_across_chunk_boundaries() -> None:
    out, bol = quote_from_lines(b"a\nFro", True)
    assert out == b"a\nFro" and bol is False
    out2, bol2 = quote_from_lines(b"From x\n", True)
    assert out2 == b">From x\n" and bol2 is True


def test_sender_blanks_are_dashed() -> None:
    assert ufline("a b\tc@x", 0).startswith(b"From a-b-c@x Thu Jan 01 00:00:00 1970")


def test_locked_file_defers(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    box.write_bytes(b"")
    fd = os.open(box, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        pid = os.fork()
        if pid == 0:  # the lock is per process: try from a child
            try:
                deliver_mbox(box, [b"x\n"], sender="a@b", lock_seconds=0, sleep=lambda s: None)
            except TemporaryFailure as exc:
                os._exit(0 if exc.text == "File has been locked for 30 seconds straight. (#4.3.0)" else 2)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert box.read_bytes() == b""


def test_read_error_truncates_back(tmp_path: Path) -> None:
    box = tmp_path / "mbox"
    deliver_mbox(box, [b"first\n"], sender="a@b")
    before = box.read_bytes()

    def chunks():  # type: ignore[no-untyped-def]
        yield b"x" * 100000
        raise OSError(5, "Input/output error")

    with pytest.raises(TemporaryFailure) as exc:
        deliver_mbox(box, chunks(), sender="a@b")
    assert exc.value.text == "Unable to read message: Input/output error. (#4.3.0)"
    assert box.read_bytes() == before


def test_unopenable_mbox(tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure) as exc:
        deliver_mbox(tmp_path / "no" / "mbox", [b"x\n"], sender="a@b")
    assert exc.value.text.startswith(f"Unable to open {tmp_path / 'no' / 'mbox'}: ")
    assert exc.value.text.endswith(". (#4.2.1)")

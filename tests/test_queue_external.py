"""QMAILQUEUE-style programs: fds 0, 1 and 4, exit codes 31, 53, 82, signals, exec failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.queue.codes import failure_for
from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.external import queue_program, run_queue_program
from qldap.queue.layout import create_queue, current_user_ids
from qldap.queue.states import State, scan
from tests.conftest import QRoot

ENV = Envelope("a@x", ("b@y", "c@z"))


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_check11_exit_31_is_permanent_rejection(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "cat >/dev/null; exit 31"), b"hi\n", ENV)
    assert res.code == 31 and not res.accepted
    assert res.text == "Dmail server permanently rejected message (#5.3.0)"
    failure = failure_for(res.text)
    assert isinstance(failure, PermanentFailure)
    assert failure.text == "mail server permanently rejected message (#5.3.0)"  # qmail-inject prints this


def test_exit_53_is_disk_full(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "cat >/dev/null; exit 53"), b"hi\n", ENV)
    assert res.text == "Zqq write error or disk full (#4.3.0)"
    assert isinstance(failure_for(res.text), TemporaryFailure)


def test_check12_exit_82_with_fd4_text(tmp_path: Path) -> None:
    prog = script(tmp_path, "scanner", "cat >/dev/null; printf 'Dvirus found (#5.7.1)' >&4; exit 82")
    res = run_queue_program(prog, b"X-Virus: yes\n\nbody\n", ENV)
    assert res.code == 82 and res.fd4 == b"Dvirus found (#5.7.1)"
    assert res.text == "Dvirus found (#5.7.1)"
    failure = failure_for(res.text)
    assert isinstance(failure, PermanentFailure) and failure.text == "virus found (#5.7.1)"  # smtpd: 554 …


def test_exit_82_without_text_is_temporary(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "exit 82"), b"hi\n", ENV)
    assert res.text == "Zqq temporary problem (#4.3.0)"


def test_program_sees_message_on_0_envelope_on_1_in_cwd(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    prog = script(
        tmp_path, "record",
        f"cat > {out}/message; cat <&1 > {out}/envelope; pwd > {out}/cwd; echo \"$QLDAP_TEST\" > {out}/env",
    )  # fmt: skip
    message = b"Subject: t\n\n" + b"x" * 200_000 + b"\n"  # more than a pipe buffer
    res = run_queue_program(
        prog, message, ENV, env={"QLDAP_TEST": "seen", "PATH": os.environ["PATH"]}, cwd=home
    )
    assert res.code == 0 and res.accepted and res.text == ""
    assert (out / "message").read_bytes() == message
    assert (out / "envelope").read_bytes() == b"Fa@x\0Tb@y\0Tc@z\0\0"
    assert (out / "cwd").read_text().strip() == str(home)
    assert (out / "env").read_text().strip() == "seen"


def test_exit_0_without_reading_is_a_read_error(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "exit 0"), b"x" * 1_000_000, ENV)
    assert res.code == 0 and not res.accepted
    assert res.text == "Zqq read error (#4.3.0)"


def test_killed_program_is_a_crash(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "kill -9 $$"), b"hi\n", ENV)
    assert res.code == -9
    assert res.text == "Zqq crashed (#4.3.0)"


def test_timeout_kills(tmp_path: Path) -> None:
    res = run_queue_program(script(tmp_path, "qq", "exec sleep 600"), b"hi\n", ENV, timeout=0.2)
    assert res.text == "Zqq crashed (#4.3.0)"


@pytest.mark.parametrize("cwd", [None, "home"])
def test_missing_program_is_exec_failure(tmp_path: Path, cwd: str | None) -> None:
    home = tmp_path / "home"
    home.mkdir()
    res = run_queue_program(str(tmp_path / "nope"), b"hi\n", ENV, cwd=home if cwd else None)
    assert res.code == 120
    assert res.text == "Zunable to exec qq (#4.3.0)"


def test_our_qmail_queue_as_the_program(tmp_path: Path, qroot: QRoot) -> None:
    layout = create_queue(qroot.path, current_user_ids())
    wrapper = script(
        tmp_path, "qmail-queue", f'exec "{sys.executable}" -m qldap.cli.queue --root "{layout.root}"'
    )
    env = dict(os.environ)
    env.pop("QLDAP_ROOT", None)
    res = run_queue_program(wrapper, b"hello\n", ENV, env=env, cwd=layout.root)
    assert res.accepted, res
    ((number, state),) = scan(layout).items()
    assert state is State.S4
    entry = parse_todo(Path(layout.todo(number)).read_bytes())
    assert entry.envelope == ENV and entry.pid == res.pid  # qp = the program's pid


def test_queue_program_from_environment() -> None:
    assert queue_program({"QMAILQUEUE": "/usr/local/bin/scan"}) == "/usr/local/bin/scan"
    assert queue_program({"QMAILQUEUE": ""}) is None
    assert queue_program({}) is None

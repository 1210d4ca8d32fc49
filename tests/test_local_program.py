"""Program deliveries: environment, stdin, exit-code meanings, crash, report cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.lines import Recipient, dtline, program_env, rpline
from qldap.local.program import Outcome, cut_report, run_program
from qldap.queue.message import MessageFile

R = Recipient(
    local="alice-ext-a-b", host="mail.example.com", user="alice", home="/h/alice",
    dash="-", ext="ext-a-b", sender="bob@remote.example",
)


def _msg(tmp_path: Path, body: bytes = b"Subject: x\n\nbody\n") -> MessageFile:
    p = tmp_path / "msg"
    p.write_bytes(body)
    return MessageFile.open(p)


def _env(home: Path) -> dict[str, str]:
    env = program_env(R, default="b")
    env["HOME"] = str(home)
    env["PATH"] = "/usr/bin:/bin"
    return env


def test_env_values() -> None:
    env = program_env(R, default="a-b")
    assert env["RECIPIENT"] == "alice-ext-a-b@mail.example.com"
    assert env["EXT"] == "ext-a-b" and env["EXT2"] == "a-b" and env["EXT3"] == "b" and env["EXT4"] == ""
    assert env["HOST2"] == "mail.example" and env["HOST3"] == "mail" and env["HOST4"] == "mail"
    assert env["DEFAULT"] == "a-b"
    assert env["SENDER"] == env["NEWSENDER"] == "bob@remote.example"
    assert env["DTLINE"] == "Delivered-To: alice-ext-a-b@mail.example.com\n"
    assert env["RPLINE"] == "Return-Path: <bob@remote.example>\n"
    assert env["UFLINE"].startswith("From bob@remote.example ")
    assert "DEFAULT" not in program_env(R)


def test_lines_quote_and_null_sender() -> None:
    assert rpline("") == "Return-Path: <>\n"
    assert rpline("a b@x") == 'Return-Path: <"a b"@x>\n'
    assert dtline(Recipient("a\nb", "x", "u", "/")) == "Delivered-To: a_b@x\n"


def test_program_reads_message_in_home_with_env(tmp_path: Path) -> None:
    res = run_program(
        'cat; echo "$SENDER $RECIPIENT $USER $(pwd) $(id -u)"', _msg(tmp_path),
        env=_env(tmp_path), cwd=str(tmp_path), uid=2000, gid=2000,
    )
    assert res.outcome is Outcome.OK
    uid = 2000 if os.geteuid() == 0 else os.geteuid()
    assert res.output == (
        f"Subject: x\n\nbody\nbob@remote.example alice-ext-a-b@mail.example.com alice {tmp_path} {uid}\n"
    )


@pytest.mark.parametrize("code", [100, 64, 65, 70, 76, 77, 78, 112])
def test_permanent_codes(tmp_path: Path, code: int) -> None:
    with pytest.raises(PermanentFailure) as exc:
        run_program(f"echo nope; exit {code}", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path),
                    uid=2000, gid=2000)
    assert exc.value.text == "nope\n"


@pytest.mark.parametrize("code", [1, 111, 75])
def test_temporary_codes(tmp_path: Path, code: int) -> None:
    with pytest.raises(TemporaryFailure):
        run_program(f"exit {code}", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path), uid=2000, gid=2000)


def test_exit_99_stops(tmp_path: Path) -> None:
    res = run_program("exit 99", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path), uid=2000, gid=2000)
    assert res.outcome is Outcome.STOP


def test_crash_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure) as exc:
        run_program("kill -9 $$", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path), uid=2000, gid=2000)
    assert exc.value.text.endswith("Aack, child crashed. (#4.3.0)")


def test_root_delivery_refused_when_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the test runs as root")
    with pytest.raises(TemporaryFailure) as exc:
        run_program("true", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path), uid=0, gid=0)
    assert exc.value.text == "Not allowed to perform deliveries as root."


def test_long_report_is_cut() -> None:
    text = cut_report("x" * 5000)
    assert len(text) == 3000 and text.endswith("Error report too long, sorry.")
    assert cut_report("short") == "short"


def test_program_runs_under_umask_077(tmp_path: Path) -> None:
    # qmail-local runs everything under umask 077 (found by tools/conformance: files a program made
    # were 0644 under qldap, 0600 under qmail-ldap)
    res = run_program("umask", _msg(tmp_path), env=_env(tmp_path), cwd=str(tmp_path), uid=2000, gid=2000)
    assert res.output.strip() == "0077"


def test_host_labels_stop_at_the_first_one() -> None:
    # qmail-local strips at most up to the first label: for example.org HOST2..HOST4 are all "example"
    env = program_env(Recipient("a", "example.org", "a", "/h", sender=""))
    assert (env["HOST2"], env["HOST3"], env["HOST4"]) == ("example", "example", "example")
    env = program_env(Recipient("a", "localhost", "a", "/h", sender=""))
    assert (env["HOST2"], env["HOST3"], env["HOST4"]) == ("localhost", "localhost", "localhost")

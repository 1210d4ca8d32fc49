"""qmail-inject and sendmail as real programs queueing into a real queue (qmail-inject(1))."""

from __future__ import annotations

import importlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.queue.envelope import TodoEntry, parse_todo
from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from tests.conftest import ROOT_DIR, QRoot

_CALL = "import sys; from qldap.cli.inject import {0}; sys.exit({0}(sys.argv[1:]{1}))"
INJECT = [sys.executable, "-c", _CALL.format("inject_main", "")]


def sendmail_cmd(prog: str = "sendmail") -> list[str]:
    return [sys.executable, "-c", _CALL.format("sendmail_main", f", prog={prog!r}")]


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def call(
    cmd: list[str], root: Path | str, message: bytes, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run *cmd* with a small, known environment (USER=tester) and the message on stdin."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QLDAP_ROOT": str(root), "USER": "tester"}
    environ.update(env or {})
    return subprocess.run([*cmd, *args], input=message, capture_output=True, env=environ, cwd=ROOT_DIR,
                          timeout=60, check=False)  # fmt: skip


def queued(layout: QueueLayout) -> list[tuple[TodoEntry, bytes]]:
    """Every message in ``todo``: its envelope and its ``mess`` file."""
    out = []
    for name in sorted(os.listdir(layout.dir("todo"))):
        entry = parse_todo(Path(layout.todo(int(name))).read_bytes())
        out.append((entry, Path(layout.mess(int(name))).read_bytes()))
    return out


def only(layout: QueueLayout) -> tuple[TodoEntry, str]:
    [(entry, mess)] = queued(layout)
    return entry, mess.decode()


def queue_script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "qq"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- acceptance checks ------------------------------------------------------------------------------


def test_check51_inject_adds_date_message_id_from_and_drops_bcc(layout: QueueLayout, qroot: QRoot) -> None:
    qroot.control("idhost", "id.example")
    r = call(INJECT, layout.root, b"To: a@b.example\nBcc: secret@c.example\n\nhi\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == r.stderr == b""
    entry, mess = only(layout)
    assert entry.envelope.recipients == ("a@b.example", "secret@c.example")
    assert entry.envelope.sender == "tester@mx1.example.com"
    lines = mess.split("\n")
    assert lines[0].startswith(f"Received: (qmail {entry.pid} invoked by uid {os.getuid()}); ")
    assert re.fullmatch(r"Date: \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000", lines[1])
    assert lines[2] == f"Message-ID: <{lines[2][13:27]}.{entry.pid}.qmail@id.example>"
    assert lines[2][13:27].isdigit()
    assert lines[3:] == ["From: tester@mx1.example.com", "To: a@b.example", "", "hi", ""]
    assert "Bcc" not in mess and "secret" not in mess


def test_idhost_defaults_to_me_and_env_overrides(layout: QueueLayout) -> None:
    assert call(INJECT, layout.root, b"To: a@b.example\n\n").returncode == 0
    assert (
        call(INJECT, layout.root, b"To: a@b.example\n\n", env={"QMAILIDHOST": "env.example"}).returncode == 0
    )
    ids = sorted(
        re.findall(r"\nMessage-ID: <[0-9.]+qmail@([^>]*)>\n", mess.decode())[0] for _, mess in queued(layout)
    )
    assert ids == ["env.example", "mx1.example.com"]


def test_check52_sendmail_t_f(layout: QueueLayout) -> None:
    msg = b"To: r1@y.example\nCc: Two <r2@z.example>\nSubject: s\n\nbody\n"
    r = call(sendmail_cmd(), layout.root, msg, "-t", "-f", "s@x.example", "-oi")
    assert r.returncode == 0, r.stderr
    entry, mess = only(layout)
    assert entry.envelope.sender == "s@x.example"
    assert entry.envelope.recipients == ("r1@y.example", "r2@z.example")
    assert "\nFrom: s@x.example\n" in mess  # -f also makes the From: line


def test_sendmail_without_t_takes_arguments_and_F_names(layout: QueueLayout) -> None:
    r = call(sendmail_cmd(), layout.root, b"To: hdr@y.example\n\n", "-F", "Joe Public", "-f", "joe@x.example",
             "arg@w.example")  # fmt: skip
    assert r.returncode == 0, r.stderr
    entry, mess = only(layout)
    assert entry.envelope.recipients == ("arg@w.example",)
    assert '\nFrom: "Joe Public" <joe@x.example>\n' in mess


def test_check11_queue_program_exit_31_is_permanent(layout: QueueLayout, tmp_path: Path) -> None:
    env = {"QMAILQUEUE": queue_script(tmp_path, "exit 31")}
    r = call(INJECT, layout.root, b"To: a@b.example\n\nhi\n", env=env)
    assert r.returncode == 100
    assert r.stderr == b"qmail-inject: fatal: mail server permanently rejected message (#5.3.0)\n"
    assert queued(layout) == []


@pytest.mark.parametrize(
    ("script", "code", "text"),
    [
        ("cat >/dev/null; printf 'Dvirus found (#5.7.1)' >&4; exit 82", 100, "virus found (#5.7.1)"),
        ("cat >/dev/null; printf 'Zscanner busy (#4.3.0)' >&4; exit 82", 111, "scanner busy (#4.3.0)"),
        ("cat >/dev/null; exit 71", 111, "mail server temporarily rejected message (#4.3.0)"),
        ("kill -9 $$", 111, "qq crashed (#4.3.0)"),
    ],
)
def test_queue_program_texts(layout: QueueLayout, tmp_path: Path, script: str, code: int, text: str) -> None:
    r = call(INJECT, layout.root, b"To: a@b.example\n\n", env={"QMAILQUEUE": queue_script(tmp_path, script)})
    assert (r.returncode, r.stderr.decode()) == (code, f"qmail-inject: fatal: {text}\n")


def test_queue_program_gets_message_envelope_and_home(layout: QueueLayout, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    script = f"cat > {out}.mess; cat <&1 > {out}.env; pwd > {out}.cwd; exit 0"
    r = call(INJECT, layout.root, b"To: a@b.example\n\nhi\n", "-f", "s@x.y",
             env={"QMAILQUEUE": queue_script(tmp_path, script)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert Path(f"{out}.env").read_bytes() == b"Fs@x.y\0Ta@b.example\0\0"
    assert (
        Path(f"{out}.mess").read_bytes().endswith(b"\nFrom: tester@mx1.example.com\nTo: a@b.example\n\nhi\n")
    )
    assert Path(f"{out}.cwd").read_text().strip() == os.path.realpath(layout.root)
    assert queued(layout) == []


# -- the other behaviours end to end -----------------------------------------------------------------


def test_n_prints_and_queues_nothing(layout: QueueLayout) -> None:
    r = call(INJECT, layout.root, b"Subject: s\n\nhi\n", "-n", "-f", "", "bob")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("Return-Path: <>\nDate: ")
    assert out.endswith("From: tester@mx1.example.com\nCc: recipient list not shown: ;\nSubject: s\n\nhi\n")
    assert queued(layout) == []


MSG = b"To: t@u.example\nCc: c@d.example\nBcc: b@e.example\n\n"


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((), ("t@u.example", "c@d.example", "b@e.example")),
        (("x@y.example",), ("x@y.example",)),
        (("-a",), ()),
        (("-h", "x@y.example"), ("t@u.example", "c@d.example", "b@e.example")),
        (("-H", "x@y.example"), ("x@y.example", "t@u.example", "c@d.example", "b@e.example")),
    ],
)
def test_recipient_choices(layout: QueueLayout, args: tuple[str, ...], want: tuple[str, ...]) -> None:
    r = call(INJECT, layout.root, MSG, *args)
    assert r.returncode == 0, r.stderr
    assert only(layout)[0].envelope.recipients == want


@pytest.mark.parametrize(
    ("letters", "sender"),
    [("r", "tester-@mx1.example.com-@[]"), ("m", r"tester-(\d+)\.(\d+)@mx1\.example\.com")],
)
def test_qmailinject_verp_senders(layout: QueueLayout, letters: str, sender: str) -> None:
    r = call(INJECT, layout.root, b"To: a@b.example\n\n", env={"QMAILINJECT": letters})
    assert r.returncode == 0, r.stderr
    entry, _ = only(layout)
    m = re.fullmatch(sender if letters == "m" else re.escape(sender), entry.envelope.sender)
    assert m is not None, entry.envelope.sender
    if letters == "m":
        assert int(m.group(2)) == entry.pid  # -<time>.<pid> of this injection


def test_mail_followup_to_from_the_mft_file(layout: QueueLayout, tmp_path: Path) -> None:
    mft = tmp_path / "lists"
    mft.write_text("# mailing lists\nlist@lists.example\n")
    r = call(INJECT, layout.root, b"To: List@lists.example, a@b.example\n\n", env={"QMAILMFTFILE": str(mft)})
    assert r.returncode == 0, r.stderr
    assert "\nMail-Followup-To: List@lists.example,\n  a@b.example\n" in only(layout)[1]


def test_unreadable_mft_file_is_temporary(layout: QueueLayout, tmp_path: Path) -> None:
    r = call(INJECT, layout.root, b"To: a@b.example\n\n", env={"QMAILMFTFILE": str(tmp_path)})  # a directory
    assert r.returncode == 111 and r.stderr.startswith(b"qmail-inject: fatal: unable to read ")


def test_resent_message(layout: QueueLayout) -> None:
    msg = b"Resent-To: again@r.example\nTo: t@u.example\nFrom: f@g.example\nDate: x\nMessage-ID: <m@i>\n\nb\n"
    r = call(INJECT, layout.root, msg)
    assert r.returncode == 0, r.stderr
    entry, mess = only(layout)
    assert entry.envelope.recipients == ("again@r.example",)
    head = mess.split("\n")[1:5]
    assert [h.split(":")[0] for h in head] == ["Resent-Date", "Resent-Message-ID", "Resent-From", "Resent-To"]
    assert head[2] == "Resent-From: tester@mx1.example.com"


def test_controls_complete_addresses(layout: QueueLayout, qroot: QRoot) -> None:
    qroot.control("defaulthost", "host")
    qroot.control("defaultdomain", "dom.example")
    qroot.control("plusdomain", "plus.example")
    r = call(INJECT, layout.root, b"To: a, b@c+\n\n", env={"QMAILPLUSDOMAIN": "envplus.example"})
    assert r.returncode == 0, r.stderr
    entry, mess = only(layout)
    assert entry.envelope.recipients == ("a@host.dom.example", "b@c.envplus.example")
    assert "\nTo: a@host.dom.example, b@c.envplus.example\n" in mess


def test_missing_queue_is_temporary(qroot: QRoot) -> None:
    r = call(INJECT, qroot.path, b"To: a@b.example\n\n")
    assert r.returncode == 111
    assert r.stderr == b"qmail-inject: fatal: qq trouble creating files in queue (#4.3.0)\n"
    r = call(INJECT, qroot.path / "nowhere", b"To: a@b.example\n\n")
    assert (r.returncode, r.stderr) == (111, b"qmail-inject: fatal: qq trouble in home directory (#4.3.0)\n")


def test_permanent_errors(layout: QueueLayout) -> None:
    r = call(INJECT, layout.root, b"To: a: b\n\n")
    assert (r.returncode, r.stderr) == (100, b"qmail-inject: fatal: unable to parse this line:\nTo: a: b\n")
    r = call(INJECT, layout.root, b"\n", "-x")
    assert (r.returncode, r.stderr) == (100, b"qmail-inject: illegal option -- x\n")
    r = call(INJECT, layout.root, b"\n", "x" * 1003 + "@b.example")
    assert (r.returncode, r.stderr) == (
        100,
        b"qmail-inject: fatal: envelope address too long for qq (#5.1.3)\n",
    )
    assert queued(layout) == []


def test_sendmail_usage_and_newaliases(layout: QueueLayout) -> None:
    r = call(sendmail_cmd(), layout.root, b"", "-bz")
    assert r.returncode == 100 and b"sendmail: usage: sendmail [ -t ]" in r.stderr
    r = call(sendmail_cmd("newaliases"), layout.root, b"")
    assert r.returncode == 100 and r.stderr.startswith(b"sendmail: fatal: ")


def _has(module: str, attr: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:
        return False


def test_mailq_runs_qread_or_says_why_not(layout: QueueLayout) -> None:
    for cmd, args in ((sendmail_cmd("mailq"), ()), (sendmail_cmd(), ("-bp",))):
        r = call(cmd, layout.root, b"", *args)
        if _has("qldap.cli.qread", "main"):
            assert r.returncode == 0 and b"unable to run" not in r.stderr
        else:
            assert r.returncode == 111
            assert r.stderr.startswith(b"sendmail: fatal: unable to run qmail-qread: ")


def test_bs_runs_an_smtp_session_on_stdio_or_says_why_not(layout: QueueLayout) -> None:
    r = call(sendmail_cmd(), layout.root, b"QUIT\r\n", "-bs")
    if _has("qldap.cli.smtpd", "stdio_main"):
        assert r.stdout.startswith(b"220 ") and b"\r\n221 " in r.stdout
    else:
        assert r.returncode == 111
        assert r.stderr.startswith(b"sendmail: fatal: unable to run qmail-smtpd: ")

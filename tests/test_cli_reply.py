"""qmail-reply as a `.qmail` program: one reply per sender and text, none to robots (qmail-local(8),
AUTO-REPLY)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qldap.queue.envelope import parse_todo
from qldap.queue.layout import create_queue
from tests.conftest import QRoot

CODE = "import sys; from qldap.cli.reply import main; sys.exit(main())"
MSG = b"From: bob@remote.example\nSubject: Lunch\n\nhi\n"


def reply(qroot: QRoot, sender: str, *args: str, msg: bytes = MSG) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, QLDAP_ROOT=str(qroot.path), SENDER=sender, RECIPIENT="alice@example.com",
               DTLINE="Delivered-To: alice@example.com\n")
    return subprocess.run([sys.executable, "-c", CODE, *args], input=msg, env=env, capture_output=True,
                          check=False)


def todo(qroot: QRoot) -> list[tuple[str, tuple[str, ...], bytes]]:
    out = []
    for f in sorted((qroot.path / "queue" / "todo").iterdir()):
        entry = parse_todo(f.read_bytes())
        mess = qroot.path / "queue" / "mess" / str(int(f.name) % 23) / f.name
        out.append((entry.envelope.sender, entry.envelope.recipients, mess.read_bytes()))
    return out


def test_reply_once_per_sender(qroot: QRoot, tmp_path: Path) -> None:
    create_queue(qroot.path)
    text = tmp_path / "away"
    text.write_text("%HEADER%\nSubject: Re: %SUBJECT%\n\nI am away.\n")
    md = tmp_path / "Maildir"
    md.mkdir()
    assert reply(qroot, "bob@remote.example", "-f", str(text), f"{md}/").returncode == 0
    queued = todo(qroot)
    assert len(queued) == 1
    sender, rcpts, data = queued[0]
    assert (sender, rcpts) == ("", ("bob@remote.example",))
    assert b"\nSubject: Re: Lunch\n" in data and data.endswith(b"I am away.\n\n")
    assert reply(qroot, "bob@remote.example", "-f", str(text), f"{md}/").returncode == 0
    assert len(todo(qroot)) == 1  # within 14 days: no second reply
    assert (md / "qmail-reply.db").exists()


def test_no_reply_to_robots_or_lists(qroot: QRoot, tmp_path: Path) -> None:
    create_queue(qroot.path)
    env_text = ["-f", str(tmp_path / "t")]
    (tmp_path / "t").write_text("away")
    assert reply(qroot, "MAILER-DAEMON@x.example", *env_text).returncode == 0
    assert reply(qroot, "bob@remote.example", *env_text, msg=b"Precedence: bulk\n\nx\n").returncode == 0
    junk = tmp_path / "junk"
    junk.write_text("@spam.example\n")
    assert reply(qroot, "x@spam.example", *env_text, "-j", str(junk)).returncode == 0
    assert todo(qroot) == []


def test_usage_and_missing_text(qroot: QRoot) -> None:
    create_queue(qroot.path)
    assert reply(qroot, "bob@remote.example", "-x").returncode == 100
    assert reply(qroot, "bob@remote.example").returncode == 111

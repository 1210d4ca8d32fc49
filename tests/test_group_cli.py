"""``qmail-group`` and ``qmail-secretary`` run as programs, with the qmail-local environment and stdin."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.layout import create_queue
from tests.conftest import QRoot

POST = b"From: s@y\nSubject: hello\n\nhello list\n"
MAIN = {"group": "from qldap.cli.group import group_main as m",
        "secretary": "from qldap.cli.group import secretary_main as m"}


def prog(which: str, args: list[str], env: dict[str, str], stdin: bytes | Path,
         cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    code = f"import sys; {MAIN[which]}; sys.exit(m(sys.argv[1:]))"
    full = {k: v for k, v in os.environ.items() if k not in ("EXT", "QMAILQUEUE", "QLDAPGROUP")} | env
    if isinstance(stdin, Path):
        with open(stdin, "rb") as f:
            return subprocess.run([sys.executable, "-c", code, *args], stdin=f, env=full, cwd=cwd,
                                  capture_output=True, check=False, timeout=60)
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, env=full, cwd=cwd,
                          capture_output=True, check=False, timeout=60)


def todo(root: Path) -> list[tuple[Envelope, bytes]]:
    out = []
    for f in sorted((root / "queue" / "todo").iterdir()):
        entry = parse_todo(f.read_bytes())
        mess = next((root / "queue" / "mess").rglob(f.name))
        out.append((entry.envelope, mess.read_bytes()))
    return out


def test_group_usage_and_missing_environment(tmp_path: Path) -> None:
    r = prog("group", [], {}, b"")
    assert r.returncode == 100 and b"usage: qmail-group Maildir" in r.stderr
    r = prog("group", ["./Maildir/"], {"SENDER": "s@y", "LOCAL": "list", "HOST": "h"}, b"")
    assert r.returncode == 100 and r.stderr == b"qmail-group: fatal: QLDAPGROUP not set\n"


@pytest.fixture
def ldaproot(qroot: QRoot, ldap_base, slapd) -> QRoot:  # type: ignore[no-untyped-def]
    qroot.control("ldapserver", f"127.0.0.1:{slapd.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    create_queue(qroot.path)
    ldap_base.load(
        "dn: uid=bee,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: bee\ncn: b\nsn: b\n"
        "mail: b@x\n\n"
        "dn: uid=list,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nobjectClass: qmailGroup\n"
        "uid: list\ncn: l\nsn: l\nmail: list@example.com\nmailAlternateAddress: list-catchall@example.com\n"
        f"mailMessageStore: {qroot.path}/list/\nrfc822member: a@x\ndnmember: uid=bee,{{base}}\n"
    )
    return qroot


@pytest.mark.parametrize("piped", [False, True])
def test_qmail_group_distributes_into_the_queue(ldaproot: QRoot, ldap_base, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                piped: bool) -> None:
    mess = tmp_path / "mess"
    mess.write_bytes(POST)
    env = {"QLDAP_ROOT": str(ldaproot.path), "QLDAPGROUP": f"uid=list,{ldap_base.dn}", "SENDER": "s@y",
           "LOCAL": "list", "HOST": "example.com"}
    r = prog("group", ["./Maildir/"], env, POST if piped else mess, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rb"qmail-group: ok \d+ qp \d+\.\n", r.stderr)
    [(envelope, data)] = todo(ldaproot.path)
    assert envelope == Envelope("s@y", ("a@x", "b@x"))
    assert data.endswith(b"Delivered-To: list@example.com\nPrecedence: bulk\n" + POST)
    looping = prog("group", ["./Maildir/"], env, b"Delivered-To: list@example.com\n" + POST, cwd=tmp_path)
    assert looping.returncode == 100 and b"this message is looping" in looping.stderr


def test_qmail_secretary_group_mode_confirm_flow(qroot: QRoot, tmp_path: Path) -> None:
    create_queue(qroot.path)
    box = tmp_path / "box"
    env = {"QLDAP_ROOT": str(qroot.path), "SENDER": "s@y", "LOCAL": "list", "HOST": "example.com"}
    r = prog("secretary", ["-Zc", str(box)], env, POST)
    assert r.returncode == 99, r.stderr
    assert re.fullmatch(rb"qmail-secretary: info: qp \d+\n", r.stderr)
    [held] = (box / "new").iterdir()
    [(envelope, data)] = todo(qroot.path)
    assert envelope == Envelope(f"list-reject-{held.name}@example.com", ("s@y",))
    assert f"<list-confirm-{held.name}@example.com>".encode() in data
    ext = f"confirm-{held.name}"
    reply = env | {"LOCAL": f"list-{ext}", "EXT": ext}
    r = prog("secretary", ["-Zc", str(box)], reply, b"Subject: ok\n\nok\n")
    assert r.returncode == 99 and r.stdout == b"K" + os.fsencode(held) + b"\0"
    assert held.exists()  # qmail-group delivers and deletes it
    r = prog("secretary", ["-ZC", str(box)], env, POST)
    assert r.returncode == 100 and b"no moderators found but needed." in r.stderr
    r = prog("secretary", ["-Zc"], env, POST)
    assert r.returncode == 100 and b"usage" in r.stderr


def test_qmail_secretary_ezmlm_mode_runs_the_list_program(qroot: QRoot, tmp_path: Path) -> None:
    create_queue(qroot.path)
    lst = tmp_path / "ezlist"
    (lst / "text").mkdir(parents=True)
    for name, value in (("inlocal", "ez"), ("inhost", "lists.example.com"), ("outlocal", "ez"),
                        ("outhost", "lists.example.com"), ("mailinglist", "ez@lists.example.com")):
        (lst / name).write_text(value + "\n")
    (lst / "text" / "confirm").write_text("Confirm %LIST% please.\n")
    (lst / "mods").write_text("# moderators\n\nm@x\n")
    seen = tmp_path / "seen"
    send = tmp_path / "ezmlm-send"
    send.write_text(f'#!/bin/sh\necho "$SENDER" > {seen}.sender\ncat > {seen}.mail\nexit 0\n')
    send.chmod(send.stat().st_mode | stat.S_IXUSR)
    env = {"QLDAP_ROOT": str(qroot.path), "SENDER": "s@y", "LOCAL": "ez", "HOST": "lists.example.com"}
    args = ["-z", str(lst), "-c", "-M", "mods", "box", str(send)]
    r = prog("secretary", args, env, POST)
    assert r.returncode == 99, r.stderr
    [held] = (lst / "box" / "new").iterdir()
    [(_, ask)] = todo(qroot.path)
    assert b"\nMailing-List: ez@lists.example.com\n" in ask and b"Confirm ez@lists.example.com please." in ask
    ext = f"confirm-{held.name}"
    r = prog("secretary", args, env | {"LOCAL": f"ez-{ext}", "SENDER": "s@y"}, b"Subject: ok\n\nok\n")
    assert r.returncode == 99, r.stderr
    [moved] = (lst / "box" / "cur").iterdir()  # moderated (-M): now waits for m@x
    assert sorted(e.recipients for e, _ in todo(qroot.path)) == [("m@x",), ("s@y",)]
    approve = env | {"LOCAL": f"ez-approve-{moved.name}", "SENDER": "m@x"}
    r = prog("secretary", args, approve, b"Subject: ok\n\nok\n")
    assert r.returncode == 99, r.stderr
    assert Path(f"{seen}.sender").read_text() == "s@y\n"
    assert Path(f"{seen}.mail").read_bytes().endswith(POST) and not moved.exists()


def test_qmailqueue_refusal_is_reported(qroot: QRoot, tmp_path: Path) -> None:
    queue = tmp_path / "refuse"
    queue.write_text("#!/bin/sh\ncat >/dev/null\nexit 31\n")
    queue.chmod(0o755)
    env = {"QLDAP_ROOT": str(qroot.path), "SENDER": "s@y", "LOCAL": "list", "HOST": "example.com",
           "QMAILQUEUE": str(queue)}
    r = prog("secretary", ["-Zc", str(tmp_path / "box")], env, POST)
    assert r.returncode == 100
    assert r.stderr == (b"qmail-secretary: fatal: Unable to send reply message: "
                        b"mail server permanently rejected message (#5.3.0).\n")

"""The delivery agent: instruction lists per dot-mode, maildir/mbox/program/forward, loops, quota, reply."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qldap.directory.schema import DotMode
from qldap.directory.validate import parse_delivery_modes
from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.agent import AgentConfig, deliver
from qldap.local.lines import Recipient
from qldap.local.quota import Quota
from qldap.local.resolve import Plan
from qldap.queue.message import MessageFile

MSG = b"From: bob@remote.example\nSubject: Hello\n\nbody\n"
CFG = AgentConfig(me="mx1.example.com")


class Outbox:
    """Collects what the agent hands back for injection (the spawner injects; tested elsewhere)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []


def run(plan: Plan, r: Recipient, message: Path, cfg: AgentConfig, out: Outbox) -> str:
    with MessageFile.open(message) as mf:
        tally = deliver(plan, r, mf, cfg)
    for o in tally.outgoing:
        out.sent.append((o.sender, list(o.recipients), o.data))
    return tally.text(4242 if any(not o.is_reply for o in tally.outgoing) else None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "alice"
    h.mkdir(mode=0o700)
    return h


@pytest.fixture
def message(tmp_path: Path) -> Path:
    p = tmp_path / "mess"
    p.write_bytes(MSG)
    return p


def mkplan(home: Path, **kw: object) -> Plan:
    base: dict[str, object] = dict(user="alice", uid=2000, gid=2000, home=str(home), dash="", ext="",
                                   default_delivery="./Maildir/", dot_mode=DotMode.LDAPONLY,
                                   modes=parse_delivery_modes([]))
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


R = Recipient("alice", "example.com", "alice", "", sender="bob@remote.example")


def new_files(md: Path) -> list[Path]:
    return sorted((md / "new").iterdir()) if (md / "new").exists() else []


def test_plain_maildir_delivery(home: Path, message: Path) -> None:
    out = Outbox()
    text = run(mkplan(home), R, message, CFG, out)
    files = new_files(home / "Maildir")
    assert len(files) == 1 and files[0].name.endswith(f",S={files[0].stat().st_size}")
    assert files[0].read_bytes() == (
        b"Return-Path: <bob@remote.example>\nDelivered-To: alice@example.com\n" + MSG)
    assert os.listdir(home / "Maildir" / "tmp") == []
    assert text == "did 1+0+0"
    assert out.sent == []


def test_program_only_in_ldapwithprog(home: Path, message: Path) -> None:
    prog = "/bin/echo ran"
    assert run(mkplan(home, programs=(prog,)), R, message, CFG, Outbox()) == "did 1+0+0"
    text = run(mkplan(home, programs=(prog,), dot_mode=DotMode.LDAPWITHPROG), R, message, CFG, Outbox())
    assert text == "ran\ndid 1+0+1"


def test_forward_with_copy_and_precedence(home: Path, message: Path) -> None:
    out = Outbox()
    text = run(mkplan(home, forwards=("c@x.example", "d@y.example")), R, message, CFG, out)
    assert text == "did 1+2+0\nqp 4242"
    (sender, rcpts, data) = out.sent[0]
    assert sender == "bob@remote.example" and rcpts == ["c@x.example", "d@y.example"]
    assert data.startswith(b"Delivered-To: alice@example.com\nPrecedence: bulk\n" + MSG[:10])
    out1 = Outbox()
    run(mkplan(home, forwards=("c@x.example",)), R, message, CFG, out1)
    assert b"Precedence" not in out1.sent[0][2]


def test_modes(home: Path, message: Path) -> None:
    out = Outbox()
    p = mkplan(home, forwards=("c@x.example",), modes=parse_delivery_modes(["nolocal"]))
    assert run(p, R, message, CFG, out) == "did 0+1+0\nqp 4242"
    assert new_files(home / "Maildir") == []
    assert run(mkplan(home, modes=parse_delivery_modes(["nolocal"])), R, message, CFG, out) == "did 0+0+0"
    p2 = mkplan(home, forwards=("c@x.example",), modes=parse_delivery_modes(["noforward"]))
    assert run(p2, R, message, CFG, Outbox()) == "did 1+0+0"
    p3 = mkplan(home, forwards=("c@x.example",), modes=parse_delivery_modes(["nolocal,noforward"]))
    assert run(p3, R, message, CFG, Outbox()) == "did 0+0+0"
    p4 = mkplan(home, programs=("/bin/echo x",), dot_mode=DotMode.LDAPWITHPROG,
                modes=parse_delivery_modes(["NoProgram"]))
    assert run(p4, R, message, CFG, Outbox()) == "did 1+0+0"


def test_both_mode_runs_dotqmail_after_ldap(home: Path, message: Path) -> None:
    (home / ".qmail").write_text("|/bin/echo logged\n")
    (home / ".qmail").chmod(0o600)
    out = Outbox()
    text = run(mkplan(home, dot_mode=DotMode.BOTH, forwards=("c@x.example",)), R, message, CFG, out)
    assert text == "logged\ndid 1+1+1\nqp 4242"


def test_dotonly_catchall_without_file_bounces(home: Path, message: Path) -> None:
    with pytest.raises(PermanentFailure) as exc:
        run(mkplan(home, dot_mode=DotMode.DOTONLY, dash="-", ext="foo"), R, message, CFG, Outbox())
    assert exc.value.text == "Sorry, no mailbox here by that name. (#5.1.1)"


def test_loop_detection_header_only(home: Path, tmp_path: Path) -> None:
    looping = tmp_path / "loop"
    looping.write_bytes(b"Delivered-To: alice@example.com\nSubject: x\n\nbody\n")
    with pytest.raises(PermanentFailure) as exc:
        run(mkplan(home), R, looping, CFG, Outbox())
    assert exc.value.text == "This message is looping: it already has my Delivered-To line. (#5.4.6)"
    in_body = tmp_path / "body"
    in_body.write_bytes(b"Subject: x\n\nDelivered-To: alice@example.com\n")
    assert run(mkplan(home), R, in_body, CFG, Outbox()) == "did 1+0+0"


def test_home_checks(home: Path, message: Path) -> None:
    home.chmod(0o777)
    with pytest.raises(TemporaryFailure) as exc:
        run(mkplan(home), R, message, CFG, Outbox())
    assert exc.value.text == "Uh-oh: home directory is writable. (#4.7.0)"
    home.chmod(0o1700)
    with pytest.raises(TemporaryFailure) as exc2:
        run(mkplan(home), R, message, CFG, Outbox())
    assert exc2.value.text == "Home directory is sticky: user is editing his .qmail file. (#4.2.1)"
    with pytest.raises(TemporaryFailure) as exc3:
        run(mkplan(home / "missing"), R, message, CFG, Outbox())
    assert exc3.value.text.startswith(f"Unable to switch to {home / 'missing'}: ")


def test_dotqmail_file_rules(home: Path, message: Path) -> None:
    q = home / ".qmail"
    q.write_text("./Maildir/\n")
    q.chmod(0o666)
    p = mkplan(home, dot_mode=DotMode.DOTONLY)
    with pytest.raises(TemporaryFailure) as e1:
        run(p, R, message, CFG, Outbox())
    assert e1.value.text == "Uh-oh: .qmail file is writable. (#4.7.0)"
    q.chmod(0o700)
    with pytest.raises(TemporaryFailure) as e2:
        run(p, R, message, CFG, Outbox())
    assert e2.value.text == "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"


def test_dotqmail_exit_99_stops_but_forwards(home: Path, message: Path) -> None:
    q = home / ".qmail"
    q.write_text("&c@x.example\n|exit 99\n./Maildir/\n")
    q.chmod(0o600)
    out = Outbox()
    text = run(mkplan(home, dot_mode=DotMode.DOTONLY), R, message, CFG, out)
    assert text == "did 0+1+1\nqp 4242"
    assert new_files(home / "Maildir") == []
    assert out.sent[0][1] == ["c@x.example"]


def test_dotqmail_exit_99_ignores_later_forwards(home: Path, message: Path) -> None:
    # qmail-local(8), DELIVERY: after exit 99 the following lines are ignored, forwards among them too (found
    # by tools/conformance: qldap still forwarded to the addresses after the program)
    q = home / ".qmail"
    q.write_text("|exit 99\n&c@x.example\n./Maildir/\n")
    q.chmod(0o600)
    out = Outbox()
    text = run(mkplan(home, dot_mode=DotMode.DOTONLY), R, message, CFG, out)
    assert text == "did 0+0+1"
    assert out.sent == [] and new_files(home / "Maildir") == []


def test_missing_home_says_it_as_qmail_does(tmp_path: Path, message: Path) -> None:
    with pytest.raises(TemporaryFailure) as exc:
        run(mkplan(tmp_path / "nohome"), R, message, CFG, Outbox())
    assert exc.value.text == f"Unable to switch to {tmp_path / 'nohome'}: file does not exist. (#4.3.0)"


def test_mbox_from_dotqmail(home: Path, tmp_path: Path) -> None:
    q = home / ".qmail"
    q.write_text("./mbox\n")
    q.chmod(0o600)
    msg = tmp_path / "m"
    msg.write_bytes(b"Subject: x\n\nFrom here\n>From x\n")
    r = Recipient("alice", "example.com", "alice", "", sender="")
    run(mkplan(home, dot_mode=DotMode.DOTONLY), r, msg, CFG, Outbox())
    data = (home / "mbox").read_bytes()
    assert data.startswith(b"From MAILER-DAEMON ")
    assert b"\nReturn-Path: <>\nDelivered-To: alice@example.com\n" in data
    assert b"\n>From here\n>>From x\n\n" in data


def test_over_quota_and_warning(home: Path, message: Path) -> None:
    md = home / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / "1.a.h,S=9500:2,S").write_bytes(b"x")
    cfg = AgentConfig(me="mx1.example.com", quota_warning="Please clean up.")
    with pytest.raises(PermanentFailure) as exc:
        run(mkplan(home, quota=Quota(9520, 0)), R, message, cfg, Outbox())
    assert exc.value.text == "The users mailfolder is over the allowed quota (size). (#5.2.2)"
    warnings = [f for f in new_files(md) if "QUOTA_WARNING" in f.name]
    assert len(warnings) == 1
    assert b"Subject: QUOTA-WARNING!" in warnings[0].read_bytes()
    assert [f for f in new_files(md) if "QUOTA_WARNING" not in f.name] == []
    run(mkplan(home, quota=Quota(12000, 0)), R, message, cfg, Outbox())  # 70 %+: no second warning
    assert len([f for f in new_files(md) if "QUOTA_WARNING" in f.name]) == 1


def test_auto_reply_once_per_sender(home: Path, message: Path) -> None:
    p = mkplan(home, modes=parse_delivery_modes(["reply"]), reply_text="I am away.")
    out = Outbox()
    run(p, R, message, CFG, out)
    assert len(out.sent) == 1
    sender, rcpts, data = out.sent[0]
    assert sender == "" and rcpts == ["bob@remote.example"]
    assert b"Subject: [Auto-Reply] Hello" in data and data.endswith(b"I am away.\n")
    run(p, R, message, CFG, out)
    assert len(out.sent) == 1  # within 14 days: no second reply
    assert len(new_files(home / "Maildir")) == 2
    no_text = mkplan(home, modes=parse_delivery_modes(["reply"]))
    assert run(no_text, R, message, CFG, Outbox()).startswith(
        "Warning: Reply mode is on but there is no reply text.")

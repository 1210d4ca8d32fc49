"""Deliveries of qmail-local(8) end to end: an entry in the real slapd → ``LocalSpawner`` → files.

Same world as :mod:`tests.test_delivery_e2e_ldap` (root, mailboxes and scripts in a world-traversable
directory owned by the entry's uid when root; the real queue injector, its calls captured): forwards,
delivery modes, dot-modes and `.qmail` files, quota, auto-reply, cluster routing and the home maker.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.spawn import LocalSpawner, Report
from tests.test_delivery_e2e_ldap import (
    BODY,
    GID,
    ILLEGAL,
    IS_ROOT,
    NO_MAILBOX,
    SENDER,
    UID,
    E,
    attr,
    make_env,
    new_files,
    prog_env,
    user,
    with_prog,
)  # fmt: skip

pytestmark = [pytest.mark.slapd]

ALICE = "alice@example.com"
HEAD = b"Return-Path: <bob@remote.example>\nDelivered-To: alice@example.com\n"


@pytest.fixture
def mailroot() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-dv2-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def e(ldap_base, slapd, mailroot: Path, tmp_path: Path) -> E:  # type: ignore[no-untyped-def]
    return make_env(ldap_base, slapd, mailroot, tmp_path)


def alice(e: E, *extra: str, maildir: bool = False) -> Path:
    store = e.box("alice", maildir=maildir)
    e.load(user("alice", store, *extra))
    return store


def own(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    if IS_ROOT:
        os.chown(path, UID, GID)
    return path


def qp_of(rep: Report, did: str) -> None:
    assert rep.letter == "K", rep
    assert re.fullmatch(rf"{re.escape(did)}\nqp \d+", rep.text), rep.text


def test_check36_forward_without_mode_keeps_copy(e: E) -> None:
    store = alice(e, "mailForwardingAddress: carol@else.example")
    qp_of(e.send(ALICE), "did 1+1+0")
    [f] = new_files(store)
    assert f.read_bytes() == HEAD + BODY
    assert [(s, r) for _, s, r in e.injected] == [(SENDER, ("carol@else.example",))]


def test_check37_nolocal_with_forward(e: E) -> None:
    store = alice(e, "mailForwardingAddress: carol@else.example", "deliveryMode: nolocal")
    qp_of(e.send(ALICE), "did 0+1+0")
    assert not new_files(store)
    assert [r for _, _, r in e.injected] == [("carol@else.example",)]


def test_check37_nolocal_alone_discards(e: E) -> None:
    store = alice(e, "deliveryMode: nolocal")
    assert e.send(ALICE) == Report("K", "did 0+0+0")
    assert not new_files(store) and e.injected == []


def test_check38_noforward_and_noprogram(e: E) -> None:
    marker, prog = e.marker_prog("noprog")
    store = alice(e, "mailForwardingAddress: carol@else.example", "deliveryMode: noforward",
                  "deliveryMode: NoProgram", "qmailDotMode: ldapwithprog", f"deliveryProgramPath: {prog}")
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    assert len(new_files(store)) == 1
    assert e.injected == [] and not marker.exists()


def test_check39_comma_separated_modes(e: E) -> None:
    store = alice(e, "mailForwardingAddress: carol@else.example", "deliveryMode: nolocal,noforward")
    assert e.send(ALICE) == Report("K", "did 0+0+0")
    assert not new_files(store) and e.injected == []


def test_check40_undefined_mode_warns(e: E) -> None:
    store = alice(e, "deliveryMode: sideways")
    assert e.send(ALICE) == Report(
        "K", "Warning: undefined mail delivery mode: sideways (ignored).\ndid 1+0+0")
    assert len(new_files(store)) == 1


def test_check41_two_forwards_one_message_with_precedence(e: E) -> None:
    alice(e, "mailForwardingAddress: carol@else.example", "mailForwardingAddress: dan@else.example")
    qp_of(e.send(ALICE), "did 1+2+0")
    [(data, sender, rcpts)] = e.injected
    assert (sender, rcpts) == (SENDER, ("carol@else.example", "dan@else.example"))
    assert data == b"Delivered-To: alice@example.com\nPrecedence: bulk\n" + BODY


def test_check41_one_forward_no_precedence(e: E) -> None:
    alice(e, "mailForwardingAddress: carol@else.example")
    qp_of(e.send(ALICE), "did 1+1+0")
    [(data, _, _)] = e.injected
    assert data == b"Delivered-To: alice@example.com\n" + BODY


@pytest.mark.parametrize("failure", [PermanentFailure, TemporaryFailure])
def test_check42_forward_refused(e: E, failure: type[PermanentFailure] | type[TemporaryFailure]) -> None:
    store = alice(e, "mailForwardingAddress: carol@else.example")

    def refuse(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        raise failure("queue says no")

    e.sp = LocalSpawner(e.q.path, refuse)
    letter = "D" if failure is PermanentFailure else "Z"
    assert e.send(ALICE) == Report(letter, "Unable to forward message: queue says no.")
    assert len(new_files(store)) == 1


def test_check43_both_runs_ldap_and_dotqmail(e: E) -> None:
    store = alice(e, "mailForwardingAddress: carol@else.example", "qmailDotMode: both")
    marker = store / "dotqmail.ran"
    own(store / ".qmail", f"|/usr/bin/touch {marker}\n")
    qp_of(e.send(ALICE), "did 1+1+1")
    assert marker.exists()
    assert len(new_files(store)) == 1
    assert [r for _, _, r in e.injected] == [("carol@else.example",)]


def test_check44_dot_mode_case_and_bogus(e: E) -> None:
    s1, s2 = e.box("u1"), e.box("u2")
    e.load(user("u1", s1, "qmailDotMode: Both") + user("u2", s2, "qmailDotMode: bogus"))
    assert e.send("u1@example.com") == Report("K", "did 1+0+0")
    assert e.send("u2@example.com") == ILLEGAL
    assert not new_files(s2)


def test_check45_catchall_dotonly_without_files(e: E) -> None:
    store = e.box("c")
    e.load(user("c", store, "qmailDotMode: dotonly", mail="catchall@example.com"))
    assert e.send("foo@example.com") == NO_MAILBOX
    assert not new_files(store)


def test_check46_delivered_to_loop(e: E) -> None:
    store = alice(e)
    looped = b"Delivered-To: alice@example.com\nSubject: x\n\nbody\n"
    assert e.send(ALICE, looped) == Report(
        "D", "This message is looping: it already has my Delivered-To line. (#5.4.6)")
    assert not new_files(store)
    assert e.send(ALICE, b"Subject: x\n\nDelivered-To: alice@example.com\n") == Report("K", "did 1+0+0")


@pytest.mark.parametrize(("mode", "text"), [
    (0o777, "Uh-oh: home directory is writable. (#4.7.0)"),
    (0o1755, "Home directory is sticky: user is editing his .qmail file. (#4.2.1)"),
])
def test_check47_home_permissions(e: E, mode: int, text: str) -> None:
    store = alice(e)
    store.chmod(mode)
    assert e.send(ALICE) == Report("Z", text)
    assert not new_files(store)


@pytest.mark.parametrize(("content", "mode", "text"), [
    ("./Maildir/\n", 0o666, "Uh-oh: .qmail file is writable. (#4.7.0)"),
    ("\n./Maildir/\n", 0o644, "Uh-oh: first line of .qmail file is blank. (#4.2.1)"),
    ("./Maildir/\n", 0o700, "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"),
])
def test_check48_bad_dotqmail(e: E, content: str, mode: int, text: str) -> None:
    store = alice(e, "qmailDotMode: dotonly")
    own(store / ".qmail", content, mode)
    assert e.send(ALICE) == Report("Z", text)
    assert not new_files(store)


def test_check49_exit_99_stops_but_forwards(e: E) -> None:
    store = alice(e, "qmailDotMode: dotonly")
    own(store / ".qmail", "&c@x.example\n|exit 99\n./Maildir/\n")
    qp_of(e.send(ALICE), "did 0+1+1")
    assert not new_files(store)
    assert [(s, r) for _, s, r in e.injected] == [(SENDER, ("c@x.example",))]


@pytest.mark.parametrize(("code", "letter"), [(100, "D"), (65, "D"), (1, "Z"), (111, "Z")])
def test_check50_program_exit_codes(e: E, code: int, letter: str) -> None:
    store = alice(e, "qmailDotMode: dotonly")
    own(store / ".qmail", f"|echo said {code}; exit {code}\n./Maildir/\n")
    assert e.send(ALICE) == Report(letter, f"said {code}\n")
    assert not new_files(store)


def test_check51_mbox_null_sender(e: E) -> None:
    store = alice(e, "qmailDotMode: dotonly")
    own(store / ".qmail", "./mbox\n")
    assert e.send(ALICE, b"Subject: m\n\nFrom here\n>From x\nend", sender="") == Report("K", "did 1+0+0")
    data = (store / "mbox").read_bytes()
    first, rest = data.split(b"\n", 1)
    assert re.fullmatch(rb"From MAILER-DAEMON [A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \d{4}", first)
    assert rest == (b"Return-Path: <>\nDelivered-To: alice@example.com\n"
                    b"Subject: m\n\n>From here\n>>From x\nend\n\n")


@pytest.mark.parametrize(("extra", "value"), [
    (("mailQuotaSize: 1000000", "mailQuotaCount: 1000"), "1000000S,1000C"),
    (("mailQuotaSize: 1000000",), "1000000S"),
    ((), None),
])
def test_check52_maildirquota_variable(e: E, extra: tuple[str, ...], value: str | None) -> None:
    store = e.box("alice")
    e.load(user("alice", store, *extra, *with_prog(e, store)))
    assert e.send(ALICE) == Report("K", "did 1+0+1")
    assert prog_env(store).get("MAILDIRQUOTA") == value


def fill(store: Path, size: int, name: str = "1.used") -> None:
    own(store / "Maildir" / "cur" / f"{name},S={size}:2,S", b"x" * 10)


def test_check53_over_quota_bounces(e: E) -> None:
    store = alice(e, "mailQuotaSize: 10000", maildir=True)
    fill(store, 9500)
    body = b"Subject: q\n\n" + b"y" * 987 + b"\n"
    assert len(body) == 1000
    assert e.send(ALICE, body) == Report(
        "D", "The users mailfolder is over the allowed quota (size). (#5.2.2)")
    assert not new_files(store)


def test_check54_quota_warning_once(e: E) -> None:
    e.q.control("quotawarning", "Please clean up.")
    store = alice(e, "mailQuotaSize: 1000", maildir=True)
    fill(store, 700)
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    warnings = [f for f in new_files(store) if ".QUOTA_WARNING,S=" in f.name]
    assert len(warnings) == 1 and len(new_files(store)) == 2
    text = warnings[0].read_bytes()
    assert warnings[0].name.endswith(f",S={len(text)}")
    assert b"\nTo: alice@example.com\n" in text and b"\nSubject: QUOTA-WARNING!\n" in text
    # the control file ends in a newline: qmail-quotawarn adds one empty line after the text
    assert text.endswith(b"\n\nPlease clean up.\n\n")
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    assert len([f for f in new_files(store) if "QUOTA_WARNING" in f.name]) == 1


def test_check54_no_warning_without_control(e: E) -> None:
    store = alice(e, "mailQuotaSize: 1000", maildir=True)
    fill(store, 700)
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    assert not [f for f in new_files(store) if "QUOTA_WARNING" in f.name]


def test_check55_maildirsize_bookkeeping(e: E) -> None:
    store = alice(e, "mailQuotaSize: 10000", maildir=True)
    own(store / "Maildir" / "maildirsize", "5000S\n0 0\n", 0o600)
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    [f] = new_files(store)
    lines = (store / "Maildir" / "maildirsize").read_text().splitlines()
    assert lines[0] == "10000S"
    assert lines[-1] == f"{f.stat().st_size} 1"


def replies(e: E) -> list[tuple[bytes, str, tuple[str, ...]]]:
    return [x for x in e.injected if x[1] == ""]


def test_check56_auto_reply_once_then_again_after_text_change(e: E) -> None:
    store = alice(e, "deliveryMode: reply", "mailReplyText: I am away.")
    assert e.send(ALICE, b"Subject: lunch\n\nhi\n") == Report("K", "did 1+1+0")  # W counts the reply
    [(data, sender, rcpts)] = replies(e)
    assert (sender, rcpts) == ("", (SENDER,))
    head, _, body = data.partition(b"\n\n")
    for line in (b"To: bob@remote.example", b"From: alice@example.com", b"Subject: [Auto-Reply] lunch",
                 b"Precedence: junk", b"Auto-Submitted: auto-replied"):
        assert line in head.split(b"\n"), line
    assert body.startswith(b"I am away.")
    assert len(new_files(store)) == 1
    e.send(ALICE)
    assert len(replies(e)) == 1
    e.base.slapd.modify_ldif(  # type: ignore[attr-defined]
        f"dn: uid=alice,{e.base.dn}\nchangetype: modify\nreplace: mailReplyText\n"  # type: ignore[attr-defined]
        "mailReplyText: Back Monday.\n")
    e.send(ALICE)
    assert len(replies(e)) == 2
    assert replies(e)[1][0].split(b"\n\n", 1)[1].startswith(b"Back Monday.")
    assert len(new_files(store)) == 3


@pytest.mark.parametrize(("sender", "head"), [
    ("", b""), ("#@[]", b""), ("MAILER-DAEMON@x.example", b""), ("list-request@x.example", b""),
    ("postmaster@x.example", b""), ("root@x.example", b""),
    (SENDER, b"Precedence: bulk\n"), (SENDER, b"Mailing-List: x\n"), (SENDER, b"X-Spam-Status: Yes\n"),
    (SENDER, b"X-RBL: x\n"), (SENDER, b"List-Id: <l.x.example>\n"),
    (SENDER, b"Auto-Submitted: auto-generated\n"),
])
def test_check57_no_reply_to_robots(e: E, sender: str, head: bytes) -> None:
    store = alice(e, "deliveryMode: reply", "mailReplyText: I am away.")
    # qmail-local counts the reply as soon as a sender is there and leaves the silence to qmail-reply
    # (found by tools/conformance: the C report is "did 1+1+0" for every sender but the null one)
    counted = "did 1+0+0" if sender == "" else "did 1+1+0"
    assert e.send(ALICE, head + BODY, sender=sender) == Report("K", counted)
    assert replies(e) == [] and e.injected == []
    assert len(new_files(store)) == 1


def test_check58_reply_header_section(e: E) -> None:
    text = "%HEADER%\nSubject: Re: %SUBJECT%\nTo: evil@x.example\nBcc: x@y\n\nAway"
    alice(e, "deliveryMode: reply", attr("mailReplyText", text))
    e.send(ALICE, b"Subject: plans\n\nhi\n")
    [(data, _, rcpts)] = replies(e)
    head, _, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    assert rcpts == (SENDER,)
    assert b"Subject: Re: plans" in lines and b"To: bob@remote.example" in lines
    assert not [x for x in lines if x.lower().startswith((b"bcc:", b"to: evil"))]
    assert body.rstrip(b"\n") == b"Away"


def test_check59_reply_needs_mode_and_text(e: E) -> None:
    s1, s2 = e.box("u1"), e.box("u2")
    e.load(user("u1", s1, "mailReplyText: I am away.") + user("u2", s2, "deliveryMode: reply"))
    assert e.send("u1@example.com") == Report("K", "did 1+0+0")
    assert e.send("u2@example.com") == Report("K", "Warning: Reply mode is on but there is no reply text.\n"
                                                     "did 1+0+0")
    assert e.injected == []


def test_check60_cluster_loop(e: E) -> None:
    e.q.control("ldapcluster", "1")
    e.sp.reload()
    store = alice(e, "mailHost: mx2.example.com")
    looped = b"Delivered-To: CLUSTERHOST mx1.example.com alice@example.com\n" + BODY
    assert e.send(ALICE, looped) == Report(
        "D", "This message is looping: it already has my Cluster-Delivered-To line. (#5.4.6)")
    assert not new_files(store)


@pytest.mark.parametrize(("cluster", "hosts", "mailhost"), [
    ("1", None, "MX1.example.com"), ("1", "mx3.example.com", "mx3.example.com"),
    ("0", None, "mx2.example.com"),
])
def test_check61_local_mail_host(e: E, cluster: str, hosts: str | None, mailhost: str) -> None:
    e.q.control("ldapcluster", cluster)
    e.q.control("ldapclusterhosts", hosts)
    e.sp.reload()
    store = alice(e, f"mailHost: {mailhost}")
    assert e.send(ALICE) == Report("K", "did 1+0+0")
    assert len(new_files(store)) == 1


def test_check61_disabled_with_foreign_host_bounces_here(e: E) -> None:
    e.q.control("ldapcluster", "1")
    e.sp.reload()
    alice(e, "mailHost: mx2.example.com", "accountStatus: disabled")
    assert e.send(ALICE) == Report("D", "Mailaddress is administratively disabled. (#5.2.1)")


MAKER = ('#!/bin/sh\necho "$(id -u) $1 $2" > {log}\n'
         '[ {code} = 0 ] && mkdir -p "$1" && chmod 700 "$1"\nexit {code}\n')


@pytest.mark.parametrize(("code", "report"), [
    (0, Report("K", "did 1+0+0")),
    (100, Report("D", "Permanent error in automatic homedir creation. (#5.3.0)")),
    (1, Report("Z", "Temporary error in automatic homedir creation. (#4.3.0)")),
])
def test_check66_dirmaker(e: E, code: int, report: Report) -> None:
    log = e.mail / "maker.log"
    own(log, "", 0o666)
    e.q.control("dirmaker", str(e.script("maker", MAKER.format(log=log, code=code))))
    home = e.box("homes") / "alice"  # the maker runs as the user: the parent is the user's
    e.load(user("alice", home))
    assert e.send(ALICE) == report
    assert log.read_text() == f"{UID} {home}/ ./Maildir/\n"
    assert len(new_files(home)) == (1 if code == 0 else 0)


def test_check66_no_dirmaker(e: E) -> None:
    home = e.mail / "alice"
    e.load(user("alice", home))
    rep = e.send(ALICE)
    assert rep.letter == "Z"
    assert rep.text.startswith(f"Unable to switch to {home}/: ") and rep.text.endswith(". (#4.3.0)")

"""qmailGroup lists end to end against the real slapd: LocalSpawner → qmail-group → the queue.

Covers qmail-group(8) and qmail-secretary(8),
and that a group entry gets no Maildir copy.  Every test delivers through the normal
``LocalSpawner.deliver`` (no hand-written .qmail); when the tests run as root the group work happens
in a child under the group's uid, with injections served by the parent through the seam.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.group import policy
from qldap.group.deliver import deliver_group
from qldap.local.spawn import LocalSpawner, Report
from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.inject import inject
from qldap.queue.layout import create_queue
from qldap.queue.message import MessageFile
from tests.conftest import QRoot

UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()
HEX40 = re.compile(r"[0-9a-f]{40}")
POST = b"From: s@y\nSubject: hello list\n\nhello everybody\n"
MEMBERS = {"a@x", "b@x", "c@x"}


@dataclass(frozen=True)
class Sent:
    data: bytes
    sender: str
    rcpts: tuple[str, ...]


class Env:
    """A qmail root wired to the test's LDAP subtree, a real queue, and a record of every injection."""

    def __init__(self, qroot: QRoot, base: object, store: Path) -> None:
        self.qroot, self.base, self.store = qroot, base, store
        self.sent: list[Sent] = []
        self.refuse: str | None = None
        self.spawner = LocalSpawner(qroot.path, self._inject)
        self.n = 0

    def _inject(self, data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        if self.refuse is not None:
            raise PermanentFailure(self.refuse)
        self.sent.append(Sent(data, sender, rcpts))
        return inject(self.qroot.path, data, Envelope(sender, rcpts), how="by uid 0", uid=os.getuid(),
                      pid=os.getpid(), trigger=False).qp

    def deliver(self, rcpt: str, sender: str, body: bytes = POST) -> Report:
        self.n += 1
        path = self.qroot.path / f"mess{self.n}"
        path.write_bytes(body)
        return self.spawner.deliver(rcpt, sender, path)

    def take(self) -> list[Sent]:
        out, self.sent = self.sent, []
        return out

    def files(self, sub: str) -> list[Path]:
        d = self.store / "Maildir" / sub
        return sorted(d.iterdir()) if d.is_dir() else []

    def todo(self) -> list[Envelope]:
        todo = self.qroot.path / "queue" / "todo"
        return [parse_todo(f.read_bytes()).envelope for f in sorted(todo.iterdir())]


@pytest.fixture
def mailroot() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-group-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def person(uid: str, mail: str) -> str:
    return (f"dn: uid={uid},{{base}}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: {uid}\n"
            f"cn: {uid}\nsn: {uid}\nmail: {mail}\n\n")


def group_ldif(store: Path, extra: str = "") -> str:
    return (
        "dn: uid=list,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nobjectClass: qmailGroup\n"
        "uid: list\ncn: list\nsn: list\nmail: list@example.com\n"
        "mailAlternateAddress: list-catchall@example.com\n"
        f"mailMessageStore: {store}/\nqmailUID: {UID}\nqmailGID: {GID}\n"
        "rfc822member: a@x\ndnmember: uid=bee,{base}\nfiltermember: (mail=c@x)\n" + extra + "\n"
    )


@pytest.fixture
def env(qroot: QRoot, ldap_base, slapd, mailroot: Path) -> Env:  # type: ignore[no-untyped-def]
    qroot.control("ldapserver", f"127.0.0.1:{slapd.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    qroot.control("ldapobjectclass", "qmailUser")
    create_queue(qroot.path)
    store = mailroot / "list"
    store.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(store, UID, GID)
    ldap_base.load(person("bee", "b@x") + person("cee", "c@x") + person("mod", "n@x"))
    return Env(qroot, ldap_base, store)


def load(env: Env, extra: str = "") -> None:
    env.base.load(group_ldif(env.store, extra))  # type: ignore[attr-defined]


def hash_in(text: bytes, action: str) -> str:
    m = re.search(rb"list-" + action.encode() + rb"-([0-9a-f]{40})@example\.com", text)
    assert m is not None, text[:400]
    return m.group(1).decode()


# -- a post reaches every member, once, and nothing lands in the group's Maildir ---------------------


def test_post_reaches_members_of_all_three_kinds(env: Env) -> None:
    load(env, "rfc822member: B@X\n")  # the same person as dnmember's b@x: one copy only
    rep = env.deliver("list@example.com", "s@y")
    assert rep.letter == "K", rep
    assert re.fullmatch(r"qmail-group: ok \d+ qp \d+\.", rep.text)
    [sent] = env.take()
    assert sorted(r.lower() for r in sent.rcpts) == sorted(MEMBERS)
    assert sent.sender == "s@y"
    assert sent.data == b"Delivered-To: list@example.com\nPrecedence: bulk\n" + POST
    [queued] = env.todo()
    assert queued.sender == "s@y" and sorted(r.lower() for r in queued.recipients) == sorted(MEMBERS)
    assert env.files("new") == [] and env.files("cur") == []  # no maildir copy


# -- bounce admins -----------------------------------------------------------------------------------


def test_bounceadmin_gets_verp_sender_and_member_bounces(env: Env) -> None:
    load(env, "bounceadmin: adm@x\n")
    assert env.deliver("list@example.com", "s@y").letter == "K"
    [post] = env.take()
    assert post.sender == "list-return-@example.com-@[]"
    bounce = b"From: MAILER-DAEMON\nSubject: failure notice\n\nsorry\n"
    rep = env.deliver("list-return-a=x@example.com", "", bounce)
    assert rep.letter == "K", rep
    [back] = env.take()
    assert back.rcpts == ("adm@x",) and back.sender == ""
    assert back.data.endswith(bounce)


def test_return_without_bounceadmin_is_permanent(env: Env) -> None:
    load(env)
    assert env.deliver("list-return-a=x@example.com", "") == Report("D", policy.NO_RECIPIENTS)
    assert env.take() == []


# -- loops -------------------------------------------------------------------------------------------


def test_own_delivered_to_line_is_a_loop(env: Env) -> None:
    load(env)
    looped = b"Delivered-To: list@example.com\n" + POST
    assert env.deliver("list@example.com", "s@y", looped) == Report("D", policy.LOOPING)
    assert env.take() == []


# -- membersonly -------------------------------------------------------------------------------------


def test_membersonly_with_members_then_senders(env: Env) -> None:
    load(env, "membersonly: TRUE\n")
    assert env.deliver("list@example.com", "A@X").letter == "K"  # rfc822member, other case
    assert env.deliver("list@example.com", "b@x").letter == "K"  # dnmember, by the sender's entry
    assert env.deliver("list@example.com", "c@x").letter == "K"  # filtermember, base search at its DN
    assert env.deliver("list@example.com", "z@y") == Report("D", policy.NOT_ALLOWED)
    assert len(env.take()) == 3
    env.base.slapd.modify_ldif(  # type: ignore[attr-defined]
        f"dn: uid=list,{env.base.dn}\nchangetype: modify\nadd: rfc822sender\nrfc822sender: z@y\n")  # type: ignore[attr-defined]
    assert env.deliver("list@example.com", "z@y").letter == "K"
    assert env.deliver("list@example.com", "a@x") == Report("D", policy.NOT_ALLOWED)
    assert env.deliver("list@example.com", "b@x") == Report("D", policy.NOT_ALLOWED)


# -- sender confirmation -----------------------------------------------------------------------------


def test_senderconfirm_holds_asks_and_confirm_distributes(env: Env) -> None:
    load(env, "senderconfirm: TRUE\n")
    rep = env.deliver("list@example.com", "s@y")
    assert rep.letter == "K" and rep.text.startswith("qmail-secretary: info: qp ")
    [held] = env.files("new")
    assert HEX40.fullmatch(held.name)
    assert os.stat(held).st_uid == UID  # stored by the group's uid, not by root
    assert held.read_bytes() == b"Return-Path: <s@y>\nDelivered-To: secretary for list@example.com\n" + POST
    [ask] = env.take()  # no distribution, only the question
    h = held.name
    assert ask.rcpts == ("s@y",) and ask.sender == f"list-reject-{h}@example.com"
    assert f"From: The mailgroup secretary <list-confirm-{h}@example.com>\n".encode() in ask.data
    assert b"\nSubject: Message sender confirmation\n" in ask.data
    assert b"\nTo: s@y\n" in ask.data and b"Precedence: junk\n" in ask.data
    assert ask.data.startswith(b"Delivered-To: secretary for list@example.com\n")
    assert b"hello everybody" in ask.data and b"list@example.com" in ask.data
    assert hash_in(ask.data, "confirm") == h

    rep = env.deliver(f"list-confirm-{h}@example.com", "s@y", b"Subject: Re: confirm\n\nOK\n")
    assert rep.letter == "K" and rep.text.startswith("qmail-group: ok "), rep
    [dist] = env.take()
    assert dist.sender == "s@y" and sorted(dist.rcpts) == sorted(MEMBERS)
    assert dist.data.startswith(b"Delivered-To: list@example.com\nPrecedence: bulk\n")
    assert dist.data.endswith(POST)
    assert env.files("new") == []


def test_reject_deletes_and_unknown_hash_sends_nothing(env: Env) -> None:
    load(env, "senderconfirm: TRUE\n")
    env.deliver("list@example.com", "s@y")
    [held] = env.files("new")
    env.take()
    rep = env.deliver(f"list-reject-{held.name}@example.com", "", b"Subject: failure notice\n\nno\n")
    assert rep == Report("K", "qmail-secretary: warn: confirmation to sender bounced.")
    assert env.files("new") == [] and env.take() == []
    rep = env.deliver(f"list-confirm-{'0' * 40}@example.com", "s@y", b"Subject: ok\n\nok\n")
    assert rep == Report("K", "qmail-secretary: warn: Message no longer in repository.")
    assert env.take() == []
    rep = env.deliver("list-confirm-../../etc/passwd@example.com", "s@y", b"Subject: ok\n\nok\n")
    assert rep.letter == "K" and env.take() == []


# -- moderation --------------------------------------------------------------------------------------


def test_moderation_request_approve_and_post_by_moderator(env: Env) -> None:
    load(env, "rfc822moderator: m@x\ndnmoderator: uid=mod,{base}\n".replace("{base}", env.base.dn))  # type: ignore[attr-defined]
    assert env.deliver("list@example.com", "s@y").letter == "K"
    [held] = env.files("cur")
    assert env.files("new") == [] and HEX40.fullmatch(held.name)
    [ask] = env.take()
    h = held.name
    assert sorted(ask.rcpts) == ["m@x", "n@x"] and ask.sender == f"list-bounce-{h}@example.com"
    assert f"From: The mailgroup secretary <list-approve-{h}@example.com>\n".encode() in ask.data
    assert b"To: The moderators of list@example.com <list-moderators@example.com>\n" in ask.data
    assert b"\nSubject: Moderation request\n" in ask.data

    assert env.deliver("list@example.com", "m@x").letter == "K"
    [own] = env.take()
    assert own.rcpts == ("m@x",)  # a moderator's post asks only that moderator

    rep = env.deliver(f"list-approve-{h}@example.com", "n@x", b"Subject: Re: Moderation request\n\nok\n")
    assert rep.letter == "K" and rep.text.startswith("qmail-group: ok "), rep
    [dist] = env.take()
    assert dist.sender == "s@y" and sorted(dist.rcpts) == sorted(MEMBERS) and dist.data.endswith(POST)
    assert held not in env.files("cur")


def test_mail_to_moderators_and_moderator_bounces(env: Env) -> None:
    load(env, "rfc822moderator: m@x\n")
    rep = env.deliver("list-moderators@example.com", "s@y")
    assert rep.letter == "K"
    [fwd] = env.take()
    assert fwd.rcpts == ("m@x",) and fwd.sender == "s@y"
    rep = env.deliver(f"list-bounce-{'1' * 40}@example.com", "", b"Subject: failure\n\nx\n")
    assert rep == Report("K", "qmail-secretary: warn: message to moderator bounced.")
    assert env.take() == []


def test_moderator_bounce_goes_to_bounceadmin(env: Env) -> None:
    load(env, "rfc822moderator: m@x\nbounceadmin: adm@x\n")
    assert env.deliver(f"list-bounce-{'1' * 40}@example.com", "", b"Subject: failure\n\nx\n").letter == "K"
    [fwd] = env.take()
    assert fwd.rcpts == ("adm@x",)


def test_confirmed_then_moderated_end_to_end(env: Env) -> None:
    """A post held for its sender, then for a moderator, reaches every member exactly once."""
    load(env, "senderconfirm: TRUE\nrfc822moderator: m@x\n")
    env.deliver("list@example.com", "s@y")
    [first] = env.files("new")
    env.deliver(f"list-confirm-{first.name}@example.com", "s@y", b"Subject: ok\n\nok\n")
    assert env.files("new") == []
    [moved] = env.files("cur")
    assert moved.name != first.name
    asks = env.take()
    assert [a.rcpts for a in asks] == [("s@y",), ("m@x",)]
    assert hash_in(asks[1].data, "approve") == moved.name
    assert env.todo() and all("a@x" not in e.recipients for e in env.todo())  # still held

    env.deliver(f"list-approve-{moved.name}@example.com", "m@x", b"Subject: ok\n\nok\n")
    assert env.files("cur") == []
    distributions = [e for e in env.todo() if e.sender == "s@y" and "a@x" in e.recipients]
    assert len(distributions) == 1
    received = [r.lower() for e in env.todo() for r in e.recipients if r.lower() in MEMBERS]
    assert sorted(received) == sorted(MEMBERS)  # each member exactly once
    # a second approval of the same hash finds nothing and sends nothing
    before = len(env.todo())
    rep = env.deliver(f"list-approve-{moved.name}@example.com", "m@x", b"Subject: ok\n\nok\n")
    assert rep == Report("K", "qmail-secretary: warn: Message no longer in repository.")
    assert len(env.todo()) == before


# -- expiry and the secretary's checks ---------------------------------------------------------------


def test_week_old_storage_vanishes_on_next_run(env: Env) -> None:
    load(env, "senderconfirm: TRUE\n")
    env.deliver("list@example.com", "s@y")
    [old] = env.files("new")
    stale = time.time() - 604800 - 60
    os.utime(old, (stale, stale))
    env.deliver("list@example.com", "t@y")
    names = [f.name for f in env.files("new")]
    assert old.name not in names and len(names) == 1


@pytest.mark.parametrize(
    ("sender", "head", "text"),
    [
        ("s@y", b"Precedence: bulk\n", policy.BAD_PRECEDENCE),
        ("s@y", b"Precedence:  List\n", policy.BAD_PRECEDENCE),
        ("s@y", b"Mailing-List: other@z\n", policy.HAS_MAILING_LIST),
        ("#@[]", b"", policy.BOUNCE_SENDER),
        ("", b"", policy.BOUNCE_SENDER),
        ("s", b"", policy.NO_HOST_SENDER),
    ],
)
def test_confirmation_refuses_robots(env: Env, sender: str, head: bytes, text: str) -> None:
    load(env, "senderconfirm: TRUE\n")
    assert env.deliver("list@example.com", sender, head + POST) == Report("D", text)
    assert env.files("new") == [] and env.take() == []


# -- trash, errors and failures ----------------------------------------------------------------------


def test_unknown_extension_has_no_mailbox(env: Env) -> None:
    load(env)
    assert env.deliver("list-foo@example.com", "s@y") == Report("D", policy.NO_MAILBOX)
    assert env.take() == []


def test_queue_refusal_is_reported_with_its_letter(env: Env) -> None:
    load(env)
    env.refuse = "qq permanent problem (#5.3.0)"
    assert env.deliver("list@example.com", "s@y") == Report(
        "D", "Unable to blast message: qq permanent problem (#5.3.0).")


def test_group_credentials_are_used(env: Env, slapd) -> None:  # type: ignore[no-untyped-def]
    load(env)
    env.qroot.control("ldapgrouplogin", slapd.rootdn)
    env.qroot.control("ldapgrouppassword", "wrong")
    rep = env.deliver("list@example.com", "s@y")
    assert rep.letter == "Z" and "bad credentials" in rep.text and rep.text.startswith("get ldap group entry")
    env.qroot.control("ldapgrouppassword", slapd.rootpw)
    env.spawner.reload()
    assert env.deliver("list@example.com", "s@y").letter == "K"


def test_deliver_group_api_missing_entry_is_temporary(env: Env) -> None:
    body = env.qroot.path / "m"
    body.write_bytes(POST)
    with MessageFile.open(body) as mf, pytest.raises(TemporaryFailure) as exc:
        deliver_group(env.qroot.path, f"uid=nobody,{env.base.dn}", "list", "example.com", "", "",  # type: ignore[attr-defined]
                      "s@y", mf, lambda d, s, r: 1)
    assert exc.value.text == "get ldap group entry: no such object"


def test_deliver_group_in_process_uses_the_store_maildir(env: Env) -> None:
    """The API called directly (as a non-root spawner does): maildir from mailMessageStore + default."""
    load(env, "senderconfirm: TRUE\n")
    body = env.qroot.path / "m"
    body.write_bytes(POST)
    sent: list[tuple[str, tuple[str, ...]]] = []

    def capture(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        sent.append((sender, rcpts))
        return 7

    dn = f"uid=list,{env.base.dn}"  # type: ignore[attr-defined]
    with MessageFile.open(body) as mf:
        text = deliver_group(env.qroot.path, dn, "list", "example.com", "", "", "s@y", mf, capture)
    assert text == "qmail-secretary: info: qp 7"
    [held] = env.files("new")
    with MessageFile.open(body) as mf:
        text = deliver_group(env.qroot.path, dn, f"list-confirm-{held.name}", "example.com", "-",
                             f"confirm-{held.name}", "s@y", mf, capture, now=1234.0)
    assert text == "qmail-group: ok 1234 qp 7."
    assert sent[1][0] == "s@y" and sorted(sent[1][1]) == sorted(MEMBERS) and env.files("new") == []

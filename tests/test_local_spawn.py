"""Local delivery end to end against the real slapd: lookup → plan → agent (as the user) → report."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.local.spawn import LocalSpawner, Report
from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.inject import inject
from qldap.queue.layout import create_queue
from tests.conftest import QRoot

UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()


@pytest.fixture
def mailroot() -> Iterator[Path]:
    """A world-traversable directory for mailboxes (the agent runs as UID, not as root)."""
    d = Path(tempfile.mkdtemp(prefix="qldap-mail-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mailbox(mailroot: Path, name: str) -> Path:
    p = mailroot / name
    p.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(p, UID, GID)
    return p


def user_ldif(uid: str, store: Path | None, extra: str = "") -> str:
    lines = [f"dn: uid={uid},{{base}}", "objectClass: inetOrgPerson", "objectClass: qmailUser",
             f"uid: {uid}", f"cn: {uid}", f"sn: {uid}", f"mail: {uid}@example.com",
             f"qmailUID: {UID}", f"qmailGID: {GID}"]
    if store is not None:
        lines.append(f"mailMessageStore: {store}/")
    return "\n".join(lines) + "\n" + extra + "\n"


@pytest.fixture
def spawner(qroot: QRoot, ldap_base, slapd) -> tuple[LocalSpawner, QRoot]:  # type: ignore[no-untyped-def]
    qroot.control("ldapserver", f"127.0.0.1:{slapd.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    qroot.control("ldapobjectclass", "qmailUser")
    create_queue(qroot.path)

    def injector(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        return inject(qroot.path, data, Envelope(sender, rcpts), how="by uid 0", uid=os.getuid(),
                      pid=os.getpid(), trigger=False).qp

    return LocalSpawner(qroot.path, injector), qroot


def msg(tmp_path: Path, body: bytes = b"Subject: hi\n\nhello\n") -> Path:
    p = tmp_path / "mess"
    p.write_bytes(body)
    return p


def todo_entries(root: Path) -> list[Envelope]:
    out = []
    for f in sorted((root / "queue" / "todo").iterdir()):
        out.append(parse_todo(f.read_bytes()).envelope)
    return out


def test_delivery_to_ldap_user_as_its_uid(spawner, ldap_base, mailroot: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp, _ = spawner
    store = mailbox(mailroot, "alice")
    ldap_base.load(user_ldif("alice", store))
    rep = sp.deliver("alice@example.com", "bob@remote.example", msg(tmp_path))
    assert rep.text == "did 1+0+0"
    assert rep.letter == "K"
    files = list((store / "Maildir" / "new").iterdir())
    assert len(files) == 1
    head = b"Return-Path: <bob@remote.example>\nDelivered-To: alice@example.com\n"
    assert files[0].read_bytes().startswith(head)
    assert os.stat(files[0]).st_uid == UID


def test_unknown_and_disabled_bounce(spawner, ldap_base, mailroot: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp, _ = spawner
    ldap_base.load(user_ldif("frank", mailbox(mailroot, "frank"), "accountStatus: disabled"))
    assert sp.deliver("frank@example.com", "b@r", msg(tmp_path)) == Report(
        "D", "Mailaddress is administratively disabled. (#5.2.1)")
    rep = sp.deliver("nobody-here@example.com", "b@r", msg(tmp_path))
    assert rep.letter in ("D", "Z")  # alias fallback: no .qmail-default → bounce, or no alias user → defer
    if rep.letter == "D":
        assert rep.text == "Sorry, no mailbox here by that name. (#5.1.1)"


def test_forward_is_injected_into_the_queue(spawner, ldap_base, mailroot: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp, qroot = spawner
    store = mailbox(mailroot, "dave")
    ldap_base.load(user_ldif("dave", store, "mailForwardingAddress: dave@elsewhere.example"))
    rep = sp.deliver("dave@example.com", "bob@remote.example", msg(tmp_path))
    assert rep.text.startswith("did 1+1+0\nqp ")
    assert rep.letter == "K"
    assert todo_entries(qroot.path) == [Envelope("bob@remote.example", ("dave@elsewhere.example",))]


def test_ldap_down_defers(qroot: QRoot, slapd_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = slapd_factory()
    qroot.control("ldapserver", f"127.0.0.1:{server.port}")
    qroot.control("ldapbasedn", server.suffix)
    qroot.control("ldaptimeout", "30")
    create_queue(qroot.path)
    server.stop()
    sp = LocalSpawner(qroot.path, lambda d, s, r: 0)
    assert sp.deliver("alice@example.com", "b@r", msg(tmp_path)) == Report(
        "Z", "Unable to contact LDAP server. (#4.4.3)")


def test_no_host_and_trash(spawner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp, _ = spawner
    assert sp.deliver("alice", "b@r", msg(tmp_path)) == Report(
        "D", "Sorry, address must include host name. (#5.1.3)")
    assert sp.deliver("@example.com", "b@r", msg(tmp_path)) == Report("K", "did 0+0+0")


def test_cached_answers_during_an_outage(qroot: QRoot, slapd_factory, mailroot: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With ldapcachettl the delivery threads share recent answers: a cached user is still delivered
    while slapd is down (a positive answer is reused for at most the TTL), an uncached one defers —
    an outage is never a bounce, with or without the cache."""
    server = slapd_factory()
    store = mailbox(mailroot, "carol")
    server.add_ldif(user_ldif("carol", store).replace("{base}", server.suffix))
    qroot.control("ldapserver", f"127.0.0.1:{server.port}")
    qroot.control("ldapbasedn", server.suffix)
    qroot.control("ldapobjectclass", "qmailUser")
    qroot.control("ldaptimeout", "2")
    qroot.control("ldapcachettl", "600")
    create_queue(qroot.path)
    sp = LocalSpawner(qroot.path, lambda d, s, r: 0)
    assert sp.deliver("carol@example.com", "b@r", msg(tmp_path)).letter == "K"
    server.stop()
    try:
        assert sp.deliver("carol@example.com", "b@r", msg(tmp_path)).letter == "K"
        assert len(list((store / "Maildir" / "new").iterdir())) == 2
        assert sp.deliver("dan@example.com", "b@r", msg(tmp_path)) == Report(
            "Z", "Unable to contact LDAP server. (#4.4.3)")
    finally:
        server.start()

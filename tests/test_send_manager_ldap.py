"""End to end with the real directory: inject → ``qldap send`` → local spawner → the user's Maildir.

Also the virtual-domain loop marker and the rule that a directory outage defers and never
bounces: with slapd stopped the delivery is deferred; after slapd returns (and an ALRM) it arrives.
When the tests run as root the agent runs as the entry's qmailUID, so mailboxes live in a
world-traversable temporary directory owned by that uid.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.queue.layout import QueueLayout
from tests.test_send_manager_support import PATIENCE, ManagerProcess, make_root, put, queue_files

UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()


@pytest.fixture
def mailroot() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-send-mail-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mailbox(mailroot: Path, name: str) -> Path:
    p = mailroot / name
    p.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(p, UID, GID)
    return p


def user_ldif(uid: str, mail: str, store: Path, base: str = "{base}") -> str:
    return (
        f"dn: uid={uid},{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: {uid}\ncn: {uid}\n"
        f"sn: {uid}\nmail: {mail}\nqmailUID: {UID}\nqmailGID: {GID}\nmailMessageStore: {store}/\n\n"
    )


def maildir_files(store: Path) -> list[Path]:
    new = store / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def wait_files(store: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + PATIENCE
    while len(maildir_files(store)) < count:
        assert time.monotonic() < deadline, f"no {count} message(s) in {store}"
        time.sleep(0.05)
    return maildir_files(store)


def wait_empty(layout: QueueLayout) -> None:
    deadline = time.monotonic() + PATIENCE
    while queue_files(layout):
        assert time.monotonic() < deadline, f"queue not empty: {queue_files(layout)}"
        time.sleep(0.05)


def ldap_controls(url_hostport: str, base: str) -> dict[str, str]:
    return {"ldapserver": url_hostport, "ldapbasedn": base, "ldapobjectclass": "qmailUser",
            "locals": "mx1.example.com\nexample.com", "ldaptimeout": "30"}  # fmt: skip


def test_delivery_to_an_ldap_users_maildir(tmp_path: Path, ldap_base, slapd, mailroot: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    store = mailbox(mailroot, "alice")
    ldap_base.load(user_ldif("alice", "alice@example.com", store))
    number = put(root, "bob@remote.example", ["alice@example.com"], b"Subject: hello\n\nhi alice\n")
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        [msg] = wait_files(store, 1)
        data = msg.read_bytes()
        assert data.startswith(b"Return-Path: <bob@remote.example>\nDelivered-To: alice@example.com\n")
        assert data.endswith(b"Subject: hello\n\nhi alice\n")
        mgr.wait_for(rf"^end msg {number}$")
        assert mgr.wait_for(r"^delivery 1: success: ")[0] == "delivery 1: success: did_1+0+0/"
        wait_empty(layout)
    finally:
        assert mgr.stop() == 0


def test_virtual_domain_delivery_carries_the_rewritten_loop_marker(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path
) -> None:
    """``Delivered-To: vuser-joe@example.org``."""
    root = tmp_path / "q"
    controls = ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn)
    make_root(root, {**controls, "virtualdomains": "example.org:vuser"})
    store = mailbox(mailroot, "vjoe")
    ldap_base.load(user_ldif("vjoe", "vuser-joe@example.org", store))
    put(root, "bob@remote.example", ["joe@example.org"], b"Subject: v\n\nx\n")
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        [msg] = wait_files(store, 1)
        assert b"\nDelivered-To: vuser-joe@example.org\n" in msg.read_bytes()
        mgr.wait_for(r"^starting delivery 1: msg \d+ to local vuser-joe@example.org$")
    finally:
        assert mgr.stop() == 0


def test_directory_outage_defers_and_never_bounces(tmp_path: Path, slapd_factory, mailroot: Path) -> None:  # type: ignore[no-untyped-def]
    store = mailbox(mailroot, "carol")
    server = slapd_factory(initial_ldif=user_ldif("carol", "carol@example.com", store, "dc=example,dc=com"))
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{server.port}", server.suffix))
    server.stop()
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        number = put(root, "dave@remote.example", ["carol@example.com"], b"Subject: later\n\nx\n")
        mgr.wait_for(r"^delivery 1: deferral: Unable_to_contact_LDAP_server._\(#4.4.3\)/$")
        mgr.send(signal.SIGALRM)
        mgr.wait_for(r"^delivery 2: deferral: ")
        assert not os.path.exists(layout.bounce(number))
        assert maildir_files(store) == []
        server.start()
        mgr.send(signal.SIGALRM)
        wait_files(store, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
        log = mgr.lines()
        assert not [x for x in log if "failure:" in x or x.startswith("bounce msg")]
        assert [x for x in log if x.startswith("new msg ")] == [f"new msg {number}"]
    finally:
        assert mgr.stop() == 0

"""qmail-local(8) through the real daemons: SMTP in (`qldap smtpd`), queue, `qldap send`, LDAP, Maildirs out.

One `qldap up` site with several LDAP users; every outcome is observed in a Maildir: plain and
alternate-address delivery, catchall, forward with copy, auto-reply, and the bounces the sender
receives for a disabled account and an over-quota mailbox.
RCPTCHECK is off so the delivery side, not the SMTP side, decides.
"""

from __future__ import annotations

import os
import smtplib
import sys
import time
from pathlib import Path

import pytest

from qldap.setup.init import InitOptions, init_root
from tests.test_ops_supervise import Up
from tests.test_ops_up_e2e import GID, IS_ROOT, UID, free_port, mailroot, ups

__all__ = ["mailroot", "ups"]

pytestmark = [pytest.mark.slapd, pytest.mark.slow]
PATIENCE = 90.0
USERS = {
    "alice": "mailAlternateAddress: a.smith@example.com",
    "postie": "",
    "bob": "accountStatus: disabled",
    "carol": "mailQuotaSize: 1000",
    "dave": "mailForwardingAddress: alice@example.com",
    "erin": "deliveryMode: reply\nmailReplyText: I am away.",
    "any": "mailAlternateAddress: catchall@example.com",
}


def entry(name: str, store: Path, extra: str) -> str:
    return (f"dn: uid={name},{{base}}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: {name}\n"
            f"cn: {name}\nsn: {name}\nmail: {name}@example.com\nqmailUID: {UID}\nqmailGID: {GID}\n"
            f"mailMessageStore: {store}/\n" + (extra + "\n" if extra else "") + "\n")


def new_files(store: Path) -> list[Path]:
    d = store / "Maildir" / "new"
    return sorted(d.iterdir()) if d.exists() else []


def wait_for(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_outcomes_through_smtpd_and_send(tmp_path: Path, ldap_base, slapd, mailroot: Path,  # type: ignore[no-untyped-def]
                                         ups: list[Up]) -> None:
    root = tmp_path / "qmail"
    init_root(InitOptions(root=root, me="mx1.example.com", ldap_uris=(slapd.url,), basedn=ldap_base.dn,
                          domains=("example.com",)))
    stores = {}
    for name in USERS:
        store = mailroot / name
        for sub in ("tmp", "new", "cur"):
            (store / "Maildir" / sub).mkdir(parents=True, mode=0o700)
        if IS_ROOT:
            for d in (store, store / "Maildir", *(store / "Maildir").iterdir()):
                os.chown(d, UID, GID)
        stores[name] = store
    ldap_base.load("".join(entry(n, stores[n], extra) for n, extra in USERS.items()))
    port = free_port()
    (root / "services.yaml").write_text(
        f'smtpd:\n  listen: ["127.0.0.1:{port}"]\n  rules: control/qmail-smtpd.rules\nsend: {{}}\n')
    code = "import sys; from qldap.cli.qldap import main; sys.exit(main(sys.argv[1:]))"
    up = Up([sys.executable, "-c", code, "up", str(root)])
    ups.append(up)
    up.wait_for("qldap up: all 2 daemons ready")

    big = "x" * 2000
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for rcpt, subject, body in [
            ("a.smith@example.com", "to-alias", "hello"),
            ("somebody-else@example.com", "to-catchall", "hello"),
            ("bob@example.com", "to-disabled", "hello"),
            ("carol@example.com", "to-full", big),
            ("dave@example.com", "to-forwarder", "hello"),
            ("erin@example.com", "to-away", "hello"),
        ]:
            msg = f"From: postie@example.com\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
            assert smtp.sendmail("postie@example.com", [rcpt], msg) == {}

    wait_for(lambda: len(new_files(stores["alice"])) == 2, "alice: alias delivery and dave's forward")
    wait_for(lambda: len(new_files(stores["postie"])) == 3, "postie: two bounces and one auto-reply")
    wait_for(lambda: len(new_files(stores["any"])) == 1 and len(new_files(stores["dave"])) == 1
             and len(new_files(stores["erin"])) == 1, "catchall, dave's copy, erin's copy")

    alice = [p.read_bytes() for p in new_files(stores["alice"])]
    assert any(b"Delivered-To: a.smith@example.com\n" in m and b"Subject: to-alias" in m for m in alice)
    assert any(b"Delivered-To: dave@example.com\n" in m and b"Subject: to-forwarder" in m for m in alice)
    assert b"Subject: to-catchall" in new_files(stores["any"])[0].read_bytes()
    assert new_files(stores["bob"]) == [] and new_files(stores["carol"]) == []
    postie = [p.read_bytes() for p in new_files(stores["postie"])]
    bounces = [m for m in postie if b"Subject: failure notice" in m]
    assert len(bounces) == 2
    disabled = b"<bob@example.com>:\nMailaddress is administratively disabled. (#5.2.1)"
    assert any(disabled in m for m in bounces)
    assert any(b"<carol@example.com>:\nThe users mailfolder is over the allowed quota (size). (#5.2.2)" in m
               for m in bounces)
    assert all(b"Return-Path: <>" in m for m in bounces)
    [reply] = [m for m in postie if b"Subject: [Auto-Reply] to-away" in m]
    assert b"Return-Path: <>" in reply and reply.rstrip().endswith(b"I am away.")
    assert up.stop() == 0

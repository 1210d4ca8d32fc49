"""The SMTP daemon against the real slapd: AUTH (qmail-smtpd(8), SMTP AUTH) and RCPTCHECK/SENDERCHECK
(qmail-smtpd(8), ADDRESS VERIFICATION).

Over real sockets: the daemon runs in-process on a loopback port, the client
connects from 127.0.0.2 (PTR ``client.test`` through the DNS seam), and the directory is a fresh
subtree of the shared slapd (or a private slapd that the test stops for the "LDAP down" cases).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from qldap.control.cdb import write_cdb
from qldap.passwords.schemes import make_hash
from qldap.queue.layout import create_queue
from qldap.smtpd import replies
from qldap.smtpd.dns import StaticResolver
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, ServerThread, options, queued
from tests.fixtures_slapd import LdapBase, SlapdFactory

CLIENT = "127.0.0.2"
REL = replies.relay_denied(CLIENT).render()
NO_MAILBOX = "554 Sorry, no mailbox here by that name. (#5.1.1)\r\n"
DISABLED = "554 Mailaddress is administratively disabled. (#5.2.1)\r\n"
LOCAL_SENDER = "554 refused mailfrom because valid local sender address required\r\n"
SECRET = make_hash("ssha", "secret", b"salt")


def person(uid: str, *lines: str) -> str:
    extra = "".join(f"{line}\n" for line in lines)
    return (
        f"dn: uid={uid},{{base}}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\n"
        f"uid: {uid}\ncn: {uid}\nsn: {uid}\n{extra}\n"
    )


USERS = (
    person("alice", "mail: alice@example.org", f"userPassword: {SECRET}")
    + person("bob", "mail: bob@example.org", "accountStatus: disabled", f"userPassword: {SECRET}")
    + person("gone", "mail: gone@example.org", "accountStatus: deleted")
    + person("carol", "mail: carol@example.org", "accountStatus: noaccess", f"userPassword: {SECRET}")
)


def fixture_root(root: QRoot, host: str, port: int, base: str) -> QRoot:
    root.control("me", "mx.example.org")
    root.control("locals", "example.org\nmx.example.org")
    root.control("rcpthosts", "example.org\n.example.net\nbackup.test")
    root.control("ldapserver", f"{host}:{port}")
    root.control("ldapbasedn", base)
    root.control("ldaptimeout", "30")
    create_queue(root.path)
    return root


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    ldap_base.load(USERS)
    return fixture_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)


Start = Callable[..., ServerThread]


@pytest.fixture
def start(root: QRoot) -> Iterator[Start]:
    running: list[ServerThread] = []

    def make(env: dict[str, str] | None = None) -> ServerThread:
        resolver = StaticResolver(ptr={CLIENT: "client.test"})
        st = ServerThread(options(root.path, env), resolver).start()
        running.append(st)
        return st

    yield make
    for st in running:
        st.stop()


def connect(st: ServerThread) -> Client:
    c = Client(st.addr, CLIENT)
    assert c.reply().startswith("220 mx.example.org ESMTP")
    return c


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_plain_grants_relay_and_marks_received(root: QRoot, start: Start) -> None:
    """PLAIN → 235, relaying allowed, Received carries the login, SMTPAUTHUSER set."""
    program = root.path / "qq.py"
    program.write_text(QUEUE_DUMP)
    program.chmod(0o755)
    st = start({"SMTPAUTH": "", "QMAILQUEUE": str(program), "QQ_OUT": str(root.path / "qq.out")})
    c = connect(st)
    assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "235 nice to meet you\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<victim@elsewhere.test>") == "250 ok\r\n"
    assert c.cmd("DATA").startswith("354")
    assert c.cmd("Subject: hi\r\n\r\nbody\r\n.").startswith("250 ok ")
    dump = (root.path / "qq.out").read_text()
    env, message, envelope = dump.split("\n--\n")
    assert "SMTPAUTHUSER=alice" in env.splitlines()
    assert "RELAYCLIENT=" in env.splitlines()  # authenticated: relay granted, no suffix
    assert message.startswith("Received: from client.test (alice@[127.0.0.2])\n")
    assert envelope == repr(b"Fx@remote.test\0Tvictim@elsewhere.test\0\0")


QUEUE_DUMP = """#!/usr/bin/env python3
import os, sys
message = sys.stdin.buffer.read()
envelope = os.read(1, 65536)
with open(os.environ["QQ_OUT"], "w") as out:
    out.write("\\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
    out.write("\\n--\\n" + message.decode() + "\\n--\\n" + repr(envelope))
"""


def test_auth_login_then_already_authenticated(root: QRoot, start: Start) -> None:
    """AUTH LOGIN; at LOGLEVEL 4 the log shows commands but never credentials."""
    st = start({"SMTPAUTH": "", "LOGLEVEL": "4"})
    c = connect(st)
    assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64("alice")) == "334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64("secret")) == "235 nice to meet you\r\n"
    assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "503 you are already authenticated\r\n"
    # AUTH survives RSET and grants relay at each MAIL
    assert c.cmd("RSET") == "250 flushed\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<u@far.test>") == "250 ok\r\n"
    log = "\n".join(st.log)
    assert "command: AUTH LOGIN" in log and "command: AUTH PLAIN" in log and "auth ok for alice" in log
    for secret in ("secret", b64("secret"), b64("alice"), "AGFsaWNlAHNlY3JldA=="):
        assert secret not in log


def test_auth_failures_pause_and_answer_535(root: QRoot, start: Start) -> None:
    """The failure table of qmail-smtpd(8), SMTP AUTH: wrong password (compared or, with ldaprebind,
    bound), unknown user, disabled/noaccess accounts → 535, each at least 1 s after the request; the
    connection stays usable after the 4 s pause."""
    compare = start({"SMTPAUTH": ""})
    root.control("ldaprebind", "1")
    rebind = start({"SMTPAUTH": ""})
    attempts = {
        "wrong password": (compare, "alice", "nope"),
        "unknown user": (compare, "nobody", "secret"),
        "disabled": (compare, "bob", "secret"),
        "noaccess": (compare, "carol", "secret"),
        "wrong password, rebind": (rebind, "alice", "nope"),
    }

    def attempt(how: tuple[ServerThread, str, str]) -> tuple[str, float, str]:
        c = connect(how[0])
        t0 = time.monotonic()
        reply = c.cmd(f"AUTH PLAIN {b64(chr(0) + how[1] + chr(0) + how[2])}")
        elapsed = time.monotonic() - t0
        after = c.cmd("NOOP")
        c.close()
        return reply, elapsed, after

    with ThreadPoolExecutor(len(attempts)) as pool:
        results = dict(zip(attempts, pool.map(attempt, attempts.values()), strict=True))
    for why, (reply, elapsed, after) in results.items():
        assert reply == "535 authentication failure\r\n", why
        assert elapsed >= 1.0, why
        assert after == "250 ok\r\n", why


def test_auth_rebind(root: QRoot, start: Start) -> None:
    """ldaprebind=1: the password is checked by binding to slapd as the user's DN."""
    root.control("ldaprebind", "1")
    c = connect(start({"SMTPAUTH": ""}))
    assert c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}") == "235 nice to meet you\r\n"


def test_auth_protocol_errors(root: QRoot, start: Start) -> None:
    """AUTH protocol errors."""
    c = connect(start({"SMTPAUTH": ""}))
    assert c.cmd("AUTH CRAM-MD5") == "504 authentication type not supported\r\n"
    assert c.cmd("AUTH PLAIN") == "334 \r\n"
    assert c.cmd("*") == "501 authentication exchange aborted. (#4.3.0)\r\n"
    assert c.cmd("AUTH PLAIN !!!") == "501 authentication exchange failed\r\n"
    c2 = connect(start())
    assert c2.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "502 unimplemented (#5.5.1)\r\n"


def test_rcptcheck_directory_answers(root: QRoot, start: Start) -> None:
    """RCPTCHECK: known and unknown local addresses, plus a deleted account and the users/cdb fallback."""
    root.control("goodmailaddr", "postmaster@")
    write_cdb(root.path / "users" / "cdb", [(b"", b""), (b"!joe\0", b"joe\0")])
    c = connect(start({"RCPTCHECK": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<ALICE@Example.ORG>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<nobody@example.org>") == NO_MAILBOX
    assert c.cmd("RCPT TO:<bob@example.org>") == DISABLED
    assert c.cmd("RCPT TO:<gone@example.org>") == NO_MAILBOX
    assert c.cmd("RCPT TO:<u@backup.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<postmaster@example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<joe@example.org>") == "250 ok\r\n"  # users/cdb fallback
    assert c.cmd("RCPT TO:<zz@example.org>") == NO_MAILBOX


def test_rcptcheck_catchall(root: QRoot, ldap_base: LdapBase, start: Start) -> None:
    """A catchall entry makes every local part of its domain valid."""
    ldap_base.load(person("catch", "mail: catchall@example.org"))
    c = connect(start({"RCPTCHECK": ""}))
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<zz@example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<bob@example.org>") == DISABLED  # an exact entry wins over the catchall


def test_rcptcheck_badrcptdelay(root: QRoot, start: Start) -> None:
    """BADRCPTDELAY: an invalid recipient is answered only after the delay."""
    c = connect(start({"RCPTCHECK": "", "BADRCPTDELAY": "1"}))
    c.cmd("MAIL FROM:<x@remote.test>")
    t0 = time.monotonic()
    assert c.cmd("RCPT TO:<nobody@example.org>") == NO_MAILBOX
    assert time.monotonic() - t0 >= 1.0


def test_sendercheck_modes(root: QRoot, start: Start) -> None:
    """Sendercheck modes."""
    c = connect(start({"SENDERCHECK": ""}))
    assert c.cmd("MAIL FROM:<nobody@example.org>") == NO_MAILBOX
    assert c.cmd("MAIL FROM:<bob@example.org>") == DISABLED
    assert c.cmd("MAIL FROM:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    c = connect(start({"SENDERCHECK": "STRICT"}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == LOCAL_SENDER
    assert c.cmd("MAIL FROM:<alice@example.org>") == "250 ok\r\n"
    c = connect(start({"SENDERCHECK": "loose"}))
    assert c.cmd("MAIL FROM:<x@backup.test>") == "250 ok\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == LOCAL_SENDER


def test_ldap_down(qroot: QRoot, slapd_factory: SlapdFactory) -> None:
    """With LDAP stopped, RCPTCHECK answers 451 (250 under LDAPSOFTOK), AUTH 454; a
    recipient outside the local domains is never looked up; service resumes when LDAP is back."""
    server = slapd_factory()
    server.add_ldif(USERS.replace("{base}", server.suffix))
    root = fixture_root(qroot, server.host, server.port, server.suffix)
    resolver = StaticResolver(ptr={CLIENT: "client.test"})
    strict = ServerThread(options(root.path, {"RCPTCHECK": "", "SMTPAUTH": ""}), resolver).start()
    soft = ServerThread(options(root.path, {"RCPTCHECK": "", "LDAPSOFTOK": ""}), resolver).start()
    try:
        c = connect(strict)
        c.cmd("MAIL FROM:<x@remote.test>")
        assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
        server.stop()
        assert c.cmd("RCPT TO:<alice@example.org>").startswith("451 ")
        assert c.cmd("RCPT TO:<u@backup.test>") == "250 ok\r\n"
        t0 = time.monotonic()
        assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "454 temporary authentication failure (#4.3.0)\r\n"
        assert time.monotonic() - t0 >= 1.0
        s = connect(soft)
        s.cmd("MAIL FROM:<x@remote.test>")
        assert s.cmd("RCPT TO:<nobody@example.org>") == "250 ok\r\n"
        server.start()
        assert s.cmd("RCPT TO:<nobody@example.org>") == NO_MAILBOX
    finally:
        strict.stop()
        soft.stop()


def test_message_from_authenticated_client_is_queued(root: QRoot, start: Start) -> None:
    """The in-process injector: an authenticated client's message lands in todo with its Received line."""
    c = connect(start({"SMTPAUTH": "", "AUTHPREPEND": "auth:"}))
    assert c.cmd("EHLO client.test").startswith("250-mx.example.org")
    assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "235 nice to meet you\r\n"
    c.cmd("MAIL FROM:<alice@example.org>")
    assert c.cmd("RCPT TO:<friend@far.test>") == "250 ok\r\n"
    c.cmd("DATA")
    assert c.cmd("x\r\n.").startswith("250 ok ")
    (msg,) = queued(root.path)
    second = msg.message.split(b"\n", 2)[1]
    assert second == b"Received: from client.test (auth:alice@[127.0.0.2])"
    assert msg.todo.envelope.recipients == ("friend@far.test",)

"""LDAP filter injection through every door a client controls (issue 7), and AUTH brute-force delays.

RCPT (RCPTCHECK), MAIL (SENDERCHECK), AUTH PLAIN/LOGIN logins and POP3 USER carry ``*``, ``(``,
``)``, ``\\`` and NUL to the real slapd; the subtree holds several users who all share the password
``secret``, so an unescaped wildcard would find them.  Nothing may match beyond the literal address.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qldap.smtpd.dns import StaticResolver
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, ServerThread, options, queued
from tests.fixtures_slapd import LdapBase
from tests.test_auth_modules_support import homes
from tests.test_cli_pop3 import joe_home, maildir
from tests.test_pop3_server import start_pop3d
from tests.test_security_dos import smtp_root
from tests.test_smtpd_server_ldap import USERS

__all__ = ["homes", "joe_home"]

CLIENT = "127.0.0.2"
NO_MAILBOX = "554 Sorry, no mailbox here by that name. (#5.1.1)\r\n"
AUTH_FAILURE = "535 authentication failure\r\n"
# a NUL ends an SMTP command line (qmail-smtpd(8)), so over SMTP only the texts without one reach LDAP
INJECTIONS = ["*", "a*", "*e", "al*", "*)(uid=*", "*)(|(uid=*", "alice)(uid=*", "alice)(|(mail=*",
              "*)(mail=alice@example.org", "(", ")", "\\", "\\2a", "\\*", "alice\\", "al\\69ce", "*\0",
              "alice\0", "alice*)(objectClass=*"]
SMTP_INJECTIONS = [text for text in INJECTIONS if "\0" not in text]

Start = Callable[..., ServerThread]


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    ldap_base.load(USERS)
    smtp_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)
    qroot.control("ldaplocaldelivery", "0")
    return qroot


@pytest.fixture
def start(root: QRoot) -> Iterator[Start]:
    running: list[ServerThread] = []

    def make(env: dict[str, str] | None = None) -> ServerThread:
        st = ServerThread(options(root.path, env), StaticResolver(ptr={CLIENT: "client.test"})).start()
        running.append(st)
        return st

    yield make
    for st in running:
        st.stop()


def connect(st: ServerThread) -> Client:
    c = Client(st.addr, CLIENT)
    assert c.reply().startswith("220 mx.example.org ESMTP")
    return c


def quoted(local: str) -> str:
    """The local part as an SMTP quoted string, so the literal text reaches the directory."""
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_rcpt_injection_matches_nothing(start: Start, root: QRoot) -> None:
    c = connect(start({"RCPTCHECK": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"  # the literal address does match
    for text in SMTP_INJECTIONS:
        assert c.cmd(f"RCPT TO:<{quoted(text)}@example.org>") == NO_MAILBOX, text
        assert c.cmd(f"RCPT TO:<{text}@example.org>".replace("\0", "")) in (NO_MAILBOX, "250 ok\r\n")
    assert c.cmd("RCPT TO:<*@*>") == "553 sorry, relaying denied from your location [127.0.0.2] (#5.7.1)\r\n"


def test_unquoted_wildcards_match_nothing(start: Start) -> None:
    """Without quotes the SMTP parser keeps ``*`` ``(`` ``)``; still no entry is found."""
    c = connect(start({"RCPTCHECK": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    for text in ("*", "al*", "*)(uid=*", "alice)(|(mail=*", "*)(mail=alice@example.org"):
        assert c.cmd(f"RCPT TO:<{text}@example.org>") == NO_MAILBOX, text


def test_sender_injection_matches_nothing(start: Start) -> None:
    c = connect(start({"SENDERCHECK": ""}))
    assert c.cmd("MAIL FROM:<alice@example.org>") == "250 ok\r\n"
    for text in SMTP_INJECTIONS:
        assert c.cmd(f"MAIL FROM:<{quoted(text)}@example.org>") == NO_MAILBOX, text


def _auth(st: ServerThread, mech: str, login: str, password: str) -> str:
    c = connect(st)
    try:
        if mech == "PLAIN":
            blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
            return c.cmd(f"AUTH PLAIN {blob}")
        assert c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6\r\n"
        assert c.cmd(base64.b64encode(login.encode()).decode()) == "334 UGFzc3dvcmQ6\r\n"
        return c.cmd(base64.b64encode(password.encode()).decode())
    finally:
        c.close()


def test_auth_login_injection_never_authenticates(start: Start, root: QRoot) -> None:
    """Every user's password is ``secret``: a wildcard that matched one entry would log in."""
    st = start({"SMTPAUTH": ""})
    attempts = [(mech, login) for login in INJECTIONS for mech in ("PLAIN", "LOGIN")
                if not (mech == "PLAIN" and "\0" in login)]  # fmt: skip
    with ThreadPoolExecutor(16) as pool:  # each failure waits 1 s before its reply
        answers = list(pool.map(lambda a: _auth(st, a[0], a[1], "secret"), attempts))
    for (mech, login), answer in zip(attempts, answers, strict=True):
        assert answer == AUTH_FAILURE, (mech, login, answer)
    assert _auth(st, "PLAIN", "alice", "secret") == "235 nice to meet you\r\n"  # the literal login works


def test_auth_brute_force_failures_are_delayed(start: Start) -> None:
    """Five wrong passwords on one connection: each reply comes ≥ 1 s after its request (qmail-smtpd(8), SMTP
    AUTH), and the 4 s pause after a failure delays the next answer too."""
    c = connect(start({"SMTPAUTH": ""}))
    waits = []
    for i in range(5):
        blob = base64.b64encode(f"\0alice\0guess{i}".encode()).decode()
        sent = time.monotonic()
        assert c.cmd(f"AUTH PLAIN {blob}") == AUTH_FAILURE
        waits.append(time.monotonic() - sent)
    assert all(w >= 1.0 for w in waits), waits
    assert all(w >= 5.0 for w in waits[1:]), waits  # 4 s after the previous failure + 1 s before this one
    assert sum(waits) >= 5 * 1.0


def test_nothing_queued_by_injection_sessions(start: Start, root: QRoot) -> None:
    c = connect(start({"RCPTCHECK": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd(f"RCPT TO:<{quoted('*')}@example.org>") == NO_MAILBOX
    assert c.cmd("DATA") == "503 RCPT first (#5.5.1)\r\n"
    assert queued(root.path) == []


def _pop_login(port: int, user: bytes, password: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"USER " + user + b"\r\n")
        if not f.readline().startswith(b"+OK"):
            return b"-ERR at USER"
        s.sendall(b"PASS " + password + b"\r\n")
        return f.readline()


def test_pop3_user_injection_never_logs_in(qroot: QRoot, joe_home: Path) -> None:
    maildir(joe_home, {"new/1000.1.h": b"hello\n"})  # a login that got through would be served
    proc, port = start_pop3d(qroot)
    try:
        logins = [b"*", b"j*", b"*oe", b"joe*", b"joe)(uid=*", b"*)(uid=joe", b"joe)(|(uid=*", b"\\2a",
                  b"jo\\65", b"joe\\", b"(", b")", b"*\0joe"]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda u: _pop_login(port, u, b"secret"), logins))
        for user, answer in zip(logins, answers, strict=True):
            assert answer == b"-ERR authorization failed\r\n", (user, answer)
        assert _pop_login(port, b"joe", b"secret").startswith(b"+OK")  # the literal login works
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)

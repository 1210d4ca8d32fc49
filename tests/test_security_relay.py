"""The open-relay battery (issue 7): classic relay tricks from a client without relay permission.

The daemon runs in-process on 127.0.0.1 (an own address) against the shared slapd with RCPTCHECK on;
the client connects from 127.0.0.2 (PTR ``client.test``).  Every trick must be refused at RCPT, the
DATA that follows must find no recipient, and nothing may reach ``queue/todo``.  A last test runs
``tools/attack --quick`` against a real ``qldap smtpd`` process and reads its JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qldap.address import parse_path, split_address
from qldap.smtpd import replies
from qldap.smtpd.dns import StaticResolver
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, ServerThread, options, queued
from tests.fixtures_slapd import LdapBase
from tests.test_security_dos import Smtpd, smtp_root
from tests.test_smtpd_server_ldap import USERS

CLIENT = "127.0.0.2"
REL = replies.relay_denied(CLIENT).render()
PROBE = replies.relay_probe(CLIENT).render()
SYN = "555 syntax error (#5.5.4)\r\n"
NO_MAILBOX = "554 Sorry, no mailbox here by that name. (#5.1.1)\r\n"
MAIL_FIRST = "503 MAIL first (#5.5.1)\r\n"
RCPT_FIRST = "503 RCPT first (#5.5.1)\r\n"
ATTACK = Path(__file__).resolve().parent.parent / "tools" / "attack"

# (name, MAIL argument or None for no MAIL, RCPT line bytes, expected reply)
TRICKS: list[tuple[str, str | None, bytes, str]] = [
    ("plain foreign", "<x@remote.test>", b"RCPT TO:<victim@elsewhere.test>", REL),
    ("percent hack, foreign last", "<x@remote.test>", b"RCPT TO:<victim%example.org@elsewhere.test>", REL),
    ("percent hack via a second relay", "<x@remote.test>", b"RCPT TO:<victim%elsewhere.test@relay2.test>",
     REL),
    ("bang path, foreign last", "<x@remote.test>", b"RCPT TO:<example.org!victim@elsewhere.test>", REL),
    ("double @, foreign last", "<x@remote.test>", b"RCPT TO:<victim@example.org@elsewhere.test>", REL),
    ("source route to foreign", "<x@remote.test>", b"RCPT TO:<@example.org:victim@elsewhere.test>", REL),
    ("two-hop source route", "<x@remote.test>",
     b"RCPT TO:<@mx.example.org,@example.org:victim@elsewhere.test>", REL),
    ("quoted local part with @", "<x@remote.test>", b'RCPT TO:<"alice@example.org"@elsewhere.test>', REL),
    ("quoted local part hiding >", "<x@remote.test>", b'RCPT TO:<"victim@example.org>"@elsewhere.test>', REL),
    ("backslash-escaped >", "<x@remote.test>", b"RCPT TO:<victim@example.org\\>@elsewhere.test>", REL),
    ("foreign IPv4 literal", "<x@remote.test>", b"RCPT TO:<victim@[198.51.100.7]>", REL),
    ("own IP literal as a label", "<x@remote.test>", b"RCPT TO:<victim@[127.0.0.1].elsewhere.test>", REL),
    ("decimal IP literal", "<x@remote.test>", b"RCPT TO:<victim@[2130706433]>", REL),
    ("IPv6 literal", "<x@remote.test>", b"RCPT TO:<victim@[IPv6:::1]>", REL),
    ("trailing dot, foreign", "<x@remote.test>", b"RCPT TO:<victim@elsewhere.test.>", REL),
    ("trailing dot, local", "<x@remote.test>", b"RCPT TO:<alice@example.org.>", REL),
    ("uppercase foreign", "<x@remote.test>", b"RCPT TO:<VICTIM@ELSEWHERE.TEST>", REL),
    ("local domain as a prefix", "<x@remote.test>", b"RCPT TO:<victim@example.org.elsewhere.test>", REL),
    ("look-alike domain", "<x@remote.test>", b"RCPT TO:<victim@evil-example.org>", REL),
    ("parent of a dot-rcpthost", "<x@remote.test>", b"RCPT TO:<victim@example.net>", REL),
    ("null sender, foreign", "<>", b"RCPT TO:<victim@elsewhere.test>", REL),
    ("null rcpt", "<x@remote.test>", b"RCPT TO:<>", SYN),
    ("null rcpt before a foreign one", "<x@remote.test>", b"RCPT TO:<> <victim@elsewhere.test>", SYN),
    ("no angle brackets", "<x@remote.test>", b"RCPT TO:victim@elsewhere.test", REL),
    ("unterminated path", "<x@remote.test>", b"RCPT TO:<victim@elsewhere.test", REL),
    ("blank before the path", "<x@remote.test>", b"RCPT TO: <victim@elsewhere.test>", REL),
    ("RCPT without MAIL", None, b"RCPT TO:<victim@elsewhere.test>", MAIL_FIRST),
    ("relay-domain sender", "<alice@example.org>", b"RCPT TO:<victim@elsewhere.test>", REL),
    ("own-IP sender", "<postmaster@[127.0.0.1]>", b"RCPT TO:<victim@elsewhere.test>", REL),
    ("postmaster of a foreign domain", "<x@remote.test>", b"RCPT TO:<postmaster@elsewhere.test>", REL),
    # a command line ends at its NUL (qmail-smtpd(8)): what is left is judged as an address of its own
    ("NUL cuts a foreign domain off", "<x@remote.test>", b"RCPT TO:<victim@example.org\0@elsewhere.test>",
     NO_MAILBOX),
    ("NUL hides a local domain", "<x@remote.test>", b"RCPT TO:<victim@elsewhere.test\0@example.org>", REL),
    ("CR inside the address", "<x@remote.test>", b"RCPT TO:<victim@example.org\r@elsewhere.test>", SYN),
    ("CR line end hides a second command", "<x@remote.test>",
     b"RCPT TO:<victim@elsewhere.test>\rRCPT TO:<alice@example.org>", REL),
    ("very long local part", "<x@remote.test>", b"RCPT TO:<" + b"v" * 880 + b"@elsewhere.test>", REL),
    ("over-long address", "<x@remote.test>", b"RCPT TO:<" + b"v" * 900 + b"@example.org>", SYN),
    ("8-bit domain", "<x@remote.test>", "RCPT TO:<victim@exämple.org>".encode(), REL),
]

# tricks whose last domain is ours: BLOCKRELAYPROBE refuses them, without it they are local addresses
PROBES: list[bytes] = [
    b"RCPT TO:<victim%elsewhere.test@example.org>",
    b"RCPT TO:<elsewhere.test!victim@example.org>",
    b"RCPT TO:<victim@elsewhere.test@example.org>",
    b'RCPT TO:<"victim@elsewhere.test"@example.org>',
    b"RCPT TO:<victim%elsewhere.test@[127.0.0.1]>",
]

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
    assert c.cmd("HELO mx.example.org") == "250 mx.example.org\r\n"  # claiming our own name changes nothing
    return c


@pytest.mark.parametrize(("mail", "rcpt", "expected"), [t[1:] for t in TRICKS], ids=[t[0] for t in TRICKS])
@pytest.mark.parametrize("probe", [False, True], ids=["plain", "BLOCKRELAYPROBE"])
def test_relay_trick_is_refused(start: Start, root: QRoot, mail: str | None, rcpt: bytes, expected: str,
                                probe: bool) -> None:
    env = {"RCPTCHECK": ""}
    if probe:
        env["BLOCKRELAYPROBE"] = ""
    c = connect(start(env))
    if mail is not None:
        assert c.cmd(f"MAIL FROM:{mail}") == "250 ok\r\n"
    if probe and expected == REL:
        arg = rcpt.decode("utf-8", "surrogateescape").split("\0")[0].partition(" ")[2]
        local = split_address(parse_path(arg, allow_empty=False).address)[0]
        if any(ch in local for ch in "@%!"):
            expected = PROBE  # RCPT step 3 comes before the relay check
    assert c.cmd(rcpt + b"\r\n") == expected
    assert c.cmd("DATA") == (RCPT_FIRST if mail is not None else MAIL_FIRST)
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    assert queued(root.path) == []


@pytest.mark.parametrize("rcpt", PROBES)
def test_blockrelayprobe_refuses_routing_characters_before_a_local_domain(start: Start, root: QRoot,
                                                                          rcpt: bytes) -> None:
    c = connect(start({"BLOCKRELAYPROBE": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd(rcpt + b"\r\n") == f"553 sorry, we don't relay for [{CLIENT}] (#5.7.1)\r\n"
    assert c.cmd("DATA") == RCPT_FIRST
    assert queued(root.path) == []


def test_percent_hack_without_blockrelayprobe_stays_a_local_address(start: Start, root: QRoot) -> None:
    """Without BLOCKRELAYPROBE (RCPTCHECK off) the address is accepted for the local domain and stored
    verbatim: the queue has a single local recipient, never ``victim@elsewhere.test``."""
    c = connect(start())
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<victim%elsewhere.test@example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<@elsewhere.test:alice@example.org>") == "250 ok\r\n"  # route dropped
    assert c.cmd("RCPT TO:<victim@[127.0.0.1]>") == "250 ok\r\n"  # own IP literal → localiphost
    assert c.cmd("DATA").startswith("354")
    assert c.cmd("Subject: x\r\n\r\nhi\r\n.").startswith("250 ok ")
    (msg,) = queued(root.path)
    assert msg.todo.envelope.recipients == (
        "victim%elsewhere.test@example.org", "alice@example.org", "victim@mx.example.org")


def test_rcptcheck_refuses_the_same_tricks_for_unknown_users(start: Start, root: QRoot) -> None:
    """With RCPTCHECK the local-looking probe addresses are not even accepted for local delivery."""
    c = connect(start({"RCPTCHECK": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    for rcpt in PROBES:
        assert c.cmd(rcpt + b"\r\n") == "554 Sorry, no mailbox here by that name. (#5.1.1)\r\n"
    assert queued(root.path) == []


def test_rset_and_failed_auth_do_not_grant_relay(start: Start, root: QRoot) -> None:
    c = connect(start({"SMTPAUTH": ""}))
    assert c.cmd("XCLIENT ADDR=127.0.0.1") == "502 unimplemented (#5.5.1)\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RSET") == "250 flushed\r\n"
    assert c.cmd("RCPT TO:<victim@elsewhere.test>") == MAIL_FIRST
    assert c.cmd("AUTH PLAIN !!!") == "501 authentication exchange failed\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<victim@elsewhere.test>") == REL
    # pipelined: the whole transaction in one packet, DATA finds no recipient
    c.send(b"RSET\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n"
           b"Subject: relayed?\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    answers = [c.reply() for _ in range(5)]
    assert answers[:4] == ["250 flushed\r\n", "250 ok\r\n", REL, RCPT_FIRST]
    assert answers[4] == "502 unimplemented (#5.5.1)\r\n"  # "Subject: …" read as a command, not data
    assert queued(root.path) == []


def test_attack_tool_finds_no_relay(root: QRoot) -> None:
    """tools/attack --quick against a real ``qldap smtpd`` process: 0 relayed, exit 0."""
    daemon = Smtpd(root.path, {"RCPTCHECK": "", "SENDERCHECK": ""})
    try:
        out = subprocess.run([sys.executable, str(ATTACK), "--smtp", f"127.0.0.1:{daemon.port}", "--quick"],
                             capture_output=True, text=True, timeout=300)
    finally:
        daemon.stop()
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["relay_tries"] >= 20
    assert figures["relayed"] == 0 and figures["crashes"] == 0 and figures["hangs"] == 0, figures
    assert out.returncode == 0, out.stderr
    assert queued(root.path) == []

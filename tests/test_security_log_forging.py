"""Client-supplied text can never forge a log line, a bounce header or a next-hop command (issue 11).

The adversarial review found that a NUL in an SMTP command line became LF and the ``mail from:`` and
``auth failed for`` lines were written unescaped, so ``MAIL FROM:<a\\0qmail-smtpd 999: FORGED\\0@x>``
wrote a fake ``qmail-smtpd 999:`` line.  qmail-smtpd(8): a command line ends at its first NUL (as the
C string handling did); an address holding CR, LF or NUL is refused; every client-supplied string in
a log line goes through :func:`qldap.logs.printable`.  The SMTP daemon is the real ``qldap smtpd``
process at LOGLEVEL 4 (its stderr is what multilog would store); the bounce and the remote dialogue
are fed addresses that another door (QMQP, a local injector) could have queued.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Iterator

import pytest

from qldap.address import AddressSyntaxError, parse_path
from qldap.logs import printable
from qldap.queue.layout import create_queue
from qldap.remote.dialogue import DialogueSettings, Finished, Send, SmtpDialogue
from qldap.remote.qmqpd import BAD_ADDRESS, serve_qmqpd
from qldap.send.bounce import BouncePlan, plan_bounce
from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase
from tests.test_security_dos import Smtpd, smtp_root
from tests.test_send_bounce import config as bounce_config
from tests.test_smtpd_server_ldap import USERS

FORGED = "qmail-smtpd 999: FORGED"
SYNTAX = "555 syntax error (#5.5.4)\r\n"


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    ldap_base.load(USERS)
    smtp_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)
    return qroot


@pytest.fixture
def smtpd(root: QRoot) -> Iterator[Smtpd]:
    d = Smtpd(root.path, {"LOGLEVEL": "4", "SMTPAUTH": ""})
    yield d
    d.stop()


def log_lines(d: Smtpd) -> list[str]:
    """What the log file holds once the daemon stopped: its stderr split at LF only (as multilog).

    The lines are collected by a reader thread: wait until it has seen the end of the stream.
    """
    d.stop()
    until = time.monotonic() + 20
    while d.reader_alive() and time.monotonic() < until:
        time.sleep(0.05)
    return d.log


def assert_unforged(lines: list[str]) -> None:
    assert not [line for line in lines if FORGED in line and not line.startswith("qmail-smtpd ")], lines
    assert not [line for line in lines if line.startswith(FORGED)], lines
    assert not [line for line in lines if "\r" in line or "\0" in line], lines


def test_nul_in_mail_from_truncates_the_line_as_qmail_did(smtpd: Smtpd) -> None:
    c = smtpd.client()
    assert c.cmd(b"MAIL FROM:<a\0" + FORGED.encode() + b"\0@x>\r\n") == "250 ok\r\n"
    assert c.cmd(b"RCPT TO:<alice@example.org\0" + FORGED.encode() + b"\r\n") == "250 ok\r\n"
    assert c.cmd("QUIT").startswith("221 ")
    lines = log_lines(smtpd)
    assert_unforged(lines)
    assert any(re.fullmatch(r"qmail-smtpd \d+: mail from: <a>", line) for line in lines), lines
    assert any(re.fullmatch(r"qmail-smtpd \d+: rcpt to: <alice@example.org>", line) for line in lines), lines


def test_cr_in_an_address_is_refused_and_logged_escaped(smtpd: Smtpd) -> None:
    c = smtpd.client()
    assert c.cmd(b"MAIL FROM:<a\r" + FORGED.encode() + b"@x>\r\n") == SYNTAX
    assert c.cmd(b"MAIL FROM:<ok@x>\r\n") == "250 ok\r\n"
    assert c.cmd(b"RCPT TO:<alice@example.org\r" + FORGED.encode() + b">\r\n") == SYNTAX
    assert c.cmd(b"HELO a\r" + FORGED.encode() + b"\x1b[2J\r\n").startswith("250 ")
    assert c.cmd("QUIT").startswith("221 ")
    lines = log_lines(smtpd)
    assert_unforged(lines)
    assert not [line for line in lines if "\x1b" in line], lines
    assert any(line.endswith(r"command: MAIL FROM:<a\r" + FORGED + "@x>") for line in lines), lines


def test_auth_login_with_line_breaks_is_logged_escaped(smtpd: Smtpd) -> None:
    c = smtpd.client()
    blob = base64.b64encode(f"\0x\n{FORGED}\r\0guess".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {blob}") == "535 authentication failure\r\n"
    assert c.cmd("QUIT").startswith("221 ")
    lines = log_lines(smtpd)
    assert_unforged(lines)
    assert any(line.endswith(r"auth failed for x\n" + FORGED + r"\r") for line in lines), lines


def test_printable_escapes_every_control_and_keeps_utf8() -> None:
    assert printable("a\nb\rc\0d\x1be\x7ff\\g") == r"a\nb\rc\x00d\x1be\x7ff\\g"
    assert printable("jörg@exämple.org") == "jörg@exämple.org"
    assert printable("x\u2028y\x85z") == r"x\u2028y\x85z"
    assert printable(b"\xff\xfe".decode("utf-8", "surrogateescape")) == r"\xff\xfe"


@pytest.mark.parametrize("arg", ["FROM:<a\rb@x>", "FROM:<a@x\r>", "FROM:<\"a\nb\"@x>", "TO:<a\0b@x>"])
def test_parse_path_refuses_line_breaks_and_nul(arg: str) -> None:
    with pytest.raises(AddressSyntaxError):
        parse_path(arg)


def test_bounce_header_never_carries_a_line_break(qroot: QRoot) -> None:
    cfg = bounce_config(qroot)
    plan = plan_bounce(cfg, "a\nBcc: victim@elsewhere.test\r\n@example.com", "<x@y>:\nno\n\n", 0.0)
    assert isinstance(plan, BouncePlan)
    header = plan.head.split(b"\n\n", 1)[0]
    assert b"\r" not in header
    assert not [line for line in header.split(b"\n") if line.startswith(b"Bcc:")], header


def test_next_hop_never_sees_a_line_break_in_an_address() -> None:
    """A recipient with CR LF fails permanently without a command; a sender with one fails the message."""
    settings = DialogueSettings(helohost="mx1.example.com")
    dlg = SmtpDialogue("192.0.2.7", "alice@example.com", ("bad\r\nDATA@example.net", "joe@example.net"),
                       b"Subject: x\n\nhi\n", settings)
    sent: list[bytes] = []
    for reply in (b"220 mx\r\n", b"250 mx\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n"):
        for action in dlg.feed(reply):
            if isinstance(action, Send):
                sent.append(action.data)
    assert [s for s in sent if s.startswith(b"RCPT")] == [b"RCPT TO:<joe@example.net>\r\n"]
    assert all(s.count(b"\r\n") == 1 or s.startswith(b"Subject") for s in sent), sent
    dlg = SmtpDialogue("192.0.2.7", "a\r\nRSET@example.com", ("joe@example.net",), b"x\n", settings)
    sent = []
    end = None
    for reply in (b"220 mx\r\n", b"250 mx\r\n"):
        for action in dlg.feed(reply):
            if isinstance(action, Send):
                sent.append(action.data)
            elif isinstance(action, Finished):
                end = action
    assert not [s for s in sent if s.startswith(b"MAIL")], sent
    assert end is not None and end.outcome.message.letter == "D"


def test_pop3_accounting_line_is_escaped() -> None:
    """pop3d's accounting line and pbs warnings use the same helper (no second escaper)."""
    from qldap.pop3.session import SessionInfo

    info = SessionInfo(pid=1, remote_host="h\rx", remote_ip="1.2.3.4", user="u\nqmail-pop3d: FORGED")
    assert "\n" not in info.acct("login") and "\r" not in info.acct("login")


@pytest.mark.parametrize("address", [b"victim@example.org\nBcc: x@evil.test", b"a\r@example.org"])
def test_qmqpd_refuses_an_address_with_a_line_break(qroot: QRoot, address: bytes) -> None:
    """QMQP is the one door that takes raw envelope bytes: CR/LF would reach Delivered-To: headers."""
    create_queue(qroot.path)
    qroot.control("me", "mx.example.org")

    def nets(*items: bytes) -> bytes:
        return b"".join(b"%d:%s," % (len(i), i) for i in items)

    async def body() -> bytes:
        server, injector = await serve_qmqpd(qroot.path, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(nets(nets(b"Subject: x\n\nhi\n", b"a@member.test", address)))
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer
        finally:
            server.close()
            await server.wait_closed()
            injector.close()

    assert asyncio.run(body()) == nets(BAD_ADDRESS.encode())
    assert os.listdir(qroot.path / "queue" / "todo") == []

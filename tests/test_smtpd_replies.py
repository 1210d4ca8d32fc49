"""Reply texts and the queue hand-off mapping (qmail-smtpd(8), SESSION START and COMMANDS and DATA and SMTP
AUTH)."""

from __future__ import annotations

import re

import pytest

from qldap.queue.codes import caller_text
from qldap.smtpd import replies as r


def test_render_single_and_multi_line() -> None:
    assert r.OK.render() == "250 ok\r\n"
    assert r.HELP.render() == (
        "214-qmail home page: http://pobox.com/~djb/qmail.html\r\n"
        "214 qmail-ldap patch home page: http://www.nrg4u.com\r\n"
    )
    assert r.auth_challenge(b"").render() == "334 \r\n"  # the trailing space of AUTH PLAIN
    assert r.AUTH_OK.to_bytes() == b"235 nice to meet you\r\n"


def test_greetings() -> None:
    assert r.greeting("mx.example.org").render() == "220 mx.example.org ESMTP\r\n"
    assert r.greeting("mx.example.org", "Hi").render() == "220 mx.example.org ESMTP Hi\r\n"
    cookie = "c" * 32 + "x" * 8
    line = r.greeting("mx.example.org", "Hi", cookie).render()
    assert line.endswith(" " + "c" * 32 + "\r\n")
    assert r.greeting("m", "", "ck").render() == "220 m ESMTP ck\r\n"
    assert r.greeting_prefix("m") == "220 m ESMTP "
    assert r.helo("mx.example.org", "Hi").render() == "250 mx.example.org Hi\r\n"
    assert r.helo("mx.example.org").render() == "250 mx.example.org\r\n"
    assert r.goodbye("mx.example.org").render() == "221 mx.example.org Goodbye.\r\n"


def test_restricted_greetings() -> None:
    assert r.greeting_550("mx.example.org", "").render() == (
        "554 mx.example.org Sorry, your mail was administratively denied. (#5.7.1)\r\n"
    )
    assert r.greeting_421("mx.example.org", "Go away").render() == "421 mx.example.org Go away\r\n"
    assert r.greeting_421("m", "").text == "m Service temporarily not available (#4.3.2)"


def test_ehlo_minimal_and_full() -> None:
    assert r.ehlo("mx.example.org").render() == "250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    full = r.ehlo("mx.example.org", "Hi", databytes=1000, starttls=True, auth=True)
    assert full.lines == (
        "mx.example.org Hi",
        "PIPELINING",
        "SIZE 1000",
        "STARTTLS",
        "AUTH LOGIN PLAIN",
        "8BITMIME",
    )


def test_address_replies() -> None:
    ip = "192.0.2.10"
    assert (
        r.relay_denied(ip).render()
        == "553 sorry, relaying denied from your location [192.0.2.10] (#5.7.1)\r\n"
    )
    assert r.relay_probe(ip).render() == "553 sorry, we don't relay for [192.0.2.10] (#5.7.1)\r\n"
    assert r.bad_mailfrom_unknown(ip).text == (
        "sorry, your mail from a host [192.0.2.10] without valid reverse DNS"
        " was administratively denied (#5.7.1)"
    )
    assert r.rbl_rejected(ip, "Listed here").render() == (
        "553 sorry, your mailserver [192.0.2.10] is rejected by Listed here\r\n"
    )
    assert r.verify_invalid("Sorry, no mailbox here by that name. (#5.1.1)").code == 554
    assert r.verify_soft("").render() == "451 temporary failure in address verification (#4.3.0)\r\n"
    assert r.verify_soft("LDAP down (#4.4.3)").render() == "451 LDAP down (#4.4.3)\r\n"


def test_queued_reply() -> None:
    line = r.queued(1700000000, 4242, "mx.example.org").render()
    assert re.fullmatch(r"250 ok [0-9]+ qp [0-9]+ by mx\.example\.org\r\n", line)


@pytest.mark.parametrize(
    ("code", "fd4", "reply"),
    [
        (31, b"", "554 mail server permanently rejected message (#5.3.0)"),
        (53, b"", "451 qq write error or disk full (#4.3.0)"),
        (82, b"Dvirus found", "554 virus found"),
        (82, b"Zbusy", "451 busy"),
        (82, b"Dx", "451 qq temporary problem (#4.3.0)"),  # too short: the generic text
        (11, b"", "554 envelope address too long for qq (#5.1.3)"),
        (115, b"", "554 envelope address too long for qq (#5.1.3)"),
        (64, b"", "451 qq trouble creating files in queue (#4.3.0)"),
        (25, b"", "554 qq permanent problem (#5.3.0)"),
        (99, b"", "451 qq temporary problem (#4.3.0)"),
        (120, b"", "451 unable to exec qq (#4.3.0)"),
        (74, b"", "451 communication with mail server failed (#4.4.2)"),
        (-9, b"", "451 qq crashed (#4.3.0)"),
    ],
)
def test_queue_mapping(code: int, fd4: bytes, reply: str) -> None:
    """qmail-smtpd(8), DATA: the queue's caller text (queue.codes, shared with every caller) → the reply."""
    assert r.queue_reply(caller_text(code, fd4)).render() == reply + "\r\n"


def test_classification() -> None:
    assert r.SYNTAX_ERROR.permanent and not r.SYNTAX_ERROR.temporary
    assert r.TIMEOUT.temporary and not r.OK.permanent

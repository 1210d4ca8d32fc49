"""The Received header and X-RBL lines (qmail-smtpd(8), DATA and RBL AND
SIGNATURES)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from qldap.queue.received import received_header, rfc822_date, safe, tls_protocol, xrbl_line

WHEN = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)


def header(**kw: object) -> str:
    args: dict[str, object] = {
        "remote_host": "client.test",
        "helo": "a",
        "info": None,
        "ip": "192.0.2.10",
        "sender": "x@remote.test",
        "local": "mx.example.org",
        "protocol": "SMTP",
        "recipient": "alice@example.org",
        "when": WHEN,
    }
    args.update(kw)
    return received_header(**args)  # type: ignore[arg-type]


def test_acceptance_40_layout() -> None:
    assert header() == (
        "Received: from client.test (HELO a) ([192.0.2.10])\n"
        "          (envelope-sender <x@remote.test>)\n"
        "          by mx.example.org (qmail-ldap-1.03) with SMTP\n"
        "          for <alice@example.org>; 5 Mar 2024 07:08:09 -0000\n"
    )


def test_helo_shown_only_when_different_and_unknown_host() -> None:
    """HELO shown only when different and unknown host."""
    assert header(helo="CLIENT.test").startswith("Received: from client.test ([192.0.2.10])\n")
    assert header(remote_host=None, helo="unknown").startswith("Received: from unknown ([192.0.2.10])\n")
    assert header(remote_host=None, helo="x").startswith("Received: from unknown (HELO x) ([192.0.2.10])\n")


def test_info_and_bounce_sender() -> None:
    text = header(info="alice", sender="")
    assert "(alice@[192.0.2.10])" in text and "(envelope-sender <>)" in text


def test_unsafe_characters_become_question_marks() -> None:
    text = header(helo="evil\r\nX-Injected: 1", sender="a b@c", recipient="u@far.test@hub.test")
    assert "(HELO evil??X-Injected:?1)" in text
    assert "<a?b@c>" in text and "for <u@far.test@hub.test>;" in text
    assert safe("a-_#[]%+/=:.@Z9é<>") == "a-_#[]%+/=:.@Z9???"


def test_protocol_is_not_filtered() -> None:
    proto = tls_protocol("TLSv1.3", "TLS_AES_128_GCM_SHA256", None)
    assert proto == "TLSv1.3 TLS_AES_128_GCM_SHA256 fingerprint=no certificate presented encrypted SMTP"
    assert f"with {proto}\n" in header(protocol=proto)
    assert tls_protocol("TLSv1.2", "X", "ab:cd").endswith("fingerprint=ab:cd encrypted SMTP")


def test_date_is_utc_day_unpadded() -> None:
    east = timezone(timedelta(hours=5))
    assert rfc822_date(datetime(2024, 1, 1, 3, 0, 0, tzinfo=east)) == "31 Dec 2023 22:00:00 -0000"
    assert rfc822_date(datetime(2024, 11, 22, 23, 59, 1, tzinfo=UTC)) == "22 Nov 2024 23:59:01 -0000"


def test_xrbl() -> None:
    assert xrbl_line("bl.test", "any", "Listed here") == "X-RBL: (bl.test) tells us Listed here\n"
    assert (
        xrbl_line("bl.test", "127.0.0.2", "x") == "X-RBL: (bl.test) matches with 127.0.0.2 and tells us x\n"
    )

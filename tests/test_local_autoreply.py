"""Auto-reply decisions and composition, quota warnings, the reply database (qmail-local(8), AUTO-REPLY)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qldap.local.autoreply import (
    REPLY_INTERVAL,
    ReplyDb,
    compose_quota_warning,
    compose_reply,
    is_bulk_message,
    is_robot_sender,
    parse_headers,
)

ORIG = b"From: Bob <bob@remote.example>\nSubject: Lunch\n  plans\nTo: alice@example.com\n\nhi\n"


def _parts(msg: bytes) -> tuple[str, str]:
    head, _, body = msg.decode().partition("\n\n")
    return head, body


def test_plain_reply() -> None:
    msg = compose_reply("I am away.", sender="bob@remote.example", recipient="alice@example.com",
                        original=ORIG, dtline="Delivered-To: alice@example.com\n", me="mx1", now=0)
    head, body = _parts(msg)
    lines = head.split("\n")
    assert lines[0] == "Delivered-To: alice@example.com"
    assert "To: bob@remote.example" in lines
    assert "From: alice@example.com" in lines
    assert "Subject: [Auto-Reply] Lunch plans" in lines
    assert "Precedence: junk" in lines
    assert "Auto-Submitted: auto-replied" in lines
    assert "X-Mailer: qmail-reply (by qmail-ldap)" in lines
    assert body == "I am away.\n"


def test_reply_message_id_and_date_as_qmail_reply_makes_them() -> None:
    # qmail-reply's Message-ID is <time.pid.qmail@HOST> for the recipient's domain and its Date has
    # no weekday (found by tools/conformance)
    msg = compose_reply("Away.", sender="bob@remote.example", recipient="alice@example.com",
                        original=ORIG, dtline="Delivered-To: alice@example.com\n", me="mx1", now=86400 * 3)
    lines = _parts(msg)[0].split("\n")
    assert lines[1].startswith("Message-ID: <19700104000000.") and lines[1].endswith(".qmail@example.com>")
    assert lines[2] == "Date: 4 Jan 1970 00:00:00 -0000"


def test_header_section_rules() -> None:
    text = "%HEADER%\nSubject: Re: %SUBJECT%\nTo: evil@x.example\nBcc: x@y\nX-Note: kept\n\nAway"
    msg = compose_reply(text, sender="bob@remote.example", recipient="alice@example.com",
                        original=ORIG, dtline="Delivered-To: alice@example.com\n", me="mx1", now=0)
    head, body = _parts(msg)
    assert "Subject: Re: Lunch plans" in head.split("\n")
    assert "To: bob@remote.example" in head.split("\n")
    assert "evil@x.example" not in head and "Bcc" not in head
    assert "X-Note: kept" in head.split("\n")
    assert body == "Away\n"


def test_missing_subject_becomes_your_mail() -> None:
    msg = compose_reply("x", sender="b@r", recipient="a@e", original=b"To: a@e\n\nbody\n",
                        dtline="Delivered-To: a@e\n", me="m", now=0)
    assert "Subject: [Auto-Reply] Your Mail" in msg.decode()


@pytest.mark.parametrize("sender", [
    "", "#@[]", "MAILER-DAEMON@x.example", "list-request@x.example", "postmaster@x.example",
    "root@x.example", "news-daemon@x.example", "uucp", "smtp-relay@x.example",
])
def test_robot_senders(sender: str) -> None:
    assert is_robot_sender(sender)


def test_people_and_junk_lines() -> None:
    assert not is_robot_sender("bob@remote.example")
    assert is_robot_sender("spammer@bad.example", junk=["@bad.example"])


@pytest.mark.parametrize("header", [
    b"Precedence: bulk", b"Precedence: junk", b"Precedence: list", b"Mailing-List: x",
    b"X-Spam-Status: Yes, score=9", b"X-RBL: listed", b"List-Id: <l.example>",
    b"Auto-Submitted: auto-generated",
])
def test_bulk_messages(header: bytes) -> None:
    assert is_bulk_message(parse_headers(header + b"\nSubject: x\n\nbody\n"))


def test_normal_message_is_not_bulk() -> None:
    assert not is_bulk_message(parse_headers(b"Auto-Submitted: no\nSubject: x\n\nPrecedence: bulk\n"))


def test_reply_db_interval_and_text_change(tmp_path: Path) -> None:
    db = ReplyDb(tmp_path)
    assert not db.answered_recently("bob@remote.example", "away", 1000)
    db.record("bob@remote.example", "away", 1000)
    assert db.answered_recently("BOB@remote.example", "away", 1000 + REPLY_INTERVAL - 1)
    assert not db.answered_recently("bob@remote.example", "away", 1000 + REPLY_INTERVAL)
    assert not db.answered_recently("bob@remote.example", "back soon", 2000)
    lines = (tmp_path / "qmail-reply.db").read_text().splitlines()
    assert lines[0].startswith("QRDBv1:") and lines[1] == "bob@remote.example:000003e8"
    assert (tmp_path / "qmail-reply.db").stat().st_mode & 0o777 == 0o600  # qmail-local's umask 077


def test_quota_warning_layout() -> None:
    msg = compose_quota_warning("Please clean up.", user="alice", host="example.com",
                                recipient="alice@example.com", dtline="Delivered-To: alice@example.com\n",
                                me="mx1.example.com", now=0)
    head, body = _parts(msg)
    lines = head.split("\n")
    assert lines[0] == "Return-Path: <>"
    assert lines[2] == "Qmail-QuotaWarning: alice@example.com"
    assert "To: alice@example.com" in lines
    assert "Subject: QUOTA-WARNING!" in lines
    assert "From: Qmail-QUOTAGUARD <MAILER-DAEMON@mx1.example.com>" in lines
    assert "\t1 Jan 1970 00:00:00 -0000" in lines  # qmail's date: day not padded, English months, UTC
    assert body == "Please clean up."  # the file's text as it is (it had no final newline)
    msgid = lines[5]
    assert msgid.startswith("Message-ID: <19700101000000.") and msgid.endswith(".qmail@mx1.example.com>")
    assert lines[6] == "Date: 1 Jan 1970 00:00:00 -0000"


def test_quota_warning_ending_in_newline_gets_an_empty_line() -> None:
    # qmail-quotawarn adds one empty line after a text that ends in a newline (found by tools/conformance)
    msg = compose_quota_warning("Please clean up.\n", user="alice", host="example.com",
                                recipient="alice@example.com", dtline="Delivered-To: alice@example.com\n",
                                me="mx1.example.com", now=0)
    assert msg.endswith(b"\n\nPlease clean up.\n\n")


def test_header_section_fields_keep_the_texts_order() -> None:
    # qmail-reply writes the text's own fields first, in its order, then the rest in its own order
    # (found by tools/conformance)
    text = "%HEADER%\nSubject: Re: %SUBJECT%\nFrom: Al <a@example.com>\nTo: evil@x\nX-Trace: kept\n\nAway"
    msg = compose_reply(text, sender="bob@remote.example", recipient="alice@example.com", original=ORIG,
                        dtline="Delivered-To: alice@example.com\n", me="mx1", now=0)
    names = [line.split(":")[0] for line in _parts(msg)[0].split("\n")[3:]]
    assert names == ["Subject", "From", "X-Trace", "To", "MIME-Version", "Content-Type",
                     "Content-Transfer-Encoding", "X-Mailer", "Precedence", "Auto-Submitted"]

"""Descriptor-3 and auth_smtp records: formats, limits and the outcome of every malformed shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qldap.auth.fd3 import (
    IMAP_LIMIT,
    POP_LIMIT,
    AuthExit,
    Fd3Rejected,
    ImapCredentials,
    PopCredentials,
    SmtpAuthRejected,
    SmtpAuthVerdict,
    SmtpCredentials,
    format_imap,
    format_pop,
    format_smtp_answer,
    format_smtp_login,
    format_smtp_plain,
    parse_imap,
    parse_pop,
    parse_smtp,
    parse_smtp_answer,
)


def test_pop_record_of_check_12() -> None:
    creds = parse_pop(b"joe\0secret\0<1.2@h>\0")
    assert creds == PopCredentials(b"joe", b"secret", b"<1.2@h>")
    assert "secret" not in repr(creds)
    assert format_pop(b"joe", b"secret", b"<1.2@h>") == b"joe\0secret\0<1.2@h>\0"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"joe\0secret\0", PopCredentials(b"joe", b"secret", b"")),  # timestamp optional
        (b"joe\0\0", PopCredentials(b"joe", b"", b"")),  # empty password: exit 3 is the checker's job
        (b"joe\0secret", Fd3Rejected(AuthExit.BAD_RECORD)),
        (b"joe", Fd3Rejected(AuthExit.BAD_RECORD)),
        (b"", Fd3Rejected(AuthExit.BAD_RECORD)),
    ],
)
def test_pop_record_shapes(data: bytes, expected: object) -> None:
    assert parse_pop(data) == expected


def test_pop_limit_is_512_bytes() -> None:
    record = b"joe\0" + b"p" * (POP_LIMIT - 6) + b"\0\0"
    assert len(record) == 512
    assert isinstance(parse_pop(record), PopCredentials)
    assert parse_pop(record + b"x") == Fd3Rejected(AuthExit.TEMPORARY)


def test_imap_record() -> None:
    data = format_imap(b"imap", b"login", b"joe", b"secret")
    assert data == b"imap\nlogin\njoe\nsecret\n"
    assert parse_imap(data) == ImapCredentials(b"imap", b"login", b"joe", b"secret")
    assert parse_imap(data + b"extra\n") == ImapCredentials(b"imap", b"login", b"joe", b"secret")
    assert parse_imap(b"imap\nlogin\njoe\nsecret") == Fd3Rejected(AuthExit.BAD_RECORD)
    assert parse_imap(b"imap\nlogin\njoe\0\nsecret\n") == Fd3Rejected(AuthExit.BAD_RECORD)
    other = parse_imap(b"imap\ncram-md5\nabc\ndef\n")
    assert isinstance(other, ImapCredentials) and other.authtype == b"cram-md5"


def test_imap_limit_is_1023_bytes() -> None:
    data = b"imap\nlogin\njoe\n" + b"p" * (IMAP_LIMIT - 16) + b"\n"
    assert len(data) == IMAP_LIMIT
    assert isinstance(parse_imap(data), ImapCredentials)
    assert parse_imap(data + b"\n") == Fd3Rejected(AuthExit.TEMPORARY)


def test_smtp_records_of_check_25() -> None:
    assert parse_smtp(b"login\0am9l\0c2VjcmV0\0") == SmtpCredentials(b"joe", b"secret")
    assert parse_smtp(b"login\0@@@\0x\0") == SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
    assert parse_smtp(b"plain\0AGpvZQBzZWNyZXQ=\0") == SmtpCredentials(b"joe", b"secret")
    assert format_smtp_login(b"joe", b"secret") == b"login\0am9l\0c2VjcmV0\0"
    assert format_smtp_plain(b"", b"joe", b"secret") == b"plain\0AGpvZQBzZWNyZXQ=\0"


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"login\0am9l\0", SmtpAuthVerdict.MALFORMED),  # password field missing
        (b"login\0am9l\0c2VjcmV0", SmtpAuthVerdict.MALFORMED),  # not NUL-terminated
        (b"login", SmtpAuthVerdict.MALFORMED),
        (b"", SmtpAuthVerdict.MALFORMED),
        (b"plain\0", SmtpAuthVerdict.MALFORMED),
        (b"plain\0am9l\0", SmtpAuthVerdict.MALFORMED),  # decodes to "joe": no NULs
        (b"plain\0am9lAHNlY3JldA==\0", SmtpAuthVerdict.MALFORMED),  # one NUL only
        (b"plain\0AGpvZQBzZQBjcmV0\0", SmtpAuthVerdict.MALFORMED),  # NUL inside the password
        (b"cram-md5\0abc\0", SmtpAuthVerdict.TEMPFAIL),
        (b"LOGIN\0am9l\0c2VjcmV0\0", SmtpAuthVerdict.TEMPFAIL),  # mechanism names are exact
    ],
)
def test_smtp_malformed(data: bytes, verdict: SmtpAuthVerdict) -> None:
    assert parse_smtp(data) == SmtpAuthRejected(verdict)


def test_smtp_base64_whitespace_is_tolerated_and_authzid_ignored() -> None:
    assert parse_smtp(b"login\0am9 l\0c2Vj\ncmV0\0") == SmtpCredentials(b"joe", b"secret")
    assert parse_smtp(format_smtp_plain(b"admin", b"joe", b"pw")) == SmtpCredentials(b"joe", b"pw")


def test_smtp_answers() -> None:
    assert format_smtp_answer(SmtpAuthVerdict.ACCEPT, b"joe") == (b"Kjoe\0", 0)
    assert format_smtp_answer(SmtpAuthVerdict.REJECT) == (b"D", 0)
    assert format_smtp_answer(SmtpAuthVerdict.MALFORMED) == (b"Z", 0)
    assert format_smtp_answer(SmtpAuthVerdict.TEMPFAIL) == (b"", 111)
    for verdict in SmtpAuthVerdict:
        out, status = format_smtp_answer(verdict, b"joe")
        assert parse_smtp_answer(out, status)[0] is verdict
    assert parse_smtp_answer(b"Kjoe\0", 0) == (SmtpAuthVerdict.ACCEPT, b"joe")
    assert parse_smtp_answer(b"Kjoe", 0) == (SmtpAuthVerdict.TEMPFAIL, b"")
    assert parse_smtp_answer(b"D", 111) == (SmtpAuthVerdict.TEMPFAIL, b"")
    assert parse_smtp_answer(b"X", 0) == (SmtpAuthVerdict.TEMPFAIL, b"")


def test_exit_codes_are_the_documented_numbers() -> None:
    assert [int(e) for e in AuthExit] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 25, 61, 62, 111]


@given(st.binary(max_size=1100))
def test_parsers_never_raise(data: bytes) -> None:
    assert isinstance(parse_pop(data), PopCredentials | Fd3Rejected)
    assert isinstance(parse_imap(data), ImapCredentials | Fd3Rejected)
    assert isinstance(parse_smtp(data), SmtpCredentials | SmtpAuthRejected)


@given(st.binary(max_size=100).filter(lambda b: b"\0" not in b), st.binary(max_size=100))
def test_pop_round_trip(login: bytes, password: bytes) -> None:
    password = password.replace(b"\0", b"")
    assert parse_pop(format_pop(login, password, b"<1.2@h>")) == PopCredentials(login, password, b"<1.2@h>")

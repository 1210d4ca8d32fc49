"""The shared log writer: line shape, levels, timestamps, free-text escaping, redaction."""

from __future__ import annotations

import io
import re

import pytest

from qldap.logs import Level, Logger, Timestamps, escape, iso, parse_level, parse_timestamps, redact, tai64n


def test_line_shape_and_levels() -> None:
    out = io.StringIO()
    log = Logger("qldap send", level=Level.INFO, stream=out)
    log.info("new msg 7")
    log.warning("trouble marking local/7/7")
    log.debug("not shown at level 2")
    log.log("detail", Level.DETAIL)
    log.fatal("shown even at level 0")
    assert out.getvalue() == (
        "qldap send: new msg 7\n"
        "qldap send: warning: trouble marking local/7/7\n"
        "qldap send: fatal: shown even at level 0\n"
    )


def test_level_zero_writes_only_fatal() -> None:
    out = io.StringIO()
    log = Logger("p", level=0, stream=out)
    log.error("e")
    log.fatal("f")
    assert out.getvalue() == "p: fatal: f\n"
    assert not log.enabled(Level.ERROR)


@pytest.mark.parametrize(("text", "level"), [("3", 3), ("0", 0), ("9", 4), ("2x", 2), ("", 2), (None, 2),
                                              ("x", 2), (" 1", 1)])
def test_parse_level(text: str | None, level: int) -> None:
    assert parse_level(text) == level


def test_from_env_reads_loglevel_and_timestamps() -> None:
    out = io.StringIO()
    log = Logger.from_env("qldap pop3d", {"LOGLEVEL": "4", "LOGTIMESTAMPS": "TAI64N"}, stream=out)
    assert log.level == 4 and log.timestamps is Timestamps.TAI64N
    assert parse_timestamps("bogus") is Timestamps.NONE


def test_tai64n_label() -> None:
    assert tai64n(0) == "@400000000000000a00000000"
    assert tai64n(1700000000.5) == f"@{2**62 + 10 + 1700000000:016x}1dcd6500"


def test_iso_stamp() -> None:
    assert iso(1700000000.25) == "2023-11-14T22:13:20.250000Z"


@pytest.mark.parametrize(("mode", "pattern"), [
    ("iso", r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z qldap up: hello\n$"),
    ("tai64n", r"^@[0-9a-f]{24} qldap up: hello\n$"),
    ("none", r"^qldap up: hello\n$"),
])
def test_timestamp_prefixes(mode: str, pattern: str) -> None:
    out = io.StringIO()
    Logger("qldap up", timestamps=mode, stream=out, clock=lambda: 1700000000.0).info("hello")
    assert re.match(pattern, out.getvalue())


def test_escape_follows_qmail_send() -> None:
    # "%", the blank and the two UTF-8 bytes of "é" each become "_"
    assert escape("250 ok\nRemote host said: 100% é") == "250_ok/Remote_host_said:_100____"
    assert escape(b"a\x00b\x7fc") == "a_b_c"
    assert escape("plain-text.ok") == "plain-text.ok"


def test_redact_removes_credentials() -> None:
    assert redact("> PASS hunter2") == "> PASS ***"
    assert redact("AUTH PLAIN AGpvZQBzZWNyZXQ=") == "AUTH PLAIN ***"
    assert redact("auth login am9l") == "auth login ***"
    assert redact("ldappassword=topsecret x") == "ldappassword=*** x"
    assert redact("bind as cn=admin with s3cr3t failed", ["s3cr3t", ""]) == "bind as cn=admin with *** failed"
    accounting = "delivery 3: success: password_ok_pass_through"
    assert redact(accounting) == accounting
    assert redact("AUTH PLAIN") == "AUTH PLAIN"


def test_logger_never_writes_registered_secrets_or_newlines() -> None:
    out = io.StringIO()
    log = Logger("qldap smtpd", stream=out)
    log.add_secret("mekmitasdigoat")
    log.info("pbs add with mekmitasdigoat\nsecond line")
    log.relay("qldap child: leaked mekmitasdigoat")
    assert out.getvalue() == "qldap smtpd: pbs add with ***/second line\nqldap child: leaked ***\n"

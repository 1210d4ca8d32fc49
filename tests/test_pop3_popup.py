"""qmail-popup's dialogue: USER/PASS and APOP, the exit-code table, CAPA/STLS/AUTH PLAIN."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest

from qldap.auth.fd3 import AuthExit, PopCredentials, parse_pop
from qldap.pop3.popup import (
    EXIT_REPLIES,
    Authenticate,
    LoginMethod,
    Phase,
    Popup,
    StartTls,
    exit_reply,
)
from qldap.pop3.reader import Close, Reply


def replies(effects: list[object]) -> list[bytes]:
    return [e.data for e in effects if isinstance(e, Reply)]


def popup(**kw: bool) -> Popup:
    return Popup("mx1.example.com", pid=4242, now=1700000000, **kw)


def test_greeting_carries_the_apop_timestamp() -> None:
    greeting = popup().greeting().data
    assert greeting == b"+OK <4242.1700000000@mx1.example.com>\r\n"
    assert re.fullmatch(rb"\+OK <\d+\.\d+@mx1\.example\.com>\r\n", greeting)


def test_user_pass_yields_the_fd3_record_and_no_reply_for_pass() -> None:
    p = popup()
    effects = p.receive(b"USER joe\r\nPASS secret\r\n")
    assert replies(effects) == [b"+OK \r\n"]
    auth = effects[-1]
    assert isinstance(auth, Authenticate)
    assert auth.record == b"joe\0secret\0<4242.1700000000@mx1.example.com>\0"
    assert auth.method is LoginMethod.PASS
    assert "secret" not in repr(auth)
    assert p.phase is Phase.AUTHENTICATING


def test_record_reaches_a_real_subprogram_on_descriptor_3_and_its_exit_maps_to_the_reply() -> None:
    """USER/PASS reach a real child process reading the record from a pipe."""
    p = popup()
    auth = p.receive(b"user joe\r\npass secret\r\n")[-1]
    assert isinstance(auth, Authenticate)
    child = (
        "import os,sys; fd=int(sys.argv[1]); data=b''\n"
        "while (c := os.read(fd, 100)): data += c\n"
        "sys.stdout.buffer.write(data); sys.exit(4)"
    )
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(read_end)], pass_fds=(read_end,), stdout=subprocess.PIPE
    )
    os.close(read_end)
    os.write(write_end, auth.record)
    os.close(write_end)
    out, _ = proc.communicate(timeout=30)
    assert out == b"joe\0secret\0<4242.1700000000@mx1.example.com>\0"
    effects = p.auth_done(proc.returncode)
    assert effects == [Reply(b"-ERR account disabled\r\n"), Close()]


def test_commands_before_login() -> None:
    p = popup()
    assert replies(p.receive(b"PASS x\r\n")) == [b"-ERR USER first\r\n"]
    assert replies(p.receive(b"USER\r\n")) == [b"-ERR syntax error\r\n"]
    assert replies(p.receive(b"STAT\r\n")) == [b"-ERR authorization first\r\n"]
    assert replies(p.receive(b"NOOP\r\n")) == [b"+OK \r\n"]
    assert replies(p.receive(b"USER joe\r\nPASS\r\n")) == [b"+OK \r\n", b"-ERR syntax error\r\n"]
    assert p.phase is Phase.AUTHORIZATION


def test_later_user_replaces_the_name() -> None:
    p = popup()
    auth = p.receive(b"user a\r\nuser b\r\npass pw\r\n")[-1]
    assert isinstance(auth, Authenticate) and auth.login == b"b"


def test_quit_answers_and_closes_and_ignores_the_rest() -> None:
    p = popup()
    assert p.receive(b"QUIT\r\nUSER joe\r\n") == [Reply(b"+OK \r\n"), Close()]
    assert p.receive(b"NOOP\r\n") == []


def test_apop() -> None:
    p = popup()
    assert replies(p.receive(b"APOP joe\r\n")) == [b"-ERR syntax error\r\n"]
    auth = p.receive(b"APOP joe c4c9334bac560ecc979e58001b3e22fb\r\n")[-1]
    assert isinstance(auth, Authenticate) and auth.method is LoginMethod.APOP
    creds = parse_pop(auth.record)
    assert isinstance(creds, PopCredentials)
    assert (creds.login, creds.password) == (b"joe", b"c4c9334bac560ecc979e58001b3e22fb")
    assert creds.timestamp == b"<4242.1700000000@mx1.example.com>"


def test_one_attempt_per_connection_and_pipelined_input_is_kept_for_the_next_stage() -> None:
    p = popup()
    effects = p.receive(b"USER joe\r\nPASS secret\r\nSTAT\r\nLIST\r\n")
    assert isinstance(effects[-1], Authenticate)
    assert p.receive(b"PASS again\r\n") == []
    assert p.pending_input() == b"STAT\r\nLIST\r\nPASS again\r\n"


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (1, b"-ERR error in server configuration\r\n"),
        (2, b"-ERR unable to contact authorization server\r\n"),
        (3, b"-ERR authorization failed\r\n"),
        (4, b"-ERR account disabled\r\n"),
        (5, b"-ERR mailhost is unreachable\r\n"),
        (6, b"-ERR mailbox is corrupted\r\n"),
        (7, b"-ERR unable to start subprogram\r\n"),
        (8, b"-ERR out of memory\r\n"),
        (25, b"-ERR user record incorrect\r\n"),
        (61, b"-ERR mailbox could not be created\r\n"),
        (62, b"-ERR the users mailbox does not exist\r\n"),
        (111, b"-ERR temporary error\r\n"),
        (99, b"-ERR temporary error\r\n"),
        (None, b"-ERR aack, child crashed\r\n"),
    ],
)
def test_exit_code_table(status: int | None, text: bytes) -> None:
    assert exit_reply(status) == text
    p = popup()
    p.receive(b"user joe\r\npass x\r\n")
    assert p.auth_done(status) == [Reply(text), Close()]


def test_every_documented_exit_has_a_reply_and_success_is_silent() -> None:
    assert set(EXIT_REPLIES) == {e for e in AuthExit if e not in (AuthExit.OK, AuthExit.TEMPORARY)}
    assert exit_reply(0) is None
    assert popup().auth_done(0) == [Close()]


def test_capa_without_and_with_tls() -> None:
    plain = popup()
    assert replies(plain.receive(b"CAPA\r\n")) == [
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n"
    ]
    offered = popup(tls_available=True)
    assert replies(offered.receive(b"capa\r\n")) == [
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSTLS\r\n.\r\n"
    ]
    active = popup(tls_available=True, tls_active=True)
    assert replies(active.receive(b"capa\r\n")) == [
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n.\r\n"
    ]


def test_stls_discards_plaintext_sent_after_it_and_forgets_user() -> None:
    p = popup(tls_available=True)
    effects = p.receive(b"USER joe\r\nSTLS\r\nPASS injected\r\n")
    assert effects[-2:] == [Reply(b"+OK Begin TLS negotiation\r\n"), StartTls()]
    assert p.phase is Phase.TLS
    assert p.tls_started() == []
    assert replies(p.receive(b"PASS secret\r\n")) == [b"-ERR USER first\r\n"]
    assert replies(p.receive(b"STLS\r\n")) == [b"-ERR authorization first\r\n"]


def test_stls_unavailable_is_an_unknown_command() -> None:
    assert replies(popup().receive(b"STLS\r\n")) == [b"-ERR authorization first\r\n"]


def test_auth_plain_only_over_tls() -> None:
    token = base64.b64encode(b"\0joe\0secret")
    assert replies(popup().receive(b"AUTH PLAIN " + token + b"\r\n")) == [b"-ERR authorization first\r\n"]
    p = popup(tls_available=True, tls_active=True)
    auth = p.receive(b"AUTH PLAIN " + token + b"\r\n")[-1]
    assert isinstance(auth, Authenticate) and auth.method is LoginMethod.SASL_PLAIN
    assert auth.record == b"joe\0secret\0<4242.1700000000@mx1.example.com>\0"


def test_auth_plain_with_continuation_and_bad_data() -> None:
    p = popup(tls_available=True, tls_active=True)
    assert replies(p.receive(b"AUTH PLAIN\r\n")) == [b"+ \r\n"]
    assert replies(p.receive(b"!!notbase64\r\n")) == [b"-ERR syntax error\r\n"]
    assert replies(p.receive(b"AUTH PLAIN\r\n")) == [b"+ \r\n"]
    auth = p.receive(base64.b64encode(b"admin\0Joe\0Pass Word") + b"\r\n")[-1]
    assert isinstance(auth, Authenticate)
    assert auth.record.startswith(b"Joe\0Pass Word\0")
    q = popup(tls_active=True)
    assert replies(q.receive(b"AUTH LOGIN\r\n")) == [b"-ERR syntax error\r\n"]


def test_without_apop_no_timestamp_and_apop_refused() -> None:
    p = popup(apop=False)
    assert p.greeting().data == b"+OK mx1.example.com\r\n"
    refused = [Reply(b"-ERR authorization first\r\n")]
    assert p.receive(b"APOP joe 0123456789abcdef0123456789abcdef\r\n") == refused
    effects = p.receive(b"USER joe\r\nPASS secret\r\n")
    assert effects[0] == Reply(b"+OK \r\n") and isinstance(effects[1], Authenticate)

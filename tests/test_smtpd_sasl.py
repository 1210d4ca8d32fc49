"""AUTH LOGIN and PLAIN generators and the exchange driver (qmail-smtpd(8), SMTP AUTH)."""

from __future__ import annotations

import base64

import pytest

from qldap.smtpd import replies
from qldap.smtpd.sasl import (
    AuthAborted,
    AuthSyntaxError,
    Challenge,
    Failed,
    LoginAttempt,
    SaslExchange,
    decode_line,
    login,
    parse_auth_arg,
    plain,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_login_without_initial_response() -> None:
    gen = login(None)
    assert next(gen) == b"Username:"
    assert gen.send(b64("alice")) == b"Password:"
    with pytest.raises(StopIteration) as done:
        gen.send(b64("secret"))
    assert done.value.value == LoginAttempt("alice", "secret")


def test_login_with_initial_response_still_asks_password() -> None:
    gen = login(b64("alice"))
    assert next(gen) == b"Password:"


def test_plain() -> None:
    gen = plain(None)
    assert next(gen) == b""
    with pytest.raises(StopIteration) as done:
        gen.send("AGFsaWNlAHNlY3JldA==")
    assert done.value.value == LoginAttempt("alice", "secret")
    with pytest.raises(StopIteration) as done:
        next(plain(b64("admin\0alice\0pw")))
    assert done.value.value.login == "alice"


@pytest.mark.parametrize("data", ["alice\0secret", "\0\0pw", "a\0b\0c\0d"])
def test_plain_missing_parts(data: str) -> None:
    with pytest.raises(AuthSyntaxError):
        next(plain(b64(data)))


def test_decode_line() -> None:
    assert decode_line(" YWxpY2U= ") == "alice"
    with pytest.raises(AuthAborted):
        decode_line("*")
    with pytest.raises(AuthSyntaxError):
        decode_line("!!!")
    with pytest.raises(AuthSyntaxError):
        decode_line("YWxpY2U")  # bad padding


def test_password_not_in_repr() -> None:
    assert "secret" not in repr(LoginAttempt("alice", "secret"))


def test_exchange_replies() -> None:
    ex = SaslExchange(login, None)
    assert ex.start() == Challenge(replies.auth_challenge(b"Username:"))
    assert ex.respond("YWxpY2U=").reply.render() == "334 UGFzc3dvcmQ6\r\n"  # type: ignore[union-attr]
    assert ex.respond("c2VjcmV0") == LoginAttempt("alice", "secret")
    assert SaslExchange(plain, None).start() == Challenge(replies.Reply(334, ("",)))
    ex = SaslExchange(plain, None)
    ex.start()
    assert ex.respond("*") == Failed(replies.AUTH_ABORTED)
    assert SaslExchange(plain, "!!!").start() == Failed(replies.AUTH_MALFORMED)
    # an empty password never authenticates, and needs no directory lookup
    assert SaslExchange(plain, b64("\0alice\0")).start() == Failed(replies.AUTH_FAILURE)
    ex = SaslExchange(login, None)
    ex.start()
    assert ex.respond("*") == Failed(replies.AUTH_ABORTED)  # at once, no password question


def test_parse_auth_arg() -> None:
    assert parse_auth_arg("login") == (login, None)
    assert parse_auth_arg("PLAIN AGFsaWNlAHNlY3JldA==") == (plain, "AGFsaWNlAHNlY3JldA==")
    assert parse_auth_arg("CRAM-MD5") is None
    assert parse_auth_arg("") is None

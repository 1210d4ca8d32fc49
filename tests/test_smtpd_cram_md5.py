"""SMTP AUTH CRAM-MD5: offered only with cleartext passwords (``cleartextpasswd``), checked by HMAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib

import pytest

from qldap.smtpd.sasl import AuthSyntaxError, LoginAttempt, cram_md5, decode_line
from tests.conftest import QRoot
from tests.e2e.smtpd import ServerThread, options
from tests.fixtures_slapd import LdapBase
from tests.test_smtpd_server_ldap import fixture_root, person

CHALLENGE = b"<12345.1700000000@mx.example.org>"


def test_exchange_returns_digest_and_challenge() -> None:
    ex = cram_md5(CHALLENGE)(None)
    assert next(ex) == CHALLENGE
    digest = hmac.new(b"secret", CHALLENGE, hashlib.md5).hexdigest()
    with pytest.raises(StopIteration) as done:
        ex.send(base64.b64encode(f"alice {digest}".encode()).decode())
    attempt: LoginAttempt = done.value.value
    assert (attempt.login, attempt.password, attempt.challenge) == ("alice", digest, CHALLENGE)
    assert decode_line(base64.b64encode(b"x").decode()) == "x"


def test_malformed_answers() -> None:
    ex = cram_md5(CHALLENGE)(None)
    next(ex)
    with pytest.raises(AuthSyntaxError):
        ex.send(base64.b64encode(b"nodigest").decode())
    with pytest.raises(AuthSyntaxError):
        next(cram_md5(CHALLENGE)("initial"))


@pytest.fixture
def users(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    sha = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="  # "secret", but not usable for CRAM-MD5
    ldap_base.load(person("alice", "mail: alice@example.org", "userPassword: secret")
                   + person("hashed", "mail: hashed@example.org", f"userPassword: {sha}"))
    return fixture_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)


def _server(root: QRoot) -> ServerThread:
    return ServerThread(options(root.path, {"SMTPAUTH": ""})).start()


def test_cram_md5_with_cleartext_passwords(users: QRoot) -> None:
    users.control("cleartextpasswd", "1")
    st = _server(users)
    try:
        with smtplib.SMTP(*st.addr, timeout=30) as smtp:
            smtp.ehlo("client")
            assert "CRAM-MD5" in smtp.esmtp_features["auth"]
            smtp.user, smtp.password = "alice", "secret"
            code, _ = smtp.auth("CRAM-MD5", smtp.auth_cram_md5, initial_response_ok=False)
            assert code == 235
        with smtplib.SMTP(*st.addr, timeout=30) as smtp:
            smtp.ehlo("client")
            smtp.user, smtp.password = "alice", "wrong"
            with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
                smtp.auth("CRAM-MD5", smtp.auth_cram_md5, initial_response_ok=False)
            assert exc.value.smtp_code == 535
    finally:
        st.stop()


def test_hashed_password_cannot_do_cram_md5(users: QRoot) -> None:
    users.control("cleartextpasswd", "1")
    st = _server(users)
    try:
        with smtplib.SMTP(*st.addr, timeout=30) as smtp:
            smtp.ehlo("client")
            smtp.user, smtp.password = "hashed", "secret"
            with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
                smtp.auth("CRAM-MD5", smtp.auth_cram_md5, initial_response_ok=False)
            assert exc.value.smtp_code == 535
    finally:
        st.stop()


def test_not_offered_without_cleartext(users: QRoot) -> None:
    st = _server(users)
    try:
        with smtplib.SMTP(*st.addr, timeout=30) as smtp:
            smtp.ehlo("client")
            assert smtp.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            code, text = smtp.docmd("AUTH", "CRAM-MD5")
            assert (code, text) == (504, b"authentication type not supported")
    finally:
        st.stop()

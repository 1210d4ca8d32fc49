"""SMTP AUTH credential check (qmail-smtpd(8), SMTP AUTH): login + password → OK, FAILURE (535) or TEMPORARY
(454).

The SASL dialogue (:mod:`qldap.smtpd.sasl`) and the replies with their 1 s / 4 s failure pauses
(:meth:`qldap.smtpd.session.Session.auth_result`) live elsewhere; this module only answers "are these
credentials good?".  The directory finds exactly one entry by ``uid`` (``ldapobjectclass`` AND-ed in
by the Directory), then either compares ``userPassword`` or, with ``ldaprebind``, binds as the entry —
:meth:`~qldap.directory.lookup.Directory.verify_password` decides which.

Why accountStatus is checked before the password: a disabled, deleted or noaccess account must fail
the same way as a wrong password (535, qmail-smtpd(8), SMTP AUTH), and checking it first spends no rebind on
an account that may not log in anyway.  Anything that prevents a sure answer — LDAP down or slow,
several entries, a stored hash that cannot be decoded, no directory configured — is TEMPORARY, so a
client retries later instead of being told its good password is wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from concurrent.futures import Executor

from qldap.directory import schema
from qldap.directory.base import Found, LookupResult, NotFound
from qldap.directory.entry import Entry
from qldap.directory.errors import DirectoryUnavailable, NotUnique
from qldap.directory.lookup import Directory
from qldap.directory.schema import AccountStatus
from qldap.errors import ConfigError
from qldap.passwords.schemes import MalformedHash, cram_md5_secret
from qldap.smtpd.sasl import LoginAttempt
from qldap.smtpd.session import AuthResult


def login_outcome(result: LookupResult) -> AuthResult | Found:
    """What a login lookup alone decides; the Found entry when the password must still be checked."""
    if isinstance(result, NotFound):
        return AuthResult.FAILURE
    if not isinstance(result, Found):
        return AuthResult.TEMPORARY  # Ambiguous, Unavailable (Trash never comes from find_login)
    try:
        status = AccountStatus.parse(result.entry.single(schema.ACCOUNT_STATUS))
    except NotUnique:
        return AuthResult.TEMPORARY
    if not status.may_login:
        return AuthResult.FAILURE
    return result


class Authenticator:
    """Checks SMTP AUTH credentials against the directory on the lookup thread pool."""

    def __init__(
        self, directory: Directory | ConfigError | None, pool: Executor, *, cleartext: bool = False
    ) -> None:
        self.directory = directory
        self.pool = pool
        self.cleartext = cleartext  # control/cleartextpasswd

    def check(self, attempt: LoginAttempt) -> AuthResult:
        """Blocking check of *attempt*; an empty login or password is a FAILURE without a lookup."""
        if not attempt.login or not attempt.password:
            return AuthResult.FAILURE
        directory = self.directory
        if not isinstance(directory, Directory):
            return AuthResult.TEMPORARY
        outcome = login_outcome(directory.find_login(attempt.login))
        if isinstance(outcome, AuthResult):
            return outcome
        if attempt.challenge is not None:
            return self._cram(outcome.entry, attempt)
        try:
            good = directory.verify_password(outcome.entry, attempt.password, cleartext=self.cleartext)
        except (DirectoryUnavailable, MalformedHash, NotUnique):
            return AuthResult.TEMPORARY
        return AuthResult.OK if good else AuthResult.FAILURE

    def _cram(self, entry: Entry, attempt: LoginAttempt) -> AuthResult:
        """CRAM-MD5: HMAC-MD5 of the challenge keyed with the stored cleartext password."""
        assert attempt.challenge is not None
        try:
            stored = entry.single(schema.PASSWORD)
        except NotUnique:
            return AuthResult.TEMPORARY
        secret = cram_md5_secret(stored, self.cleartext) if stored is not None else None
        if secret is None:
            return AuthResult.FAILURE  # only a cleartext password can answer CRAM-MD5
        expected = hmac.new(secret, attempt.challenge, hashlib.md5).hexdigest()
        return AuthResult.OK if hmac.compare_digest(expected, attempt.password) else AuthResult.FAILURE

    async def authenticate(self, attempt: LoginAttempt) -> AuthResult:
        """:meth:`check` on the lookup thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.check, attempt)

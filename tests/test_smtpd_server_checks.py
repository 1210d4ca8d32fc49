"""The daemon's pure decisions: directory answers → verifier answers and AUTH results; local fallbacks.

The slapd end-to-end tests cover the same paths over sockets; these pin each table row, including the
ones a directory rarely produces (several accountStatus values, an ambiguous login, no directory).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qldap.control.cdb import CdbReader, write_cdb
from qldap.directory.base import Ambiguous, Found, NotFound, Trash, Unavailable
from qldap.directory.entry import Entry
from qldap.directory.errors import ServerUnreachable
from qldap.directory.filters import Candidate
from qldap.errors import ConfigError
from qldap.smtpd.auth import Authenticator, login_outcome
from qldap.smtpd.policy import Invalid, Soft, Valid
from qldap.smtpd.sasl import LoginAttempt
from qldap.smtpd.session import AuthResult
from qldap.smtpd.verify import (
    DISABLED,
    NO_MAILBOX,
    Verifier,
    answer_for,
    system_account_knows,
    users_cdb_knows,
)

CAND = Candidate("a@example.org", "", "", "a@example.org")


def found(*status: str) -> Found:
    return Found(Entry.build("uid=a,dc=x", [("accountStatus", status)]), CAND)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (found(), Valid()),
        (found("active"), Valid()),
        (found("noaccess"), Valid()),  # may not log in, still receives mail
        (found("Disabled"), Invalid(DISABLED)),
        (found("deleted"), Invalid(NO_MAILBOX)),
        (found("active", "disabled"), Soft()),
        (Trash(), Valid()),
        (Ambiguous(2, "a@example.org"), Soft()),
        (Unavailable(ServerUnreachable()), Soft()),
        (NotFound(("a@example.org",)), None),
    ],
)
def test_answer_for(result: Found | Trash | Ambiguous | Unavailable | NotFound, expected: object) -> None:
    assert answer_for(result) == expected


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (NotFound(("a",)), AuthResult.FAILURE),
        (found("disabled"), AuthResult.FAILURE),
        (found("deleted"), AuthResult.FAILURE),
        (found("noaccess"), AuthResult.FAILURE),
        (found("active", "noaccess"), AuthResult.TEMPORARY),
        (Ambiguous(2, "a"), AuthResult.TEMPORARY),
        (Unavailable(ServerUnreachable()), AuthResult.TEMPORARY),
    ],
)
def test_login_outcome(result: Found | Ambiguous | Unavailable | NotFound, expected: AuthResult) -> None:
    assert login_outcome(result) is expected


def test_login_outcome_passes_active_entries_on() -> None:
    entry = found("active")
    assert login_outcome(entry) is entry
    assert login_outcome(found()) == found()


def test_users_cdb(tmp_path: Path) -> None:
    """``=joe`` is the key ``!joe\\0`` (exact only); ``+list-`` is the key ``!list-`` (a prefix)."""
    path = tmp_path / "cdb"
    reader = CdbReader(path)
    assert not users_cdb_knows(reader, "joe")
    write_cdb(path, [(b"", b"-"), (b"!joe\0", b""), (b"!list-", b"")])
    assert users_cdb_knows(reader, "joe") and users_cdb_knows(reader, "JOE")
    assert not users_cdb_knows(reader, "joel")
    assert users_cdb_knows(reader, "list-x") and users_cdb_knows(reader, "list-")
    assert not users_cdb_knows(reader, "list")
    write_cdb(path, [(b"", b""), (b"!", b"")])  # "+:": every local part
    assert users_cdb_knows(reader, "anything")


def test_system_accounts() -> None:
    """root (uid 0) and accounts whose home they do not own never count."""
    assert not system_account_knows("root")
    assert not system_account_knows("root-ext")
    assert not system_account_knows("no-such-account-here")


def test_no_directory_is_soft_or_temporary(tmp_path: Path) -> None:
    """Without a usable LDAP configuration nothing is accepted or refused on a guess."""
    missing = ConfigError("unable to read control/ldapserver")
    with ThreadPoolExecutor(1) as pool:
        assert Verifier(missing, tmp_path, pool).check("a@example.org") == Soft()
        auth = Authenticator(missing, pool)
        assert auth.check(LoginAttempt("alice", "secret")) is AuthResult.TEMPORARY
        assert auth.check(LoginAttempt("alice", "")) is AuthResult.FAILURE

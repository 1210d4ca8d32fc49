"""Parse and format the credential records handed to the login modules, and name their exit codes.

Three callers speak three historical formats, all byte-exact contracts with programs outside qldap:

* ``auth_pop`` reads ``LOGIN\\0PASSWORD\\0TIMESTAMP\\0`` from descriptor 3 (qmail-popup / checkpassword);
  at most 512 bytes, more is a temporary error (111); a missing NUL-terminated field is exit 25.
* ``auth_imap`` reads courier authlib's ``SERVICE\\nAUTHTYPE\\nLOGIN\\nPASSWORD\\n``; at most 1023 bytes.
* ``auth_smtp`` reads ``login\\0B64USER\\0B64PASS\\0`` or ``plain\\0B64(authzid\\0authcid\\0pw)\\0`` on stdin
  and answers ``K``LOGIN``\\0`` / ``D`` / ``Z`` with exit 0, or exits 111 without output.

Parsers return a credentials record or a rejection carrying the outcome, never raise on input bytes:
the data comes from another process and every malformed shape has a documented answer.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import Enum, IntEnum

POP_LIMIT = 512
IMAP_LIMIT = 1023


class AuthExit(IntEnum):
    """Exit statuses of ``auth_pop``/``auth_imap`` (auth_pop(8)); qmail-popup maps them to replies."""

    OK = 0
    CONFIG = 1
    UNREACHABLE = 2
    BAD_LOGIN = 3
    DISABLED = 4
    MAILHOST = 5
    MAILBOX_CORRUPT = 6
    EXEC_FAILED = 7
    NO_MEMORY = 8
    BAD_RECORD = 25
    MAILBOX_CREATE = 61
    NO_MAILBOX = 62
    TEMPORARY = 111


@dataclass(frozen=True, slots=True)
class PopCredentials:
    """The fields of an ``auth_pop`` record; *timestamp* is empty when the sender omitted it."""

    login: bytes
    password: bytes
    timestamp: bytes = b""

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"PopCredentials(login={self.login!r}, timestamp={self.timestamp!r})"


@dataclass(frozen=True, slots=True)
class ImapCredentials:
    """The fields of a courier authlib record; only AUTHTYPE ``login`` is checked by qldap."""

    service: bytes
    authtype: bytes
    login: bytes
    password: bytes

    def __repr__(self) -> str:
        return f"ImapCredentials(service={self.service!r}, authtype={self.authtype!r}, login={self.login!r})"


@dataclass(frozen=True, slots=True)
class Fd3Rejected:
    """A record that cannot be used; the module exits with *exit*."""

    exit: AuthExit


def format_pop(login: bytes, password: bytes, timestamp: bytes) -> bytes:
    """The record qmail-popup writes: ``LOGIN\\0PASSWORD\\0TIMESTAMP\\0``."""
    return login + b"\0" + password + b"\0" + timestamp + b"\0"


def parse_pop(data: bytes) -> PopCredentials | Fd3Rejected:
    """Parse what ``auth_pop`` read from descriptor 3 (the whole input up to EOF).

    Login and password must each be NUL-terminated; the timestamp is optional and ignored by the
    check.  Over :data:`POP_LIMIT` bytes → 111; a missing field → 25.
    """
    if len(data) > POP_LIMIT:
        return Fd3Rejected(AuthExit.TEMPORARY)
    fields = data.split(b"\0")
    if len(fields) < 3:
        return Fd3Rejected(AuthExit.BAD_RECORD)
    return PopCredentials(fields[0], fields[1], fields[2])


def format_imap(service: bytes, authtype: bytes, login: bytes, password: bytes) -> bytes:
    """A courier authlib record: ``SERVICE\\nAUTHTYPE\\nLOGIN\\nPASSWORD\\n``."""
    return b"".join(f + b"\n" for f in (service, authtype, login, password))


def parse_imap(data: bytes) -> ImapCredentials | Fd3Rejected:
    """Parse what ``auth_imap`` read from descriptor 3.

    Four LF-terminated fields are required (25 otherwise); text after the fourth LF is ignored.
    **Decision:** a NUL anywhere in the first four fields is a bad record (25): no login or password
    can contain one, and the original's treatment of it as a separator was accidental.
    Over :data:`IMAP_LIMIT` bytes → 111.
    """
    if len(data) > IMAP_LIMIT:
        return Fd3Rejected(AuthExit.TEMPORARY)
    fields = data.split(b"\n", 4)
    if len(fields) < 5:
        return Fd3Rejected(AuthExit.BAD_RECORD)
    service, authtype, login, password = fields[:4]
    if any(b"\0" in f for f in fields[:4]):
        return Fd3Rejected(AuthExit.BAD_RECORD)
    return ImapCredentials(service, authtype, login, password)


# -- auth_smtp ------------------------------------------------------------------------------------


class SmtpAuthVerdict(Enum):
    """What ``auth_smtp`` answers (auth_smtp(8)): the stdout letter, or exit 111 without output."""

    ACCEPT = "K"  # K LOGIN \0, exit 0 → 235
    REJECT = "D"  # wrong/empty password, unknown user → 535
    MALFORMED = "Z"  # bad base64, missing field, unusable PLAIN → 501
    TEMPFAIL = ""  # LDAP/system error, disabled account, unknown mechanism → exit 111 → 454


@dataclass(frozen=True, slots=True)
class SmtpCredentials:
    """Login and password decoded from the ``auth_smtp`` input."""

    login: bytes
    password: bytes

    def __repr__(self) -> str:
        return f"SmtpCredentials(login={self.login!r})"


@dataclass(frozen=True, slots=True)
class SmtpAuthRejected:
    """Input that is answered without a directory lookup."""

    verdict: SmtpAuthVerdict


def _b64(text: bytes) -> bytes | None:
    """Standard base64 with padding, whitespace ignored (as qmail-ldap's ``b64_ptons``); None if bad."""
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def format_smtp_login(user: bytes, password: bytes) -> bytes:
    """``login\\0B64USER\\0B64PASS\\0``."""
    return b"login\0" + base64.b64encode(user) + b"\0" + base64.b64encode(password) + b"\0"


def format_smtp_plain(authzid: bytes, authcid: bytes, password: bytes) -> bytes:
    """``plain\\0B64(authzid\\0authcid\\0password)\\0``."""
    return b"plain\0" + base64.b64encode(authzid + b"\0" + authcid + b"\0" + password) + b"\0"


def parse_smtp(data: bytes) -> SmtpCredentials | SmtpAuthRejected:
    """Parse the ``auth_smtp`` stdin record.

    Missing NUL-terminated fields or undecodable base64 → ``Z``; a mechanism other than ``login`` or
    ``plain`` → exit 111.  For PLAIN the authzid is ignored and the password runs to the end of the
    decoded data.  **Decision:** a NUL inside a decoded login or password is ``Z`` (unusable format).
    """
    mech, sep, rest = data.partition(b"\0")
    if not sep:
        return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
    fields = rest.split(b"\0")
    if mech == b"login":
        if len(fields) < 3:
            return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
        login, password = _b64(fields[0]), _b64(fields[1])
    elif mech == b"plain":
        if len(fields) < 2:
            return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
        plain = _b64(fields[0])
        if plain is None:
            return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
        parts = plain.split(b"\0")
        if len(parts) != 3:
            return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
        login, password = parts[1], parts[2]
    else:
        return SmtpAuthRejected(SmtpAuthVerdict.TEMPFAIL)
    if login is None or password is None or b"\0" in login or b"\0" in password:
        return SmtpAuthRejected(SmtpAuthVerdict.MALFORMED)
    return SmtpCredentials(login, password)


def format_smtp_answer(verdict: SmtpAuthVerdict, login: bytes = b"") -> tuple[bytes, int]:
    """The (stdout bytes, exit status) of ``auth_smtp`` for *verdict*; *login* only for ``ACCEPT``."""
    if verdict is SmtpAuthVerdict.ACCEPT:
        return b"K" + login + b"\0", 0
    if verdict is SmtpAuthVerdict.TEMPFAIL:
        return b"", 111
    return verdict.value.encode(), 0


def parse_smtp_answer(output: bytes, status: int) -> tuple[SmtpAuthVerdict, bytes]:
    """Read ``auth_smtp``'s answer back: (verdict, login for ``ACCEPT``); anything unexpected is TEMPFAIL."""
    if status != 0 or not output:
        return SmtpAuthVerdict.TEMPFAIL, b""
    letter, rest = output[:1], output[1:]
    if letter == b"K" and rest.endswith(b"\0") and b"\0" not in rest[:-1]:
        return SmtpAuthVerdict.ACCEPT, rest[:-1]
    if letter == b"D" and not rest:
        return SmtpAuthVerdict.REJECT, b""
    if letter == b"Z" and not rest:
        return SmtpAuthVerdict.MALFORMED, b""
    return SmtpAuthVerdict.TEMPFAIL, b""

"""The login check every access service shares: login + password → derived credentials, or an exit code.

One function, :func:`check_login`, answers for auth_pop, auth_imap, the Dovecot checkpassword
wrapper and the POP3 daemon; :func:`smtp_verdict` is auth_smtp's reduced form (LDAP only, status and
password only).  The order is that of auth_pop(8), THE CHECK: the password is verified before
accountStatus or any record field is looked at, so an unauthenticated client learns nothing about an
account's state; then accountStatus (exit 4), then the cluster question (auth_pop(8): the session belongs
on another mailHost), then the record → HOME/MAILDIR/quota/uid/gid of auth_pop(8) ENVIRONMENT (exit 25 on a
bad value).

"No such user" in LDAP falls back to the system passwd/shadow (auth_pop(8), THE CHECK) when
``ldaplocaldelivery`` is on; a wrong LDAP password never does.  The passwd source is a seam
(:class:`PasswdSource`) so the daemon and the modules share the lookup; the default reads the system databases
(``spwd`` when importable, else ``/etc/shadow``).

APOP (RFC 1939) works only with cleartext passwords (``control/cleartextpasswd``): the "password"
is then the hex MD5 of timestamp ‖ stored password, tried after the ordinary comparison failed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import pwd
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qldap.auth.fd3 import AuthExit, SmtpAuthVerdict
from qldap.control.files import ControlDir
from qldap.directory.base import Ambiguous, Found, NotFound, Trash, Unavailable
from qldap.directory.config import LdapConfig
from qldap.directory.errors import (
    DirectoryUnavailable,
    IllegalValue,
    MissingAttribute,
    NotUnique,
    SearchTimeout,
    ServerUnreachable,
)
from qldap.directory.lookup import Directory
from qldap.directory.user import QmailUser
from qldap.directory.validate import check_path, parse_number, resolve_id
from qldap.passwords.schemes import MalformedHash, check_password

CLEARTEXT_CONTROL = "cleartextpasswd"
SHADOW = Path("/etc/shadow")


class Source(enum.Enum):
    """Where the account was found."""

    LDAP = "ldap"
    PASSWD = "passwd"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A successful local login: who to become, where to go, what to put in the environment."""

    login: str
    uid: int
    gid: int
    home: str
    maildir: str | None = None
    quota_size: int = 0
    quota_count: int = 0
    size_max: int = 0
    source: Source = Source.LDAP

    @property
    def maildirquota(self) -> str | None:
        """``NS,MC`` with zero parts omitted (``1000000S,1000C``, ``1000C``); None when both are 0."""
        parts = [f"{n}{unit}" for n, unit in ((self.quota_size, "S"), (self.quota_count, "C")) if n]
        return ",".join(parts) or None

    def environment(self) -> dict[str, str | None]:
        """The auth_pop(8) ENVIRONMENT variables: a value to set, or None to remove an inherited one."""
        return {
            "USER": self.login,
            "AUTHENTICATED": self.login,
            "HOME": self.home or None,
            "MAILDIR": self.maildir or None,
            "MAILDIRQUOTA": self.maildirquota,
            "DATASIZE": str(self.size_max) if self.size_max else None,
        }


@dataclass(frozen=True, slots=True)
class Forward:
    """The password is right but the mailbox lives on *mail_host* (cluster forwarding, auth_pop(8))."""

    login: str
    mail_host: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The login fails with module exit *exit*; *reason* is for the log only."""

    exit: AuthExit
    reason: str
    unknown_user: bool = False  # auth_imap hands unknown users to the next module


LoginResult = Credentials | Forward | Refused


@dataclass(frozen=True, slots=True)
class PasswdAccount:
    """A system account as auth_pop(8) THE CHECK uses it; *hash* is the shadow (or passwd) password field."""

    name: str
    uid: int
    gid: int
    home: str
    hash: str


PasswdSource = Callable[[str], PasswdAccount | None]


def _shadow_hash(name: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import spwd  # gone in Python 3.13: then the file is read directly
    except ImportError:
        pass
    else:
        try:
            return str(spwd.getspnam(name).sp_pwdp)
        except (KeyError, PermissionError):
            return None
    try:
        text = SHADOW.read_text("utf-8", "surrogateescape")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 1 and fields[0] == name:
            return fields[1]
    return None


def system_passwd(name: str) -> PasswdAccount | None:
    """The system account named exactly *name*, with its shadow hash when readable; None if absent."""
    try:
        pw = pwd.getpwnam(name)
    except (KeyError, ValueError):
        return None
    stored = pw.pw_passwd
    if stored in ("x", "*", "") or stored.startswith("!"):
        stored = _shadow_hash(name) or stored
    return PasswdAccount(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, stored)


def dot_qmail_maildir(home: str) -> str | None:
    """auth_pop(8), THE CHECK: the first line of ``~/.qmail`` starting with ``.`` or ``/`` and ending with
    ``/``."""
    try:
        text = Path(home, ".qmail").read_text("utf-8", "surrogateescape")
    except OSError:
        return None
    for line in text.splitlines():
        if line[:1] in (".", "/") and line.endswith("/"):
            return line
    return None


def password_matches(stored: str, password: str, timestamp: str, *, cleartext: bool) -> bool:
    """*password* against *stored*; with cleartext also as an APOP digest over *timestamp*.

    Raises:
        MalformedHash: *stored* cannot be decoded.
    """
    if check_password(stored, password, cleartext=cleartext):
        return True
    if not (cleartext and timestamp and len(password) == 32) or stored.startswith("{"):
        return False
    digest = hashlib.md5((timestamp + stored).encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.compare_digest(digest, password.lower())


def _unavailable(exc: DirectoryUnavailable) -> Refused:
    """LDAP down or slow → 2; any other directory error (service bind refused …) → 111."""
    if isinstance(exc, ServerUnreachable | SearchTimeout):
        return Refused(AuthExit.UNREACHABLE, exc.detail or exc.text)
    return Refused(AuthExit.TEMPORARY, exc.detail or exc.text)


def derive(user: QmailUser, login: str, config: LdapConfig) -> Credentials | Refused:
    """auth_pop(8), ENVIRONMENT: HOME, MAILDIR, quotas and ids from a checked entry; any bad value → 25."""
    try:
        home, maildir = _paths(user, config)
        uid = resolve_id(user.qmail_uid, config.ldap_uid, "qmailUID")
        gid = resolve_id(user.qmail_gid, config.ldap_gid, "qmailGID")
        size = config.quota_size if user.quota_size is None else parse_number(user.quota_size)
        count = config.quota_count
        if user.quota_count is not None:
            count = parse_number(user.quota_count, "mailQuotaCount")
        size_max = 0 if user.size_max is None else parse_number(user.size_max, "mailSizeMax")
    except (IllegalValue, MissingAttribute) as exc:
        return Refused(AuthExit.BAD_RECORD, f"{exc.text} {exc.detail}")
    return Credentials(login, uid, gid, home, maildir, size, count, size_max)


def _paths(user: QmailUser, config: LdapConfig) -> tuple[str, str | None]:
    home_dir, store = user.home_directory, user.message_store
    if home_dir is not None:
        if not check_path(home_dir, "homeDirectory").startswith("/"):
            raise IllegalValue(f"homeDirectory: {home_dir!r} is not absolute")
        return home_dir, (check_path(store) if store else None)
    if store is None:
        raise MissingAttribute("homeDirectory and mailMessageStore")
    check_path(store)
    if store.startswith("/"):
        return store, None
    if not config.message_store:
        raise MissingAttribute("ldapmessagestore for a relative mailMessageStore")
    return config.message_store + store, None


def _local_login(
    login: str, password: str, timestamp: str, passwd: PasswdSource, cleartext: bool
) -> LoginResult:
    account = passwd(login)
    if account is None:
        return Refused(AuthExit.BAD_LOGIN, "no such user", unknown_user=True)
    try:
        ok = password_matches(account.hash, password, timestamp, cleartext=cleartext)
    except MalformedHash:
        return Refused(AuthExit.BAD_RECORD, "malformed password hash in passwd")
    if not ok:
        return Refused(AuthExit.BAD_LOGIN, "wrong password")
    return Credentials(
        login, account.uid, account.gid, account.home, dot_qmail_maildir(account.home), source=Source.PASSWD
    )


def check_login(
    directory: Directory,
    login: str,
    password: str,
    timestamp: str = "",
    *,
    cleartext: bool = False,
    passwd: PasswdSource = system_passwd,
) -> LoginResult:
    """Check one login (auth_pop(8)); never raises for a directory or record problem.

    Empty password → 3 without asking the directory.  NotFound → passwd fallback when
    ``ldaplocaldelivery`` is on, else 3.  Several entries → 111; LDAP unreachable → 2.
    """
    if not password:
        return Refused(AuthExit.BAD_LOGIN, "empty password")
    config = directory.config
    result = directory.find_login(login)
    if isinstance(result, Unavailable):
        return _unavailable(result.error)
    if isinstance(result, Ambiguous):
        return Refused(AuthExit.TEMPORARY, f"{result.count} entries for uid {login}")
    if isinstance(result, NotFound | Trash):
        if not config.local_delivery:
            return Refused(AuthExit.BAD_LOGIN, "no such user", unknown_user=True)
        return _local_login(login, password, timestamp, passwd, cleartext)
    assert isinstance(result, Found)
    try:
        if config.rebind:
            ok = directory.verify_password(result.entry, password)
        else:
            user = result.user()
            ok = user.password is not None and password_matches(
                user.password, password, timestamp, cleartext=cleartext
            )
        if not ok:
            return Refused(AuthExit.BAD_LOGIN, "wrong password")
        user = result.user()
    except DirectoryUnavailable as exc:
        return _unavailable(exc)
    except (MalformedHash, NotUnique) as exc:
        return Refused(AuthExit.BAD_RECORD, f"unusable record: {exc}")
    if not user.status.may_login:
        return Refused(AuthExit.DISABLED, f"accountStatus {user.status_raw}")
    if config.cluster and user.mail_host:
        if not config.me:
            return Refused(AuthExit.MAILHOST, "ldapcluster is on but control/me is missing")
        if not config.is_this_host(user.mail_host):
            return Forward(login, user.mail_host)
    return derive(user, login, config)


def smtp_verdict(
    directory: Directory, login: str, password: str, *, cleartext: bool = False
) -> SmtpAuthVerdict:
    """auth_smtp's answer (auth_smtp(8)): only LDAP, only accountStatus and password are consulted."""
    if not password:
        return SmtpAuthVerdict.REJECT
    result = directory.find_login(login)
    if isinstance(result, NotFound | Trash):
        return SmtpAuthVerdict.REJECT
    if not isinstance(result, Found):
        return SmtpAuthVerdict.TEMPFAIL
    try:
        if directory.config.rebind:
            ok = directory.verify_password(result.entry, password)
        else:
            stored = result.user().password
            ok = stored is not None and check_password(stored, password, cleartext=cleartext)
        if not ok:
            return SmtpAuthVerdict.REJECT
        status_ok = result.user().status.may_login
    except (DirectoryUnavailable, MalformedHash, NotUnique):
        return SmtpAuthVerdict.TEMPFAIL
    return SmtpAuthVerdict.ACCEPT if status_ok else SmtpAuthVerdict.TEMPFAIL


def cleartext_enabled(ctl: ControlDir) -> bool:
    """``control/cleartextpasswd`` non-zero: stored cleartext passwords (and APOP) are accepted.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    return ctl.boolean(CLEARTEXT_CONTROL, False)

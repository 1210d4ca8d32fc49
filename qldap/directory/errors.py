"""The directory's failures, each carrying the byte-exact qmail-ldap text it is reported with.

    TemporaryFailure
    └── DirectoryUnavailable            LDAP could not be asked; never means "not found"
        ├── ServerUnreachable           no server answered          Unable to contact LDAP server. (#4.4.3)
        ├── BadCredentials              service bind refused (49)   Unable to login into LDAP server, ...
        ├── SearchTimeout               time limit / no answer      Timeout while performing search ...
        └── LookupFailed                anything else               Temporary failure in LDAP lookup. ...
            ├── NoSuchObject            the search base does not exist (noSuchObject, 32)
            └── InvalidFilter           a raw filter does not parse
    PermanentFailure
    ├── NotUnique                       several entries / values    Too many results returned but ...
    ├── IllegalValue                    a value fails validation    Illegal value in LDAP attribute. (#5.3.5)
    ├── MissingAttribute                a mandatory value is absent LDAP attribute is not given but ...
    └── AddressWithoutHost              recipient without "@"       Sorry, address must include host name. ...

Why the texts are fixed per class: they are what users see in bounces and logs (qmail-local(8), LOOKUP and
QMAILUSER ATTRIBUTES), including the odd trailing dot of the "Temporary failure" text.  The offending
attribute or server detail is kept in ``detail`` for logs and never changes the reported text.
"""

from __future__ import annotations

from qldap.errors import PermanentFailure, TemporaryFailure

TEXT_UNREACHABLE = "Unable to contact LDAP server. (#4.4.3)"
TEXT_BAD_CREDENTIALS = "Unable to login into LDAP server, bad credentials. (#4.4.3)"
TEXT_LOOKUP_FAILED = "Temporary failure in LDAP lookup. (#4.4.3)."
TEXT_TIMEOUT = "Timeout while performing search on LDAP server. (#4.4.3)"
TEXT_NOT_UNIQUE = "Too many results returned but needs to be unique. (#5.3.5)"
TEXT_ILLEGAL = "Illegal value in LDAP attribute. (#5.3.5)"
TEXT_MISSING = "LDAP attribute is not given but mandatory. (#5.3.5)"
TEXT_NO_HOST = "Sorry, address must include host name. (#5.1.3)"


class DirectoryUnavailable(TemporaryFailure):
    """The directory could not answer; the caller defers (never bounces, never falls back)."""

    TEXT = TEXT_LOOKUP_FAILED

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.TEXT)
        self.detail = detail


class ServerUnreachable(DirectoryUnavailable):
    """Every configured server refused the connection or stayed silent."""

    TEXT = TEXT_UNREACHABLE


class BadCredentials(DirectoryUnavailable):
    """The service bind (ldaplogin/ldappassword) was refused with invalidCredentials."""

    TEXT = TEXT_BAD_CREDENTIALS


class SearchTimeout(DirectoryUnavailable):
    """The server reported a time limit or busy, or did not answer within ldaptimeout."""

    TEXT = TEXT_TIMEOUT


class LookupFailed(DirectoryUnavailable):
    """Any other directory error: missing base DN, other bind failure, protocol errors."""

    TEXT = TEXT_LOOKUP_FAILED


class NoSuchObject(LookupFailed):
    """The search base does not exist: for ldapbasedn a temporary failure, for a DN lookup "not found"."""


class InvalidFilter(LookupFailed):
    """A raw filter (``-f``, filtermember) is not valid RFC 4515 syntax."""


class _FixedPermanent(PermanentFailure):
    TEXT = ""

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.TEXT)
        self.detail = detail


class NotUnique(_FixedPermanent):
    """Several entries matched, or a single-valued attribute holds several values."""

    TEXT = TEXT_NOT_UNIQUE


class IllegalValue(_FixedPermanent):
    """A directory value failed its validation check (qmail-local(8), QMAILUSER ATTRIBUTES); ``detail`` names
    it."""

    TEXT = TEXT_ILLEGAL


class MissingAttribute(_FixedPermanent):
    """A mandatory attribute is absent and has no configured default."""

    TEXT = TEXT_MISSING


class AddressWithoutHost(_FixedPermanent):
    """A recipient without ``@`` cannot be looked up."""

    TEXT = TEXT_NO_HOST

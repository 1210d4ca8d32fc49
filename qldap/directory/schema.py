"""Attribute names of the qmailUser/qmailGroup schema and the closed value sets (status, dot-mode, modes).

Why one place: qmail-ldap names every attribute once (qmail-ldap.h); the filters, the record builders,
the embedded directory's matching rules and qmail-ldaplookup's output all use these constants, so a
typo cannot make one of them silently look at a different attribute.
"""

from __future__ import annotations

import enum
from typing import Final

# -- qmailUser (and the standard attributes it uses) ----------------------------------------------
MAIL: Final = "mail"
MAIL_ALTERNATE: Final = "mailAlternateAddress"
UID: Final = "uid"
QMAIL_UID: Final = "qmailUID"
QMAIL_GID: Final = "qmailGID"
ACCOUNT_STATUS: Final = "accountStatus"
MAIL_HOST: Final = "mailHost"
MAIL_STORE: Final = "mailMessageStore"
HOME_DIRECTORY: Final = "homeDirectory"
QUOTA_SIZE: Final = "mailQuotaSize"
QUOTA_COUNT: Final = "mailQuotaCount"
SIZE_MAX: Final = "mailSizeMax"
FORWARDS: Final = "mailForwardingAddress"
PROGRAM: Final = "deliveryProgramPath"
DELIVERY_MODE: Final = "deliveryMode"
REPLY_TEXT: Final = "mailReplyText"
DOT_MODE: Final = "qmailDotMode"
ACCOUNT_PURGE: Final = "qmailAccountPurge"
PASSWORD: Final = "userPassword"
OBJECT_CLASS: Final = "objectClass"

# -- qmailGroup ---------------------------------------------------------------------------------------
DN_MEMBER: Final = "dnmember"
RFC822_MEMBER: Final = "rfc822member"
FILTER_MEMBER: Final = "filtermember"
DN_SENDER: Final = "dnsender"
RFC822_SENDER: Final = "rfc822sender"
FILTER_SENDER: Final = "filtersender"
MEMBERS_ONLY: Final = "membersonly"
SENDER_CONFIRM: Final = "senderconfirm"
CONFIRM_TEXT: Final = "confirmtext"
DN_MODERATOR: Final = "dnmoderator"
RFC822_MODERATOR: Final = "rfc822moderator"
MODERATOR_TEXT: Final = "moderatortext"
BOUNCE_ADMIN: Final = "bounceadmin"

USER_CLASS: Final = "qmailUser"
GROUP_CLASS: Final = "qmailGroup"
CATCHALL: Final = "catchall"
BREAK: Final = "-"
DASH_EXT_LEVELS: Final = 4

#: Attributes that hold one value; several values make the entry unusable (qmail-local(8), QMAILUSER
#: ATTRIBUTES).
SINGLE_VALUED: Final = frozenset(
    name.lower()
    for name in (
        UID, QMAIL_UID, QMAIL_GID, HOME_DIRECTORY, MAIL_STORE, MAIL_HOST, ACCOUNT_STATUS, DOT_MODE,
        REPLY_TEXT, SIZE_MAX, QUOTA_SIZE, QUOTA_COUNT, ACCOUNT_PURGE, PASSWORD,
        MEMBERS_ONLY, SENDER_CONFIRM, CONFIRM_TEXT, MODERATOR_TEXT,
    )
)  # fmt: skip

#: What a recipient or login lookup asks for (qmail-local(8) LOOKUP plus mail/aliases for the tools).
USER_ATTRIBUTES: Final = (
    MAIL, MAIL_ALTERNATE, UID, QMAIL_UID, QMAIL_GID, ACCOUNT_STATUS, MAIL_HOST, MAIL_STORE,
    HOME_DIRECTORY, QUOTA_SIZE, QUOTA_COUNT, SIZE_MAX, FORWARDS, PROGRAM, DELIVERY_MODE, REPLY_TEXT,
    DOT_MODE, ACCOUNT_PURGE, OBJECT_CLASS,
)  # fmt: skip

GROUP_ATTRIBUTES: Final = (
    MAIL, MAIL_ALTERNATE, MAIL_STORE, OBJECT_CLASS, DN_MEMBER, RFC822_MEMBER, FILTER_MEMBER,
    DN_SENDER, RFC822_SENDER, FILTER_SENDER, MEMBERS_ONLY, SENDER_CONFIRM, CONFIRM_TEXT,
    DN_MODERATOR, RFC822_MODERATOR, MODERATOR_TEXT, BOUNCE_ADMIN,
)  # fmt: skip


class AccountStatus(enum.Enum):
    """accountStatus as delivery and login interpret it (case-insensitive; unknown values = active)."""

    ACTIVE = "active"
    NOACCESS = "noaccess"
    DISABLED = "disabled"
    DELETED = "deleted"
    UNDEFINED = "undefined"  # attribute absent: behaves as active

    @classmethod
    def parse(cls, value: str | None) -> AccountStatus:
        """The status of a raw value; absent → UNDEFINED, legacy/unknown (``nopop``, ``holiday``) → ACTIVE."""
        if value is None:
            return cls.UNDEFINED
        return _STATUS_WORDS.get(value.lower(), cls.ACTIVE)

    @property
    def receives_mail(self) -> bool:
        """False for disabled and deleted accounts (their mail bounces)."""
        return self not in (AccountStatus.DISABLED, AccountStatus.DELETED)

    @property
    def may_login(self) -> bool:
        """False for noaccess, disabled and deleted (auth_pop(8), THE CHECK)."""
        return self in (AccountStatus.ACTIVE, AccountStatus.UNDEFINED)


_STATUS_WORDS: Final = {
    status.value: status
    for status in (AccountStatus.NOACCESS, AccountStatus.DISABLED, AccountStatus.DELETED)
}
"""The accountStatus words that are not "active" (parsed once per lookup: a dict, not a loop over
enum members)."""


class DotMode(enum.Enum):
    """qmailDotMode: which of LDAP and .qmail files decide the delivery."""

    LDAPONLY = "ldaponly"
    LDAPWITHPROG = "ldapwithprog"
    DOTONLY = "dotonly"
    BOTH = "both"
    NONE = "none"


class DeliveryModeWord(enum.Enum):
    """One known deliveryMode word (qmail-ldap.h plus the silent legacy no-ops)."""

    NOLOCAL = "nolocal"
    NOMBOX = "nombox"  # legacy spelling of nolocal
    NOFORWARD = "noforward"
    NOPROGRAM = "noprogram"
    REPLY = "reply"
    FORWARDONLY = "forwardonly"
    LOCAL = "local"
    FORWARD = "forward"
    PROGRAM = "program"
    NOREPLY = "noreply"
    NORMAL = "normal"
    LOCALDELIVERY = "localdelivery"

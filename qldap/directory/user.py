"""QmailUser and QmailGroup: frozen records of every schema attribute, built once from an Entry.

Why values stay unvalidated strings here: local delivery must run its checks in the order
qmail-local(8), QMAILUSER ATTRIBUTES documents (accountStatus before numbers, paths, ids), so building
a record only enforces the "one value" rule of single-valued attributes; the checks themselves are
the pure functions of :mod:`qldap.directory.validate`, applied by whoever needs the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qldap.directory import schema as s
from qldap.directory.entry import Entry
from qldap.directory.errors import NotUnique
from qldap.directory.schema import AccountStatus

_STATUS, _UID, _QMAIL_UID, _QMAIL_GID, _MAIL_HOST, _MAIL_STORE, _HOME_DIRECTORY = (
    n.lower() for n in (s.ACCOUNT_STATUS, s.UID, s.QMAIL_UID, s.QMAIL_GID, s.MAIL_HOST, s.MAIL_STORE,
                        s.HOME_DIRECTORY))
_QUOTA_SIZE, _QUOTA_COUNT, _SIZE_MAX, _REPLY_TEXT, _DOT_MODE, _ACCOUNT_PURGE, _PASSWORD = (
    n.lower() for n in (s.QUOTA_SIZE, s.QUOTA_COUNT, s.SIZE_MAX, s.REPLY_TEXT, s.DOT_MODE, s.ACCOUNT_PURGE,
                        s.PASSWORD))
_MAIL, _MAIL_ALTERNATE, _FORWARDS, _PROGRAM, _DELIVERY_MODE, _OBJECT_CLASS = (
    n.lower() for n in (s.MAIL, s.MAIL_ALTERNATE, s.FORWARDS, s.PROGRAM, s.DELIVERY_MODE, s.OBJECT_CLASS))
_USER_SINGLE = tuple(
    (n.lower(), n)
    for n in (s.ACCOUNT_STATUS, s.UID, s.QMAIL_UID, s.QMAIL_GID, s.MAIL_HOST, s.MAIL_STORE, s.HOME_DIRECTORY,
              s.QUOTA_SIZE, s.QUOTA_COUNT, s.SIZE_MAX, s.REPLY_TEXT, s.DOT_MODE, s.ACCOUNT_PURGE, s.PASSWORD)
)
"""QmailUser's single-valued attributes (lower-case key, name for the NotUnique text) in the order the
former one-call-per-attribute code checked them."""


@dataclass(frozen=True, slots=True)
class QmailUser:
    """A qmailUser entry (qmail-local(8), QMAILUSER ATTRIBUTES, auth_pop(8), THE CHECK); absent single values
    are None."""

    dn: str
    mail: str | None
    mail_alternate: tuple[str, ...]
    uid: str | None
    qmail_uid: str | None
    qmail_gid: str | None
    status: AccountStatus
    status_raw: str | None
    mail_host: str | None
    message_store: str | None
    home_directory: str | None
    quota_size: str | None
    quota_count: str | None
    size_max: str | None
    forwards: tuple[str, ...]
    programs: tuple[str, ...]
    delivery_modes: tuple[str, ...]
    reply_text: str | None
    dot_mode: str | None
    account_purge: str | None
    object_classes: tuple[str, ...]
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_entry(cls, entry: Entry) -> QmailUser:
        """The user record of *entry*.

        ``mail`` is taken as the first value (it is multi-valued in the standard schema).

        Raises:
            NotUnique: a single-valued attribute holds several values.
        """
        attrs = entry.attributes  # keys are lower case (Entry's invariant): no per-name folding here
        one: dict[str, str] = {}
        for key, name in _USER_SINGLE:  # in this order, so the first offending attribute is named
            vals = attrs.get(key)
            if vals is not None:
                if len(vals) > 1:
                    raise NotUnique(f"{name} has {len(vals)} values in {entry.dn}")
                one[key] = vals[0]
        many = attrs.get
        mails = many(_MAIL, ())
        status_raw = one.get(_STATUS)
        return cls(
            dn=entry.dn,
            mail=mails[0] if mails else None,
            mail_alternate=many(_MAIL_ALTERNATE, ()),
            uid=one.get(_UID),
            qmail_uid=one.get(_QMAIL_UID),
            qmail_gid=one.get(_QMAIL_GID),
            status=AccountStatus.parse(status_raw),
            status_raw=status_raw,
            mail_host=one.get(_MAIL_HOST),
            message_store=one.get(_MAIL_STORE),
            home_directory=one.get(_HOME_DIRECTORY),
            quota_size=one.get(_QUOTA_SIZE),
            quota_count=one.get(_QUOTA_COUNT),
            size_max=one.get(_SIZE_MAX),
            forwards=many(_FORWARDS, ()),
            programs=many(_PROGRAM, ()),
            delivery_modes=many(_DELIVERY_MODE, ()),
            reply_text=one.get(_REPLY_TEXT),
            dot_mode=one.get(_DOT_MODE),
            account_purge=one.get(_ACCOUNT_PURGE),
            object_classes=many(_OBJECT_CLASS, ()),
            password=one.get(_PASSWORD),
        )

    @property
    def is_group(self) -> bool:
        """True when the entry is also a qmailGroup (its mail goes to group expansion)."""
        want = s.GROUP_CLASS.lower()
        return any(oc.lower() == want for oc in self.object_classes)

    @property
    def has_password(self) -> bool:
        """True when a userPassword was fetched for this entry."""
        return self.password is not None


@dataclass(frozen=True, slots=True)
class QmailGroup:
    """A qmailGroup entry (qmail-group(8)); flags and texts unvalidated, lists as given."""

    dn: str
    mail: str | None
    mail_alternate: tuple[str, ...]
    message_store: str | None
    dn_members: tuple[str, ...]
    rfc822_members: tuple[str, ...]
    filter_members: tuple[str, ...]
    dn_senders: tuple[str, ...]
    rfc822_senders: tuple[str, ...]
    filter_senders: tuple[str, ...]
    members_only: str | None
    sender_confirm: str | None
    confirm_text: str | None
    dn_moderators: tuple[str, ...]
    rfc822_moderators: tuple[str, ...]
    moderator_text: str | None
    bounce_admins: tuple[str, ...]

    @classmethod
    def from_entry(cls, entry: Entry) -> QmailGroup:
        """The group record of *entry*.

        Raises:
            NotUnique: a single-valued attribute holds several values.
        """
        one, many = entry.single, entry.values
        mails = many(s.MAIL)
        return cls(
            dn=entry.dn,
            mail=mails[0] if mails else None,
            mail_alternate=many(s.MAIL_ALTERNATE),
            message_store=one(s.MAIL_STORE),
            dn_members=many(s.DN_MEMBER),
            rfc822_members=many(s.RFC822_MEMBER),
            filter_members=many(s.FILTER_MEMBER),
            dn_senders=many(s.DN_SENDER),
            rfc822_senders=many(s.RFC822_SENDER),
            filter_senders=many(s.FILTER_SENDER),
            members_only=one(s.MEMBERS_ONLY),
            sender_confirm=one(s.SENDER_CONFIRM),
            confirm_text=one(s.CONFIRM_TEXT),
            dn_moderators=many(s.DN_MODERATOR),
            rfc822_moderators=many(s.RFC822_MODERATOR),
            moderator_text=one(s.MODERATOR_TEXT),
            bounce_admins=many(s.BOUNCE_ADMIN),
        )

    @property
    def has_sender_lists(self) -> bool:
        """True when any sender attribute exists (membersonly then checks senders, not members)."""
        return bool(self.dn_senders or self.rfc822_senders or self.filter_senders)

    @property
    def moderated(self) -> bool:
        """True when the group has moderators."""
        return bool(self.dn_moderators or self.rfc822_moderators)

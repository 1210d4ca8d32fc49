"""Expand a qmailGroup's member, sender and moderator attributes into mail addresses.

Three forms name people: ``rfc822…`` values are addresses, ``dn…`` values are entries whose ``mail``
is taken, ``filter…`` values are searched under the base and every match's ``mail`` is taken.  A DN
that does not exist, or an entry without ``mail``, is skipped (stale references must not stop a
list); a directory that cannot be asked defers the whole message.  **Decision:** addresses are
de-duplicated case-insensitively, keeping the first spelling, so nobody gets two copies.
"""

from __future__ import annotations

from collections.abc import Iterable

from qldap.directory import schema
from qldap.directory.base import Ambiguous, Found, NotFound, Scope, Trash, Unavailable
from qldap.directory.entry import Entry
from qldap.directory.errors import DirectoryUnavailable, NoSuchObject
from qldap.directory.lookup import Directory
from qldap.directory.user import QmailGroup
from qldap.errors import TemporaryFailure

_MAIL_ONLY = (schema.MAIL,)


def dedupe(addresses: Iterable[str]) -> tuple[str, ...]:
    """*addresses* without empty values and case-insensitive repeats, first spelling kept, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for a in addresses:
        key = a.lower()
        if a and key not in seen:
            seen.add(key)
            out.append(a)
    return tuple(out)


def _first_mail(entry: Entry) -> str | None:
    mails = entry.values(schema.MAIL)
    return mails[0] if mails else None


def _dn_mails(directory: Directory, dns: tuple[str, ...], what: str) -> list[str]:
    out: list[str] = []
    for dn in dns:
        found = directory.find_entry(dn, _MAIL_ONLY)
        if isinstance(found, Unavailable):
            raise TemporaryFailure(f"expand group attr: {what}: {found.error.text}")
        if isinstance(found, Found):
            mail = _first_mail(found.entry)
            if mail is not None:
                out.append(mail)
    return out


def _filter_mails(directory: Directory, filters: tuple[str, ...], what: str) -> list[str]:
    out: list[str] = []
    for f in filters:
        try:
            entries = directory.search_filter(f, _MAIL_ONLY)
        except DirectoryUnavailable as exc:
            raise TemporaryFailure(f"expand group attr: {what}: {exc.text}") from None
        out.extend(m for m in (_first_mail(e) for e in entries) if m is not None)
    return out


def expand_members(directory: Directory, group: QmailGroup) -> tuple[str, ...]:
    """Every member address: rfc822member, then dnmember, then filtermember matches.

    Raises:
        TemporaryFailure: the directory could not be asked, or a filter is invalid.
    """
    found = list(group.rfc822_members)
    found += _dn_mails(directory, group.dn_members, schema.DN_MEMBER)
    found += _filter_mails(directory, group.filter_members, schema.FILTER_MEMBER)
    return dedupe(found)


def expand_moderators(directory: Directory, group: QmailGroup) -> tuple[str, ...]:
    """Every moderator address: rfc822moderator, then the ``mail`` of each dnmoderator.

    Raises:
        TemporaryFailure: the directory could not be asked.
    """
    found = list(group.rfc822_moderators)
    found += _dn_mails(directory, group.dn_moderators, schema.DN_MODERATOR)
    return dedupe(found)


def _dn_key(dn: str) -> str:
    """A DN folded for comparison: lower case, no blanks around the RDN separators."""
    return ",".join(part.strip() for part in dn.lower().split(","))


def may_post(directory: Directory, group: QmailGroup, sender: str) -> bool:
    """membersonly: is *sender* on the list (the sender lists if any exist, else the member lists)?

    Accepted when SENDER equals a listed address (case-insensitive), or the entry found for SENDER
    by the recipient lookup is a listed DN or matches a listed filter (base search at its DN).

    Raises:
        TemporaryFailure: ``sender … verification failed: …`` when the directory could not be asked
            or SENDER's lookup is ambiguous.
    """
    if group.has_sender_lists:
        addresses, dns, filters = group.rfc822_senders, group.dn_senders, group.filter_senders
    else:
        addresses, dns, filters = group.rfc822_members, group.dn_members, group.filter_members
    key = sender.lower()
    if any(a.lower() == key for a in addresses):
        return True
    if "@" not in sender:
        return False
    found = directory.find_recipient(sender)
    if isinstance(found, (NotFound, Trash)):
        return False
    if isinstance(found, Unavailable):
        raise TemporaryFailure(f"sender {sender} verification failed: {found.error.text}")
    if isinstance(found, Ambiguous):
        raise TemporaryFailure(f"sender {sender} verification failed: too many objects")
    dn = found.entry.dn
    if _dn_key(dn) in {_dn_key(d) for d in dns}:
        return True
    for f in filters:
        try:
            if directory.search_filter(f, _MAIL_ONLY, base=dn, scope=Scope.BASE):
                return True
        except NoSuchObject:
            continue
        except DirectoryUnavailable as exc:
            raise TemporaryFailure(f"sender {sender} verification failed: {exc.text}") from None
    return False


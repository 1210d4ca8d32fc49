"""Search filters and the recipient candidate order: RFC 4515 escaping, mail/uid filters, catch-alls.

Pure functions only, so the exact strings of qmail-local(8), LOOKUP, auth_pop(8) and qmail-smtpd(8), SMTP AUTH
and ADDRESS VERIFICATION are tested without a server.  Why every recipient byte is escaped here and nowhere
else: the address comes from the SMTP client, and an unescaped ``*`` or ``)`` would let it match (or
enumerate) other accounts; the ``-catchall``/``catchall`` literal and ``ldapobjectclass`` (trusted, may be
compound) are inserted verbatim.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from qldap.address import Address
from qldap.directory import rfc4515, schema
from qldap.directory.errors import AddressWithoutHost, InvalidFilter

_SPECIAL = {"*": "\\2a", "(": "\\28", ")": "\\29", "\\": "\\5c", "\0": "\\00"}
_NEEDS_WORK = frozenset(_SPECIAL)


def escape(value: str) -> str:
    """RFC 4515 escape of an assertion value: ``* ( ) \\ NUL`` as ``\\2a \\28 \\29 \\5c \\00``.

    Every other character is kept; a byte that arrived undecodable (a ``surrogateescape`` code point)
    is written as its ``\\HH`` escape so the server compares exactly that byte.
    """
    if _NEEDS_WORK.isdisjoint(value) and value.isascii():
        return value
    out = []
    for ch in value:
        special = _SPECIAL.get(ch)
        if special is not None:
            out.append(special)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def with_objectclass(inner: str, objectclass: str) -> str:
    """``(&(objectClass=C)INNER)`` when *objectclass* is non-empty, else *inner* unchanged."""
    if not objectclass:
        return inner
    return f"(&({schema.OBJECT_CLASS}={objectclass}){inner})"


def mail_filter_escaped(escaped_address: str, objectclass: str = "") -> str:
    """The recipient filter for an already escaped address (candidates build it piecewise)."""
    inner = f"(|({schema.MAIL}={escaped_address})({schema.MAIL_ALTERNATE}={escaped_address}))"
    return with_objectclass(inner, objectclass)


def mail_filter(address: str, objectclass: str = "") -> str:
    """``(|(mail=A)(mailAlternateAddress=A))`` with A escaped, AND-ed with the objectclass if set."""
    return mail_filter_escaped(escape(address), objectclass)


def uid_filter(login: str, objectclass: str = "") -> str:
    """``(uid=LOGIN)`` with LOGIN escaped, AND-ed with the objectclass if set (auth lookups)."""
    return with_objectclass(f"({schema.UID}={escape(login)})", objectclass)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One address tried for a recipient, with the dash and extension a match on it yields (qmail-local(8),
    LOOKUP).

    ``address`` is the plain (unescaped) address searched; ``escaped`` the same with the recipient's
    bytes escaped and the catch-all literal kept, ready for :func:`mail_filter_escaped`.
    """

    address: str
    dash: str
    ext: str
    escaped: str

    def filter(self, objectclass: str = "") -> str:
        """The search filter of this candidate: the text of :func:`mail_filter_escaped`, carrying the
        tree that text parses to (:class:`~qldap.directory.rfc4515.ParsedFilter`), built from the
        escaped value directly so no backend parses it again.

        An ``ldapobjectclass`` that does not parse on its own is left to the backend as plain text,
        which then refuses it exactly as before (InvalidFilter).
        """
        text = mail_filter_escaped(self.escaped, objectclass)
        value = rfc4515.unescape_value(self.escaped)
        inner = rfc4515.Or((
            rfc4515.Compare(_MAIL_KEY, "=", value, schema.MAIL),
            rfc4515.Compare(_ALTERNATE_KEY, "=", value, schema.MAIL_ALTERNATE),
        ))  # fmt: skip
        if not objectclass:
            return rfc4515.ParsedFilter(text, inner)
        items = _objectclass_items(objectclass)
        if items is None:
            return text
        return rfc4515.ParsedFilter(text, rfc4515.And((*items, inner)))


_MAIL_KEY = schema.MAIL.lower()
_ALTERNATE_KEY = schema.MAIL_ALTERNATE.lower()


@functools.lru_cache(maxsize=64)
def _objectclass_items(objectclass: str) -> tuple[rfc4515.Node, ...] | None:
    """The filters ``(&(objectClass=OC)…)`` starts with, as the parser reads them; None when
    ``(&(objectClass=OC))`` is no filter (then the whole text is no filter either).

    Why this equals parsing the whole text: the parser reads left to right, and after
    ``(&(objectClass=OC)`` both texts continue with a complete filter and ``)``, or with ``)`` alone.
    """
    try:
        node = rfc4515.parse(f"(&({schema.OBJECT_CLASS}={objectclass}))")
    except InvalidFilter:
        return None
    assert isinstance(node, rfc4515.And)
    return node.items


def split_address(address: str) -> tuple[str, str]:
    """Split at the **last** ``@`` into (local, domain).

    Raises:
        AddressWithoutHost: the address has no ``@``.
    """
    addr = Address.parse(address)
    if not addr.has_at:
        raise AddressWithoutHost(address)
    return addr.local, addr.domain


def real_domain(domain: str, aliasdomains: Mapping[str, str]) -> str:
    """The domain searched for *domain*: its ``aliasdomains`` target (keys lower-case) or itself."""
    if not aliasdomains:
        return domain
    mapped = aliasdomains.get(domain.lower())
    return mapped if mapped else domain


def candidates(local: str, domain: str, *, dash_ext: bool = True) -> tuple[Candidate, ...]:
    """The addresses searched for ``local@domain`` in order (qmail-local(8), LOOKUP).

    Full address; then, with dash extensions, the prefix before the j-th ``-`` plus ``-catchall``
    for j = min(dashes, 4) … 1 (empty prefixes skipped); finally ``catchall@domain``.
    """
    edomain = escape(domain)
    out = [Candidate(f"{local}@{domain}", "", "", f"{escape(local)}@{edomain}")]
    if dash_ext:
        positions = [i for i, ch in enumerate(local) if ch == schema.BREAK]
        for j in range(min(len(positions), schema.DASH_EXT_LEVELS), 0, -1):
            cut = positions[j - 1]
            prefix = local[:cut]
            if not prefix:
                continue
            tail = f"{schema.BREAK}{schema.CATCHALL}@"
            escaped = f"{escape(prefix)}{tail}{edomain}"
            out.append(Candidate(f"{prefix}{tail}{domain}", schema.BREAK, local[cut + 1 :], escaped))
    out.append(
        Candidate(f"{schema.CATCHALL}@{domain}", schema.BREAK, local, f"{schema.CATCHALL}@{edomain}")
    )
    return tuple(out)

"""Evaluate a parsed RFC 4515 filter against an Entry with slapd's matching rules (embedded backend).

Why: the embedded directory must answer exactly like slapd for the filters qldap sends — mail-ish
attributes and objectClass compare case-insensitively with insignificant spaces folded, integers
numerically, DNs after normalisation, mailMessageStore/deliveryProgramPath/userPassword exactly.  The
tree comes from :mod:`qldap.directory.rfc4515`, the parser the wire client encodes from as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from qldap.directory.entry import Entry
from qldap.directory.rfc4515 import And, Compare, Node, Not, Or, Present, Substrings

_EXACT = frozenset({"mailmessagestore", "deliveryprogrampath", "userpassword"})
_INTEGER = frozenset(
    {"qmailuid", "qmailgid", "mailquotasize", "mailquotacount", "mailsizemax", "uidnumber", "gidnumber",
     "qlaqmailuid", "qlaqmailgid", "qlamailquotasize", "qlamailquotacount", "qlamailsizemax"}
)  # fmt: skip
_ORDERED = frozenset({"uidnumber", "gidnumber"})  # the only ones with an ORDERING rule in our schemas
_DN = frozenset({"dnmember", "dnsender", "dnmoderator", "qladnmanager", "member", "uniquemember", "seealso"})
_SPACES = re.compile(r"\s+")


def normalize_dn(dn: str) -> str:
    """A DN folded for comparison: lower case, blanks around ``,`` ``=`` ``+`` removed."""
    parts = []
    for rdn in re.split(r"(?<!\\),", dn):
        avas = []
        for ava in re.split(r"(?<!\\)\+", rdn):
            name, _, value = ava.partition("=")
            avas.append(f"{name.strip().lower()}={_SPACES.sub(' ', value.strip()).lower()}")
        parts.append("+".join(avas))
    return ",".join(parts) if dn.strip() else ""


def _fold(value: str) -> str:
    return _SPACES.sub(" ", value.strip()).lower()


_INTEGER_SYNTAX = re.compile(r"-?[1-9][0-9]*|0")


def _as_int(value: str) -> int | None:
    """INTEGER syntax (RFC 4517 section 3.3.16): no leading zeros or blanks; anything else is Undefined."""
    return int(value) if _INTEGER_SYNTAX.fullmatch(value) else None


def _normalizer(attr: str) -> Callable[[str], object]:
    if attr in _EXACT:
        return lambda v: v
    if attr in _INTEGER:
        return _as_int
    if attr in _DN:
        return normalize_dn
    return _fold


def _compare(entry: Entry, node: Compare) -> bool:
    values = entry.values(node.attr)
    if not values:
        return False
    norm = _normalizer(node.attr)
    want = norm(node.value)
    if want is None:
        return False
    if node.op in ("=", "~="):
        return any(norm(v) == want for v in values)
    if node.attr not in _ORDERED:
        return False  # no ordering rule: slapd evaluates the assertion as Undefined
    ge = node.op == ">="
    for v in values:
        have = norm(v)
        if isinstance(have, int) and isinstance(want, int) and ((have >= want) if ge else (have <= want)):
            return True
        if isinstance(have, str) and isinstance(want, str) and ((have >= want) if ge else (have <= want)):
            return True
    return False


def _substrings(entry: Entry, node: Substrings) -> bool:
    exact = node.attr == "userpassword"
    fold: Callable[[str], str] = (lambda v: v) if exact else _fold
    initial = fold(node.initial) if node.initial else ""
    final = fold(node.final) if node.final else ""
    middle = [fold(m) for m in node.middle]
    for raw in entry.values(node.attr):
        value = fold(raw)
        if not value.startswith(initial):
            continue
        pos = len(initial)
        ok = True
        for m in middle:
            found = value.find(m, pos)
            if found < 0:
                ok = False
                break
            pos = found + len(m)
        if ok and (not final or (value.endswith(final) and len(value) - len(final) >= pos)):
            return True
    return False


def matches(node: Node, entry: Entry) -> bool:
    """True when *entry* satisfies *node* (absent attributes make a comparison false)."""
    if isinstance(node, Compare):
        return _compare(entry, node)
    if isinstance(node, And):
        return all(matches(n, entry) for n in node.items)
    if isinstance(node, Or):
        return any(matches(n, entry) for n in node.items)
    if isinstance(node, Not):
        return not matches(node.item, entry)
    if isinstance(node, Present):
        return entry.has(node.attr)
    return _substrings(entry, node)

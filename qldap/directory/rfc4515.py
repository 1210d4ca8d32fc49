"""RFC 4515 search filters for the embedded directory: parse the string, evaluate it against an Entry.

Why our own: the embedded directory must answer exactly like slapd for the filters qldap sends
(``&``, ``|``, ``!``, equality, presence, substrings, ordering) including slapd's matching rules —
mail-ish attributes and objectClass compare case-insensitively with insignificant spaces folded,
integers numerically, DNs after normalisation, mailMessageStore/deliveryProgramPath/userPassword
exactly — without importing ldap3.  Extensible matches (``:=``) are refused as InvalidFilter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from qldap.directory.entry import Entry
from qldap.directory.errors import InvalidFilter

_EXACT = frozenset({"mailmessagestore", "deliveryprogrampath", "userpassword"})
_INTEGER = frozenset(
    {"qmailuid", "qmailgid", "mailquotasize", "mailquotacount", "mailsizemax", "uidnumber", "gidnumber",
     "qlaqmailuid", "qlaqmailgid", "qlamailquotasize", "qlamailquotacount", "qlamailsizemax"}
)  # fmt: skip
_ORDERED = frozenset({"uidnumber", "gidnumber"})  # the only ones with an ORDERING rule in our schemas
_DN = frozenset({"dnmember", "dnsender", "dnmoderator", "qladnmanager", "member", "uniquemember", "seealso"})
_SPACES = re.compile(r"\s+")
_ATTR = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?:;[A-Za-z0-9-]+)*|[0-9]+(?:\.[0-9]+)+")


# -- the filter tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class Compare:
    """``attr=v``, ``attr>=v``, ``attr<=v``, ``attr~=v`` (approx. treated as equality)."""

    attr: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class Present:
    attr: str


@dataclass(frozen=True, slots=True)
class Substrings:
    attr: str
    initial: str | None
    middle: tuple[str, ...]
    final: str | None


Node = And | Or | Not | Compare | Present | Substrings


# -- parsing ---------------------------------------------------------------------------------------


def _unescape(raw: str, text: str) -> str:
    if "\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                raise InvalidFilter(f"bad escape in {text!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> InvalidFilter:
        return InvalidFilter(f"{why} at offset {self.pos} in {self.text!r}")

    def filter(self) -> Node:
        if self.pos >= len(self.text) or self.text[self.pos] != "(":
            raise self.fail("expected '('")
        self.pos += 1
        ch = self.text[self.pos : self.pos + 1]
        node: Node
        if ch in ("&", "|"):
            self.pos += 1
            items = []
            while self.text[self.pos : self.pos + 1] == "(":
                items.append(self.filter())
            node = And(tuple(items)) if ch == "&" else Or(tuple(items))
        elif ch == "!":
            self.pos += 1
            node = Not(self.filter())
        else:
            node = self.item()
        if self.text[self.pos : self.pos + 1] != ")":
            raise self.fail("expected ')'")
        self.pos += 1
        return node

    def item(self) -> Node:
        m = _ATTR.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected an attribute description")
        attr = m.group(0).split(";", 1)[0].lower()
        self.pos = m.end()
        rest = self.text[self.pos : self.pos + 2]
        if rest[:1] == ":":
            raise self.fail("extensible match is not supported")
        if rest in (">=", "<=", "~="):
            op, self.pos = rest, self.pos + 2
        elif rest[:1] == "=":
            op, self.pos = "=", self.pos + 1
        else:
            raise self.fail("expected a filter type")
        end = self.pos
        while end < len(self.text) and self.text[end] not in "()":
            end += 1
        raw = self.text[self.pos : end]
        self.pos = end
        if op != "=" or "*" not in raw:
            return Compare(attr, op, _unescape(raw, self.text))
        if raw == "*":
            return Present(attr)
        parts = [_unescape(p, self.text) for p in raw.split("*")]
        return Substrings(attr, parts[0] or None, tuple(p for p in parts[1:-1] if p), parts[-1] or None)


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The tree of filter *text* (cached: the same filters recur).

    Raises:
        InvalidFilter: *text* is not a complete RFC 4515 filter.
    """
    parser = _Parser(text.strip())
    node = parser.filter()
    if parser.pos != len(parser.text):
        raise parser.fail("trailing text")
    return node


# -- matching rules -----------------------------------------------------------------------------------


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
    """INTEGER syntax (RFC 4517 §3.3.16): no leading zeros or blanks; anything else is Undefined."""
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

"""RFC 4515 search filters: the one parser, text in, a frozen filter tree out.

Why one parser for both backends: the wire client encodes this tree to BER
(:func:`qldap.directory.ber.encode_filter`) and the embedded LDIF backend evaluates it
(:mod:`qldap.directory.match`), so both accept and refuse exactly the same texts and read the same
values out of them.  Supported: ``& | !``, ``= >= <= ~=``, presence and substrings, with ``\\XX``
escapes resolved to bytes (kept in ``str`` via surrogateescape so any octet survives the round trip).
Extensible matches (``:=``) are refused as InvalidFilter: qldap never sends them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from qldap.directory.errors import InvalidFilter

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
    """``attr=v``, ``attr>=v``, ``attr<=v``, ``attr~=v`` (the embedded backend treats ``~=`` as ``=``).

    ``attr`` is the attribute type folded to lower case without options (what an Entry is keyed by);
    ``desc`` is the attribute description as written, which the wire client sends unchanged.
    """

    attr: str
    op: str
    value: str
    desc: str


@dataclass(frozen=True, slots=True)
class Present:
    attr: str
    desc: str


@dataclass(frozen=True, slots=True)
class Substrings:
    attr: str
    initial: str | None
    middle: tuple[str, ...]
    final: str | None
    desc: str


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
        desc = m.group(0)
        attr = desc.split(";", 1)[0].lower()
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
            return Compare(attr, op, _unescape(raw, self.text), desc)
        if raw == "*":
            return Present(attr, desc)
        parts = [_unescape(p, self.text) for p in raw.split("*")]
        middle = tuple(p for p in parts[1:-1] if p)
        return Substrings(attr, parts[0] or None, middle, parts[-1] or None, desc)


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


def unescape_value(escaped: str) -> str:
    """An assertion value as written in a filter (``\\XX`` escapes) back to the value the parser reads.

    Raises:
        InvalidFilter: a malformed escape.
    """
    return _unescape(escaped, escaped)


class ParsedFilter(str):
    """Filter text that carries its own tree: ``str(f)`` is the text, ``f.node`` equals ``parse(f)``.

    Why: the recipient filters are built from escaped values by :mod:`qldap.directory.filters`, and
    parsing that text again for every lookup (to encode it as BER, or to evaluate it in the embedded
    backend) cost more than building it.  The builder makes both at once; every consumer that only
    reads text (logs, tests, a wrapper searcher) still sees the same string, and the backends take the
    tree through :func:`tree_of`.
    """

    node: Node

    def __new__(cls, text: str, node: Node) -> ParsedFilter:
        self = super().__new__(cls, text)
        self.node = node
        return self


def tree_of(filter: str) -> Node:
    """The tree of *filter*: the one a :class:`ParsedFilter` carries, else :func:`parse`'s.

    Raises:
        InvalidFilter: *filter* is plain text that is not a complete RFC 4515 filter.
    """
    if isinstance(filter, ParsedFilter):
        return filter.node
    return parse(filter)


"""The embedded directory: ``ROOT/directory.ldif`` answering searches in-process, like slapd would.

Why it exists: a small site (and ``qldap demo``) should run without an LDAP server, yet every service
must go through the very same Directory code; this Searcher reads the LDIF (comments, folded lines,
``attr:: base64``), re-reads it when the file changes (a stat per search), and evaluates filters
with :mod:`qldap.directory.match`; no network code is involved.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from qldap.control.files import Signature, path_signature
from qldap.directory.base import Scope
from qldap.directory.entry import Entry
from qldap.directory.errors import LookupFailed, NoSuchObject
from qldap.directory.match import matches, normalize_dn
from qldap.directory.rfc4515 import tree_of
from qldap.errors import ConfigError


class LdifError(ValueError):
    """The LDIF text is malformed; ``line`` is the 1-based line of the problem."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}")
        self.line = line


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Unfold continuation lines; keep blank lines (record separators); drop comments."""
    out: list[tuple[int, str]] = []
    in_comment = False
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith(" "):
            if in_comment:
                continue
            if not out or not out[-1][1]:
                raise LdifError(number, "continuation line without a line to continue")
            out[-1] = (out[-1][0], out[-1][1] + line[1:])
            continue
        in_comment = line.startswith("#")
        if not in_comment:
            out.append((number, line))
    return out


def _value(number: int, rest: str) -> str:
    if rest.startswith(":"):
        try:
            data = base64.b64decode(rest[1:].strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LdifError(number, "bad base64 value")
        return data.decode("utf-8", "surrogateescape")
    if rest.startswith("<"):
        raise LdifError(number, "URL values are not supported")
    return rest.lstrip(" ")


def parse_ldif(text: str) -> list[Entry]:
    """The entries of LDIF *text*, in file order (``version:`` and ``changetype: add`` accepted).

    Raises:
        LdifError: a malformed line, a record without ``dn:``, or a change other than add.
    """
    entries: list[Entry] = []
    record: list[tuple[int, str]] = []
    for number, line in [*_logical_lines(text), (0, "")]:
        if line:
            record.append((number, line))
            continue
        if not record:
            continue
        pairs: list[tuple[str, list[str]]] = []
        dn: str | None = None
        for num, item in record:
            name, sep, rest = item.partition(":")
            if not sep or not name:
                raise LdifError(num, f"expected 'attribute: value', got {item!r}")
            value = _value(num, rest)
            key = name.split(";", 1)[0].strip()
            lower = key.lower()
            if dn is None:
                if lower == "version" and not entries:
                    continue
                if lower != "dn":
                    raise LdifError(num, "record does not start with dn:")
                dn = value
            elif lower == "changetype":
                if value.strip().lower() != "add":
                    raise LdifError(num, f"changetype {value!r} is not supported")
            else:
                pairs.append((key, [value]))
        if dn is not None:
            entries.append(Entry.build(dn, pairs))
        record = []
    return entries


@dataclass(frozen=True, slots=True)
class _Snapshot:
    signature: Signature
    entries: tuple[tuple[str, Entry], ...]  # (normalized dn, entry) in file order
    by_dn: dict[str, Entry]


class LdifSearcher:
    """A Searcher over an LDIF file, reloaded whenever the file's signature changes; thread-safe."""

    def __init__(self, path: str | os.PathLike[str], basedn: str = "") -> None:
        self.path = Path(path)
        self.basedn = basedn
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None

    def _snapshot(self) -> _Snapshot:
        try:
            sig = path_signature(self.path)
        except ConfigError as exc:
            raise LookupFailed(str(exc))
        snap = self._snap
        if snap is not None and snap.signature == sig:
            return snap
        with self._lock:
            snap = self._snap
            if snap is not None and snap.signature == sig:
                return snap
            try:
                text = self.path.read_bytes().decode("utf-8", "surrogateescape")
                entries = parse_ldif(text)
            except OSError as exc:
                raise LookupFailed(f"unable to read {self.path}: {exc.strerror}")
            except LdifError as exc:
                raise LookupFailed(f"{self.path}: {exc}")
            pairs = tuple((normalize_dn(e.dn), e) for e in entries)
            snap = _Snapshot(sig, pairs, dict(pairs))
            self._snap = snap
            return snap

    def search(
        self, filter: str, attributes: Sequence[str], *, base: str | None = None, scope: Scope = Scope.SUBTREE
    ) -> list[Entry]:
        """Entries under *base* (default: the configured base DN) matching *filter*.

        An empty base searches the whole file.

        Raises:
            InvalidFilter: *filter* does not parse.
            NoSuchObject: the base DN is not in the file.
            LookupFailed: the file cannot be read or parsed.
        """
        node = tree_of(filter)
        snap = self._snapshot()
        nbase = normalize_dn(self.basedn if base is None else base)
        if nbase and nbase not in snap.by_dn:
            raise NoSuchObject(f"no such object: {base if base is not None else self.basedn}")
        if scope is Scope.BASE:
            pool: Sequence[tuple[str, Entry]] = ((nbase, snap.by_dn[nbase]),) if nbase else ()
        elif nbase:
            suffix = "," + nbase
            pool = [p for p in snap.entries if p[0] == nbase or p[0].endswith(suffix)]
        else:
            pool = snap.entries
        return [_project(e, attributes) for _, e in pool if matches(node, e)]

    def check_bind(self, dn: str, password: str) -> bool:
        """True when the entry at *dn* has a userPassword matching *password* (as slapd's bind).

        Raises:
            LookupFailed: the file cannot be read or parsed.
        """
        if not password:
            return False
        entry = self._snapshot().by_dn.get(normalize_dn(dn))
        if entry is None:
            return False
        from qldap.passwords.schemes import MalformedHash, check_password

        for stored in entry.values("userPassword"):
            try:
                if check_password(stored, password, cleartext=True):
                    return True
            except MalformedHash:
                continue
        return False

    def close(self) -> None:
        """Nothing to release; the next search re-checks the file."""


def _project(entry: Entry, attributes: Sequence[str]) -> Entry:
    if not attributes or "*" in attributes:
        return entry
    wanted = {a.lower() for a in attributes}
    return Entry(entry.dn, MappingProxyType({k: v for k, v in entry.attributes.items() if k in wanted}))

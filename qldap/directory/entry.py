"""One directory entry as both backends return it: a DN and case-insensitive, tuple-valued attributes.

Why a record of its own: the wire decoder sees attributes in the server's spelling, and
the LDIF parser produces lists; both are converted once, at their edge, into this immutable shape so
the rest of qldap never sees raw backend structures (no ``entry["mailHost"][0]`` outside this package).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qldap.directory.errors import NotUnique


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """A DN plus attributes; attribute names are matched case-insensitively, values kept as given."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(repr=False)

    @classmethod
    def build(cls, dn: str, pairs: Iterable[tuple[str, Iterable[str]]]) -> Entry:
        """An entry from (name, values) pairs; names are folded, values of repeated names appended."""
        attrs: dict[str, tuple[str, ...]] = {}
        for name, values in pairs:
            key = name.lower()
            vals = tuple(values)
            if not vals:
                continue
            attrs[key] = attrs[key] + vals if key in attrs else vals
        return cls(dn, MappingProxyType(attrs))

    def values(self, name: str) -> tuple[str, ...]:
        """All values of *name* (empty tuple when absent)."""
        return self.attributes.get(name.lower(), ())

    def has(self, name: str) -> bool:
        """True when *name* has at least one value."""
        return name.lower() in self.attributes

    def single(self, name: str) -> str | None:
        """The one value of a single-valued attribute, None when absent.

        Raises:
            NotUnique: the attribute holds several values (qmail-local(8), QMAILUSER ATTRIBUTES).
        """
        vals = self.attributes.get(name.lower())
        if vals is None:
            return None
        if len(vals) > 1:
            raise NotUnique(f"{name} has {len(vals)} values in {self.dn}")
        return vals[0]

    def has_value(self, name: str, value: str) -> bool:
        """True when *name* holds *value*, compared case-insensitively (objectClass and the like)."""
        want = value.lower()
        return any(v.lower() == want for v in self.values(name))

    def names(self) -> tuple[str, ...]:
        """The (lower-cased) names of the attributes present."""
        return tuple(self.attributes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.dn == other.dn and dict(self.attributes) == dict(other.attributes)

    def __hash__(self) -> int:
        return hash(self.dn)

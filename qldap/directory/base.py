"""The one seam to a directory backend (Searcher) and the typed results of every lookup.

Why a result union instead of ``QmailUser | None``: "no such address" bounces while "LDAP could not be
asked" must defer; the two may never share a value.  ``Found`` keeps the raw Entry and
builds the record on demand, so a record-level failure (several values in a single-valued attribute)
is raised where the consumer handles permanent failures, in its own order of checks.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qldap.directory.entry import Entry
from qldap.directory.errors import DirectoryUnavailable, NotUnique
from qldap.directory.filters import Candidate
from qldap.directory.user import QmailGroup, QmailUser


class Scope(enum.Enum):
    """Search scope: the base entry only, or the whole subtree under it."""

    BASE = "base"
    SUBTREE = "subtree"


class Searcher(Protocol):
    """A directory backend: the wire LDAP client against slapd, or the embedded LDIF file."""

    def search(
        self, filter: str, attributes: Sequence[str], *, base: str | None = None, scope: Scope = Scope.SUBTREE
    ) -> list[Entry]:
        """Entries under *base* (default: ldapbasedn) matching *filter*, with only *attributes*.

        Raises:
            DirectoryUnavailable: the search could not be done (see qldap.directory.errors).
        """
        ...

    def check_bind(self, dn: str, password: str) -> bool:
        """True when a simple bind as *dn* with *password* succeeds (``ldaprebind``); empty → False.

        Raises:
            DirectoryUnavailable: the server could not be asked.
        """
        ...

    def close(self) -> None:
        """Release connections; the searcher may be used again afterwards (it reconnects)."""
        ...


@dataclass(frozen=True, slots=True)
class Found:
    """Exactly one entry matched; ``candidate`` is the address (or login) that matched."""

    entry: Entry
    candidate: Candidate

    def user(self) -> QmailUser:
        """The qmailUser record of the entry.

        Raises:
            NotUnique: a single-valued attribute has several values.
        """
        return QmailUser.from_entry(self.entry)

    def group(self) -> QmailGroup:
        """The qmailGroup record of the entry.

        Raises:
            NotUnique: a single-valued attribute has several values.
        """
        return QmailGroup.from_entry(self.entry)


@dataclass(frozen=True, slots=True)
class NotFound:
    """Nothing matched; ``searched`` lists every address (or login) tried, in order."""

    searched: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """Several entries matched one search; later candidates were not tried."""

    count: int
    searched: str

    @property
    def failure(self) -> NotUnique:
        """The permanent failure local delivery reports for it."""
        return NotUnique(f"{self.count} entries for {self.searched}")


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The directory could not be asked; ``error`` carries the text to defer with."""

    error: DirectoryUnavailable


@dataclass(frozen=True, slots=True)
class Trash:
    """The recipient's local part is empty: accept and discard, no lookup (qmail-local(8), LOOKUP)."""


LookupResult = Found | NotFound | Ambiguous | Unavailable | Trash

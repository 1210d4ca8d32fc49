"""The metrics hook of the directory layer: one SearchEvent per backend operation, to an Observer.

Why a wrapper around the Searcher and not counters inside each backend: the wire client and the
embedded LDIF backend then report the same events with the same labels, the backends stay free of
metrics code, and a daemon without metrics pays nothing (no wrapper is installed).  With one, the cost
is two ``time.monotonic()`` calls and one call of the observer per search; the observer must be cheap
and must not raise (a Prometheus counter/histogram update is).  The outcome labels are a closed set
(:class:`Outcome`) so they can be metric label values; see docs/operations.md.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qldap.directory.base import Scope, Searcher
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    BadCredentials,
    InvalidFilter,
    NoSuchObject,
    SearchTimeout,
    ServerUnreachable,
)


class Outcome(enum.Enum):
    """How one backend operation ended."""

    OK = "ok"  # answered (any number of entries; for a bind: the password was checked)
    NO_SUCH_OBJECT = "no_such_object"
    UNREACHABLE = "unreachable"  # no server could be reached, TLS failed, or the bind was refused
    TIMEOUT = "timeout"
    INVALID_FILTER = "invalid_filter"
    ERROR = "error"  # any other failure (protocol error, malformed answer, other result code)


class Operation(enum.Enum):
    """The backend operation observed."""

    SEARCH = "search"
    BIND = "bind"  # check_bind: a user's password checked by binding (ldaprebind)


@dataclass(frozen=True, slots=True)
class SearchEvent:
    """One finished backend operation: what, how it ended, and how long it took (seconds)."""

    operation: Operation
    outcome: Outcome
    seconds: float
    entries: int = 0


Observer = Callable[[SearchEvent], None]
"""Called once per operation, in the thread that ran it; must be cheap and must not raise."""


def outcome_of(exc: BaseException) -> Outcome:
    """The Outcome label of a directory exception."""
    if isinstance(exc, SearchTimeout):
        return Outcome.TIMEOUT
    if isinstance(exc, ServerUnreachable | BadCredentials):
        return Outcome.UNREACHABLE
    if isinstance(exc, NoSuchObject):
        return Outcome.NO_SUCH_OBJECT
    if isinstance(exc, InvalidFilter):
        return Outcome.INVALID_FILTER
    return Outcome.ERROR


class ObservedSearcher:
    """A Searcher that reports every search and check_bind of *inner* to *observer*."""

    def __init__(self, inner: Searcher, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer

    def search(
        self, filter: str, attributes: Sequence[str], *, base: str | None = None, scope: Scope = Scope.SUBTREE
    ) -> list[Entry]:
        """The inner search, observed.

        Raises:
            DirectoryUnavailable: as the inner searcher.
        """
        start = time.monotonic()
        try:
            entries = self.inner.search(filter, attributes, base=base, scope=scope)
        except Exception as exc:
            self.observer(SearchEvent(Operation.SEARCH, outcome_of(exc), time.monotonic() - start))
            raise
        self.observer(SearchEvent(Operation.SEARCH, Outcome.OK, time.monotonic() - start, len(entries)))
        return entries

    def check_bind(self, dn: str, password: str) -> bool:
        """The inner check_bind, observed.

        Raises:
            DirectoryUnavailable: as the inner searcher.
        """
        start = time.monotonic()
        try:
            ok = self.inner.check_bind(dn, password)
        except Exception as exc:
            self.observer(SearchEvent(Operation.BIND, outcome_of(exc), time.monotonic() - start))
            raise
        self.observer(SearchEvent(Operation.BIND, Outcome.OK, time.monotonic() - start))
        return ok

    def close(self) -> None:
        """Close the inner searcher."""
        self.inner.close()

"""Every group's cases and every decision they name, in the order they run."""

from __future__ import annotations

from . import local, programs, reply, smtpd, wire
from .core import Case, Decision


def all_cases() -> list[Case]:
    """All cases of all groups."""
    return [*smtpd.cases(), *programs.cases(), *local.cases(), *reply.cases(), *wire.cases()]


def all_decisions() -> list[Decision]:
    """Every distinct decision some case names."""
    seen: dict[str, Decision] = {}
    for case in all_cases():
        for d in case.decisions:
            seen.setdefault(d.id, d)
    return list(seen.values())

"""The ``pbsenv`` rules: which variables pbsadd carries, and how pbscheck sets them for the SMTP daemon.

A ``control/pbsenv`` line is ``NAME``, ``NAME=NEW`` or ``NAME=NEW=PREFIX``.  pbsadd sends one entry
``NAME=VALUE`` per line with the value of NAME in its environment (empty when unset).  pbscheck, on a
hit, sets ``RELAYCLIENT`` to the empty string and each entry ``NAME=VALUE`` as ``NEW=PREFIXVALUE``
when the first line starting with ``NAME=`` says so, else as ``NAME=VALUE``.  Example: the line
``USER=TCPREMOTEINFO=[pbs]`` turns the POP login ``USER=joe`` into ``TCPREMOTEINFO=[pbs]joe``.

**Decisions:** entries too large for their one-byte length or for the datagram are skipped (with the
names reported for a warning) instead of dropping every entry; an empty NEW keeps NAME; pbscheck sets
only names that some pbsenv line names — replies are unauthenticated UDP, and legitimate entries can
only carry such names since pbsadd builds them from the same file, so a forged reply cannot set
``LD_PRELOAD`` or similar; entries without ``=`` or with a NUL are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qldap.pbs.packets import MAX_ENTRY, Response

MAX_RULES = 255


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class EnvRule:
    """One pbsenv line: carry *name*; on arrival rename it to *rename* and prefix the value."""

    name: str
    rename: str | None = None  # None: the line had no "="
    prefix: str = ""


def parse_rules(lines: Sequence[str]) -> tuple[EnvRule, ...]:
    """Parse pbsenv lines (comments and blank lines already removed by the control reader)."""
    rules = []
    for line in lines:
        name, sep, rest = line.partition("=")
        if not sep:
            rules.append(EnvRule(name))
            continue
        new, _sep2, prefix = rest.partition("=")
        rules.append(EnvRule(name, new, prefix))
    return tuple(rules)


@dataclass(frozen=True, slots=True)
class AddEntries:
    """The entries pbsadd sends, and the names it had to leave out."""

    entries: tuple[bytes, ...]
    skipped: tuple[str, ...] = ()


def add_entries(rules: Sequence[EnvRule], environ: Mapping[str, str], budget: int) -> AddEntries:
    """``NAME=VALUE`` per rule, in order, within *budget* bytes (each entry costs 1 + its length).

    *budget* comes from :func:`qldap.pbs.packets.add_budget`.
    """
    entries: list[bytes] = []
    skipped: list[str] = []
    used = 0
    for rule in rules:
        entry = _b(rule.name) + b"=" + _b(environ.get(rule.name, ""))
        if len(entry) > MAX_ENTRY or used + 1 + len(entry) > budget:
            skipped.append(rule.name)
            continue
        entries.append(entry)
        used += 1 + len(entry)
    return AddEntries(tuple(entries), tuple(skipped))


def _target(rules: Sequence[EnvRule], name: str) -> tuple[str, str] | None:
    """(variable name, value prefix) for an arriving *name*, or None when no rule names it."""
    known = False
    for rule in rules:
        if rule.name != name:
            continue
        known = True
        if rule.rename is not None:
            return (rule.rename or name), rule.prefix
    return (name, "") if known else None


def check_environment(response: Response, rules: Sequence[EnvRule]) -> tuple[tuple[str, str], ...]:
    """The variables pbscheck sets, in order, for *response*; none when relaying is not granted."""
    if not response.may_relay:
        return ()
    out: list[tuple[str, str]] = [("RELAYCLIENT", "")]
    for entry in response.env:
        raw_name, sep, raw_value = entry.partition(b"=")
        if not sep or not raw_name or b"\0" in entry:
            continue
        target = _target(rules, _s(raw_name))
        if target is None:
            continue
        name, prefix = target
        out.append((name, prefix + _s(raw_value)))
    return tuple(out)

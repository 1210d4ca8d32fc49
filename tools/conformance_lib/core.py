"""Cases, decisions and the comparison: what "conforms" means for one input fed to both sides.

A case runs the C program and qldap's on the same input and reduces each side to an *observation*
(a text: exit status, replies, files …) after masking what legitimately differs between two runs
(pids, queue ids, timestamps).  Equal observations pass.  Unequal ones are ``decided`` only when a
decision named by the case, applied to both observations, makes them equal: a decision covers one
known, documented difference (docs/conformance.md) and nothing else, so a new difference in a
decided case still fails.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .world import World

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "conformance.md"


@dataclass(frozen=True)
class Decision:
    """A documented difference: *id* is a heading in docs/conformance.md; *erase* removes it from a text."""

    id: str
    title: str
    erase: Callable[[str], str]


@dataclass(frozen=True)
class Observed:
    """Both sides' observations of one case."""

    c: str
    q: str


@dataclass(frozen=True)
class Case:
    """One input for both sides; *run* returns both observations (already normalised).

    *parallel* cases touch nothing shared but the control files (their own capture directories, no
    message stores), so the runner may run several at once when they need the same *controls*.
    """

    group: str
    name: str
    run: Callable[[World], Observed]
    decisions: Sequence[Decision] = field(default_factory=tuple)
    parallel: bool = False
    controls: Mapping[str, str | None] | None = None
    needs_root: bool = False  # changes to the mailbox's uid, like qmail-lspawn

    def batch_key(self) -> tuple[tuple[str, str | None], ...] | None:
        """Cases with the same key may run together; None = alone."""
        if not self.parallel:
            return None
        return tuple(sorted((self.controls or {}).items(), key=lambda kv: kv[0]))


@dataclass(frozen=True)
class Outcome:
    """The verdict of a case: passed, decided (ids), failed (with a diff), or error (an exception)."""

    case: Case
    verdict: str
    detail: str = ""


def documented(decisions: Sequence[Decision]) -> list[str]:
    """Ids of *decisions* missing from docs/conformance.md (a decision must say its reason there)."""
    text = DOCS.read_text() if DOCS.exists() else ""
    return [d.id for d in decisions if f"`{d.id}`" not in text]


def judge(case: Case, world: World) -> Outcome:
    """Run *case* and compare."""
    try:
        seen = case.run(world)
    except Exception:
        return Outcome(case, "error", traceback.format_exc())
    if seen.c == seen.q:
        return Outcome(case, "passed")
    c, q = seen.c, seen.q
    for d in case.decisions:
        c, q = d.erase(c), d.erase(q)
    if case.decisions and c == q:
        return Outcome(case, "decided", ",".join(d.id for d in case.decisions))
    lines = difflib.unified_diff(seen.c.splitlines(), seen.q.splitlines(), "C", "qldap", lineterm="")
    diff = "\n".join(lines)
    return Outcome(case, "failed", diff)


# -- normalisers shared by groups --------------------------------------------------------------


def mask(text: str, *patterns: tuple[str, str]) -> str:
    """Apply (regex, replacement) pairs in order."""
    for pat, rep in patterns:
        text = re.sub(pat, rep, text)
    return text


def show(data: bytes) -> str:
    """Bytes as readable text: CR shown as ``\\r``, other control bytes escaped, lines kept."""
    out = []
    for line in data.split(b"\n"):
        s = line.decode("latin-1")
        s = "".join(ch if (" " <= ch < "\x7f" or ch == "\t") else f"\\x{ord(ch):02x}" for ch in s)
        out.append(s.replace("\\x0d", "\\r"))
    return "\n".join(out)

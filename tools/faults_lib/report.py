"""The results of a fault run: one record per scenario, the summary table, and the JSON file.

Why checks next to the tally: "0 lost" is necessary but not enough — the LDAP outage must also show
451s at RCPT and no bounce, the full disk 451s at DATA; each such expectation is a named
:class:`Check` so the table and the JSON say which one failed, and the exit status covers them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from faults_lib.account import Tally

Figure = int | float | str


@dataclass(frozen=True, slots=True)
class Check:
    """One expectation of a scenario and whether it held."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What one scenario did (*faults* injected, *figures* observed) and its accounting."""

    name: str
    status: str  # pass | fail | skipped
    reason: str = ""
    tally: Tally | None = None
    faults: int = 0
    seconds: float = 0.0
    figures: Mapping[str, Figure] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()

    @property
    def lost(self) -> int:
        """Messages lost (0 for a skipped scenario)."""
        return self.tally.lost if self.tally is not None else 0


def judge(name: str, tally: Tally, faults: int, seconds: float, figures: Mapping[str, Figure],
          checks: Sequence[Check]) -> ScenarioResult:  # fmt: skip
    """A result that fails when anything was lost or any check did not hold."""
    every = (Check("lost == 0", tally.lost == 0, f"lost {tally.lost}: {', '.join(tally.lost_seqs)}"), *checks)
    status = "pass" if all(c.ok for c in every) else "fail"
    return ScenarioResult(name, status, "", tally, faults, round(seconds, 1), dict(figures), tuple(every))


def failed(results: Sequence[ScenarioResult]) -> bool:
    """True when any scenario failed (lost mail or a broken expectation)."""
    return any(r.status == "fail" for r in results)


_COLUMNS = ("scenario", "accepted", "delivered", "bounced", "queued", "lost", "dups", "unacked", "faults",
            "seconds", "result")  # fmt: skip


def table(results: Sequence[ScenarioResult]) -> str:
    """The one summary table, plus a line per failed check."""
    rows = [list(_COLUMNS)]
    notes = []
    for r in results:
        t = r.tally
        nums = ([t.accepted, t.delivered, t.bounced, t.queued, t.lost, t.duplicates, t.unacked]
                if t is not None else ["-"] * 7)  # fmt: skip
        rows.append([r.name, *map(str, nums), str(r.faults), f"{r.seconds:g}", r.status.upper()])
        if r.reason:
            notes.append(f"{r.name}: {r.status}: {r.reason}")
        notes += [f"{r.name}: FAILED {c.name}: {c.detail}" for c in r.checks if not c.ok]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + notes) + "\n"


def to_json(
    results: Sequence[ScenarioResult], settings: Mapping[str, Figure], extra: Mapping[str, object]
) -> str:
    """The machine-readable report: settings, per-scenario results, totals."""
    scenarios = []
    for r in results:
        d = asdict(r)
        d["lost"] = r.lost
        scenarios.append(d)
    total_accepted = sum(r.tally.accepted for r in results if r.tally is not None)
    doc = {
        "tool": "tools/faults",
        "settings": dict(settings),
        "scenarios": scenarios,
        "totals": {
            "accepted": total_accepted,
            "lost": sum(r.lost for r in results),
            "faults": sum(r.faults for r in results),
            "failed": [r.name for r in results if r.status == "fail"],
        },
        **extra,
    }
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def write_json(path: Path, text: str) -> None:
    """Write the JSON report atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

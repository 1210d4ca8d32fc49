"""The command line of tools/conformance: find or build the reference, set up the world, run the cases."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import registry
from .core import Case, Outcome, documented, judge
from .entries import entries
from .world import World

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_STATE = Path("/tmp/qldap-conformance-ref")
CANDIDATES = (REPO.parent / "shared" / "reference", Path("/work/shared/reference"))


class ReferenceError(RuntimeError):
    """The reference could not be found or built."""


def _home_of(path: Path) -> Path | None:
    for home in (path, path / "qmail-ldap-home"):
        if (home / "bin" / "qmail-smtpd").exists():
            return home
    return None


def find_reference(given: str | None, build: bool = True) -> Path:
    """The built qmail home of the reference: *given*, $QLDAP_REFERENCE, or a source dir built on demand.

    Raises:
        ReferenceError: nothing usable, or the build failed.
    """
    spec = given or os.environ.get("QLDAP_REFERENCE")
    tries = [Path(spec)] if spec else list(CANDIDATES)
    for path in tries:
        home = _home_of(path)
        if home is not None:
            return home.resolve()
        if (path / "build.sh").exists():
            state = Path(os.environ.get("QLDAP_REFERENCE_STATE", DEFAULT_STATE))
            home = _home_of(state)
            if home is not None:
                return home.resolve()
            if not build:
                break
            log = state.parent / (state.name + "-build.log")
            state.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as f:
                rc = subprocess.call(["bash", str(path / "build.sh")], stdout=f, stderr=subprocess.STDOUT,
                                     env={**os.environ, "STATE": str(state)})  # fmt: skip
            home = _home_of(state)
            if rc != 0 or home is None:
                raise ReferenceError(f"building the reference from {path} failed (rc {rc}); see {log}")
            return home.resolve()
        if spec:
            break
    where = spec or " or ".join(str(p) for p in CANDIDATES)
    raise ReferenceError(f"no qmail-ldap reference at {where} (give a built home, a build state, or the "
                         "source directory with build.sh)")  # fmt: skip


def select(cases: list[Case], groups: list[str], names: list[str]) -> list[Case]:
    """The cases of *groups* (all when empty) whose name contains one of *names* (all when empty)."""
    return [c for c in cases
            if (not groups or c.group in groups) and (not names or any(n in c.name for n in names))]


def batches(cases: list[Case]) -> list[list[Case]]:
    """*cases* in runs that may go at once: parallel cases grouped by their controls (in order of
    first appearance), every other case alone and in its place among them."""
    out: list[list[Case]] = []
    groups: dict[object, list[Case]] = {}
    for case in cases:
        key = case.batch_key()
        if key is None:
            out.append([case])
        elif key in groups:
            groups[key].append(case)
        else:
            groups[key] = [case]
            out.append(groups[key])
    return out


def line(o: Outcome) -> str:
    """The one line of a case."""
    label = {"passed": "passed", "decided": "decided", "failed": "FAILED", "error": "ERROR"}[o.verdict]
    extra = f" ({o.detail})" if o.verdict == "decided" else ""
    return f"{label:8} {o.case.group}/{o.case.name}{extra}"


def main(p: argparse.ArgumentParser) -> int:
    """Parse, run, print; the exit status."""
    p.add_argument("reference", nargs="?",
                   help="qmail home, build state or source dir (else $QLDAP_REFERENCE)")
    p.add_argument("--group", action="append", default=[], help="only this group (repeatable)")
    p.add_argument("--case", action="append", default=[], help="only cases whose name contains this")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print the diff of every failed case")
    p.add_argument("-j", "--jobs", type=int, default=4,
                   help="cases of one batch (same controls, nothing else shared) run at once (default 4)")
    args = p.parse_args()
    cases = select(registry.all_cases(), args.group, args.case)
    if args.list:
        for c in cases:
            print(f"{c.group}/{c.name}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print("tools/conformance: no case selected", file=sys.stderr)
        return 2
    missing = documented(registry.all_decisions())
    if missing:
        print(f"tools/conformance: decisions not documented in docs/conformance.md: {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        home = find_reference(args.reference)
    except ReferenceError as exc:
        print(f"tools/conformance: {exc}", file=sys.stderr)
        return 111
    print(f"reference: {home}", flush=True)
    if os.geteuid() != 0:
        skipped = [c for c in cases if c.needs_root]
        if skipped:
            groups = ", ".join(sorted({c.group for c in skipped}))
            why = "they deliver as the mailbox's uid: run as root"
            print(f"skipped: {len(skipped)} cases of {groups} ({why})", flush=True)
            cases = [c for c in cases if not c.needs_root]
    started = time.monotonic()
    world = World(home, entries())
    counts = {"passed": 0, "decided": 0, "failed": 0, "error": 0}
    try:
        world.start()
        with ThreadPoolExecutor(args.jobs) as pool:
            for batch in batches(cases):
                # a batch shares its control files: they are written once, then its cases run at once
                for outcome in pool.map(lambda c: judge(c, world), batch):
                    counts[outcome.verdict] += 1
                    print(line(outcome), flush=True)
                    if outcome.verdict in ("failed", "error") and (args.verbose or os.environ.get("CI")):
                        print("    " + outcome.detail.replace("\n", "\n    "), flush=True)
    finally:
        world.close()
    failed = counts["failed"] + counts["error"]
    print(f"{len(cases)} cases in {time.monotonic() - started:.0f} s")
    print(f"{counts['passed']} passed, {counts['decided']} decided, {failed} failed")
    return 1 if failed else 0

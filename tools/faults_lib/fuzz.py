"""``--fuzz N``: hostile SMTP sessions from ``tools/fuzz_sessions.py`` against a live ``qldap up``.

Why here and not in the fuzzer: the fuzzer knows how to break a session; this battery knows how to
tell whether the *server* survived — every daemon still the same process, and mail sent after the
fuzzing still accepted and delivered (a probe load, accounted like every other scenario).  The
fuzzer is optional: without ``tools/fuzz_sessions.py`` (or without its ``run``) the scenario is
reported as skipped with that reason.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable

from faults_lib.account import drain, tally
from faults_lib.load import Load
from faults_lib.report import Check, Figure, ScenarioResult, judge
from faults_lib.scenarios import Settings
from faults_lib.world import DOMAIN, World, user_name

PROBES = 20


def _runner() -> Callable[..., object] | str:
    """``fuzz_sessions.run`` or the reason it is not available."""
    try:
        mod = importlib.import_module("fuzz_sessions")
    except ImportError as exc:
        return f"tools/fuzz_sessions.py not importable: {exc}"
    run: object = getattr(mod, "run", None)
    if not callable(run):
        return "tools/fuzz_sessions.py has no run(sessions, target, seed)"
    return run


def _target_for(run: Callable[..., object], port: int) -> object:
    """``"127.0.0.1:PORT"``, or a (host, port) tuple when run's *target* is annotated as a tuple."""
    try:
        annotation = str(inspect.signature(run).parameters["target"].annotation)
    except (KeyError, ValueError, TypeError):
        annotation = ""
    return ("127.0.0.1", port) if "tuple" in annotation.lower() else f"127.0.0.1:{port}"


def fuzz_scenario(world: World, s: Settings, sessions: int) -> ScenarioResult:
    """Run *sessions* fuzz sessions at smtpd, then prove the daemons live and mail still flows."""
    run = _runner()
    if isinstance(run, str):
        return ScenarioResult("fuzz", "skipped", run)
    root, ports = world.make_root("fuzz")
    up = world.up(root)
    t0 = time.monotonic()
    before = up.daemons()
    outcome = run(sessions, _target_for(run, ports.smtp), s.seed)
    after = up.daemons()
    figures: dict[str, Figure] = {"sessions": sessions}
    if isinstance(outcome, dict):
        figures.update({f"fuzz_{k}": v for k, v in outcome.items() if isinstance(v, int | float | str)})
    load = Load(ports.smtp, "fuzz", lambda n: f"{user_name(n % s.users)}@{DOMAIN}", PROBES, connections=2)
    load.start().join()
    drain(lambda: set(load.accepted), world.mailroot, root, "fuzz", time.monotonic() + s.drain_seconds)
    t = tally(load.accepted, load.unacked, world.mailroot, root, "fuzz")
    up.stop()
    checks = [
        Check("no daemon died", before == after, f"before {before}, after {after}"),
        Check("mail accepted after fuzzing", t.accepted >= PROBES, f"{t.accepted} of {PROBES}"),
    ]
    return judge("fuzz", t, sessions, time.monotonic() - t0, figures, checks)

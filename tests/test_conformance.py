"""The differential conformance suite (tools/conformance) against the C qmail-ldap reference.

Runs when the reference is there: ``$QLDAP_REFERENCE``, or the upstream source with ``build.sh`` in
``../shared/reference`` beside the clone (CI has it there), built once into
``$QLDAP_REFERENCE_STATE`` (default /tmp/qldap-conformance-ref).  Without any of these the test is
skipped and says so; a reference that is there but does not build is a failure, not a skip.  Every
case must pass or differ only by a decision documented in docs/conformance.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_slapd import require_slapd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from conformance_lib import registry  # noqa: E402
from conformance_lib.core import documented  # noqa: E402
from conformance_lib.main import CANDIDATES, ReferenceError, batches, find_reference  # noqa: E402


def test_cases_are_unique_and_every_decision_is_documented() -> None:
    # runs without the reference: the case list itself and docs/conformance.md stay consistent
    cases = registry.all_cases()
    names = [f"{c.group}/{c.name}" for c in cases]
    assert len(names) == len(set(names)), "two cases share a name"
    assert len(cases) >= 150
    assert documented(registry.all_decisions()) == []
    groups = {c.group for c in cases}
    assert {"smtpd", "local", "checkpassword", "auth_smtp", "digest", "cdb", "interop"} <= groups
    # every case runs exactly once, and a batch never mixes control sets
    planned = [c for batch in batches(cases) for c in batch]
    assert sorted(f"{c.group}/{c.name}" for c in planned) == sorted(names)
    for batch in batches(cases):
        assert len({repr(c.batch_key()) for c in batch}) == 1


def _reference_given() -> bool:
    if os.environ.get("QLDAP_REFERENCE"):
        return True
    return any((p / "build.sh").exists() or (p / "bin" / "qmail-smtpd").exists() for p in CANDIDATES)


@pytest.mark.slow
def test_conformance_suite_has_no_failures() -> None:
    require_slapd()
    if not _reference_given():
        pytest.skip("conformance suite skipped: no C qmail-ldap reference (set QLDAP_REFERENCE or put the "
                    f"upstream source with build.sh at {CANDIDATES[0]})")  # fmt: skip
    try:
        home = find_reference(None)
    except ReferenceError as exc:
        pytest.fail(f"the C qmail-ldap reference is there but could not be used: {exc}")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "conformance"), str(home)],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "CI": "1"})  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr
    print("\n".join(lines[-2:]))  # case count, time and the verdict, for the CI log (pytest -s / -rP)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert summary.endswith(" 0 failed"), summary
    if os.geteuid() == 0:
        assert "skipped:" not in proc.stdout, "as root every group must run"

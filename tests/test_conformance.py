"""The differential conformance suite (tools/conformance) against the C qmail-ldap reference.

Runs when the reference can be found or built (``$QLDAP_REFERENCE``, or ``../shared/reference`` beside
the clone, built once into ``$QLDAP_REFERENCE_STATE``, default /tmp/qldap-conformance-ref); skips with
the reason otherwise, so the rest of the suite runs on machines without it.  Every case must pass or
differ only by a decision documented in docs/conformance.md.
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

from conformance_lib.main import ReferenceError, find_reference  # noqa: E402


@pytest.mark.slow
def test_conformance_suite_has_no_failures() -> None:
    require_slapd()
    try:
        home = find_reference(None)
    except ReferenceError as exc:
        pytest.skip(f"no C qmail-ldap reference to compare with: {exc}")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "conformance"), str(home)],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "CI": "1"})  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert summary.endswith(" 0 failed"), summary

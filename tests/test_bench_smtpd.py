"""``tools/bench_smtpd.py`` at a tiny size: every counted connection really went through smtpd.

The figures (smtpd CPU per connection and per message) are only worth something if each session got
its 220 and EHLO reply and each message its 250 after DATA: the tool exits non-zero on any failure,
and every accepted message must be in the queue at the end (``qldap send`` is not running).  No
timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_slapd import require_slapd

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench_smtpd.py"


@pytest.mark.slow
def test_bench_smtpd_tiny_run_counts_real_sessions(tmp_path: Path) -> None:
    require_slapd()
    report = tmp_path / "smtpd.json"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--users", "20", "--conns", "6", "--parallel", "2", "--rounds", "2",
         "--warmup", "3", "--modes", "greet,message,session", "--json", str(report)],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "median smtpd CPU per connection (greet)" in proc.stdout
    doc = json.loads(report.read_text())
    rounds = doc["rounds"]
    assert sorted(r["mode"] for r in rounds) == ["greet", "greet", "message", "message", "session", "session"]
    assert all(r["conns"] == 6 and r["failed"] == 0 and r["cpu_us"] >= 0 for r in rounds), rounds
    assert doc["queued"] == 3 + 4 * 6  # warm-up, then two rounds of message and of session

"""``tools/bench_local.py`` at a tiny size: every timed delivery is a real one that lands in a Maildir.

The figure (CPU per ``LocalSpawner.deliver``) is only worth something if each call really looked the
recipient up in slapd and wrote the file: the tool stops at the first report that is not ``K``, and
here the files in the users' Maildirs must number the deliveries made.  No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_slapd import require_slapd

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench_local.py"


@pytest.mark.slow
def test_bench_local_tiny_run_delivers_every_message(tmp_path: Path) -> None:
    require_slapd()
    report = tmp_path / "local.json"
    prof = tmp_path / "local.prof"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--users", "20", "-n", "5", "--warmup", "2", "--rounds", "2",
         "--profile", str(prof), "--top", "5", "--json", str(report)],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "median CPU per delivery" in proc.stdout
    doc = json.loads(report.read_text())
    assert len(doc["rounds"]) == 2 and all(r["cpu_us"] > 0 for r in doc["rounds"]), doc
    assert doc["total_deliveries"] == 2 + 5 * 3
    assert doc["delivered_files"] == doc["total_deliveries"], doc
    assert prof.stat().st_size > 0
    assert Path(doc["qldap"]).resolve() == (ROOT / "qldap").resolve()

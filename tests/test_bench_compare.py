"""``tools/bench compare`` at a tiny size: both servers run, every message reaches its Maildir.

The benchmark is only worth its figures if both sides really did the work: the run must print the
table with a row per server and the ratio rows, both servers must refuse an unknown recipient (so
the RCPT lookup in the directory is live on both), every accepted message must be found in its
recipient's Maildir for qldap and for Postfix, and nothing the tool started may outlive it.  No
timing is asserted.  Skipped only when Postfix (with postfix-ldap) is not installed or we are not
root, which a private virtual(8) delivery needs; CI installs it with tools/install-deps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_lib import postfix

from tests.fixtures_slapd import require_slapd

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 60  # a hang guard, not a speed bound
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_compare_tiny_run_delivers_everything_on_both_servers(tmp_path: Path) -> None:
    require_slapd()
    why = postfix.installed()
    if why is not None:
        pytest.skip(why)
    report = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "compare", "--users", "20", "--conns", "1", "-n", "3",
         "--per-conn-messages", "3", "--per-conn-workers", "1", "--json", str(report)],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("scenario"))
    assert "acc/s" in header and "CPU ms/msg" in header and "RSS" in header
    rows = [line.split() for line in out.splitlines()]
    for scenario in ("c1", "1/conn"):
        servers = [r[1] if scenario == "c1" else r[2] for r in rows if r and r[0] == scenario]
        assert servers.count("qldap") == 2 and servers.count("postfix") == 1, out
        assert "qldap/postfix" in servers, out
    doc = json.loads(report.read_text())
    codes = doc["unknown_rcpt_code"]
    assert set(codes) == {"qldap", "postfix"} and all(500 <= c < 600 for c in codes.values()), codes
    assert {r["server"] for r in doc["runs"]} == {"qldap", "postfix"}
    assert len(doc["runs"]) == 6
    for run in doc["runs"]:
        assert run["messages"] == 3
        assert run["accepted"] == 3 and run["failed"] == 0, run
        assert run["delivered"] == 3 and run["undelivered"] == 0 and run["stray_files"] == 0, run
        assert run["cpu_ms_per_msg_by_daemon"] is not None
    for group in doc["pids"].values():
        for name, pid in group.items():
            assert _gone(pid), f"{name} (pid {pid}) still running after the bench"


def _bench(tmp_path: Path, *argv: str) -> dict[str, object]:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(TOOL), *argv, "--json", str(report)],
                          capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc: dict[str, object] = json.loads(report.read_text())
    return doc


@pytest.mark.slow
def test_drain_fills_the_queue_while_send_is_stopped_then_delivers_all(tmp_path: Path) -> None:
    require_slapd()
    doc = _bench(tmp_path, "drain", "--users", "20", "--messages", "8", "--ref-messages", "4", "-c", "2")
    phases = doc["phases"]
    assert isinstance(phases, list) and [p["phase"] for p in phases] == ["small", "large"]
    for ph in phases:
        # every message sat in the queue when send started: the backlog really was a backlog
        assert ph["accepted"] == ph["queued_messages"] == ph["in_queue_at_send_start"], ph
        assert ph["delivered"] == ph["queued_messages"] and ph["undelivered"] == 0, ph


@pytest.mark.slow
def test_sessions_parks_every_session_in_data_and_completes_it(tmp_path: Path) -> None:
    require_slapd()
    doc = _bench(tmp_path, "sessions", "--users", "20", "--sessions", "6", "--hold", "0.2")
    servers = ["qldap"] + (["postfix"] if postfix.installed() is None else [])
    for name in servers:
        r = doc[name]
        assert isinstance(r, dict)
        assert r["parked"] == 6 and r["completed"] == 6 and not r["errors"], r
        assert r["rss_kib_while_parked"] > 0


@pytest.mark.slow
def test_flat_reports_each_size_for_each_server(tmp_path: Path) -> None:
    require_slapd()
    doc = _bench(tmp_path, "flat", "--sizes", "20,40", "-n", "3", "--rounds", "1", "--servers", "qldap")
    assert doc["cpu_ms_per_msg"].keys() == {"qldap"}  # type: ignore[attr-defined]
    assert set(doc["cpu_ms_per_msg"]["qldap"]) == {"20", "40"}  # type: ignore[index]
    for rep in doc["reports"]:  # type: ignore[attr-defined]
        for run in rep["runs"]:
            assert run["delivered"] == run["messages"] == 3, run

"""``tools/faults --ci`` end to end: every scenario runs against real daemons and loses nothing.

The battery is run as the subprocess CI runs (its own slapd, roots, tmpfs and ``qldap up``s); the
test reads the JSON it writes.  A scenario may only be skipped for a stated reason (the disk one
when not root); everything else must pass with ``lost == 0``, and the run must leave no process
behind.  The table and the accounting helpers are also checked on their own.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults_lib.account import scan_maildirs, tally
from faults_lib.report import Check, judge, table
from faults_lib.world import BOUNCE_USER

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "faults"


def _our_processes(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_ci_battery_loses_nothing(tmp_path: Path, slapd) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "faults.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--ci", "--json", str(report)], capture_output=True,
                          text=True, timeout=600, cwd=str(ROOT))  # fmt: skip
    assert report.exists(), proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    by_name = {s["name"]: s for s in doc["scenarios"]}
    assert set(by_name) == {"kill", "ldap", "disk", "remote"}
    for name, sc in by_name.items():
        if sc["status"] == "skipped":
            assert name == "disk" and os.geteuid() != 0 and sc["reason"], sc
            continue
        assert sc["status"] == "pass", (name, sc["reason"], [c for c in sc["checks"] if not c["ok"]])
        assert sc["lost"] == 0
        assert sc["tally"]["accepted"] > 0
        assert sc["tally"]["delivered"] + sc["tally"]["bounced"] == sc["tally"]["accepted"]
    kill = by_name["kill"]
    assert kill["tally"]["accepted"] >= 300
    assert kill["faults"] >= 6
    assert kill["figures"]["kills_up"] >= 1
    assert by_name["ldap"]["figures"]["rcpt_451_while_down"] > 0
    assert by_name["remote"]["figures"]["delivered_once"] == by_name["remote"]["tally"]["accepted"]
    assert doc["totals"]["lost"] == 0 and doc["totals"]["failed"] == []
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[0].split()[:2] == ["scenario", "accepted"]
    assert _our_processes(doc["workdir"]) == []
    assert not Path(doc["workdir"]).exists()


def _maildir_file(store: Path, name: str, body: bytes) -> None:
    new = store / "Maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(body)


def test_tally_counts_duplicates_bounces_queue_and_loss(tmp_path: Path) -> None:
    mail, root = tmp_path / "mail", tmp_path / "root"
    _maildir_file(mail / "u0", "1", b"X-Fault-Seq: t-1\n\nbody\n")
    _maildir_file(mail / "u0", "2", b"X-Fault-Seq: t-1\n\nbody\n")  # a duplicate
    _maildir_file(mail / "u1", "3", b"X-Fault-Seq: other-1\n\n")  # another scenario's
    _maildir_file(mail / BOUNCE_USER, "4", b"Subject: failure notice\n\n--- copy\nX-Fault-Seq: t-2\n")
    (root / "queue" / "mess" / "3").mkdir(parents=True)
    (root / "queue" / "mess" / "3" / "77").write_bytes(b"X-Fault-Seq: t-3\n\n")
    (root / "queue" / "todo").mkdir()
    (root / "queue" / "todo" / "77").write_bytes(b"")  # waiting: queued
    (root / "queue" / "mess" / "3" / "78").write_bytes(b"X-Fault-Seq: t-6\n\n")  # no todo/info: stranded
    t = tally(["t-1", "t-2", "t-3", "t-4", "t-6"], ["t-5"], mail, root, "t")
    assert (t.accepted, t.delivered, t.bounced, t.queued, t.lost, t.duplicates) == (5, 1, 1, 1, 2, 1)
    assert (t.stranded, t.unacked) == (1, 1)
    assert t.lost_seqs == ("t-4", "t-6")
    delivered, bounced = scan_maildirs(mail, "t")
    assert delivered == collections.Counter({"t-1": 2}) and bounced == collections.Counter({"t-2": 1})


def test_any_loss_or_broken_check_fails_the_scenario_and_shows_in_the_table(tmp_path: Path) -> None:
    mail, root = tmp_path / "mail", tmp_path / "root"
    (root / "queue" / "mess").mkdir(parents=True)
    mail.mkdir()
    lost = judge("kill", tally(["k-1"], [], mail, root, "k"), 3, 1.0, {}, [])
    assert lost.status == "fail" and lost.lost == 1
    _maildir_file(mail / "u0", "1", b"X-Fault-Seq: k-1\n\n")
    ok = judge("kill", tally(["k-1"], [], mail, root, "k"), 3, 1.0, {}, [])
    assert ok.status == "pass"
    broken = judge(
        "ldap", tally(["k-1"], [], mail, root, "k"), 1, 1.0, {}, [Check("451 at RCPT", False, "0 x 451")]
    )
    text = table([ok, broken])
    assert "PASS" in text and "FAIL" in text
    assert "ldap: FAILED 451 at RCPT: 0 x 451" in text

"""tools/reap.py (what tools/test runs pytest under) stops exactly the processes a run left behind.

And no script in tools/ or .ci/ finds processes by name or pattern (pkill, killall, pgrep): on a
shared machine that kills other people's daemons.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_reap_stops_detached_leftovers_and_nothing_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pids = tmp_path / "pids"
    try:
        script = f"setsid sleep 61 & echo $! > {pids}; setsid sh -c 'sleep 62 & wait' & echo $! >> {pids}"
        reap = [sys.executable, str(REPO / "tools" / "reap.py")]
        proc = subprocess.run([*reap, "sh", "-c", script + "; exit 3"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert proc.returncode == 3  # the command's own status
        left = [int(p) for p in pids.read_text().split()]
        assert len(left) == 2
        deadline = time.monotonic() + 60  # a hang guard, not a speed bound
        while any(_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in left)
        assert "stopped processes left behind" in proc.stderr
        assert bystander.poll() is None  # not ours: untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_no_script_kills_by_name_or_pattern() -> None:
    offenders = []
    for path in [*(REPO / "tools").rglob("*"), *(REPO / ".ci").rglob("*")]:
        if not path.is_file() or path.suffix in (".pyc", ".md"):
            continue
        text = path.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\b(pkill|killall|pgrep)\b", code):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders
    assert os.access(REPO / "tools" / "reap.py", os.R_OK)


_ORPHAN_THEN_KILL = """
import os, signal, subprocess, sys, time
sh = subprocess.run(["sh", "-c", "setsid sleep 63 >/dev/null 2>&1 & echo $!"],
                    stdout=subprocess.PIPE, text=True)
pid = int(sh.stdout)  # its parent sh has exited: the sleep now belongs to the subreaper
os.kill(pid, signal.SIGTERM)
for _ in range(1200):  # up to a minute: a hang guard, not a speed bound
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit(0)  # reaped while this command still runs
    time.sleep(0.05)
sys.exit(1)
"""


def test_reap_collects_adopted_children_while_the_command_runs() -> None:
    """A daemon a test killed must vanish during the run, not linger as a zombie until the run ends.

    A zombie still answers kill(pid, 0) and killpg(pgid, 0), so a test checking that the stop command it
    printed worked would see the daemon as alive (the red CI of test_setup_demo's --keep case).
    """
    reap = [sys.executable, str(REPO / "tools" / "reap.py")]
    proc = subprocess.run([*reap, sys.executable, "-c", _ORPHAN_THEN_KILL], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr

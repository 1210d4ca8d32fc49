"""py-spy attached to the daemons under test, writing collapsed stacks (``-f raw``) per daemon.

Why an external sampler: it needs no change to the daemons and sees every thread and, with
``--subprocesses``, worker processes too.  With *gil* only the thread holding the GIL is sampled (an
estimate of where the Python CPU goes); without it every non-idle thread is, including those
blocked in fsync or unlink.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def start(out_dir: str | Path, pids: dict[str, int], gil: bool,
          prefix: str = "") -> list[subprocess.Popen[bytes]]:
    """One ``py-spy record`` per daemon into OUT/<prefix><daemon>.txt; returns once they have attached."""
    venv = REPO / ".venv" / "bin" / "py-spy"
    spy = str(venv) if venv.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("bench: --profile needs py-spy (.venv/bin/pip install py-spy)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        out = Path(out_dir, f"{prefix}{name}.txt")
        argv = [spy, "record", "-p", str(pid), "-f", "raw", "-r", "250", "--nonblocking", "--threads",
                "--subprocesses", *(["--gil"] if gil else []), "-o", str(out)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # let py-spy attach before the load starts
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT makes py-spy write its file; wait for that."""
    for prof in procs:
        prof.send_signal(signal.SIGINT)
    for prof in procs:
        try:
            prof.wait(60)
        except subprocess.TimeoutExpired:
            prof.kill()
            prof.wait()

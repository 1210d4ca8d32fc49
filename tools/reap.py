"""Run a command and, when it ends, stop every process it left behind — and only those.

    python3 tools/reap.py COMMAND [ARG...]   → exit status of COMMAND

Why a child subreaper instead of matching command lines: a pattern also matches other people's
processes on a shared machine.  This process marks itself a *child subreaper* (Linux prctl), so a
descendant whose parent exits is re-parented to it rather than to init, whatever session or process
group it moved to (the test daemons start their own sessions).  After COMMAND exits, every process
whose parent is this one is by construction something the run started: each gets SIGTERM, then
SIGKILL after a grace period, until none is left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE = 5.0


def children() -> list[int]:
    """PIDs whose parent is this process (read from /proc; the comm field may hold blanks)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_reaping(pid: int) -> int:
    """Wait for COMMAND while collecting every other child that ends meanwhile; returns its exit code.

    Why: a daemon re-parented here and then killed (a test stopping what it started) is a zombie until
    its parent waits for it, and a zombie still answers kill(pid, 0) — so a plain wait for COMMAND alone
    would make every "is it gone?" check inside the run see the daemon as alive.
    """
    while True:
        got, status = os.waitpid(-1, 0)
        if got == pid:
            return os.waitstatus_to_exitcode(status)


def describe(pid: int) -> str:
    """``PID (command line)`` for the warning, so a leftover can be traced to the test that made it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"{pid} ({cmd[:120]})" if cmd else str(pid)


def stop_leftovers() -> list[str]:
    """SIGTERM, then SIGKILL, every remaining descendant; returns them as :func:`describe` shows them."""
    left: list[int] = []
    shown: list[str] = []
    deadline = time.monotonic() + GRACE
    sig = signal.SIGTERM
    while True:
        reap_zombies()
        pids = children()
        if not pids:
            return shown
        for p in pids:
            if p not in left:
                left.append(p)
                shown.append(describe(p))
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: reap.py COMMAND [ARG...]", file=sys.stderr)
        return 100
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reap.py: warning: cannot become a child subreaper; leftovers are not tracked", file=sys.stderr)
    proc = subprocess.Popen(argv)
    try:
        rc = wait_reaping(proc.pid)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        rc = wait_reaping(proc.pid)
    proc.returncode = rc  # already collected by wait_reaping; Popen must not wait for it again
    left = stop_leftovers()
    if left:
        print(f"reap.py: warning: stopped processes left behind by the run: {', '.join(left)}",
              file=sys.stderr)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

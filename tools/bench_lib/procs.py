"""CPU and memory of the process trees a benchmark started, read from /proc without cgroups.

Why whole trees and reaped children: Postfix forks smtpd, cleanup, virtual … on demand and lets them
exit after ``max_use`` requests or ``max_idle`` seconds; qldap may run worker processes.  A process's
own ``utime``/``stime`` plus the ``cutime``/``cstime`` of children it has already waited for cover
everything that ran below the root, whether it is still alive at the end of a run or not.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """*pid* and its living descendants (children of every thread)."""
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for c in children:
            out += tree_pids(int(c))
    return out


@dataclass(frozen=True)
class ProcCpu:
    """CPU seconds of one process: its own, and that of its children it has reaped."""

    name: str
    user: float
    system: float
    reaped: float


def proc_cpu(pid: int) -> ProcCpu | None:
    """The CPU counters of *pid*, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.find("(") + 1: raw.rfind(")")]
    fields = raw.rsplit(")", 1)[1].split()
    try:
        user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
        reaped = (int(fields[13]) + int(fields[14])) / TICK
    except (IndexError, ValueError):
        return None
    return ProcCpu(name, user, system, reaped)


def tree_cpu(pid: int) -> dict[int, ProcCpu]:
    """Per pid of the tree below *pid*: its CPU counters."""
    out = {}
    for p in tree_pids(pid):
        c = proc_cpu(p)
        if c is not None:
            out[p] = c
    return out


def total_cpu(snapshot: dict[int, ProcCpu]) -> tuple[float, float]:
    """(user+system of the living processes + what they reaped, system share of the living ones)."""
    own = sum(c.user + c.system for c in snapshot.values())
    return own + sum(c.reaped for c in snapshot.values()), sum(c.system for c in snapshot.values())


def _mem_kib(pid: int, rollup: bool) -> tuple[int, int]:
    """(RSS, PSS) of *pid* in KiB; PSS only when *rollup* (reading smaps costs the reader a page walk)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
        if rollup:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    return _mem_kib(pid, False)[0]


class TreeSampler(threading.Thread):
    """Samples a process tree: peak summed RSS and PSS, and the last CPU counters seen per pid.

    PSS (proportional set size) is the fair memory figure for a forking server: N Postfix processes
    share their libraries, and summing their RSS would count those pages N times.  The per-pid CPU
    memo lets :meth:`by_name` attribute the CPU of a process that exited during the run to its
    program name (the part that exited between two samples stays in the parent's reaped counter).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.start_cpu = tree_cpu(pid)
        self.seen: dict[int, ProcCpu] = dict(self.start_cpu)
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        rss = pss = 0
        snap = tree_cpu(self.pid)
        for p in snap:
            r, s = _mem_kib(p, True)
            rss, pss = rss + r, pss + s
        with self._lock:
            self.seen.update(snap)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def cpu(self) -> tuple[float, float]:
        """(CPU seconds, system seconds) the tree used since this sampler was created."""
        now = tree_cpu(self.pid)
        c1, s1 = total_cpu(now)
        c0, s0 = total_cpu(self.start_cpu)
        return max(0.0, c1 - c0), max(0.0, s1 - s0)

    def by_name(self) -> dict[str, float]:
        """CPU seconds per program name since the start; what cannot be attributed is ``reaped``."""
        total, _ = self.cpu()
        out: dict[str, float] = {}
        with self._lock:
            for p, last in self.seen.items():
                first = self.start_cpu.get(p)
                base = (first.user + first.system) if first else 0.0
                used = last.user + last.system - base
                if used > 0:
                    out[last.name] = out.get(last.name, 0.0) + used
        rest = total - sum(out.values())
        if rest > 0.0005:
            out["reaped"] = rest
        return out

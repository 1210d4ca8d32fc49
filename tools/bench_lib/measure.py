"""One measured run: drive a load at a server, wait for every message in the Maildirs, account CPU/memory.

The CPU window runs from just before the first connection to a short settle after the last delivery,
so a server's clean-up of its last messages counts; only the server under test and slapd are
sampled, the other server sits idle in the meantime.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bench_lib import profile
from bench_lib.load import Load, LoadResult, Poller, Tracker, drive, percentile
from bench_lib.procs import TreeSampler

SETTLE_S = 0.5


class Server(Protocol):
    """What a run needs of a server under test."""

    label: str
    port: int

    def daemons(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Scenario:
    """*workers* concurrent clients, *per_session* messages per connection (0: one session each)."""

    name: str
    workers: int
    per_session: int
    messages: int


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run_once(server: Server, tracker: Tracker, slapd_pid: int, scenario: Scenario, rcpts: Sequence[int],
             run_id: str, *, size: int = 2048, drain_seconds: float = 300.0, poll: float = 0.05,
             max_seconds: float = 900.0, profile_dir: str | None = None, profile_gil: bool = False
             ) -> dict[str, object]:
    """Run *scenario* against *server*; a JSON-ready dict of what was measured.

    With *profile_dir*, py-spy samples the daemons of a qldap server into DIR/<run>-<daemon>.txt
    (a forking C server has no Python stacks to show).
    """
    tracker.clear(rcpts)
    pids = {**server.daemons(), "slapd": slapd_pid}
    samplers = {name: TreeSampler(pid) for name, pid in pids.items()}
    load0 = os.getloadavg()
    self0 = os.times()
    for s in samplers.values():
        s.start()
    spies = (profile.start(profile_dir, server.daemons(), profile_gil, re.sub(r"[^\w.-]", "_", run_id) + "-")
             if profile_dir and server.label == "qldap" else [])
    poller = Poller(tracker, poll)
    poller.start()
    wall0 = time.time()
    load = Load(server.port, rcpts, scenario.workers, scenario.per_session, size, run_id, max_seconds)
    res: LoadResult = asyncio.run(drive(load, tracker))
    end = time.monotonic() + drain_seconds
    while tracker.outstanding() and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    profile.stop(spies)
    poller.stop()
    for s in samplers.values():
        s.stop()
    self1 = os.times()
    per_msg = max(res.accepted, 1)
    cpu = {name: s.cpu() for name, s in samplers.items()}
    breakdown: dict[str, float] = {}
    for name, s in samplers.items():
        if name in ("master",):  # a forking server: split its tree by program name
            for prog, secs in s.by_name().items():
                breakdown[prog] = breakdown.get(prog, 0.0) + secs
        else:
            breakdown[name] = cpu[name][0]
    total_cpu = sum(c for c, _ in cpu.values())
    span = tracker.last_ctime - wall0 if tracker.delivered else 0.0
    return {
        "server": server.label,
        "scenario": scenario.name,
        "run_id": run_id,
        "workers": scenario.workers,
        "per_session": scenario.per_session,
        "messages": len(rcpts),
        "size": size,
        "accepted": res.accepted,
        "delivered": tracker.delivered,
        "undelivered": tracker.outstanding(),
        "stray_files": tracker.stray,
        "failed": len(res.failures),
        "first_failure": res.failures[0] if res.failures else None,
        "accept_seconds": round(res.seconds, 3),
        "accepted_per_s": round(res.accepted / res.seconds, 1) if res.seconds else 0.0,
        "delivered_per_s": round(tracker.delivered / span, 1) if span > 0 else 0.0,
        "accept_p50_ms": _ms(percentile(res.latencies, 50)),
        "accept_p99_ms": _ms(percentile(res.latencies, 99)),
        "greeting_p50_ms": _ms(percentile(res.greetings, 50)),
        "greeting_p99_ms": _ms(percentile(res.greetings, 99)),
        "latency_p50_ms": _ms(percentile(tracker.latencies, 50)),
        "latency_p99_ms": _ms(percentile(tracker.latencies, 99)),
        "cpu_ms_per_msg": round(total_cpu * 1000 / per_msg, 3),
        "cpu_ms_per_msg_by_daemon": {k: round(v * 1000 / per_msg, 3) for k, v in sorted(breakdown.items())},
        "sys_share": round(sum(s for _, s in cpu.values()) / total_cpu, 2) if total_cpu else 0.0,
        "peak_rss_kib": sum(s.peak_rss for n, s in samplers.items() if n != "slapd"),
        "peak_pss_kib": sum(s.peak_pss for n, s in samplers.items() if n != "slapd"),
        "peak_rss_kib_by_daemon": {n: s.peak_rss for n, s in samplers.items()},
        "bench_cpu_ms_per_msg": round(((self1.user - self0.user) + (self1.system - self0.system)) * 1000
                                      / per_msg, 3),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }

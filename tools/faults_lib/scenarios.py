"""The four faults of issue 7 — kill -9, LDAP outage, full queue disk, remote down/slow/back — each
under SMTP load, each on its own root and ``qldap up``, each ending in a :class:`ScenarioResult`.

Why the ``qldap up`` kill also TERMs the orphaned daemons before starting a new supervisor: the
daemons run in their own sessions and outlive a ``kill -9`` of their supervisor, holding the ports
and the send mutex, so a new ``qldap up`` alone could never take over (its children exit 111 in a
loop).  A service manager restarting ``qldap up`` (systemd's control-group kill) removes them first;
the run does the same and reports how many there were (``up_kill_orphans``).

Why SIGALRM instead of waiting: the real retry schedule puts the second local attempt 100 s and the
second remote attempt 400 s after birth; the run checks that *no* retry happens before it is due
(the scheduled wait) and then forces the retry with ALRM, as ``qmail-send`` operators do.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faults_lib.account import Remote, drain, tally
from faults_lib.load import Load
from faults_lib.report import Check, ScenarioResult, judge
from faults_lib.sink import Sink
from faults_lib.world import DAEMONS, DOMAIN, Up, World, kill_pids, pid_alive, user_name

REMOTE_DOMAIN = "remote.test"
_DEFERRAL = re.compile(r"^delivery \d+: deferral: ", re.M)


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes and durations of a run (``--ci`` shrinks them)."""

    messages: int = 2000
    users: int = 200
    kills: int = 20
    outage: float = 60.0
    seed: int = 7
    rate: float = 60.0  # messages/s offered in the kill scenario
    side_messages: int = 400  # accepted messages wanted in the ldap and disk scenarios
    remote_messages: int = 100
    tmpfs_kib: int = 4096
    full_seconds: float = 15.0
    drain_seconds: float = 300.0


CI = Settings(messages=300, kills=6, outage=10.0, side_messages=120, remote_messages=30, full_seconds=5.0,
              drain_seconds=150.0)  # fmt: skip


def _rcpt(users: int) -> Callable[[int], str]:
    return lambda n: f"{user_name(n % users)}@{DOMAIN}"


def _settle(world: World, root: Path, up: Up, load: Load, prefix: str, s: Settings,
            remote: Remote | None = None) -> float:  # fmt: skip
    """Drain with ALRM nudges (deferred mail is not waited for on the real schedule)."""
    return drain(lambda: set(load.accepted), world.mailroot, root, prefix, time.monotonic() + s.drain_seconds,
                 nudge=lambda: up.signal(signal.SIGALRM), remote=remote)  # fmt: skip


def _stop_orphans(pids: list[int], grace: float = 30.0) -> None:
    """TERM the daemons a killed supervisor left, then KILL what is still there after *grace* s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_pids(set(pids))


def kill_scenario(world: World, s: Settings) -> ScenarioResult:
    """(a) kill -9 smtpd, send, pop3d, pbsdbd and ``qldap up`` at random moments under load."""
    rng = random.Random(s.seed)
    root, ports = world.make_root("kill")
    up = world.up(root)
    t0 = time.monotonic()
    load = Load(ports.smtp, "kill", _rcpt(s.users), s.messages, connections=4, rate=s.rate)
    load.not_before = float("inf")  # the load goes on until the last kill
    load.start()
    spacing = max(0.5, s.messages / s.rate / max(1, s.kills))
    kills: collections.Counter[str] = collections.Counter()
    orphans = 0
    targets = itertools.chain.from_iterable(rng.sample([*DAEMONS, "up"], 5) for _ in itertools.count())
    while sum(kills.values()) < s.kills:
        time.sleep(rng.uniform(0.3, 1.7) * spacing)
        target = next(targets)
        if target == "up":
            left = up.kill_self()
            orphans += sum(1 for p in left if pid_alive(p))
            _stop_orphans(left)
            up.start()
            kills["up"] += 1
        elif up.kill_daemon(target):
            kills[target] += 1
    load.not_before = 0.0
    load.join()
    load_seconds = (load.finished or time.monotonic()) - load.started
    drained = _settle(world, root, up, load, "kill", s)
    t = tally(load.accepted, load.unacked, world.mailroot, root, "kill")
    up.stop()
    garbage = [f for f in _queue_files(root) if f.startswith(("mess/", "intd/"))]
    figures = {
        "garbage_files_for_cleanup": len(garbage),
        **{f"kills_{k}": v for k, v in sorted(kills.items())},
        "load_seconds": round(load_seconds, 1),
        "accepted_per_s": round(t.accepted / load_seconds, 1) if load_seconds else 0.0,
        "connect_failures": load.connect_failures,
        "refused_4xx": sum(load.count(st, 4) for st in ("mail", "rcpt", "data", "dot")),
        "up_kill_orphans": orphans,
        "drain_seconds": round(drained, 1),
    }
    wanted = set(DAEMONS) | {"up"} if s.kills >= 5 else set()
    checks = [
        Check(f"at least {s.kills} kills", sum(kills.values()) >= s.kills, str(dict(kills))),
        Check("every daemon and qldap up killed", wanted <= set(kills), str(sorted(kills))),
        Check("no bounce (every recipient exists)", t.bounced == 0, f"{t.bounced} bounced"),
        Check("nothing left in the queue", t.queued == 0, f"{t.queued} queued"),
    ]
    return judge("kill", t, sum(kills.values()), time.monotonic() - t0, figures, checks)


def ldap_scenario(world: World, s: Settings) -> ScenarioResult:
    """(b) slapd stopped for *outage* s under load: 451 at RCPT meanwhile, no bounce, all delivered."""
    root, ports = world.make_root("ldap")
    up = world.up(root)
    t0 = time.monotonic()
    phase = ["before"]
    load = Load(ports.smtp, "ldap", _rcpt(s.users), s.side_messages, connections=3,
                rate=max(5.0, s.side_messages / (s.outage + 10)), phase=lambda: phase[0])  # fmt: skip
    load.not_before = float("inf")
    load.start()
    time.sleep(3)
    log_at = up.log_size()
    world.slapd.stop()
    phase[0] = "down"
    time.sleep(s.outage)
    deferred = len(_DEFERRAL.findall(up.log_text(log_at)))
    world.slapd.start()
    phase[0] = "after"
    load.not_before = time.monotonic() + 3
    load.join()
    drained = _settle(world, root, up, load, "ldap", s)
    t = tally(load.accepted, load.unacked, world.mailroot, root, "ldap")
    up.stop()
    rcpt_451 = sum(1 for a in load.attempts if a.phase == "down" and a.stage == "rcpt" and a.code == 451)
    rcpt_5xx = load.count("rcpt", 5)
    down_accepted = sum(1 for a in load.attempts if a.phase == "down" and a.stage == "dot" and a.code == 250)
    figures = {"outage_seconds": s.outage, "rcpt_451_while_down": rcpt_451, "rcpt_5xx": rcpt_5xx,
               "accepted_while_down": down_accepted, "deferrals_while_down": deferred,
               "drain_seconds": round(drained, 1)}  # fmt: skip
    checks = [
        Check("451 at RCPT while slapd is down", rcpt_451 > 0, f"{rcpt_451} x 451"),
        Check("no 5xx at RCPT", rcpt_5xx == 0, f"{rcpt_5xx} x 5xx"),
        Check("0 bounces", t.bounced == 0, f"{t.bounced} bounced"),
        Check("nothing left in the queue", t.queued == 0, f"{t.queued} queued"),
    ]
    return judge("ldap", t, 1, time.monotonic() - t0, figures, checks)


def _fill(path: Path) -> int:
    """Write *path* until the filesystem is full; returns the bytes written."""
    chunk = b"\0" * 65536
    written = 0
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk) or 0
            except OSError:
                break
        small = b"\0" * 512
        while True:
            try:
                written += fh.write(small) or 0
            except OSError:
                return written


def _queue_files(root: Path) -> list[str]:
    out = []
    for part in ("mess", "todo", "intd", "info", "local", "remote", "bounce"):
        for dirpath, _dirs, files in os.walk(root / "queue" / part):
            out += [os.path.relpath(os.path.join(dirpath, f), root / "queue") for f in files]
    return out


def disk_scenario(world: World, s: Settings) -> ScenarioResult:
    """(c) the queue's tmpfs filled under load: 451 at DATA, no corrupt entry, recovery after."""
    if os.geteuid() != 0:
        return ScenarioResult("disk", "skipped", "needs root to mount a tmpfs for the queue")
    root, ports = world.make_root("disk", tmpfs_kib=s.tmpfs_kib)
    up = world.up(root)
    t0 = time.monotonic()
    phase = ["before"]
    load = Load(ports.smtp, "disk", _rcpt(s.users), s.side_messages, connections=3,
                rate=max(5.0, s.side_messages / (s.full_seconds + 10)), phase=lambda: phase[0])  # fmt: skip
    load.not_before = float("inf")
    load.start()
    time.sleep(3)
    filler = root / "queue" / "filler"
    filled = _fill(filler)
    phase[0] = "full"
    time.sleep(s.full_seconds)
    filler.unlink()
    phase[0] = "after"
    load.not_before = time.monotonic() + 3
    load.join()
    drained = _settle(world, root, up, load, "disk", s)
    t = tally(load.accepted, load.unacked, world.mailroot, root, "disk")
    leftovers = _queue_files(root)
    up.stop()
    full_data_451 = sum(1 for a in load.attempts
                        if a.phase == "full" and a.stage in ("data", "dot") and a.code == 451)  # fmt: skip
    after_ok = sum(1 for a in load.attempts if a.phase == "after" and a.stage == "dot" and a.code == 250)
    any_5xx = sum(load.count(st, 5) for st in ("mail", "rcpt", "data", "dot"))
    figures = {"tmpfs_kib": s.tmpfs_kib, "filler_bytes": filled, "full_seconds": s.full_seconds,
               "data_451_while_full": full_data_451, "accepted_after_recovery": after_ok,
               "drain_seconds": round(drained, 1)}  # fmt: skip
    checks = [
        Check("451 at DATA while the disk is full", full_data_451 > 0, f"{full_data_451} x 451"),
        Check("no 5xx", any_5xx == 0, f"{any_5xx} x 5xx"),
        Check("accepting again after space returns", after_ok > 0, f"{after_ok} accepted"),
        Check(
            "no corrupt or stranded queue entry", not leftovers and t.queued == 0, ", ".join(leftovers[:10])
        ),
        Check("0 bounces", t.bounced == 0, f"{t.bounced} bounced"),
    ]
    return judge("disk", t, 1, time.monotonic() - t0, figures, checks)


def _wait_deferrals(up: Up, offset: int, wanted: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = len(_DEFERRAL.findall(up.log_text(offset)))
        if n >= wanted or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def remote_scenario(world: World, s: Settings) -> ScenarioResult:
    """(d) a remote destination down, then tarpitting, then back: deferred, retried, delivered once."""
    from qldap_slapd import free_port

    timeout = 2
    sink = Sink(free_port(), tarpit=timeout + 3)
    try:
        root, ports = world.make_root("remote", {
            "smtproutes": f"{REMOTE_DOMAIN}:127.0.0.1:{sink.port}", "timeoutremote": str(timeout),
            "timeoutconnect": str(timeout)})  # fmt: skip
        up = world.up(root)
        t0 = time.monotonic()
        m = s.remote_messages
        load = Load(ports.smtp, "remote", lambda n: f"r{n % 50}@{REMOTE_DOMAIN}", m, connections=2, rate=30)
        log_at = up.log_size()
        load.start().join()
        down = _wait_deferrals(up, log_at, len(load.accepted), 60)  # first attempts: connection refused
        sink.set_mode("slow")
        time.sleep(3)  # the next remote attempt is due 400 s after birth: nothing may come now
        early = sink.connections["slow"]
        log_at = up.log_size()
        up.signal(signal.SIGALRM)
        slow = _wait_deferrals(up, log_at, len(load.accepted), 60 + m * timeout)
        slow_conns = sink.connections["slow"]
        sink.set_mode("normal")
        up.signal(signal.SIGALRM)
        drained = _settle(world, root, up, load, "remote", s, remote=sink.seqs)
        t = tally(load.accepted, load.unacked, world.mailroot, root, "remote", remote=sink.seqs)
        up.stop()
    finally:
        sink.close()
    received = sink.seqs()
    once = sum(1 for q in load.accepted if received[q] == 1)
    figures = {
        "deferrals_down": down,
        "deferrals_slow": slow,
        "tarpit_connections": slow_conns,
        "connections_before_due": early,
        "delivered_once": once,
        "drain_seconds": round(drained, 1),
    }
    checks = [
        Check("every message deferred while down", down >= t.accepted, f"{down} deferrals"),
        Check("no retry before it is due", early == 0, f"{early} early connections"),
        Check(
            "every message retried into the tarpit",
            slow_conns >= t.accepted and slow >= t.accepted,
            f"{slow_conns} connections, {slow} deferrals",
        ),
        Check("delivered exactly once", once == t.accepted, f"{once} of {t.accepted}"),
        Check("0 bounces", t.bounced == 0, f"{t.bounced} bounced"),
    ]
    return judge("remote", t, 3, time.monotonic() - t0, figures, checks)


SCENARIOS: dict[str, Callable[[World, Settings], ScenarioResult]] = {
    "kill": kill_scenario,
    "ldap": ldap_scenario,
    "disk": disk_scenario,
    "remote": remote_scenario,
}

"""The extra runs issue 10's targets need, besides ``compare``.

``flat``: the same compare scenario at several directory sizes (10,000 and 1,000,000 users), to show
that the per-message cost does not grow with the directory.  ``drain``: messages queued while
``qldap send`` is stopped, then delivered; the per-message cost of a large backlog against a small
one.  ``sessions``: the smtpd's memory with many concurrent SMTP sessions open, each parked in the
middle of its DATA.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import time
from collections.abc import Sequence
from typing import cast

from bench_lib import compare, postfix
from bench_lib.load import (
    BENCH_DOMAIN,
    ID_HEADER,
    Load,
    Poller,
    Tracker,
    drive,
    message,
    reply,
)
from bench_lib.measure import Scenario, run_once
from bench_lib.procs import TreeSampler
from bench_lib.qldap_server import QldapServer
from bench_lib.world import recipients

# ---- flat ------------------------------------------------------------------------------------------


def add_flat_arguments(p: argparse.ArgumentParser) -> None:
    compare.add_arguments(p)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10000, 1000000],
                   help="directory sizes to compare (default 10000,1000000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all sizes and servers")
    p.set_defaults(conns=[16], per_conn_messages=0)


def run_flat(args: argparse.Namespace) -> dict[str, object]:
    """One world per size, all up at once; rounds alternate sizes and servers so drift hits all alike.

    Reported per server: CPU/msg at each size (mean over the rounds) and largest/smallest.
    """
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "postfix" in wanted and postfix.installed() is not None:
        wanted.remove("postfix")
    benches: list[tuple[int, compare.Bench]] = []
    by_size: dict[int, list[dict[str, object]]] = {n: [] for n in args.sizes}
    sc = Scenario(f"c{args.conns[0]}", args.conns[0], 0, args.messages)
    try:
        for size in args.sizes:
            sub = copy.copy(args)
            sub.users = size
            print(f"bench: flat: building {size} users", flush=True)
            benches.append((size, compare.Bench(sub, wanted)))
        rcpts = {n: recipients(n, args.messages, args.seed, distinct=True) for n in args.sizes}
        warm = {n: recipients(n, compare.WARMUP, args.seed + 1000) for n in args.sizes}
        for size, b in benches:
            b.world.mailboxes([*rcpts[size], *warm[size]])
            for name, server in b.servers.items():
                run_once(server, b.tracker, b.world.slapd_pid, Scenario("warmup", 2, 0, compare.WARMUP),
                         warm[size], f"w{name}")
        for rnd in range(args.rounds):
            # ABBA: odd rounds walk the sizes backwards, so a load that rises (or falls) through the
            # invocation weighs on every size alike
            for size, b in (benches if rnd % 2 == 0 else benches[::-1]):
                for name, server in b.servers.items():
                    r = run_once(server, b.tracker, b.world.slapd_pid, sc, rcpts[size], f"{size}.{rnd}",
                                 size=args.size, drain_seconds=args.drain_seconds)
                    r["users"] = size
                    by_size[size].append(r)
                    print(f"bench: flat {size} users {name}: {r['delivered']} delivered, "
                          f"{r['cpu_ms_per_msg']} ms CPU/msg", flush=True)
    finally:
        for _, b in benches:
            b.close()
    summary: dict[str, dict[str, float]] = {}
    for size, runs in by_size.items():
        for label in dict.fromkeys(str(r["server"]) for r in runs):
            mine = [float(cast(float, r["cpu_ms_per_msg"])) for r in runs if r["server"] == label]
            summary.setdefault(label, {})[str(size)] = round(sum(mine) / len(mine), 3)
    first, last = str(args.sizes[0]), str(args.sizes[-1])
    ratios = {s: round(v[last] / v[first], 3) for s, v in summary.items() if v.get(first) and last in v}
    reports = [{"mode": "compare", "users": n, "size": args.size, "ncpu": os.cpu_count(), "runs": runs}
               for n, runs in by_size.items()]
    return {"mode": "flat", "sizes": args.sizes, "cpu_ms_per_msg": summary,
            "largest_over_smallest": ratios, "reports": reports,
            "setup_s": {str(n): round(b.setup_s, 1) for n, b in benches}}


def flat_table(report: dict[str, object]) -> str:
    parts = [compare.table(r) for r in cast(list[dict[str, object]], report["reports"])]
    summary = cast(dict[str, dict[str, float]], report["cpu_ms_per_msg"])
    ratios = cast(dict[str, float], report["largest_over_smallest"])
    sizes = cast(list[int], report["sizes"])
    lines = ["server    " + "  ".join(f"{s:>12}" for s in sizes) + "  largest/smallest"]
    for server, per in summary.items():
        lines.append(f"{server:<10}" + "  ".join(f"{v:>9.2f} ms" for v in per.values())
                     + f"  {ratios.get(server, 0.0):.2f}×")
    return "\n\n".join([*parts, "server CPU ms/msg (slapd included) by directory size:\n" + "\n".join(lines)])


# ---- drain -----------------------------------------------------------------------------------------


def add_drain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--messages", type=int, default=100000, help="the backlog queued while send is stopped")
    p.add_argument("--ref-messages", type=int, default=2000, help="the small backlog to compare with")
    p.add_argument("-c", "--connections", type=int, default=16, help="SMTP clients filling the queue")
    p.add_argument("-s", "--size", type=int, default=2048)
    p.add_argument("--control", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--smtpd-arg", action="append", default=[])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--seed", type=int, default=7)


def _drain_phase(q: QldapServer, tracker: Tracker, slapd: int, rcpts: Sequence[int], args: argparse.Namespace,
                 tag: str) -> dict[str, object]:
    """Queue *rcpts* with send stopped, then start send and account its CPU until all are delivered."""
    tracker.clear(rcpts)
    q.stop_send()
    smtpd = TreeSampler(q.daemons()["smtpd"])
    load = Load(q.port, rcpts, args.connections, 0, args.size, tag, 7200)
    res = asyncio.run(drive(load, tracker))
    smtpd_cpu, _ = smtpd.cpu()
    queued = q.queued()
    load0 = os.getloadavg()
    q.start_send()
    samplers = {"send": TreeSampler(q.daemons()["send"], 1.0), "slapd": TreeSampler(slapd, 1.0)}
    for s in samplers.values():
        s.start()
    poller = Poller(tracker, 1.0 if len(rcpts) > 5000 else 0.1)
    poller.start()
    t0 = time.time()
    timeline: list[tuple[float, int, float]] = []  # seconds since send start, delivered, send+slapd CPU
    deadline = time.monotonic() + 7200
    while tracker.outstanding() and time.monotonic() < deadline:
        time.sleep(2.0)
        timeline.append((round(time.time() - t0, 1), tracker.delivered,
                         round(sum(s.cpu()[0] for s in samplers.values()), 2)))
    poller.stop()
    for s in samplers.values():
        s.stop()
    span = max(tracker.last_ctime - t0, 0.001)
    per = max(tracker.delivered, 1)
    cpu = {k: s.cpu()[0] for k, s in samplers.items()}
    # the cost per message in each tenth of the drain: does it rise as the backlog shrinks or grows old?
    deciles = []
    prev_n, prev_c = 0, 0.0
    for _, n, c in timeline:
        if n - prev_n >= max(len(rcpts) // 10, 1) or n == tracker.delivered:
            if n > prev_n:
                deciles.append(round((c - prev_c) * 1000 / (n - prev_n), 3))
            prev_n, prev_c = n, c
    return {
        "phase": tag, "queued_messages": len(rcpts), "accepted": res.accepted, "failed": len(res.failures),
        "in_queue_at_send_start": queued, "fill_seconds": round(res.seconds, 1),
        "fill_accepted_per_s": round(res.accepted / res.seconds, 1) if res.seconds else 0.0,
        "fill_smtpd_cpu_ms_per_msg": round(smtpd_cpu * 1000 / max(res.accepted, 1), 3),
        "delivered": tracker.delivered, "undelivered": tracker.outstanding(),
        "drain_seconds": round(span, 1), "drain_delivered_per_s": round(tracker.delivered / span, 1),
        "send_cpu_ms_per_msg": round(cpu["send"] * 1000 / per, 3),
        "slapd_cpu_ms_per_msg": round(cpu["slapd"] * 1000 / per, 3),
        "cpu_ms_per_msg": round(sum(cpu.values()) * 1000 / per, 3),
        "cpu_ms_per_msg_by_tenth": deciles,
        "send_peak_rss_kib": samplers["send"].peak_rss,
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def run_drain(args: argparse.Namespace) -> dict[str, object]:
    ns = argparse.Namespace(**vars(args), per_conn_messages=0, conns=[], servers="qldap")
    bench = compare.Bench(ns, ["qldap"])
    try:
        q = cast(QldapServer, bench.servers["qldap"])
        small = recipients(args.users, args.ref_messages, args.seed)
        big = recipients(args.users, args.messages, args.seed + 1)
        bench.world.mailboxes([*small, *big])
        phases = [_drain_phase(q, bench.tracker, bench.world.slapd_pid, rc, args, tag)
                  for tag, rc in (("small", small), ("large", big))]
    finally:
        bench.close()
    ratio = (float(cast(float, phases[1]["cpu_ms_per_msg"])) / float(cast(float, phases[0]["cpu_ms_per_msg"]))
             if phases[0]["cpu_ms_per_msg"] else 0.0)
    return {"mode": "drain", "users": args.users, "phases": phases, "large_over_small_cpu": round(ratio, 3)}


def drain_table(report: dict[str, object]) -> str:
    cols = ("phase", "queued", "fill msg/s", "smtpd ms/msg", "drain msg/s", "send ms/msg", "slapd ms/msg",
            "send+slapd", "per tenth of the drain", "load")
    rows = [cols]
    for ph in cast(list[dict[str, object]], report["phases"]):
        rows.append((str(ph["phase"]), str(ph["queued_messages"]), f"{ph['fill_accepted_per_s']}",
                     f"{ph['fill_smtpd_cpu_ms_per_msg']:.2f}", f"{ph['drain_delivered_per_s']}",
                     f"{ph['send_cpu_ms_per_msg']:.2f}", f"{ph['slapd_cpu_ms_per_msg']:.2f}",
                     f"{ph['cpu_ms_per_msg']:.2f}",
                     " ".join(f"{x:.2f}" for x in cast(list[float], ph["cpu_ms_per_msg_by_tenth"])),
                     f"{cast(list[float], ph['loadavg_before'])[0]:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    phases = cast(list[dict[str, object]], report["phases"])
    undelivered = sum(int(cast(int, ph["undelivered"])) for ph in phases)
    return "\n".join([*lines, f"large/small send+slapd CPU per message: {report['large_over_small_cpu']:.2f}×"
                      + (f"; {undelivered} UNDELIVERED" if undelivered else "")])


# ---- sessions --------------------------------------------------------------------------------------


def add_sessions_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--hold", type=float, default=5.0, help="seconds to keep every session parked in DATA")
    p.add_argument("--servers", default="qldap,postfix")
    p.add_argument("--control", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--smtpd-arg", action="append", default=[])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--seed", type=int, default=3)


async def _park(port: int, user: int, n: int, body: bytes, opened: list[int], release: asyncio.Event) -> int:
    """One session: EHLO, MAIL, RCPT, DATA and half the message; wait; finish. 1 when it got its 250."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reply(reader)
        writer.write(b"EHLO bench.invalid\r\n")
        await reply(reader)
        rcpt = f"u{user}@{BENCH_DOMAIN}"
        writer.write(f"MAIL FROM:<bench@bench.invalid>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        codes = [(await reply(reader))[0] for _ in range(3)]
        if codes != [250, 250, 354]:
            return 0
        data = ID_HEADER + f"s.{n}".encode() + b"\r\n" + body
        writer.write(data[: len(data) // 2])
        await writer.drain()
        opened.append(n)
        await release.wait()
        writer.write(data[len(data) // 2:] + b".\r\n")
        code, _ = await reply(reader)
        writer.write(b"QUIT\r\n")
        await reply(reader)
        return 1 if code == 250 else 0
    finally:
        writer.close()


async def _sessions(port: int, users: Sequence[int], hold: float, sampler: TreeSampler) -> dict[str, object]:
    body = message(2048)
    opened: list[int] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_park(port, u, i, body, opened, release)) for i, u in enumerate(users)]
    deadline = time.monotonic() + 120
    while len(opened) < len(users) and time.monotonic() < deadline and not all(t.done() for t in tasks):
        await asyncio.sleep(0.1)
    parked = len(opened)
    await asyncio.sleep(hold)
    sampler.sample()
    at_hold = (sampler.peak_rss, sampler.peak_pss)
    release.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    return {"parked": parked, "completed": sum(d for d in done if isinstance(d, int)),
            "errors": [repr(d) for d in done if isinstance(d, BaseException)][:3],
            "rss_kib_while_parked": at_hold[0], "pss_kib_while_parked": at_hold[1]}


def run_sessions(args: argparse.Namespace) -> dict[str, object]:
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "postfix" in wanted and postfix.installed() is not None:
        wanted.remove("postfix")
    ns = argparse.Namespace(**vars(args), smtpd_sessions=args.sessions + 10)
    ns.smtpd_arg = [*args.smtpd_arg, "--max-sessions", str(args.sessions + 10)]
    bench = compare.Bench(ns, wanted)
    out: dict[str, object] = {"mode": "sessions", "sessions": args.sessions}
    try:
        rcpts = recipients(args.users, args.sessions, args.seed)
        bench.world.mailboxes(rcpts)
        for name, server in bench.servers.items():
            root = server.daemons()["smtpd" if name == "qldap" else "master"]
            idle = TreeSampler(root)
            idle.sample()
            sampler = TreeSampler(root, 0.2)
            sampler.start()
            res = asyncio.run(_sessions(server.port, rcpts, args.hold, sampler))
            sampler.stop()
            res.update({"rss_kib_idle": idle.peak_rss, "pss_kib_idle": idle.peak_pss,
                        "peak_rss_kib": sampler.peak_rss, "peak_pss_kib": sampler.peak_pss})
            out[name] = res
            print(f"bench: sessions {name}: {res}", flush=True)
    finally:
        bench.close()
    return out


def sessions_table(report: dict[str, object]) -> str:
    lines = [f"{report['sessions']} concurrent SMTP sessions parked in DATA (smtpd tree; Postfix: all its "
             "processes)",
             "server    parked  completed  idle RSS/PSS MiB  parked RSS/PSS MiB  peak RSS/PSS MiB"]
    for name in ("qldap", "postfix"):
        r = cast(dict[str, int] | None, report.get(name))
        if r is None:
            continue
        lines.append(f"{name:<9} {r['parked']:>6}  {r['completed']:>9}  "
                     f"{r['rss_kib_idle'] / 1024:>7.0f} / {r['pss_kib_idle'] / 1024:<6.0f}  "
                     f"{r['rss_kib_while_parked'] / 1024:>8.0f} / {r['pss_kib_while_parked'] / 1024:<7.0f}  "
                     f"{r['peak_rss_kib'] / 1024:>6.0f} / {r['peak_pss_kib'] / 1024:.0f}")
    return "\n".join(lines)

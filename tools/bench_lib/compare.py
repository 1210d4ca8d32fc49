"""``tools/bench compare``: qldap and a private Postfix side by side on one slapd and one Maildir tree.

Runs alternate qldap / Postfix / qldap per scenario so that a drift in the machine's load (it is
shared) shows up as a gap between the two qldap runs instead of as a false ratio; the ratio row
uses the mean of the two qldap runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_lib import postfix
from bench_lib.load import BENCH_DOMAIN, Tracker, rcpt_code
from bench_lib.measure import Scenario, Server, run_once
from bench_lib.qldap_server import QldapServer
from bench_lib.world import World, build_world, recipients

WARMUP = 40


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The compare scenarios: each of --conns with persistent sessions, then one message per session."""
    out = [Scenario(f"c{c}", c, 0, args.messages) for c in args.conns]
    if args.per_conn_messages:
        out.append(Scenario(f"1/conn c{args.per_conn_workers}", args.per_conn_workers, 1,
                            args.per_conn_messages))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=10000, help="qmailUser entries in the directory")
    p.add_argument("--conns", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16],
                   help="comma-separated concurrent connections, one scenario each (default 4,16)")
    p.add_argument("-n", "--messages", type=int, default=2000, help="messages per run")
    p.add_argument("--per-conn-messages", type=int, default=1000,
                   help="messages of the one-message-per-connection run (0: skip it)")
    p.add_argument("--per-conn-workers", type=int, default=4, help="concurrent clients of that run")
    p.add_argument("-s", "--size", type=int, default=2048, help="message size in bytes")
    p.add_argument("--servers", default="qldap,postfix", help="which servers to run (qldap,postfix)")
    p.add_argument("--control", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="an extra qldap control file (repeatable)")
    p.add_argument("--smtpd-arg", action="append", default=[], help="extra argument for qldap smtpd")
    p.add_argument("--drain-seconds", type=float, default=300)
    p.add_argument("--json", metavar="FILE", help="also write every run as JSON to FILE ('-': stdout only)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, maillog, Maildirs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", metavar="DIR",
                   help="py-spy collapsed stacks of the qldap daemons, per run, in DIR")
    p.add_argument("--profile-gil", action="store_true", help="sample only the GIL holder (CPU view)")


class Bench:
    """The world and the servers of one invocation; :meth:`close` stops everything it started."""

    def __init__(self, args: argparse.Namespace, servers: Sequence[str]) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="qldap-bench-"))
        os.chmod(self.base, 0o755)  # the mailbox owner must traverse to its store
        self.servers: dict[str, Server] = {}
        self._stoppers: list[object] = []
        t0 = time.perf_counter()
        self.world: World = build_world(self.base, args.users)
        self.setup_s = time.perf_counter() - t0
        self.tracker = Tracker(self.world.mail_root)
        try:
            if "qldap" in servers:
                (self.base / "qldap").mkdir()
                q = QldapServer(self.world, self.base / "qldap", controls=args.control,
                                smtpd_args=args.smtpd_arg)
                self._stoppers.append(q)
                q.start()
                self.servers["qldap"] = q
            if "postfix" in servers:
                pf = postfix.PostfixServer(self.world, self.base / "postfix",
                                           smtpd_maxproc=getattr(args, "smtpd_sessions", None))
                self._stoppers.append(pf)
                pf.start()
                self.servers["postfix"] = pf
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in reversed(self._stoppers):
            stop = getattr(s, "stop", None)
            if stop is not None:
                try:
                    stop()
                except Exception as exc:  # one failing stop must not leave the others running
                    print(f"bench: stopping {s}: {exc}")
        self.world.stop()
        if self.args.keep:
            print(f"bench: kept {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def run_compare(args: argparse.Namespace) -> dict[str, object]:
    """Build, warm up, run every scenario alternating the servers, and return the report."""
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "postfix" in wanted and (why := postfix.installed()) is not None:
        raise SystemExit(f"bench: {why}")
    plan = scenarios(args)
    lists = {sc.name: recipients(args.users, sc.messages, args.seed + i) for i, sc in enumerate(plan)}
    warm = recipients(args.users, WARMUP, args.seed + 1000)
    bench = Bench(args, wanted)
    runs: list[dict[str, object]] = []
    try:
        bench.world.mailboxes([u for rc in [*lists.values(), warm] for u in rc])
        slapd = bench.world.slapd_pid
        unknown = f"nobody{args.users + 1}@{BENCH_DOMAIN}"
        probes = {name: rcpt_code(server.port, unknown) for name, server in bench.servers.items()}
        pids = {name: server.daemons() for name, server in bench.servers.items()}
        pids["slapd"] = {"slapd": slapd}
        for name, server in bench.servers.items():
            run_once(server, bench.tracker, slapd, Scenario("warmup", 2, 0, WARMUP), warm, f"w{name}")
        order = ["qldap", "postfix", "qldap"] if len(bench.servers) == 2 else list(bench.servers)
        for sc in plan:
            for i, name in enumerate(order):
                r = run_once(bench.servers[name], bench.tracker, slapd, sc, lists[sc.name],
                             f"{sc.name}.{i}", size=args.size, drain_seconds=args.drain_seconds,
                             profile_dir=args.profile, profile_gil=args.profile_gil)
                runs.append(r)
                print(f"bench: {sc.name} {name}: {r['accepted']} accepted, {r['delivered']} delivered, "
                      f"{r['cpu_ms_per_msg']} ms CPU/msg", flush=True)
    finally:
        bench.close()
    return {"mode": "compare", "users": args.users, "size": args.size, "ncpu": os.cpu_count(),
            "setup_s": round(bench.setup_s, 1), "unknown_rcpt_code": probes, "pids": pids, "runs": runs}


def _mean(rows: Sequence[dict[str, object]], key: str) -> float:
    vals = [float(r[key]) for r in rows]  # type: ignore[arg-type]
    return sum(vals) / len(vals) if vals else 0.0


def _breakdown(r: dict[str, object]) -> str:
    by = r["cpu_ms_per_msg_by_daemon"]
    assert isinstance(by, dict)
    order = sorted(by.items(), key=lambda kv: (kv[0] == "slapd", -kv[1]))
    return " ".join(f"{k} {v:.2f}" for k, v in order if v >= 0.01)


COLUMNS = ("scenario", "server", "acc/s", "dlv/s", "accept p50/p99 ms", "acc→dlv p50/p99 ms",
           "CPU ms/msg", "peak RSS/PSS MiB", "CPU ms/msg by daemon")
RATIO_KEYS = ("accepted_per_s", "delivered_per_s", "accept_p99_ms", "latency_p99_ms", "cpu_ms_per_msg",
              "peak_pss_kib")


def ratios(runs: Sequence[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per scenario: qldap (mean of its runs) / Postfix, for the figures the targets name."""
    out: dict[str, dict[str, float]] = {}
    for sc in dict.fromkeys(str(r["scenario"]) for r in runs):
        q = [r for r in runs if r["scenario"] == sc and r["server"] == "qldap"]
        p = [r for r in runs if r["scenario"] == sc and r["server"] == "postfix"]
        if q and p:
            out[sc] = {k: round(_mean(q, k) / _mean(p, k), 2) if _mean(p, k) else 0.0 for k in RATIO_KEYS}
    return out


def table(report: dict[str, object]) -> str:
    """The one human-readable table: every run, then a qldap/Postfix ratio row per scenario."""
    runs = report["runs"]
    assert isinstance(runs, list)
    rows: list[tuple[str, ...]] = [COLUMNS]
    rat = ratios(runs)
    for sc in dict.fromkeys(str(r["scenario"]) for r in runs):
        for r in (r for r in runs if r["scenario"] == sc):
            rows.append((sc, str(r["server"]), f"{r['accepted_per_s']:.0f}", f"{r['delivered_per_s']:.0f}",
                         f"{r['accept_p50_ms']:.0f} / {r['accept_p99_ms']:.0f}",
                         f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f}",
                         f"{r['cpu_ms_per_msg']:.2f}",
                         f"{int(r['peak_rss_kib']) / 1024:.0f} / {int(r['peak_pss_kib']) / 1024:.0f}",
                         _breakdown(r)))
        if sc in rat:
            x = rat[sc]
            rows.append((sc, "qldap/postfix", f"{x['accepted_per_s']:.2f}×", f"{x['delivered_per_s']:.2f}×",
                         f"p99 {x['accept_p99_ms']:.2f}×", f"p99 {x['latency_p99_ms']:.2f}×",
                         f"{x['cpu_ms_per_msg']:.2f}×", f"PSS {x['peak_pss_kib']:.2f}×", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    loads = [x for r in runs for x in (r["loadavg_before"][0], r["loadavg_after"][0])]
    bad = [f"{r['scenario']} {r['server']}: {r['undelivered']} undelivered, {r['failed']} failed"
           for r in runs if r["undelivered"] or r["failed"] or r["delivered"] != r["messages"]]
    head = (f"{report['users']} users, {report['size']} B messages, {report['ncpu']} CPUs, "
            f"load average {min(loads):.1f}–{max(loads):.1f}; CPU includes slapd; RSS sums the process "
            "tree, PSS shares libraries fairly")
    return "\n".join([head, *lines, *bad])


def main(args: argparse.Namespace) -> int:
    report = run_compare(args)
    if args.json:
        text = json.dumps(report, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    print(table(report))
    runs = report["runs"]
    assert isinstance(runs, list)
    ok = all(r["delivered"] == r["messages"] and not r["failed"] for r in runs)
    return 0 if ok else 1

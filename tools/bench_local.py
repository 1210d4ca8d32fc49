#!/usr/bin/env python3
"""CPU per local delivery, queue-free: ``LocalSpawner.deliver`` called N times in one process.

    .venv/bin/python tools/bench_local.py [--users 10000] [-n 2000] [--warmup 200] [-s 2048] [--rounds 3]
                                          [--profile FILE] [--top 30] [--json FILE] [--keep]

Why a separate bench: a drain through ``qldap send`` mixes the queue manager's work (todo, channel
files, the event loop, thread hand-offs) with the deliveries, and its figures move by tens of per
cent with the shared machine's load.  This builds the world of ``tools/bench compare`` (a private
slapd bulk-loaded with N qmailUser entries, their Maildirs, a root from ``qldap init``) and then does
exactly what ``qldap send`` does per local recipient — ``LocalSpawner.deliver(recipient, sender,
message)`` — in this process, timing it with ``time.process_time`` (user + system CPU of this
process; slapd's share is not counted).  Each round delivers ``-n`` messages to random users; the
figure is CPU µs per delivery (the median of the rounds, each printed).  ``--profile FILE`` runs one
more round under cProfile and writes the stats (and prints the ``--top`` functions by internal time).

For an A/B between two commits, run it with ``PYTHONPATH`` pointing at the other checkout (a
``git worktree add``): the editable install's path comes after ``PYTHONPATH``.  It prints the
``qldap`` package it imported (``git archive`` of a commit's ``qldap/`` into a directory works too).
Messages are delivered as root through the per-thread file-system identity, as ``qldap send`` does;
without root, as the current user.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_lib.load import BENCH_DOMAIN
from bench_lib.load import message as make_message
from bench_lib.qldap_server import qldap_program
from bench_lib.world import BENCH_SUFFIX, World, build_world, recipients

import qldap
from qldap.local.spawn import LocalSpawner


def _refuse(data: bytes, sender: str, recipients: tuple[str, ...]) -> int:
    raise RuntimeError("bench_local: the bench users forward nothing")


def make_root(world: World, base: Path) -> Path:
    """A qmail root from ``qldap init`` pointing at the bench slapd."""
    root = base / "root"
    subprocess.run([qldap_program(), "init", "--me", BENCH_DOMAIN, "--ldap", world.slapd.url,
                    "--basedn", BENCH_SUFFIX, str(root)], check=True, capture_output=True)
    return root


def write_message(base: Path, size: int) -> Path:
    """One queued-like message file of about *size* bytes, readable by the mailbox owner's identity."""
    path = base / "message"
    path.write_bytes(make_message(size).replace(b"\r\n", b"\n"))  # the queue stores LF lines
    path.chmod(0o644)
    return path


def run_round(spawner: LocalSpawner, users: list[int], message: Path) -> tuple[float, float, float]:
    """Deliver to each of *users*; (CPU seconds, user CPU seconds, wall seconds).  Any non-K report
    stops the bench."""
    sender = "bench@" + BENCH_DOMAIN
    rcpts = [f"u{i}@{BENCH_DOMAIN}" for i in users]
    c0, u0, w0 = time.process_time(), os.times().user, time.perf_counter()
    for rcpt in rcpts:
        report = spawner.deliver(rcpt, sender, message)
        if report.letter != "K":
            raise SystemExit(f"bench_local: {rcpt}: {report.letter} {report.text}")
    return time.process_time() - c0, os.times().user - u0, time.perf_counter() - w0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=10000, help="qmailUser entries in the directory")
    p.add_argument("-n", "--deliveries", type=int, default=2000, help="deliveries per round")
    p.add_argument("--warmup", type=int, default=200, help="deliveries before the first round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-s", "--size", type=int, default=2048, help="message size in bytes")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--profile", metavar="FILE", help="one more round under cProfile; stats to FILE")
    p.add_argument("--top", type=int, default=30, help="functions printed with --profile")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()

    base = Path(tempfile.mkdtemp(prefix="qldap-bench-local-"))
    base.chmod(0o755)
    world = None
    try:
        print(f"bench_local: qldap from {Path(qldap.__file__).parent}; world in {base}", flush=True)
        world = build_world(base, args.users)
        root = make_root(world, base)
        message = write_message(base, args.size)
        total = args.warmup + args.deliveries * (args.rounds + (1 if args.profile else 0))
        users = recipients(args.users, total, args.seed)
        world.mailboxes(users)
        spawner = LocalSpawner(root, _refuse)
        run_round(spawner, users[: args.warmup], message)
        rounds: list[dict[str, float]] = []
        at = args.warmup
        for _ in range(args.rounds):
            cpu, user, wall = run_round(spawner, users[at : at + args.deliveries], message)
            at += args.deliveries
            n = args.deliveries
            rounds.append({"cpu_us": cpu * 1e6 / n, "user_us": user * 1e6 / n, "wall_us": wall * 1e6 / n})
            print(f"round: {n} deliveries, CPU {cpu * 1e6 / n:.0f} µs/delivery "
                  f"(user {user * 1e6 / n:.0f}), wall {wall * 1e6 / n:.0f} µs/delivery", flush=True)
        median = statistics.median(r["cpu_us"] for r in rounds) if rounds else 0.0
        user_median = statistics.median(r["user_us"] for r in rounds) if rounds else 0.0
        print(f"median CPU per delivery: {median:.0f} µs, user {user_median:.0f} µs "
              f"(load average {os.getloadavg()[0]:.1f})")
        if args.profile:
            prof = cProfile.Profile()
            chunk = users[at : at + args.deliveries]
            prof.enable()
            run_round(spawner, chunk, message)
            prof.disable()
            prof.dump_stats(args.profile)
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
        spawner.reload()
        delivered = sum(len(os.listdir(d / "Maildir" / "new")) for d in world.mail_root.iterdir())
        print(f"files in the Maildirs: {delivered} of {total} deliveries")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "users": args.users, "deliveries": args.deliveries, "size": args.size,
                "rounds": rounds, "median_cpu_us": median, "median_user_us": user_median,
                "qldap": str(Path(qldap.__file__).parent),
                "loadavg": os.getloadavg(), "total_deliveries": total, "delivered_files": delivered,
            }, indent=2) + "\n")
        return 0
    finally:
        if world is not None:
            world.stop()
        if args.keep:
            print(f"bench_local: kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""CPU of ``qldap smtpd`` per connection and per message, with the queue manager stopped.

    .venv/bin/python tools/bench_smtpd.py [--users 10000] [--conns 500] [--parallel 4] [-s 2048]
                                          [--modes greet,message,session] [--rounds 2] [--warmup 20]
                                          [--smtpd-arg ARG]... [--control NAME VALUE]...
                                          [--wrap "CMD {pid} {mode}"] [--json FILE] [--keep]

Why a separate bench: ``tools/bench compare`` measures whole servers end to end, so a connection's own
cost in smtpd hides behind delivery and the load of the shared cores.  This builds the world of
``compare`` (a private slapd bulk-loaded with N qmailUser entries, a root from ``qldap init``), starts
only ``qldap smtpd --env RCPTCHECK=`` (no ``qldap send``: messages stay in the queue) and drives
``--conns`` connections, ``--parallel`` at a time, in each mode:

* ``greet``: connect, 220, EHLO, QUIT — the price of a connection alone;
* ``message``: connect, EHLO, one ``-s`` byte message to a random directory user (RCPT is an LDAP
  lookup, the 250 after DATA means queued and fsynced), QUIT;
* ``session``: the same messages over ``--parallel`` persistent connections (one EHLO each), so
  ``message`` minus ``session`` is what a connection adds to a message.

The figure is smtpd's CPU (user + system of all its threads, ``/proc/PID/stat``) per connection,
read before and after each mode, divided by the connections (``greet``, ``message``) or the
messages (``session``).
Every mode runs ``--rounds`` times, alternating, and each round is printed.  ``--wrap`` starts a
command around each measured mode with ``{pid}`` replaced by smtpd's pid and ``{mode}`` by the mode
(e.g. ``strace -c -f -o st-{mode}.txt -p {pid}`` or ``py-spy record --gil -r 500 -f raw -o
{mode}.txt -p {pid}``) and interrupts it afterwards.
No ``qldap send`` runs: every message accepted is counted in ``queue/mess`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_lib.load import Load, drive, reply
from bench_lib.qldap_server import QldapServer
from bench_lib.world import build_world, recipients

TICK = os.sysconf("SC_CLK_TCK")
MODES = ("greet", "message", "session")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of *pid* in clock ticks, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


async def _greet_once(port: int, failures: list[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        failures.append(f"connect: {exc}")
        return
    try:
        code, text = await reply(reader)
        if code != 220:
            failures.append(text)
            return
        writer.write(b"EHLO bench.invalid\r\n")
        code, text = await reply(reader)
        if code != 250:
            failures.append(text)
        writer.write(b"QUIT\r\n")
        await reply(reader)
    except (OSError, ConnectionError, ValueError) as exc:
        failures.append(f"session: {exc}")
    finally:
        writer.close()


async def greet(port: int, conns: int, parallel: int) -> tuple[int, list[str]]:
    """*conns* connect/EHLO/QUIT sessions, *parallel* at a time; (sessions done, failures)."""
    failures: list[str] = []
    left = [conns]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await _greet_once(port, failures)

    await asyncio.gather(*[worker() for _ in range(parallel)])
    return conns - len(failures), failures


def measure(q: QldapServer, mode: str, conns: int, parallel: int, size: int, users: int, seed: int,
            wrap: str) -> dict[str, object]:
    """One mode once: smtpd's CPU per connection while *conns* sessions run."""
    pid = q.daemons()["smtpd"]
    wrapper = None
    if wrap:
        wrapper = subprocess.Popen(shlex.split(wrap.format(pid=pid, mode=mode)), start_new_session=True)
        time.sleep(1.0)  # let strace/py-spy attach before the clock starts
    u0, s0 = cpu_ticks(pid)
    t0 = time.perf_counter()
    if mode == "greet":
        done, failures = asyncio.run(greet(q.port, conns, parallel))
    else:
        per_session = 1 if mode == "message" else 0
        load = Load(q.port, recipients(users, conns, seed), parallel, per_session, size, f"m{seed}", 600)
        res = asyncio.run(drive(load, None))
        done, failures = res.accepted, res.failures
    seconds = time.perf_counter() - t0
    u1, s1 = cpu_ticks(pid)
    if wrapper is not None:
        wrapper.send_signal(signal.SIGINT)
        try:
            wrapper.wait(60)
        except subprocess.TimeoutExpired:
            wrapper.kill()
            wrapper.wait()
    n = max(done, 1)
    user_us, sys_us = (u1 - u0) * 1e6 / TICK / n, (s1 - s0) * 1e6 / TICK / n
    return {"mode": mode, "conns": done, "failures": failures[:5], "failed": len(failures),
            "seconds": round(seconds, 3), "per_s": round(done / seconds, 1) if seconds else 0.0,
            "cpu_us": round(user_us + sys_us), "user_us": round(user_us), "sys_us": round(sys_us),
            "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=10000, help="qmailUser entries in the directory")
    p.add_argument("--conns", type=int, default=500, help="connections per mode and round")
    p.add_argument("--parallel", type=int, default=4, help="connections open at a time")
    p.add_argument("-s", "--size", type=int, default=2048, help="message size in bytes")
    p.add_argument("--modes", default="greet,message,session", help="comma-separated modes")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=20, help="message connections before the first round")
    p.add_argument("--smtpd-arg", action="append", default=[], help="extra argument for qldap smtpd")
    p.add_argument("--control", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--wrap", default="", help="command around each mode ({pid}, {mode} replaced)")
    p.add_argument("--json", metavar="FILE", help="write every round as JSON to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (smtpd.log, queue)")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        p.error(f"--modes takes {', '.join(MODES)}")
    base = Path(tempfile.mkdtemp(prefix="qldap-bench-smtpd-"))
    os.chmod(base, 0o755)
    world = build_world(base, args.users)
    q: QldapServer | None = None
    rounds: list[dict[str, object]] = []
    try:
        (base / "qldap").mkdir()
        q = QldapServer(world, base / "qldap", controls=args.control, smtpd_args=args.smtpd_arg)
        q.start_smtpd()
        print(f"smtpd pid {q.smtpd.pid if q.smtpd else 0}, port {q.port}, {args.users} users", flush=True)
        if args.warmup:
            measure(q, "message", args.warmup, 1, args.size, args.users, 999, "")
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                row = measure(q, mode, args.conns, args.parallel, args.size, args.users, 1000 + r, args.wrap)
                row["round"] = r + 1
                rounds.append(row)
                print(f"round {r + 1} {mode:7s} {row['conns']} conns in {row['seconds']} s "
                      f"({row['per_s']}/s): smtpd {row['cpu_us']} µs/conn "
                      f"(user {row['user_us']}, sys {row['sys_us']}), failed {row['failed']}, "
                      f"load {row['load']:.1f}", flush=True)
        summary: dict[str, float] = {}
        for mode in modes:
            summary[mode] = statistics.median(float(str(r["cpu_us"])) for r in rounds if r["mode"] == mode)
            unit = "message" if mode == "session" else "connection"
            print(f"median smtpd CPU per {unit} ({mode}): {summary[mode]:.0f} µs", flush=True)
        if "greet" in summary and "message" in summary:
            extra = summary["message"] - summary["greet"]
            print(f"a message beyond the connection: {extra:.0f} µs", flush=True)
        if "session" in summary and "message" in summary:
            extra = summary["message"] - summary["session"]
            print(f"a connection beyond the message: {extra:.0f} µs", flush=True)
        queued = q.queued()
        print(f"messages in the queue: {queued}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"rounds": rounds, "median_cpu_us": summary,
                                                   "queued": queued, "users": args.users}, indent=1))
        return 1 if any(r["failed"] for r in rounds) else 0
    finally:
        if q is not None:
            q.stop()
        world.stop()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""``qldap smtpd --processes 2``: two forked workers on one port (SO_REUSEPORT), supervised by the parent.

Real processes and real ``smtplib`` sessions: which worker served a session is read from its log
line (``qmail-smtpd[PID] N: message queued …``).  The kernel spreads connections by a hash of the
client port, so the tests open sessions until each worker has served one (a bound, not a clock).
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import QRoot
from tests.e2e.smtpd import queued
from tests.test_smtpd_server_process import QLDAP, Daemon, root

__all__ = ["root"]  # the fixture: the same controls and queue as the single-process tests

WORKERS = re.compile(r"qldap smtpd: 2 worker processes: (\d+) (\d+)")
QUEUED = re.compile(r"qmail-smtpd\[(\d+)\] \d+: message queued: .*")
METRICS = re.compile(r"qldap smtpd: metrics on 127\.0\.0\.1:(\d+)")
MAX_SESSIONS = 64  # hash spreading: two workers both unseen after 64 sessions is 2**-63


@pytest.fixture
def daemon(root: QRoot) -> Iterator[Daemon]:
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--processes", "2", "--env", "LOGLEVEL=2")
    try:
        yield d
    finally:
        d.stop()


def worker_pids(d: Daemon) -> set[int]:
    (m,) = d.wait_for(WORKERS)
    return {int(m.group(1)), int(m.group(2))}


def send_one(d: Daemon, n: int) -> int:
    """One message over a fresh smtplib connection; the pid of the worker that queued it."""
    with smtplib.SMTP("127.0.0.1", d.ports[0], timeout=60) as smtp:
        code, _ = smtp.ehlo("client.test")
        assert code == 250
        refused = smtp.sendmail("x@remote.test", ["alice@example.org"], f"Subject: n{n}\r\n\r\nbody {n}\r\n")
        assert refused == {}
    (m,) = d.wait_for(QUEUED)
    return int(m.group(1))


def serve_until(d: Daemon, wanted: set[int], start: int = 0) -> int:
    """Send messages until every pid in *wanted* queued one; how many were sent."""
    seen: set[int] = set()
    n = start
    while not wanted <= seen:
        assert n - start < MAX_SESSIONS, f"only {seen} of {wanted} served"
        pid = send_one(d, n)
        assert pid in wanted
        seen.add(pid)
        n += 1
    return n - start


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_two_workers_accept_and_queue(root: QRoot, daemon: Daemon) -> None:
    """Both workers serve sessions on the one port and every message is queued (250 after DATA)."""
    pids = worker_pids(daemon)
    assert daemon.proc.pid not in pids
    sent = serve_until(daemon, pids)
    assert len(queued(root.path)) == sent


def test_killed_worker_is_replaced(root: QRoot, daemon: Daemon) -> None:
    """kill -9 of one worker: the parent forks another, mail keeps getting 250, the new one serves."""
    pids = worker_pids(daemon)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    daemon.wait_for(re.compile(rf"qldap smtpd: worker {victim} killed by signal 9; starting another"))
    (m,) = daemon.wait_for(re.compile(r"qldap smtpd: worker (\d+) started"))
    new = int(m.group(1))
    assert new not in pids
    sent = serve_until(daemon, (pids - {victim}) | {new})
    assert len(queued(root.path)) == sent


def test_sigterm_stops_every_worker(root: QRoot, daemon: Daemon) -> None:
    """TERM to the parent: both workers stop, the parent reaps them and exits 0."""
    pids = worker_pids(daemon)
    send_one(daemon, 0)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(60) == 0
    assert all(gone(pid) for pid in pids)
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", daemon.ports[0], timeout=10)


def test_port_in_use_is_fatal(root: QRoot) -> None:
    """A port that a plain listener holds cannot be shared: exit 111 before any worker starts."""
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        port = plain.getsockname()[1]
        busy = subprocess.run([QLDAP, "smtpd", "--root", str(root.path), "--listen", f"127.0.0.1:{port}",
                               "--processes", "2"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert busy.returncode == 111
    assert busy.stderr.startswith("qldap smtpd: fatal: unable to listen")


def test_metrics_sum_every_worker(root: QRoot) -> None:
    """With QLDAP_METRICS the parent serves one endpoint that counts the sessions of both workers."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--processes", "2", "--env", "LOGLEVEL=2",
               "--env", "QLDAP_METRICS=127.0.0.1:0")  # fmt: skip
    try:
        (m,) = [m for m in map(METRICS.fullmatch, d.seen) if m]
        sent = serve_until(d, worker_pids(d))
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=60) as resp:
            text = resp.read().decode()
        sessions = re.search(r'^qldap_sessions_total\{daemon="smtpd"\} (\S+)$', text, re.M)
        assert sessions is not None and float(sessions.group(1)) == sent
        queued_replies = re.search(r'^qldap_smtp_replies_total\{command="message",reason="250",'
                                   r'result="accepted"\} (\S+)$', text, re.M)  # fmt: skip
        assert queued_replies is not None and float(queued_replies.group(1)) == sent
    finally:
        d.stop()


def test_sighup_reaches_every_worker(daemon: Daemon) -> None:
    """SIGHUP to the parent: each worker reloads its controls (its own log line) and keeps serving."""
    pids = worker_pids(daemon)
    daemon.proc.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_for(re.compile(r"qmail-smtpd\[(\d+)\]: reloaded .*"), count=2)
    assert {int(m.group(1)) for m in reloaded} == pids
    serve_until(daemon, pids)

"""``qldap smtpd`` queues through its queue writer helpers (qldap.queue.writer): real daemon, real
helpers, real sockets.

The helpers are found as the daemon's child processes running ``qldap.queue.writer``.  The crash
test stops a helper inside an injection (its message body, read by name from the daemon's spill
file, is a FIFO nobody writes) and kills it there: the client must get the temporary ``451`` (it
keeps the message and retries), nothing may reach ``todo``, and the next message must be queued by
a fresh helper.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.queue.cleanup import OSSIFIED, clean_all
from qldap.queue.layout import create_queue
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, mess_files, queued
from tests.test_smtpd_server_process import Daemon

WRITE_ERROR = "451 qq write error or disk full (#4.3.0)\r\n"
RECEIVED = re.compile(rb"Received: \(qmail (\d+) invoked by uid \d+\); ")


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org")
    create_queue(qroot.path)
    return qroot


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    running: list[Daemon] = []
    yield running
    for d in running:
        d.stop()


def writers(daemon_pid: int) -> list[int]:
    """The daemon's children that run the queue writer."""
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{daemon_pid}/task"):
        try:
            kids += [int(p) for p in Path(f"/proc/{daemon_pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            continue
    out = []
    for pid in kids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"qldap.queue.writer" in cmd:
            out.append(pid)
    return sorted(out)


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def send(d: Daemon, body: bytes, end: bool = True) -> Client:
    c = d.client()
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("DATA").startswith("354")
    c.send(body)
    if end:
        c.send(b".\r\n")
    return c


def test_messages_are_queued_by_helper_processes(root: QRoot, daemons: list[Daemon]) -> None:
    """A small message (inline in the request) and a 3 MB one (spilled, read by the helper from
    pid/spool.*) are queued by a writer process, with the Received line of qmail-queue and the qp of
    the 250 reply; the spill file is gone afterwards."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "2")
    daemons.append(d)
    c = send(d, b"Subject: small\r\n\r\nhello\r\n")
    reply = c.reply()
    assert re.fullmatch(r"250 ok \d+ qp \d+ by mx\.example\.org\r\n", reply)
    helpers = writers(d.proc.pid)
    assert 1 <= len(helpers) <= 2 and d.proc.pid not in helpers
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
    c2 = send(d, big)
    reply2 = c2.reply()
    assert reply2.startswith("250 ok ")
    msgs = queued(root.path)
    (small,) = [m for m in msgs if b"Subject: small" in m.message]
    (large,) = [m for m in msgs if b"Subject: big" in m.message]
    m = RECEIVED.match(small.message)
    assert m is not None and int(m.group(1)) == small.todo.pid == int(reply.split()[4])
    assert small.message.endswith(b"Subject: small\n\nhello\n")
    assert large.message.endswith(big.replace(b"\r\n", b"\n"))
    assert large.todo.pid == int(reply2.split()[4])
    assert [n for n in os.listdir(root.path / "queue" / "pid") if n.startswith("spool.")] == []


def test_a_helper_killed_mid_write_gives_451_and_the_next_message_is_queued(
    root: QRoot, daemons: list[Daemon]
) -> None:
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "1", "--env", "LOGLEVEL=1")
    daemons.append(d)
    assert send(d, b"Subject: one\r\n\r\n1\r\n").reply().startswith("250 ok ")
    (helper,) = writers(d.proc.pid)
    c = send(d, b"Subject: two\r\n\r\n" + (b"z" * 78 + b"\r\n") * 20000, end=False)  # 1.6 MB: spilled
    spool_dir = root.path / "queue" / "pid"
    deadline = time.monotonic() + 20
    while not (spills := [n for n in os.listdir(spool_dir) if n.startswith("spool.")]):
        assert time.monotonic() < deadline, "the daemon never spilled the message"
        time.sleep(0.05)
    # a FIFO in the spill file's place: the helper, reading the body by name, blocks in open()
    # after it created and linked mess/S/N — in the middle of the injection
    os.mkfifo(spool_dir / "fifo")
    os.rename(spool_dir / "fifo", spool_dir / spills[0])
    c.send(b".\r\n")
    while len(mess_files(root.path)) < 2:
        assert time.monotonic() < deadline, "the helper never started the second message"
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(helper, signal.SIGKILL)
    assert c.reply() == WRITE_ERROR
    assert gone(helper)
    d.wait_for(re.compile(r"qmail-smtpd: queue writer failed: helper \d+ died during a job"))
    assert send(d, b"Subject: three\r\n\r\n3\r\n").reply().startswith("250 ok ")
    (fresh,) = writers(d.proc.pid)
    assert fresh != helper
    subjects = sorted(m.message.rsplit(b"Subject: ", 1)[1][:5] for m in queued(root.path))
    assert subjects == [b"one\n\n", b"three"]
    # the killed injection stays in S2 (mess without todo) until the 36-hour cleanup removes it
    assert len(mess_files(root.path)) == 3
    report = clean_all(root.path, clock=lambda: time.time() + OSSIFIED + 60)
    assert len(report.messages) == 1 and len(mess_files(root.path)) == 2


def test_bigbrother_and_queue_errors_pass_through_the_helper(root: QRoot, daemons: list[Daemon]) -> None:
    """control/bigbrother (read by the writer) adds its copy; an unreadable control is qmail-queue's
    exit 55 and reaches the client with the injector's exact text; the helper survives it."""
    root.control("bigbrother", "alice@example.org:watcher@example.org")
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "1")
    daemons.append(d)
    assert send(d, b"Subject: watched\r\n\r\nx\r\n").reply().startswith("250 ok ")
    (msg,) = queued(root.path)
    assert msg.todo.envelope.recipients == ("alice@example.org", "watcher@example.org")
    (helper,) = writers(d.proc.pid)
    bigbrother = root.path / "control" / "bigbrother"
    bigbrother.unlink()
    bigbrother.mkdir()  # present but unreadable as a file
    assert send(d, b"Subject: x\r\n\r\nx\r\n").reply() == "451 qq unable to read configuration (#4.3.0)\r\n"
    assert writers(d.proc.pid) == [helper] and len(queued(root.path)) == 1


def test_sighup_replaces_the_helpers(root: QRoot, daemons: list[Daemon]) -> None:
    """SIGHUP retires the writers (they may read controls and the qmail users afresh); the next
    message is queued by a new one and the old one has exited."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "1", "--env", "LOGLEVEL=2")
    daemons.append(d)
    assert send(d, b"Subject: before\r\n\r\nx\r\n").reply().startswith("250 ok ")
    (old,) = writers(d.proc.pid)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(re.compile(r"qmail-smtpd: reloaded .*"))
    assert gone(old)
    assert send(d, b"Subject: after\r\n\r\ny\r\n").reply().startswith("250 ok ")
    (new,) = writers(d.proc.pid)
    assert new != old
    assert len(queued(root.path)) == 2


def test_sigterm_ends_the_helpers_with_the_daemon(root: QRoot, daemons: list[Daemon]) -> None:
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "2")
    daemons.append(d)
    assert send(d, b"Subject: x\r\n\r\nx\r\n").reply().startswith("250 ok ")
    helpers = writers(d.proc.pid)
    assert helpers
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0
    assert all(gone(pid) for pid in helpers)


MALLINFO_PROBE = """
import ctypes, socket, sys
from qldap.cli._run import steady_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "steady":
    assert steady_malloc()
a, b = socket.socketpair()
before = libc.mallinfo2().hblks
kept = []
for _ in range(10):
    a.send(b"x" * 100)
    kept.append(b.recv(262144))  # what asyncio's transports do on every read
print(libc.mallinfo2().hblks - before)
"""


def test_steady_malloc_keeps_socket_reads_off_mmap() -> None:
    """glibc maps each 256 KiB read buffer (then mremap, munmap) unless the daemon fixed the threshold:
    counted as live mmapped blocks (mallinfo2) after ten reads kept alive, with and without it."""
    def mapped(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", MALLINFO_PROBE, mode], capture_output=True, text=True,
                             timeout=60, check=True)  # fmt: skip
        return int(out.stdout)

    assert mapped("default") >= 10
    assert mapped("steady") == 0


def test_zero_queue_workers_write_in_process(root: QRoot, daemons: list[Daemon]) -> None:
    """--queue-workers 0: the daemon writes the queue itself (threads), no helper is started."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--queue-workers", "0")
    daemons.append(d)
    reply = send(d, b"Subject: inproc\r\n\r\nx\r\n").reply()
    assert reply.startswith("250 ok ")
    assert writers(d.proc.pid) == []
    (msg,) = queued(root.path)
    assert msg.todo.pid == int(reply.split()[4]) and msg.message.endswith(b"Subject: inproc\n\nx\n")

"""Crashes of the manager (qldap-queue(5), Crash behaviour) and a kill -9 soak with real
deliveries.

The crashes are real process deaths: a child Python runs the real Manager with a hook that calls
``os._exit`` at the named point (nothing of the manager's own cleanup runs, as with ``kill -9``), or
the real ``qldap send`` is killed with SIGKILL.  After a restart every recipient must be delivered —
once when the crash was during preprocessing, once or twice when it was between a delivery and its
mark, never zero times.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.queue.cleanup import OSSIFIED, clean_all
from qldap.queue.layout import QueueLayout
from qldap.queue.states import State, scan
from qldap.send.channels import PrepStep, SendStep
from tests.test_send_manager_support import ManagerProcess, make_root, put, queue_files, run_python

CHILD = """
import asyncio, os, sys
from pathlib import Path
from qldap.reports import Letter, Report
from tests.test_send_manager_support import TestSpawners, queue_files, running_manager, until

root, record, crash = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def local(rcpt, sender, message):
    with open(record, "a") as fh:  # the "mailbox": one durable line per delivery
        fh.write(rcpt + "\\n")
        fh.flush()
        os.fsync(fh.fileno())
    return Report(Letter.SUCCESS, "did 1+0+0\\n")

def hook(step):
    if step.value == crash:
        os._exit(137)

async def main():
    sp = TestSpawners()
    sp.local = local
    async with running_manager(root, sp, hook=hook) as run:
        await until(lambda: queue_files(run.layout) == [], "an empty queue")

asyncio.run(main())
"""

RCPTS = ["a@mx1.example.com", "b@mx1.example.com", "c@mx1.example.com"]


def deliveries(record: Path) -> collections.Counter[str]:
    return collections.Counter(record.read_text().split()) if record.exists() else collections.Counter()


def child(root: Path, record: Path, crash: str) -> int:
    proc = run_python(CHILD, str(root), str(record), crash)
    assert proc.returncode in (0, 137), proc.stderr
    return proc.returncode


@pytest.mark.parametrize("step", list(PrepStep))
def test_crash_during_preprocessing_delivers_each_recipient_once(tmp_path: Path, step: PrepStep) -> None:
    """Killed at each preprocessing step; after restart one delivery per recipient."""
    root = tmp_path / "q"
    layout = make_root(root)
    record = tmp_path / "mailbox"
    number = put(root, "x@y.example", RCPTS)
    assert child(root, record, step.value) == 137
    assert deliveries(record) == collections.Counter()
    before = scan(layout)
    assert before[number] is (State.S5 if step is PrepStep.TODO_UNLINKED else State.S4)
    if step is not PrepStep.TODO_UNLINKED:
        assert os.path.exists(layout.info(number))  # info written, todo still present
    assert child(root, record, "") == 0
    assert deliveries(record) == collections.Counter(RCPTS)
    assert queue_files(layout) == []


def test_crash_between_delivery_and_mark_delivers_again(tmp_path: Path) -> None:
    """Killed after a successful delivery, before its mark: delivered once or twice, never zero."""
    root = tmp_path / "q"
    layout = make_root(root)
    record = tmp_path / "mailbox"
    number = put(root, "x@y.example", RCPTS)
    assert child(root, record, SendStep.REPORTED.value) == 137
    first = deliveries(record)
    assert sum(first.values()) >= 1
    marks = Path(layout.local(number)).read_bytes()
    assert all(b"T" + r.encode() + b"\0" in marks for r in first)  # delivered, not marked
    assert child(root, record, "") == 0
    final = deliveries(record)
    assert set(final) == set(RCPTS)
    assert all(1 <= final[r] <= 2 for r in RCPTS)
    assert final[next(iter(first))] == 2  # the crashed one came again
    assert queue_files(layout) == []


# -- kill -9 soak with the real program, the real directory and real Maildirs -----------------------

UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()
USERS = 5
MESSAGES = 300


@pytest.fixture
def mailroot() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-soak-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _users_ldif(mailroot: Path) -> str:
    out = []
    for i in range(USERS):
        store = mailroot / f"u{i}"
        store.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(store, UID, GID)
        out.append(
            f"dn: uid=u{i},{{base}}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\n"
            f"uid: u{i}\ncn: u{i}\nsn: u{i}\nmail: u{i}@example.com\n"
            f"qmailUID: {UID}\nqmailGID: {GID}\nmailMessageStore: {store}/\n"
        )
    return "\n".join(out)


def _delivered(mailroot: Path) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for path in mailroot.glob("u*/Maildir/new/*"):
        for line in path.read_bytes().splitlines():
            if line.startswith(b"X-Soak: "):
                seen[line[8:].decode()] += 1
    return seen


@pytest.mark.slow
def test_kill9_soak_loses_nothing(tmp_path: Path, ldap_base, slapd, mailroot: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(_users_ldif(mailroot))
    root = tmp_path / "q"
    layout: QueueLayout = make_root(
        root,
        {"ldapserver": f"127.0.0.1:{slapd.port}", "ldapbasedn": ldap_base.dn, "ldapobjectclass": "qmailUser",
         "locals": "example.com", "ldaptimeout": "30"},
    )  # fmt: skip — a slow slapd on a loaded machine must not defer (the next try would be minutes away)
    rng = random.Random(4711)
    log = tmp_path / "log"

    def injector() -> None:
        for i in range(MESSAGES):
            put(
                root,
                "soak@remote.example",
                [f"u{i % USERS}@example.com"],
                f"X-Soak: m{i}\n\nbody {i}\n".encode(),
            )
            if i % 25 == 0:
                time.sleep(0.05)

    feeder = threading.Thread(target=injector)
    feeder.start()
    kills = 0
    mgr = ManagerProcess(root, log)
    while kills < 5 or feeder.is_alive():
        time.sleep(rng.uniform(0.1, 1.5))
        mgr.kill9()
        kills += 1
        mgr = ManagerProcess(root, log)
    feeder.join()
    try:
        deadline = time.monotonic() + 240
        while len(_delivered(mailroot)) < MESSAGES or any(
            part in ("todo", "info", "local", "remote", "bounce")
            for part in (f.split("/")[0] for f in queue_files(layout))
        ):
            assert time.monotonic() < deadline, f"undelivered: {MESSAGES - len(_delivered(mailroot))}"
            time.sleep(0.2)
    finally:
        mgr.wait_ready()  # a TERM before the handlers exist would be the default action
        assert mgr.stop() == 0
    seen = _delivered(mailroot)
    assert set(seen) == {f"m{i}" for i in range(MESSAGES)}
    assert kills >= 5
    # what a kill during elimination leaves (mess without info) is garbage for the 36-hour cleanup
    leftovers = queue_files(layout)
    assert all(f.startswith(("mess/", "intd/")) for f in leftovers), leftovers
    clean_all(layout, clock=lambda: time.time() + OSSIFIED + 1)
    assert queue_files(layout) == []

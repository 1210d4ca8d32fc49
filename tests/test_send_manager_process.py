"""The real ``qldap send`` program: sendmutex, trigger, HUP, ALRM, TERM, restart.

Local deliveries here are real ones through the local spawner whose directory is unreachable
(``ldapserver`` is a closed port): every attempt is a deferral, which is what the signal checks need.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from qldap.queue.layout import QueueLayout
from tests.test_send_manager_support import PATIENCE, QLDAP, ManagerProcess, make_root, put, queue_files

UNREACHABLE = {"ldapserver": "127.0.0.1:1", "ldaptimeout": "2", "ldapbasedn": "dc=example,dc=com"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "q"
    make_root(r, UNREACHABLE)
    return r


def test_second_manager_refuses_to_start(root: Path, tmp_path: Path) -> None:
    first = ManagerProcess(root, tmp_path / "log")
    try:
        first.wait_for(r"^qldap send: ready$")
        second = subprocess.run([str(QLDAP), "send", "--root", str(root)], capture_output=True, text=True,
                                timeout=PATIENCE, check=False)  # fmt: skip
        assert second.returncode == 111
        assert second.stderr == "alert: cannot start: qmail-send is already running\n"
    finally:
        assert first.stop() == 0
    assert first.lines()[-1] == "status: exiting"


def test_new_message_is_noticed_through_the_trigger(root: Path, tmp_path: Path) -> None:
    """An injection's pull of the trigger makes the manager scan ``todo/`` again.

    Besides the trigger, ``todo/`` is scanned only at start and every 1500 s (qmail-send(8)).  The first
    message's ``new msg`` line proves the start scan has listed ``todo/``; the second message arrives
    after it, so its notice within the wait (far below 1500 s) can only come from the trigger.
    """
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        first = put(root, "a@b.example", ["joe@mx1.example.com"])
        mgr.wait_for(rf"^new msg {first}$")
        number = put(root, "a@b.example", ["ann@mx1.example.com"])
        mgr.wait_for(rf"^new msg {number}$")
        info = mgr.wait_for(rf"^info msg {number}: ")[0]
        assert re.fullmatch(
            rf"info msg {number}: bytes \d+ from <a@b.example> qp {os.getpid()} uid {os.getuid()}", info
        )
    finally:
        assert mgr.stop() == 0


def test_hup_rereads_virtualdomains_for_the_next_message(root: Path, tmp_path: Path) -> None:
    """A virtualdomains line added before SIGHUP applies to the next new message."""
    (root / "control" / "holdremote").write_text("1\n")
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        before = put(root, "a@b.example", ["joe@example.org"])
        mgr.wait_for(rf"^new msg {before}$")
        (root / "control" / "virtualdomains").write_text("example.org:vuser\n")
        mgr.send(signal.SIGHUP)
        after = put(root, "a@b.example", ["joe@example.org"])
        mgr.wait_for(rf"^starting delivery \d+: msg {after} to local vuser-joe@example.org$")
        assert not [x for x in mgr.lines() if re.search(rf"msg {before} to local", x)]
    finally:
        assert mgr.stop() == 0


def test_alrm_retries_deferred_messages_before_their_time(root: Path, tmp_path: Path) -> None:
    """ALRM retries a deferred message at once instead of at its scheduled attempt.

    After a first local deferral the next attempt is due no sooner than 100 s after the message's birth
    (qmail-send(8)'s retry schedule), so a second attempt seen before that time was caused by the ALRM.
    """
    layout = QueueLayout.of(root)
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        number = put(root, "a@b.example", ["joe@mx1.example.com"])
        mgr.wait_for(r"^delivery 1: deferral: Unable_to_contact_LDAP_server._\(#4.4.3\)/$")
        scheduled = os.stat(layout.info(number)).st_mtime + 100
        retry = rf"^starting delivery 2: msg {number} to local joe@mx1.example.com$"
        assert not [x for x in mgr.lines() if re.search(retry, x)]
        mgr.send(signal.SIGALRM)
        mgr.wait_for(retry)
        assert time.time() < scheduled, "the retry may have been the scheduled one, not the ALRM's"
    finally:
        assert mgr.stop() == 0


def test_term_stores_next_attempt_and_restart_waits_for_it(root: Path, tmp_path: Path) -> None:
    """TERM writes the next attempt as the channel file's mtime; a restart honours it."""
    layout = QueueLayout.of(root)
    log = tmp_path / "log"
    mgr = ManagerProcess(root, log)
    mgr.wait_for(r"^qldap send: ready$")
    number = put(root, "a@b.example", ["joe@mx1.example.com"])
    mgr.wait_for(r"^delivery 1: deferral: ")
    assert mgr.stop() == 0
    assert mgr.lines()[-2:] == ["status: local 0/10 remote 0/20 exitasap", "status: exiting"]
    birth = int(os.stat(layout.info(number)).st_mtime)
    local = Path(layout.local(number))
    assert int(local.stat().st_mtime) == birth + 100
    assert local.read_bytes() == b"Tjoe@mx1.example.com\0"

    due = time.time() + 3
    os.utime(local, (due, due))  # as if the stored attempt were 3 s away
    again = ManagerProcess(root, log)
    try:
        again.wait_for(r"^qldap send: ready$", count=2)
        starts = rf"^starting delivery \d+: msg {number} to local"
        while time.time() < due - 0.05:
            assert len([x for x in again.lines() if re.search(starts, x)]) == 1, (
                "retried before the stored time"
            )
            time.sleep(0.05)
        again.wait_for(starts, count=2)
    finally:
        assert again.stop() == 0
    assert f"local/{number % 23}/{number}" in queue_files(layout)

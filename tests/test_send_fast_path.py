"""The manager's fast path (qmail-send(8), FAST PATH): one local recipient is delivered straight from
``todo/N``; ``info`` and the channel file are written only when that delivery does not succeed.

Real ``qldap send``, real slapd, real program deliveries that wait for the test, so the queue can be
looked at while a delivery runs.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from qldap.queue.layout import QueueLayout
from tests.test_send_manager_ldap import (
    ldap_controls,
    mailbox,
    mailroot,  # noqa: F401 - fixture
    user_ldif,
    wait_empty,
    wait_files,
)
from tests.test_send_manager_support import PATIENCE, ManagerProcess, make_root, put, queue_files

HELD = """#!/bin/sh
echo $$ > {started}
while [ -e {hold} ]; do sleep 0.05; done
cat > {out}
"""


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class Held:
    """A program delivery that waits while the file ``hold`` exists."""

    def __init__(self, root: Path) -> None:
        self.dir = mailbox(root, "work")
        self.started, self.hold, self.out = self.dir / "started", self.dir / "hold", self.dir / "out"
        self.prog = root / "held.sh"
        self.prog.write_text(HELD.format(started=self.started, hold=self.hold, out=self.out))
        self.prog.chmod(0o755)
        self.hold.write_text("")

    def ldif(self, name: str, mail: str, store: Path) -> str:
        return (user_ldif(name, mail, store).rstrip("\n")
                + f"\nqmailDotMode: ldapwithprog\ndeliveryProgramPath: {self.prog}\n\n")  # fmt: skip

    def wait_started(self) -> int:
        wait_until(lambda: self.started.exists() and self.started.read_text().strip(), "no program started")
        return int(self.started.read_text())


def numbered(layout: QueueLayout, part: str, number: int) -> bool:
    return os.path.exists(getattr(layout, part)(number))


def test_one_local_recipient_is_delivered_before_any_info_file_exists(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    held = Held(mailroot)
    store = mailbox(mailroot, "alice")
    ldap_base.load(held.ldif("alice", "alice@example.com", store))
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_ready()
        number = put(root, "bob@remote.example", ["alice@example.com"], b"Subject: fast\n\nx\n")
        held.wait_started()
        # the delivery runs: the message is still todo/N, never preprocessed
        assert numbered(layout, "todo", number) and numbered(layout, "mess", number)
        assert not numbered(layout, "info", number) and not numbered(layout, "local", number)
        held.hold.unlink()
        wait_files(store, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
        log = mgr.lines()
        mine = [x for x in log if re.search(rf"msg {number}\b", x)]
        assert [x.split(":")[0] for x in mine] == [
            f"new msg {number}", f"info msg {number}", "starting delivery 1", f"end msg {number}"
        ]
        assert "delivery 1: success: did_1+0+1/" in log
    finally:
        assert mgr.stop() == 0


def test_two_recipients_take_the_usual_path(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    held = Held(mailroot)
    a, b = mailbox(mailroot, "alice"), mailbox(mailroot, "bert")
    ldap_base.load(held.ldif("alice", "alice@example.com", a) + user_ldif("bert", "bert@example.com", b))
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_ready()
        number = put(root, "bob@remote.example", ["alice@example.com", "bert@example.com"])
        held.wait_started()
        assert numbered(layout, "info", number) and numbered(layout, "local", number)
        assert not numbered(layout, "todo", number)
        held.hold.unlink()
        wait_files(a, 1)
        wait_files(b, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
    finally:
        assert mgr.stop() == 0


def test_a_crash_during_a_fast_delivery_loses_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    """Killed (-9) while delivering from todo/N: the restart delivers the message again (at least once)."""
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    held = Held(mailroot)
    store = mailbox(mailroot, "carol")
    ldap_base.load(held.ldif("carol", "carol@example.com", store))
    mgr = ManagerProcess(root, tmp_path / "log")
    program = 0
    try:
        mgr.wait_ready()
        number = put(root, "dave@remote.example", ["carol@example.com"], b"Subject: crash\n\nx\n")
        program = held.wait_started()
        mgr.kill9()
        os.kill(program, signal.SIGKILL)  # the orphaned program this test started
        program = 0
        assert numbered(layout, "todo", number) and not numbered(layout, "info", number)
        held.started.unlink()
        held.hold.unlink()
        again = ManagerProcess(root, tmp_path / "log")
        try:
            wait_until(held.out.exists, "the restarted manager never delivered")
            wait_files(store, 1)
            again.wait_for(rf"^end msg {number}$")
            wait_empty(layout)
        finally:
            assert again.stop() == 0
    finally:
        if program:
            try:
                os.kill(program, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if mgr.proc.poll() is None:
            mgr.stop()


def test_a_failed_fast_delivery_is_preprocessed_and_bounced(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    """A program that refuses (exit 100): the message gets its files, the bounce goes out once."""
    root = tmp_path / "q"
    controls = ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn)
    layout = make_root(root, {**controls, "holdremote": "1"})  # the bounce to a remote sender stays queued
    prog = mailroot / "refuse.sh"
    prog.write_text("#!/bin/sh\necho 'not wanted here'\nexit 100\n")
    prog.chmod(0o755)
    store = mailbox(mailroot, "fay")
    ldap_base.load(user_ldif("fay", "fay@example.com", store).rstrip("\n")
                   + f"\nqmailDotMode: ldapwithprog\ndeliveryProgramPath: {prog}\n\n")  # fmt: skip
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_ready()
        number = put(root, "dave@remote.example", ["fay@example.com"], b"Subject: lost\n\nx\n")
        assert mgr.wait_for(r"^delivery 1: failure: ")[0].startswith("delivery 1: failure: not_wanted_here/")
        bounce_line = mgr.wait_for(rf"^bounce msg {number} qp \d+$")[0]
        mgr.wait_for(rf"^end msg {number}$")
        log = mgr.lines()
        assert len([x for x in log if x.startswith(f"bounce msg {number} ")]) == 1
        assert [x for x in log if x == f"new msg {number}"] == [f"new msg {number}"]
        assert not numbered(layout, "mess", number) or not numbered(layout, "info", number)
        # the bounce itself waits in the queue for the held remote channel (it is preprocessed a
        # moment after the original's end)
        wait_until(lambda: [x for x in mgr.lines() if x.startswith("new msg ") and x != f"new msg {number}"],
                   f"no bounce message queued: {bounce_line}")  # fmt: skip
        wait_until(lambda: any(f.startswith("remote/") for f in queue_files(layout)), "no remote/ file")
    finally:
        assert mgr.stop() == 0


def test_a_deferred_fast_delivery_is_preprocessed_with_the_recipient_pending(  # type: ignore[no-untyped-def]
    tmp_path: Path, slapd_factory, mailroot: Path  # noqa: F811
) -> None:
    store = mailbox(mailroot, "erin")
    server = slapd_factory(initial_ldif=user_ldif("erin", "erin@example.com", store, "dc=example,dc=com"))
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{server.port}", server.suffix))
    server.stop()
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_ready()
        number = put(root, "dave@remote.example", ["erin@example.com"])
        mgr.wait_for(r"^delivery 1: deferral: ")
        wait_until(lambda: not numbered(layout, "todo", number), "never preprocessed after the deferral")
        assert numbered(layout, "info", number)
        assert Path(layout.local(number)).read_bytes() == b"Terin@example.com\0"
        server.start()
        mgr.send(signal.SIGALRM)
        wait_files(store, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
    finally:
        assert mgr.stop() == 0


def test_a_backlog_beyond_50_per_local_slot_takes_the_usual_path(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    """concurrencylocal 1: 50 messages may be on the fast path at once, the rest are preprocessed."""
    root = tmp_path / "q"
    controls = ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn)
    layout = make_root(root, {**controls, "concurrencylocal": "1"})
    held = Held(mailroot)
    store = mailbox(mailroot, "gus")
    ldap_base.load(held.ldif("gus", "gus@example.com", store))
    numbers = [put(root, "dave@remote.example", ["gus@example.com"], b"Subject: %d\n\nx\n" % i)
               for i in range(53)]  # fmt: skip
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        held.wait_started()
        wait_until(lambda: sum(numbered(layout, "info", n) for n in numbers) == 3, "no usual-path messages")
        fast = [n for n in numbers if numbered(layout, "todo", n)]
        assert len(fast) == 50  # the one being delivered and 49 waiting for the slot
        held.hold.unlink()
        wait_files(store, 53)
        for n in numbers:
            mgr.wait_for(rf"^end msg {n}$")
        wait_empty(layout)
    finally:
        assert mgr.stop() == 0


def test_files_of_an_interrupted_preprocessing_make_the_message_take_the_usual_path(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    """todo/N with a stale info/N and local/N (a crash in the middle of preprocessing): delivered once,
    and nothing of the message is left in the queue."""
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    store = mailbox(mailroot, "hal")
    ldap_base.load(user_ldif("hal", "hal@example.com", store))
    number = put(root, "dave@remote.example", ["hal@example.com"], b"Subject: stale\n\nx\n")
    Path(layout.info(number)).write_bytes(b"Fdave@remote.example\0")
    Path(layout.local(number)).write_bytes(b"Thal@example.com\0")
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        wait_files(store, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
        assert len(wait_files(store, 1)) == 1
    finally:
        assert mgr.stop() == 0

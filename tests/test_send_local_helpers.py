"""``qldap send`` hands local deliveries to helper processes (qldap.local.worker, qmail-send(8)).

Real manager process, real slapd, real helpers: a delivery happens in a helper (not the manager), a
helper killed in the middle of a delivery is a deferral (``qmail-local crashed``) and the message
arrives at the next attempt, SIGHUP replaces the helpers, and the request/answer codec round-trips
any bytes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from qldap.local.spawn import Report
from qldap.local.worker import decode_report, decode_request, encode_report, encode_request
from tests.test_send_manager_ldap import (
    ldap_controls,
    mailbox,
    mailroot,  # noqa: F401 - fixture
    user_ldif,
    wait_empty,
    wait_files,
)
from tests.test_send_manager_support import PATIENCE, ManagerProcess, make_root, put

WORKER = "qldap.local.worker"


def helper_pids(manager_pid: int) -> list[int]:
    """The manager's children that run the local-delivery helper."""
    out = []
    for task in os.listdir(f"/proc/{manager_pid}/task"):
        with open(f"/proc/{manager_pid}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if WORKER.encode() in c.read():
                            out.append(int(pid))
                except FileNotFoundError:
                    continue
    return out


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_codec_round_trips_undecodable_bytes() -> None:
    req = encode_request("j\udcffoe@example.com", "", Path("/q/mess/1/42"))
    assert decode_request(req) == ("j\udcffoe@example.com", "", "/q/mess/1/42")
    report = Report("Z", "busy \udcfe (#4.3.0)")
    assert decode_report(encode_report(report)) == report


def test_a_malformed_request_is_a_deferral_not_a_crash() -> None:
    from qldap.local.worker import handle_with

    class Never:
        def deliver(self, *a: object) -> Report:  # pragma: no cover - must not be reached
            raise AssertionError("delivered a malformed request")

    answer = decode_report(handle_with(Never(), b"only-one-field"))  # type: ignore[arg-type]
    assert answer.letter == "Z" and "(#4.3.0)" in answer.text


def test_delivery_happens_in_a_helper_and_hup_replaces_the_helpers(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    root = tmp_path / "q"
    make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    store = mailbox(mailroot, "alice")
    ldap_base.load(user_ldif("alice", "alice@example.com", store))
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_ready()
        put(root, "bob@remote.example", ["alice@example.com"], b"Subject: 1\n\nx\n")
        wait_files(store, 1)
        first = helper_pids(mgr.proc.pid)
        assert first, "no local-delivery helper process"
        assert mgr.proc.pid not in first
        mgr.send(signal.SIGHUP)
        wait_until(lambda: not set(first) & set(helper_pids(mgr.proc.pid)), "old helpers outlived the HUP")
        put(root, "bob@remote.example", ["alice@example.com"], b"Subject: 2\n\nx\n")
        wait_files(store, 2)
        second = helper_pids(mgr.proc.pid)
        assert second and not set(second) & set(first)
    finally:
        assert mgr.stop() == 0
    for pid in second:  # a clean stop ends and reaps every helper
        assert not os.path.exists(f"/proc/{pid}"), f"helper {pid} outlived the manager"


SLOW = """#!/bin/sh
echo $$ > {pidfile}
if [ -e {hold} ]; then sleep 60; fi
cat > {out}
"""


def test_a_helper_killed_mid_delivery_defers_and_the_message_arrives_later(  # type: ignore[no-untyped-def]
    tmp_path: Path, ldap_base, slapd, mailroot: Path  # noqa: F811
) -> None:
    root = tmp_path / "q"
    layout = make_root(root, ldap_controls(f"127.0.0.1:{slapd.port}", ldap_base.dn))
    store = mailbox(mailroot, "carol")
    work = mailbox(mailroot, "work")
    pidfile, hold, out = work / "prog.pid", work / "hold", work / "delivered"
    hold.write_text("")
    prog = mailroot / "slow.sh"
    prog.write_text(SLOW.format(pidfile=pidfile, hold=hold, out=out))
    prog.chmod(0o755)
    ldap_base.load(user_ldif("carol", "carol@example.com", store).rstrip("\n")
                   + f"\nqmailDotMode: ldapwithprog\ndeliveryProgramPath: {prog}\n\n")  # fmt: skip
    mgr = ManagerProcess(root, tmp_path / "log")
    program_pid = 0
    try:
        mgr.wait_ready()
        number = put(root, "dave@remote.example", ["carol@example.com"], b"Subject: slow\n\nx\n")
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the program never started")
        program_pid = int(pidfile.read_text())
        [helper] = helper_pids(mgr.proc.pid)
        os.kill(helper, signal.SIGKILL)
        mgr.wait_for(r"^delivery 1: deferral: qmail-local_crashed\./$")
        os.kill(program_pid, signal.SIGKILL)  # the orphaned program this test started
        program_pid = 0
        assert not os.path.exists(layout.bounce(number))
        hold.unlink()
        pidfile.unlink()
        mgr.send(signal.SIGALRM)
        wait_until(out.exists, "the retried delivery never ran the program")
        wait_files(store, 1)
        mgr.wait_for(rf"^end msg {number}$")
        wait_empty(layout)
        assert not [x for x in mgr.lines() if "failure:" in x or x.startswith("bounce msg")]
    finally:
        if program_pid:
            try:
                os.kill(program_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert mgr.stop() == 0


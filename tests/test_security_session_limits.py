"""Session limits per client address, an overall session deadline, and the POP3 failure delay (issue 11).

The adversarial review found: 50 idle SMTP connections locked every other client out; a client that
trickles one byte every few seconds was never cut off (only each read had a timeout); POP3 answered
a wrong password at once (800+ guesses a second over 40 connections).  Each daemon now takes
``--max-sessions``, ``--max-per-ip`` and ``--session-deadline`` (services.yaml ``limits:``), and pop3d
``--failure-delay``.  Real daemons on loopback ports; clients connect from 127.0.0.2/127.0.0.3 to be
different addresses.  No test measures speed: the delay test only asserts that the answer did not
come before the configured delay, the deadline tests that the server closed a client that never
paused long enough for the per-read timeout.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.services import Daemon, parse_services
from qldap.queue.layout import create_queue
from qldap.supervise import daemon_command
from tests.conftest import QRoot
from tests.e2e.smtpd import Client
from tests.fixtures_slapd import LdapBase
from tests.test_auth_modules_support import free_port, homes
from tests.test_cli_pop3 import joe_home, maildir
from tests.test_pop3_server import start_pop3d
from tests.test_security_dos import Smtpd, smtp_root

__all__ = ["homes", "joe_home"]

ATTACKER, OTHER = "127.0.0.2", "127.0.0.3"
PER_IP_421 = "421 too many sessions from your address (#4.3.2)\r\n"
PER_IP_ERR = b"-ERR too many sessions from your address\r\n"
TRICKLE_PAUSE = 0.3  # far below every per-read timeout configured here


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    smtp_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)
    qroot.control("timeoutsmtpd", "60")
    return qroot


def connect_from(addr: tuple[str, int], source: str) -> socket.socket:
    return socket.create_connection(addr, timeout=30, source_address=(source, 0))


def trickle_until_closed(sock: socket.socket, byte: bytes = b"N") -> bytes:
    """Send one byte every TRICKLE_PAUSE s until the server closes; everything it said.

    At most 100 bytes (30 s): a server that only has a per-read timeout never closes this client.
    """
    said = b""
    sock.settimeout(TRICKLE_PAUSE)
    for _ in range(100):
        try:
            sock.sendall(byte)
        except OSError:
            return said
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return said
        if not chunk:
            return said
        said += chunk
    pytest.fail(f"the trickling client was never closed; got {said!r}")


# -- SMTP -----------------------------------------------------------------------------------------


@pytest.fixture
def smtpd(root: QRoot) -> Iterator[Smtpd]:
    d = Smtpd(root.path, None, "--max-sessions", "6", "--max-per-ip", "2", "--session-deadline", "2")
    yield d
    d.stop()


def test_smtp_idle_connections_from_one_address_do_not_lock_out_another(smtpd: Smtpd) -> None:
    held = [Client(smtpd.addr, ATTACKER) for _ in range(2)]
    try:
        for c in held:
            assert c.reply().startswith("220 ")
        extra = [Client(smtpd.addr, ATTACKER) for _ in range(5)]
        for c in extra:
            assert c.reply() == PER_IP_421
            assert c.rest() == b""
        other = Client(smtpd.addr, OTHER)
        assert other.reply().startswith("220 mx.example.org ESMTP")
        assert other.cmd("QUIT").startswith("221 ")
    finally:
        for c in held:
            c.close()


def test_smtp_session_deadline_closes_a_trickling_client(smtpd: Smtpd) -> None:
    s = connect_from(smtpd.addr, OTHER)
    assert s.recv(4096).startswith(b"220 ")
    said = trickle_until_closed(s)
    s.close()
    assert said.endswith(b"451 timeout (#4.4.2)\r\n"), said
    until = time.monotonic() + 60  # the log line is written before the reply, read by another thread
    while not any("session deadline" in line for line in smtpd.log) and time.monotonic() < until:
        time.sleep(0.05)
    assert any("session deadline" in line for line in smtpd.log), smtpd.log


# -- POP3 -----------------------------------------------------------------------------------------


@pytest.fixture
def pop3d(qroot: QRoot, joe_home: Path) -> Iterator[int]:
    maildir(joe_home, {})
    proc, port = start_pop3d(qroot, "--max-sessions", "6", "--max-per-ip", "2", "--session-deadline", "2",
                             "--failure-delay", "0.5")
    yield port
    proc.terminate()
    proc.wait(30)


def test_pop3_wrong_password_is_answered_only_after_the_delay(pop3d: int) -> None:
    s = connect_from(("127.0.0.1", pop3d), OTHER)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"+OK")
    f.write(b"USER joe\r\n")
    f.flush()
    assert f.readline() == b"+OK \r\n"
    sent = time.monotonic()
    f.write(b"PASS wrong\r\n")
    f.flush()
    answer = f.readline()
    waited = time.monotonic() - sent
    assert answer.startswith(b"-ERR"), answer
    assert waited >= 0.5, waited
    s.close()


def test_pop3_connections_over_the_per_address_limit_are_refused(pop3d: int) -> None:
    held = [connect_from(("127.0.0.1", pop3d), ATTACKER) for _ in range(2)]
    try:
        for s in held:
            assert s.makefile("rb").readline().startswith(b"+OK")
        refused = connect_from(("127.0.0.1", pop3d), ATTACKER)
        f = refused.makefile("rb")
        assert f.readline() == PER_IP_ERR
        assert f.read() == b""
        refused.close()
        other = connect_from(("127.0.0.1", pop3d), OTHER)
        assert other.makefile("rb").readline().startswith(b"+OK")
        other.close()
    finally:
        for s in held:
            s.close()


def test_pop3_session_deadline_closes_a_trickling_client(pop3d: int) -> None:
    s = connect_from(("127.0.0.1", pop3d), OTHER)
    assert s.recv(4096).startswith(b"+OK")
    said = trickle_until_closed(s)
    s.close()
    assert said.endswith(b"-ERR session time limit exceeded\r\n"), said


# -- QMQP -----------------------------------------------------------------------------------------


def test_qmqp_connections_over_the_per_address_limit_are_refused(qroot: QRoot) -> None:
    create_queue(qroot.path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "qldap.cli.qldap", "qmqpd", "--root", str(qroot.path),
                             "--listen", f"127.0.0.1:{port}", "--max-per-ip", "1", "--session-deadline", "2"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == f"qldap qmqpd: listening on 127.0.0.1:{port}\n"
        held = connect_from(("127.0.0.1", port), ATTACKER)
        held.sendall(b"100000:")  # a request whose bytes come slowly: the session stays open
        refused = connect_from(("127.0.0.1", port), ATTACKER)
        answer = refused.makefile("rb").read()
        assert re.fullmatch(rb"\d+:Ztoo many sessions from your address \(#4\.3\.2\),", answer), answer
        refused.close()
        said = trickle_until_closed(held, b"x")
        assert said == b""
        held.close()
    finally:
        proc.terminate()
        proc.wait(30)


# -- services.yaml --------------------------------------------------------------------------------


def test_services_yaml_limits_reach_the_daemon_command_lines(tmp_path: Path) -> None:
    text = (
        'smtpd:\n  listen: ["127.0.0.1:25"]\n'
        '  limits: {sessions: 100, per_ip: 10, deadline: 1800, queue_workers: 6}\n'
        'pop3d:\n  listen: ["127.0.0.1:110"]\n  limits: {per_ip: 4, failure_delay: 3}\n'
        'qmqpd:\n  listen: ["127.0.0.1:628"]\n  limits: {sessions: 20}\n'
    )
    services = parse_services(text, tmp_path)
    smtpd, pop3d, qmqpd = (services.get(d) for d in (Daemon.SMTPD, Daemon.POP3D, Daemon.QMQPD))
    assert smtpd is not None and pop3d is not None and qmqpd is not None
    argv = daemon_command(smtpd, tmp_path)
    assert argv[-8:] == ["--max-sessions", "100", "--max-per-ip", "10", "--session-deadline", "1800",
                         "--queue-workers", "6"]  # fmt: skip
    assert daemon_command(pop3d, tmp_path)[-4:] == ["--max-per-ip", "4", "--failure-delay", "3"]
    assert daemon_command(qmqpd, tmp_path)[-2:] == ["--max-sessions", "20"]


@pytest.mark.parametrize(("limits", "reason"), [
    ("{sessions: 0}", "sessions: must be a whole number of at least 1"),
    ("{queue_workers: -1}", "queue_workers: must be a whole number of at least 0"),
    ("{per_ip: -1}", "per_ip: must be a whole number of at least 0"),
    ('{deadline: "10"}', "deadline: must be a whole number of at least 0"),
    ("{speed: 3}", "unknown key 'speed'"),
    ("[1, 2]", "must be a mapping"),
])
def test_services_yaml_refuses_bad_limits(tmp_path: Path, limits: str, reason: str) -> None:
    from qldap.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_services(f'smtpd:\n  listen: ["127.0.0.1:25"]\n  limits: {limits}\n', tmp_path)
    assert reason in str(info.value)


def test_failure_delay_is_only_for_pop3d(tmp_path: Path) -> None:
    from qldap.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_services('smtpd:\n  listen: ["127.0.0.1:25"]\n  limits: {failure_delay: 1}\n', tmp_path)
    assert "unknown key 'failure_delay'" in str(info.value)

"""``qldap smtpd`` as a real process: ready lines, SIGHUP reload, SIGTERM clean stop, kill -9 mid-DATA.

The daemon is started with ``.venv/bin/qldap smtpd --listen 127.0.0.1:0`` and tells its port on the
ready line; stderr is read line by line in a thread.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.queue.layout import create_queue
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, mess_files, queued
from tests.fixtures_slapd import LdapBase

QLDAP = str(Path(sys.executable).with_name("qldap"))
READY = re.compile(r"qldap smtpd: listening on 127\.0\.0\.1:(\d+)")


class Daemon:
    """A running ``qldap smtpd`` process and the lines it wrote on stderr."""

    def __init__(self, root: Path, *args: str) -> None:
        argv = [QLDAP, "smtpd", "--root", str(root), "--dns-timeout", "0.5", *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ports = [int(m.group(1)) for m in self.wait_for(READY, count=args.count("--listen"))]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], count: int = 1, timeout: float = 20) -> list[re.Match[str]]:
        found: list[re.Match[str]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(line)
            m = pattern.fullmatch(line)
            if m:
                found.append(m)
        return found

    def client(self, index: int = 0) -> Client:
        c = Client(("127.0.0.1", self.ports[index]))
        assert c.reply().startswith("220 mx.example.org ESMTP")
        return c

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(60)


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


def start_in_data(d: Daemon) -> Client:
    c = d.client()
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("DATA").startswith("354")
    return c


def test_ready_lines_and_log(root: QRoot, daemons: list[Daemon]) -> None:
    """One ready line per listener, both listeners serve, level-2 log lines follow (timestamped per
    LOGTIMESTAMPS, the LDAP password never shown); a port in use is fatal with exit 111."""
    root.control("ldappassword", "hunter2pw")
    args = ("--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--env", "LOGLEVEL=2")
    d = Daemon(root.path, *args, "--env", "LOGTIMESTAMPS=iso")
    daemons.append(d)
    assert len(set(d.ports)) == 2
    c = d.client(1)
    c.cmd("MAIL FROM:<hunter2pw@remote.test>")
    d.wait_for(re.compile(r"\d{4}-\d\d-\d\dT\S+Z qmail-smtpd \d+: mail from: <\*\*\*@remote\.test>"))
    assert d.client(0).cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    busy = subprocess.run([QLDAP, "smtpd", "--root", str(root.path), "--listen", f"127.0.0.1:{d.ports[0]}"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert busy.returncode == 111
    assert busy.stderr.startswith("qldap smtpd: fatal: unable to listen")


def test_sighup_reloads_directory_settings(root: QRoot, ldap_base: LdapBase, daemons: list[Daemon]) -> None:
    """Without a directory RCPTCHECK answers 451; once ldapserver is configured, SIGHUP makes it ask."""
    ldap_base.load(
        "dn: uid=alice,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: alice\ncn: a\n"
        "sn: a\nmail: alice@example.org\n\n"
    )
    d = Daemon(root.path, "--listen", "127.0.0.1:0", "--env", "RCPTCHECK=", "--env", "LOGLEVEL=2")
    daemons.append(d)
    c = d.client()
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<alice@example.org>").startswith("451 ")
    root.control("ldapserver", f"{ldap_base.slapd.host}:{ldap_base.slapd.port}")
    root.control("ldapbasedn", ldap_base.dn)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(re.compile(r"qmail-smtpd: reloaded .*"))
    c = d.client()
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<nobody@example.org>") == "554 Sorry, no mailbox here by that name. (#5.1.1)\r\n"


def test_sigterm_lets_data_finish(root: QRoot, daemons: list[Daemon]) -> None:
    """SIGTERM: no new connections, an idle session gets 421, the session in DATA finishes and its
    message is queued, then the process exits 0."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0")
    daemons.append(d)
    idle = d.client()
    busy = start_in_data(d)
    busy.send("Subject: stop\r\n\r\nfirst half\r\n")
    time.sleep(0.2)  # let the daemon read it before the signal arrives
    d.proc.send_signal(signal.SIGTERM)
    assert idle.rest() == b"421 Service temporarily not available (#4.3.2)\r\n"
    with pytest.raises(OSError):
        Client(("127.0.0.1", d.ports[0]), timeout=2).reply()
    assert d.proc.poll() is None
    assert busy.cmd("second half\r\n.").startswith("250 ok ")
    assert busy.rest() == b"421 Service temporarily not available (#4.3.2)\r\n"
    assert d.proc.wait(60) == 0
    (msg,) = queued(root.path)
    assert msg.message.endswith(b"Subject: stop\n\nfirst half\nsecond half\n")


@pytest.mark.slow
def test_kill_during_data_leaves_nothing(root: QRoot, daemons: list[Daemon]) -> None:
    """kill -9 while a large message streams in: nothing in todo, no half message in mess."""
    d = Daemon(root.path, "--listen", "127.0.0.1:0")
    daemons.append(d)
    c = start_in_data(d)
    c.send(b"Subject: crash\r\n\r\n" + (b"y" * 78 + b"\r\n") * 40000)
    time.sleep(0.3)
    d.proc.kill()
    assert d.proc.wait(60) == -signal.SIGKILL
    assert os.listdir(root.path / "queue" / "todo") == []
    assert mess_files(root.path) == []

"""``qldap pop3d`` as a real daemon: the whole dialogue over TCP with raw sockets and poplib, STLS, and the
POP-before-SMTP scenario (login from 127.0.0.2 → pbs_check grants relaying there, not elsewhere, and
not after pbstimeout)."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.pbs.client import pbs_check
from qldap.pbs.config import PbsRole, load_config
from tests.conftest import QRoot
from tests.test_auth_modules_support import IS_ROOT, UID, entry_point, free_port, homes
from tests.test_cli_pop3 import (
    Client,
    Connect,
    check27_before_login,
    check29_to_32_listing_and_marks,
    check30_retr_top,
    check33_quit_applies,
    check35_maildir_override_and_future,
    check36_capa,
    joe_home,
    maildir,
)
from tests.test_pbs_daemon import start_pbsdbd

__all__ = ["homes", "joe_home"]

QLDAP = entry_point("qldap", "main")
# pbstimeout in the pop-before-smtp test: a login must still be granted when checked right after it,
# however slow the machine, so it is not short (expiry is checked only after it has certainly passed)
PBS_TIMEOUT = 6


def start_pop3d(qroot: QRoot, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """``qldap pop3d`` on a free loopback port with *args*, once it says it is listening."""
    port = free_port()
    proc = subprocess.Popen([*QLDAP, "pop3d", "--root", str(qroot.path), "--listen", f"127.0.0.1:{port}",
                             *args],
                            stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "POP3_LOGLEVEL": "2"})
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if line != f"qldap pop3d: listening on 127.0.0.1:{port}\n":
        proc.kill()
        proc.wait()
        pytest.fail(f"pop3d did not start: {line}")
    return proc, port


@pytest.fixture
def daemon(qroot: QRoot, joe_home: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port = start_pop3d(qroot)
    yield proc, port
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def connect(daemon: tuple[subprocess.Popen[bytes], int]) -> Connect:
    def make() -> Client:
        return Client(socket.create_connection(("127.0.0.1", daemon[1]), timeout=30))

    return make


def test_greeting_and_check27(connect: Connect) -> None:
    c = connect()
    assert c.line() == b"+OK mx1.example.com\r\n"  # no APOP timestamp: no cleartextpasswd (auth_pop(8))
    c.close()
    check27_before_login(connect)


def test_checks29_to_32_and_34(connect: Connect, joe_home: Path) -> None:
    check29_to_32_listing_and_marks(connect, joe_home)


def test_check30(connect: Connect, joe_home: Path) -> None:
    check30_retr_top(connect, joe_home)


def test_check33_runs_as_the_owner(connect: Connect, joe_home: Path) -> None:
    md = check33_quit_applies(connect, joe_home)
    assert (md / "cur" / "2000.1.h,S=20:2,").stat().st_uid == UID


def test_check35(connect: Connect, joe_home: Path, ldap_base) -> None:  # type: ignore[no-untyped-def]
    check35_maildir_override_and_future(connect, joe_home, ldap_base)


def test_check36(connect: Connect) -> None:
    check36_capa(connect)


def test_wrong_password_and_pipelined_commands(connect: Connect, joe_home: Path) -> None:
    c = connect()
    c.line()
    c.cmd("USER joe")
    assert c.cmd("PASS nope") == b"-ERR authorization failed\r\n"
    assert c.rest() == b""
    maildir(joe_home, {"new/1000.1.h": b"hello\n"})
    c = connect()
    c.line()
    c.sock.sendall(b"USER joe\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")  # all at once
    assert c.rest() == b"+OK \r\n+OK \r\n+OK 1 6\r\n+OK \r\n"


def test_poplib_session_and_accounting(daemon: tuple[subprocess.Popen[bytes], int], joe_home: Path) -> None:
    maildir(joe_home, {"new/1000.1.h": b"Subject: hi\n\nbody\n"})
    pop = poplib.POP3("127.0.0.1", daemon[1], timeout=30)
    pop.user("joe")
    pop.pass_("secret")
    assert pop.stat() == (1, 18)
    _resp, lines, _octets = pop.retr(1)
    assert lines == [b"Subject: hi", b"", b"body", b""]
    pop.quit()
    proc = daemon[0]
    proc.terminate()
    proc.wait(30)
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert ":127.0.0.1: joe login" in log and "joe logout" in log and "bytes transferred" in log


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    pem = tmp_path / "pop3cert"
    key = tmp_path / "key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=mx1.example.com", "-keyout", str(key), "-out", str(pem)],
                   check=True, capture_output=True)
    pem.write_bytes(pem.read_bytes() + key.read_bytes())
    return pem


def test_stls(qroot: QRoot, joe_home: Path, certificate: Path) -> None:
    qroot.control("pop3cert", certificate.read_bytes())
    maildir(joe_home, {"new/1000.1.h": b"Subject: tls\n\nsecret body\n"})
    proc, port = start_pop3d(qroot)
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        assert "STLS" in pop.capa()
        context = ssl.create_default_context(cafile=str(certificate))
        context.check_hostname = False
        pop.stls(context)
        assert "STLS" not in pop.capa()
        pop.user("joe")
        pop.pass_("secret")
        _resp, lines, _octets = pop.retr(1)
        assert lines == [b"Subject: tls", b"", b"secret body", b""]
        pop.dele(1)
        pop.quit()
    finally:
        proc.terminate()
        proc.wait(30)
    assert list((joe_home / "Maildir" / "new").iterdir()) == []
    if IS_ROOT:
        assert not list((joe_home / "Maildir" / "cur").iterdir())


class POP3From(poplib.POP3):
    """poplib's client connecting from a chosen local address."""

    source = "127.0.0.1"

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def test_pop_before_smtp_end_to_end(qroot: QRoot, joe_home: Path) -> None:
    qroot.control("pbssecret", "popsecret")
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]")
    qroot.control("pbstimeout", str(PBS_TIMEOUT))
    pbsdbd, _pbsport = start_pbsdbd(qroot)
    qroot.control("pbsservers", "127.0.0.1")
    maildir(joe_home, {})
    pop3d, port = start_pop3d(qroot)
    cfg = load_config(ControlDir(qroot.path), PbsRole.CLIENT)
    try:
        POP3From.source = "127.0.0.2"
        pop = POP3From("127.0.0.1", port, timeout=30)
        pop.user("joe")
        pop.pass_("secret")
        pop.quit()
        granted = asyncio.run(pbs_check(cfg, "127.0.0.2"))
        added_by = time.time()  # the login's add was done before it was seen
        assert granted == {"RELAYCLIENT": "", "TCPREMOTEINFO": "[pbs]joe"}
        assert asyncio.run(pbs_check(cfg, "127.0.0.3")) == {}
        time.sleep(max(0.0, added_by + PBS_TIMEOUT + 0.5 - time.time()))  # certainly expired now
        assert asyncio.run(pbs_check(cfg, "127.0.0.2")) == {}
    finally:
        for proc in (pop3d, pbsdbd):
            proc.terminate()
            proc.wait(30)


def test_sighup_reloads_and_keeps_serving(qroot: QRoot, joe_home: Path) -> None:
    maildir(joe_home, {})
    proc, port = start_pop3d(qroot)
    try:
        proc.send_signal(__import__("signal").SIGHUP)
        assert proc.stderr is not None
        assert proc.stderr.readline().decode() == "qldap pop3d: reloaded controls\n"
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        pop.user("joe")
        pop.pass_("secret")
        assert pop.stat()[0] == 0
        pop.quit()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)

"""pbsdbd as a real process on a loopback UDP port (pbsdbd(8)): add, query, expiry and reload."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import entry_point, free_port

ADD = bytes.fromhex("41 04 c0 00 02 0a 0e 6d 65 6b 6d 69 74 61 73 64 69 67 6f 61 74"
                    " 01 08 55 53 45 52 3d 6a 6f 65")
QUERY = bytes.fromhex("51 04 c0 00 02 0a 00")
HIT = bytes.fromhex("52 04 c0 00 02 0a 52 01 08 55 53 45 52 3d 6a 6f 65")
MISS = bytes.fromhex("52 04 c0 00 02 0a 4e")
SECRET = "mekmitasdigoat"


@dataclass
class Daemon:
    """A running pbsdbd and a client socket to talk to it."""

    proc: subprocess.Popen[bytes]
    port: int
    sock: socket.socket

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def ask(self, data: bytes = QUERY) -> bytes:
        self.send(data)
        reply, _addr = self.sock.recvfrom(2048)
        return reply


def start_pbsdbd(qroot: QRoot, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``qldap pbsdbd --root`` on 127.0.0.1 and wait for its ready line."""
    port = port or free_port(kind=socket.SOCK_DGRAM)
    qroot.control("pbsip", "127.0.0.1")
    qroot.control("pbsport", str(port))
    proc = subprocess.Popen([*entry_point("pbsdbd", "main"), "--root", str(qroot.path)],
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if line != f"qldap pbsdbd: listening on 127.0.0.1:{port}\n":
        proc.kill()
        proc.wait()
        pytest.fail(f"pbsdbd did not start: {line}")
    return proc, port


@pytest.fixture
def daemon(qroot: QRoot) -> Iterator[Daemon]:
    qroot.control("pbssecret", SECRET)
    proc, port = start_pbsdbd(qroot)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    try:
        yield Daemon(proc, port, sock)
    finally:
        sock.close()
        proc.terminate()
        proc.wait(60)


def test_check38_add_then_query(daemon: Daemon) -> None:
    assert daemon.ask() == MISS
    daemon.send(ADD)
    assert daemon.ask() == HIT
    other = bytes.fromhex("51 04 c0 00 02 0b 00")
    assert daemon.ask(other) == bytes.fromhex("52 04 c0 00 02 0b 4e")


@pytest.mark.parametrize("bad", [
    ADD.replace(b"mekmitasdigoat", b"mekmitasdigoaX"),  # wrong secret
    ADD[:6] + bytes([20]) + ADD[7:21],  # the secret runs past the end
    ADD + b"\0",  # one trailing byte
])
def test_check39_bad_adds_are_ignored(daemon: Daemon, bad: bytes) -> None:
    daemon.send(bad)
    assert daemon.ask() == MISS


def test_check39_warnings_are_logged(daemon: Daemon) -> None:
    daemon.send(ADD.replace(b"mekmitasdigoat", b"mekmitasdigoaX"))
    daemon.send(b"Q")
    assert daemon.ask() == MISS
    daemon.proc.terminate()
    daemon.proc.wait(60)
    assert daemon.proc.stderr is not None
    log = daemon.proc.stderr.read().decode()
    assert "pbsdbd: warning: no authorized add packet from 127.0.0.1" in log
    assert "pbsdbd: warning: bad packet from 127.0.0.1" in log
    assert daemon.proc.returncode == 0  # SIGTERM is a clean stop


PBS_TIMEOUT = 4  # pbstimeout for the expiry-and-refresh test: the refresh window below is half of it wide


def _add(last: int) -> bytes:
    return ADD[:5] + bytes([last]) + ADD[6:]  # 192.0.2.<last>


def _query(last: int) -> bytes:
    return QUERY[:5] + bytes([last]) + QUERY[6:]


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def _refresh_round(d: Daemon, first: int, second: int) -> bool:
    """One run of the expiry-and-refresh scenario on two new addresses; False when too slow to tell.

    The clock is read here around each exchange.  pbsdbd handles the datagrams of one socket in order,
    so an add is done before the answer to a query sent after it: a grant is asked for as expired only
    once its period has certainly passed, and as valid only while it certainly has not.
    """
    t0 = time.time()
    d.send(_add(first))
    d.send(_add(second))
    fresh = d.ask(_query(first))[6:7]
    t1 = time.time()  # both adds were done by now
    if t1 - t0 > PBS_TIMEOUT:
        return False
    assert fresh == b"R"
    _sleep_until(t0 + PBS_TIMEOUT / 2)
    r0 = time.time()
    d.send(_add(second))  # re-added while still valid: valid until PBS_TIMEOUT after this add
    d.ask(_query(second))
    r1 = time.time()  # the re-add was done by now
    _sleep_until(t1 + PBS_TIMEOUT + 0.1)
    assert d.ask(_query(first))[6:7] == b"N"  # the first add's period has certainly passed
    refreshed = d.ask(_query(second))[6:7]
    if time.time() >= r0 + PBS_TIMEOUT:
        return False  # the query may have come after the refreshed period too
    assert refreshed == b"R"  # its first period has passed as well: only the re-add explains a hit
    _sleep_until(r1 + PBS_TIMEOUT + 0.1)
    assert d.ask(_query(second))[6:7] == b"N"
    return True


def test_check40_timeout_and_refresh(qroot: QRoot) -> None:
    """A grant ends pbstimeout seconds after its add; an add before then starts the period anew."""
    qroot.control("pbstimeout", str(PBS_TIMEOUT))
    qroot.control("pbssecret", SECRET)
    proc, port = start_pbsdbd(qroot)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(30)
        d = Daemon(proc, port, sock)
        try:
            told = next((True for i in range(3) if _refresh_round(d, 10 + 2 * i, 11 + 2 * i)), False)
            assert told, "every round was too slow to check the refresh window"
        finally:
            proc.terminate()
            proc.wait(60)


def test_check44_small_cache_evicts_the_oldest(qroot: QRoot) -> None:
    qroot.control("pbscachesize", "58")  # 4-byte index + 3 entries of 18 bytes
    qroot.control("pbssecret", "")
    proc, port = start_pbsdbd(qroot)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        d = Daemon(proc, port, sock)
        try:
            for last in range(1, 5):
                d.send(bytes([0x41, 4, 10, 0, 0, last, 0, 0]))
            answers = [d.ask(bytes([0x51, 4, 10, 0, 0, last, 0]))[6:7] for last in range(1, 5)]
            assert answers == [b"N", b"R", b"R", b"R"]
        finally:
            proc.terminate()
            proc.wait(60)


def test_fatal_bind_failure(qroot: QRoot) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        qroot.control("pbsip", "127.0.0.1")
        qroot.control("pbsport", str(busy.getsockname()[1]))
        proc = subprocess.run([*entry_point("pbsdbd", "main"), "--root", str(qroot.path)],
                              capture_output=True, timeout=30, check=False)
    assert proc.returncode == 111
    assert proc.stderr.startswith(b"pbsdbd: fatal: unable to bind UDP socket: ")

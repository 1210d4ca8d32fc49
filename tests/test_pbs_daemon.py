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
        proc.wait(10)


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
    daemon.proc.wait(10)
    assert daemon.proc.stderr is not None
    log = daemon.proc.stderr.read().decode()
    assert "pbsdbd: warning: no authorized add packet from 127.0.0.1" in log
    assert "pbsdbd: warning: bad packet from 127.0.0.1" in log
    assert daemon.proc.returncode == 0  # SIGTERM is a clean stop


def test_check40_timeout_and_refresh(qroot: QRoot) -> None:
    qroot.control("pbstimeout", "2")
    qroot.control("pbssecret", SECRET)
    proc, port = start_pbsdbd(qroot)
    other = ADD[:5] + b"\x0b" + ADD[6:]  # 192.0.2.11
    other_query = QUERY[:5] + b"\x0b" + QUERY[6:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        d = Daemon(proc, port, sock)
        try:
            d.send(ADD)
            d.send(other)
            time.sleep(1)
            assert d.ask()[6:7] == b"R"
            d.send(other)  # re-added after 1 s: valid until 3 s
            time.sleep(1.5)  # 2.5 s after the first adds, away from both expiry instants
            assert d.ask() == MISS
            assert d.ask(other_query)[6:7] == b"R"
            time.sleep(1)
            assert d.ask(other_query)[6:7] == b"N"
        finally:
            proc.terminate()
            proc.wait(10)


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
            proc.wait(10)


def test_fatal_bind_failure(qroot: QRoot) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        qroot.control("pbsip", "127.0.0.1")
        qroot.control("pbsport", str(busy.getsockname()[1]))
        proc = subprocess.run([*entry_point("pbsdbd", "main"), "--root", str(qroot.path)],
                              capture_output=True, timeout=30, check=False)
    assert proc.returncode == 111
    assert proc.stderr.startswith(b"pbsdbd: fatal: unable to bind UDP socket: ")

"""pbsadd and pbscheck as real processes against raw UDP sockets and a real pbsdbd."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from qldap.control.files import ControlDir
from qldap.pbs.client import pbs_add, pbs_check, query_order
from qldap.pbs.config import PbsRole, load_config
from tests.conftest import QRoot
from tests.test_auth_modules_support import entry_point, free_port
from tests.test_pbs_daemon import ADD, SECRET, start_pbsdbd

PBSADD = entry_point("pbs", "pbsadd_main")
PBSCHECK = entry_point("pbs", "pbscheck_main")


def env(qroot: QRoot, **extra: str) -> dict[str, str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QLDAP_ROOT": str(qroot.path)}
    base.update(extra)
    return base


@pytest.fixture
def silent_servers(qroot: QRoot) -> Iterator[list[socket.socket]]:
    """Two bound UDP sockets on 127.0.0.1 and 127.0.0.2 (same port) that never answer."""
    port = free_port(kind=socket.SOCK_DGRAM)
    socks = []
    for ip in ("127.0.0.1", "127.0.0.2"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, port))
        s.settimeout(5)
        socks.append(s)
    qroot.control("pbsservers", "127.0.0.1\n127.0.0.2")
    qroot.control("pbsport", str(port))
    yield socks
    for s in socks:
        s.close()


def drain(sock: socket.socket) -> list[bytes]:
    sock.settimeout(0.2)
    out = []
    try:
        while True:
            out.append(sock.recv(2048))
    except TimeoutError:
        return out


def test_check37_pbsadd_sends_to_every_server_then_execs(qroot: QRoot, silent_servers) -> None:  # type: ignore[no-untyped-def]
    qroot.control("pbssecret", SECRET)
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]")
    proc = subprocess.run([*PBSADD, "/bin/echo", "execed"], capture_output=True, timeout=30, check=False,
                          env=env(qroot, TCPREMOTEIP="192.0.2.10", USER="joe"))
    assert (proc.returncode, proc.stdout) == (0, b"execed\n")
    for s in silent_servers:
        assert drain(s) == [ADD]
    assert len(ADD) == 31


def test_pbsadd_fatal_errors_do_not_run_the_subprogram(qroot: QRoot, silent_servers) -> None:  # type: ignore[no-untyped-def]
    bad_ip = subprocess.run([*PBSADD, "/bin/echo", "execed"], capture_output=True, timeout=30, check=False,
                            env=env(qroot, TCPREMOTEIP="nonsense"))
    assert (bad_ip.returncode, bad_ip.stdout) == (1, b"")
    assert b"pbsadd unable to read $TCPREMOTEIP" in bad_ip.stderr
    qroot.control("pbssecret", "x" * 256)
    long = subprocess.run([*PBSADD, "/bin/echo"], capture_output=True, timeout=30, check=False,
                          env=env(qroot, TCPREMOTEIP="192.0.2.10"))
    assert long.returncode == 1 and b"pbsadd control/pbssecret is to long" in long.stderr
    nopbs = subprocess.run([*PBSADD, "/bin/echo", "direct"], capture_output=True, timeout=30, check=False,
                           env=env(qroot, NOPBS="1"))
    assert nopbs.stdout == b"direct\n"


def test_check41_pbscheck_hit_and_miss(qroot: QRoot) -> None:
    qroot.control("pbssecret", SECRET)
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]")
    proc, _port = start_pbsdbd(qroot)
    qroot.control("pbsservers", "127.0.0.1")
    try:
        subprocess.run([*PBSADD], env=env(qroot, TCPREMOTEIP="192.0.2.10", USER="joe"), check=True,
                       timeout=30)
        hit = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=True,
                             env=env(qroot, TCPREMOTEIP="192.0.2.10", TCPREMOTEINFO="orig"))
        lines = hit.stdout.decode().splitlines()
        assert "RELAYCLIENT=" in lines and "TCPREMOTEINFO=[pbs]joe" in lines
        miss = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=True,
                              env=env(qroot, TCPREMOTEIP="192.0.2.11", TCPREMOTEINFO="orig"))
        lines = miss.stdout.decode().splitlines()
        assert not any(x.startswith("RELAYCLIENT") for x in lines) and "TCPREMOTEINFO=orig" in lines
    finally:
        proc.terminate()
        proc.wait(60)


def test_check42_silent_servers_and_nopbs(qroot: QRoot, silent_servers) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    proc = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=True,
                          env=env(qroot, TCPREMOTEIP="192.0.2.10"))
    elapsed = time.monotonic() - start
    assert not any(x.startswith("RELAYCLIENT") for x in proc.stdout.decode().splitlines())
    assert b"pbscheck: no response from server" in proc.stderr
    counts = [len(drain(s)) for s in silent_servers]
    assert sum(counts) == 3 and min(counts) >= 1  # first pick, then servers 0 and 1
    assert elapsed >= 3  # three one-second waits before giving up
    nopbs = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=True,
                           env=env(qroot, TCPREMOTEIP="192.0.2.10", NOPBS="1"))
    assert b"RELAYCLIENT" not in nopbs.stdout
    assert [drain(s) for s in silent_servers] == [[], []]


def test_check43_pbscheck_without_subprogram(qroot: QRoot) -> None:
    proc = subprocess.run([*PBSCHECK], capture_output=True, timeout=30, check=False, env=env(qroot))
    reply = b"554 pop before smtp subprogram uncorrectly installed (#5.3.5)\r\n"
    assert (proc.returncode, proc.stdout) == (1, reply)


def test_pbscheck_fatal_replies(qroot: QRoot) -> None:
    no_controls = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=False,
                                 env=env(qroot, TCPREMOTEIP="192.0.2.10"))
    assert (no_controls.returncode, no_controls.stdout) == (1, b"554 unable to read controls (#5.3.5)\r\n")
    qroot.control("pbsservers", "127.0.0.1")
    no_ip = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=False, env=env(qroot))
    assert no_ip.stdout == b"554 unable to read $TCPREMOTEIP (#5.3.5)\r\n"
    qroot.control("pbsenv", "\n".join(f"V{i}" for i in range(256)))
    many = subprocess.run([*PBSCHECK, "env"], capture_output=True, timeout=30, check=False,
                          env=env(qroot, TCPREMOTEIP="192.0.2.10"))
    assert many.stdout == b"554 to many additional environments defined (#5.3.5)\r\n"
    qroot.control("pbsenv", None)
    noexec = subprocess.run([*PBSCHECK, "/nonexistent/smtpd"], capture_output=True, timeout=30, check=False,
                            env=env(qroot, TCPREMOTEIP="192.0.2.10", NOPBS="1"))
    assert (noexec.returncode, noexec.stdout) == (1, b"554 unable to start smtp daemon (#5.3.5)\r\n")


def test_query_order() -> None:
    assert query_order(3, 7) == [1, 0, 1, 2]
    assert query_order(1, 5) == [0, 0]
    assert query_order(0, 5) == []


def test_async_add_and_check_in_process(qroot: QRoot) -> None:
    qroot.control("pbssecret", SECRET)
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]")
    proc, _port = start_pbsdbd(qroot)
    qroot.control("pbsservers", "127.0.0.1")
    cfg = load_config(ControlDir(qroot.path), PbsRole.CLIENT)

    async def scenario() -> tuple[dict[str, str], dict[str, str]]:
        await pbs_add(cfg, "::ffff:127.0.0.9", {"USER": "ann"})
        return await pbs_check(cfg, "127.0.0.9"), await pbs_check(cfg, "127.0.0.8")

    try:
        hit, miss = asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(60)
    assert hit == {"RELAYCLIENT": "", "TCPREMOTEINFO": "[pbs]ann"} and miss == {}

"""The POP-before-SMTP client believes only answers from a configured server (issue 11).

The adversarial review found that pbscheck (and the SMTP daemon's in-process check) took the first
Response datagram for the asked address from *any* sender: anyone who can reach the client's port
could grant itself relaying by racing the real server.  Here a rogue sends a granting Response from
another address, and another from the right address but the wrong port, just before the configured
server's real "not found" answer; the client must ignore both (pbscheck(8)).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from qldap.pbs.client import pbs_check, query
from qldap.pbs.config import PbsConfig
from qldap.pbs.packets import Query, Response, decode, encode, pack_address

CLIENT_IP = "192.0.2.10"


@dataclass
class Race:
    server: socket.socket
    rogues: tuple[socket.socket, ...]
    thread: threading.Thread
    asked: list[tuple[str, int]]


def serve_once(race: Race) -> None:
    """Answer one query: first every rogue grants relaying, then the real server says no."""
    data, client = race.server.recvfrom(2048)
    packet = decode(data)
    assert isinstance(packet, Query)
    race.asked.append(client)
    grant = encode(Response(packet.address, True, (b"FORGED=1",)))
    for rogue in race.rogues:
        rogue.sendto(grant, client)
    race.server.sendto(encode(Response(packet.address, False)), client)


@pytest.fixture
def race() -> Iterator[Race]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    other_host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_host.bind(("127.0.0.3", 0))
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port.bind(("127.0.0.1", 0))
    r = Race(server, (other_host, other_port), threading.Thread(daemon=True), [])
    r.thread = threading.Thread(target=serve_once, args=(r,), daemon=True)
    r.thread.start()
    yield r
    r.thread.join(60)
    for s in (server, other_host, other_port):
        s.close()


def config(race: Race) -> PbsConfig:
    return PbsConfig(port=race.server.getsockname()[1], servers=("127.0.0.1",))


def test_pbscheck_ignores_a_rogue_answer(race: Race) -> None:
    answer = query(config(race), CLIENT_IP, seed=0, wait=5.0)
    assert race.asked, "the server was never asked"
    assert answer == Response(pack_address(CLIENT_IP) or b"", False)


def test_smtpd_check_ignores_a_rogue_answer(race: Race) -> None:
    granted = asyncio.run(pbs_check(config(race), CLIENT_IP, seed=0, wait=5.0))
    assert race.asked, "the server was never asked"
    assert granted == {}

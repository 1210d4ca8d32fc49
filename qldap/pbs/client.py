"""The POP-before-SMTP clients' network side: send Add datagrams, ask servers with Query datagrams.

Used three ways: by the console programs ``pbsadd``/``pbscheck`` (blocking sockets, then exec), and
in-process by the daemons — the POP3 daemon awaits :func:`pbs_add` after a login, the SMTP daemon
awaits :func:`pbs_check` when a client connects and merges the returned variables into the
session's environment (``RELAYCLIENT`` present = may relay).

Query order (pbscheck(8)): first server number (time XOR pid) mod n, one second to answer; on
each timeout servers 0, 1, …, n−1 in turn, one second each; worst case n+1 seconds.  Only a
Response for the asked address that comes from one of the ``pbsservers`` at ``pbsport`` counts
(qmail-ldap's pbscheck read any datagram; qldap drops the others, so a rogue cannot race the server
and grant itself relaying); anything else is ignored while waiting.  Socket errors mean
"no relaying", never a failure of the SMTP session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import select
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from qldap.pbs.config import PbsConfig
from qldap.pbs.env import add_entries, check_environment
from qldap.pbs.packets import Add, PacketTooLarge, Query, Response, add_budget, decode, encode, pack_address

QUERY_WAIT = 1.0

Log = Callable[[str], None]


def _ignore(_text: str) -> None:
    return None


def query_order(count: int, seed: int) -> list[int]:
    """Server indexes in asking order: ``seed mod count``, then 0 … count−1."""
    if count <= 0:
        return []
    return [seed % count, *range(count)]


def default_seed() -> int:
    """pbscheck's first-server choice: the time XOR the pid."""
    return int(time.time()) ^ os.getpid()


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def add_datagram(cfg: PbsConfig, ip: str, environ: Mapping[str, str], log: Log = _ignore) -> bytes | None:
    """The Add datagram pbsadd sends for client *ip*; None when *ip* is not an address."""
    packed = pack_address(ip)
    if packed is None:
        return None
    made = add_entries(cfg.env, environ, add_budget(len(packed), len(cfg.secret)))
    for name in made.skipped:
        log(f"pbsadd: warning: environment entry {name} does not fit into the packet, skipped")
    try:
        return encode(Add(packed, cfg.secret, made.entries))
    except PacketTooLarge:
        return None


def server_sources(cfg: PbsConfig) -> frozenset[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The (address, port) pairs an answer may come from: the ``pbsservers`` at ``pbsport``."""
    out = set()
    for server in cfg.servers:
        try:
            out.add((ipaddress.ip_address(server), cfg.port))
        except ValueError:
            continue
    return frozenset(out)


def from_server(source: tuple[str | int, ...], allowed: frozenset[tuple[object, int]]) -> bool:
    """True when the datagram's *source* (``recvfrom`` address) is one of *allowed*.

    Why: a Response grants relaying, so one from anyone else who can reach our port — a rogue
    racing the real server — must be dropped (pbscheck(8)); IPv4-mapped IPv6 sources count as IPv4.
    """
    try:
        ip = ipaddress.ip_address(str(source[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip, int(source[1])) in allowed


def accept_response(data: bytes, packed: bytes) -> Response | None:
    """*data* when it is a Response about *packed*; None for anything else."""
    packet = decode(data)
    if isinstance(packet, Response) and packet.address == packed:
        return packet
    return None


def granted(response: Response | None, cfg: PbsConfig) -> dict[str, str]:
    """The variables to set for *response* (``RELAYCLIENT`` and the pbsenv entries); empty on a miss."""
    if response is None:
        return {}
    return dict(check_environment(response, cfg.env))


# -- blocking (pbsadd, pbscheck) ----------------------------------------------------------------------


def send_add(cfg: PbsConfig, datagram: bytes, log: Log = _ignore) -> None:
    """Send *datagram* once to every server; errors are only logged (no retry, no reply)."""
    for server in cfg.servers:
        try:
            with socket.socket(_family(server), socket.SOCK_DGRAM) as sock:
                sock.sendto(datagram, (server, cfg.port))
        except OSError as exc:
            log(f"pbsadd: warning: unable to send to {server}: {exc.strerror or exc}")


def query(cfg: PbsConfig, ip: str, *, seed: int | None = None, wait: float = QUERY_WAIT,
          log: Log = _ignore) -> Response | None:
    """Ask the servers about *ip* in :func:`query_order`; the first matching Response, or None.

    Raises:
        OSError: a socket could not be created or used (the caller execs without relaying).
    """
    packed = pack_address(ip)
    if packed is None or not cfg.servers:
        return None
    datagram = encode(Query(packed))
    allowed = server_sources(cfg)
    socks: dict[socket.AddressFamily, socket.socket] = {}
    try:
        for index in query_order(len(cfg.servers), default_seed() if seed is None else seed):
            server = cfg.servers[index]
            family = _family(server)
            sock = socks.get(family) or socks.setdefault(family, socket.socket(family, socket.SOCK_DGRAM))
            sock.sendto(datagram, (server, cfg.port))
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                ready, _w, _x = select.select(list(socks.values()), [], [], left)
                for s in ready:
                    data, source = s.recvfrom(2048)
                    answer = accept_response(data, packed) if from_server(source, allowed) else None
                    if answer is not None:
                        return answer
        log("pbscheck: no response from server")
        return None
    finally:
        for s in socks.values():
            s.close()


# -- asyncio (the daemons) ------------------------------------------------------------------------------


async def pbs_add(cfg: PbsConfig, ip: str, env: Mapping[str, str], log: Log = _ignore) -> None:
    """Register *ip* at every server with the pbsenv variables taken from *env* (pbsadd in-process)."""
    datagram = add_datagram(cfg, ip, env, log)
    if datagram is None:
        log(f"pbsadd: warning: unable to read $TCPREMOTEIP {ip!r}")
        return
    loop = asyncio.get_running_loop()
    for server in cfg.servers:
        try:
            with socket.socket(_family(server), socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                await loop.sock_sendto(sock, datagram, (server, cfg.port))
        except OSError as exc:
            log(f"pbsadd: warning: unable to send to {server}: {exc.strerror or exc}")


async def _answer(loop: asyncio.AbstractEventLoop, sock: socket.socket, packed: bytes,
                  allowed: frozenset[tuple[object, int]]) -> Response:
    while True:
        data, source = await loop.sock_recvfrom(sock, 2048)
        answer = accept_response(data, packed) if from_server(source, allowed) else None
        if answer is not None:
            return answer


async def pbs_check(cfg: PbsConfig, ip: str, *, seed: int | None = None, wait: float = QUERY_WAIT,
                    log: Log = _ignore) -> dict[str, str]:
    """pbscheck in-process: the variables to add for client *ip* (``RELAYCLIENT`` when granted)."""
    packed = pack_address(ip)
    if packed is None or not cfg.servers:
        return {}
    datagram = encode(Query(packed))
    loop = asyncio.get_running_loop()
    order: Sequence[int] = query_order(len(cfg.servers), default_seed() if seed is None else seed)
    try:
        for index in order:
            server = cfg.servers[index]
            with socket.socket(_family(server), socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                await loop.sock_sendto(sock, datagram, (server, cfg.port))
                try:
                    answer = _answer(loop, sock, packed, server_sources(cfg))
                    return granted(await asyncio.wait_for(answer, wait), cfg)
                except TimeoutError:
                    continue
    except OSError as exc:
        log(f"pbscheck: warning: {exc.strerror or exc}")
        return {}
    log("pbscheck: no response from server")
    return {}

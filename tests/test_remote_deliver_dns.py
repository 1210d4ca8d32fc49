"""DnsResolver against a tiny authoritative DNS server on loopback UDP: answers, NODATA, NXDOMAIN, SERVFAIL.

This is the seam's real side: it must keep "the name does not exist" (permanent, #5.1.2) apart from
"could not ask" (temporary, #4.1.2), also when no server answers at all.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import dns.message
import dns.rcode
import dns.rrset

from qldap.remote.deliver import deliver_remote
from qldap.remote.dns import DnsResolver
from qldap.remote.routes import AddressAnswer, DnsStatus, MxAnswer, MxRecord
from qldap.reports import Letter, Report
from tests.test_remote_deliver_smtp import MSG, SENDER, SmtpSink, config

T = TypeVar("T")

ZONE: dict[tuple[str, str], list[str]] = {
    ("example.org.", "MX"): ["10 mx1.example.org.", "20 MX2.Example.org."],
    ("mx1.example.org.", "A"): ["192.0.2.1"],
    ("mx2.example.org.", "A"): ["192.0.2.3"],
    ("nomx.example.", "A"): ["127.0.0.6"],
    ("v6.example.", "A"): ["192.0.2.4"],
    ("v6.example.", "AAAA"): ["2001:db8::4"],
}
NAMES = {name for name, _ in ZONE}
BROKEN = "broken.example."


class Authority(asyncio.DatagramProtocol):
    """Answers from ZONE; BROKEN gets SERVFAIL, unknown names NXDOMAIN, known names without data NODATA."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass at run time

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        if name == BROKEN:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in NAMES:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in ZONE:
            response.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, ZONE[(name, rdtype)]))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def with_server(body: Callable[[DnsResolver, Authority], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Authority, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        return await body(DnsResolver(["127.0.0.1"], port=port, lifetime=3, ipv6=True), proto)
    finally:
        transport.close()


def test_mx_addresses_nodata_nxdomain_servfail() -> None:
    async def body(r: DnsResolver, _p: Authority) -> list[object]:
        return [
            await r.mx("example.org"), await r.addresses("mx1.example.org"), await r.mx("nomx.example"),
            await r.mx("nx.example"), await r.addresses("nx.example"), await r.mx(BROKEN.rstrip(".")),
            await r.addresses(BROKEN), await r.addresses("v6.example"),
        ]  # fmt: skip

    got = asyncio.run(with_server(body))  # rrsets are sets: order the records for the comparison
    got = [
        MxAnswer(g.status, tuple(sorted(g.records, key=str))) if isinstance(g, MxAnswer) else g for g in got
    ]
    assert got == [
        MxAnswer(DnsStatus.OK, (MxRecord(10, "mx1.example.org"), MxRecord(20, "mx2.example.org"))),
        AddressAnswer(DnsStatus.OK, ("192.0.2.1",)),
        MxAnswer(DnsStatus.OK, ()),
        MxAnswer(DnsStatus.NXDOMAIN),
        AddressAnswer(DnsStatus.NXDOMAIN),
        MxAnswer(DnsStatus.TEMPFAIL),
        AddressAnswer(DnsStatus.TEMPFAIL),
        AddressAnswer(DnsStatus.OK, ("192.0.2.4", "2001:db8::4")),
    ]


def test_no_server_answering_is_temporary() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound but silent: every query times out
    port = s.getsockname()[1]
    try:
        r = DnsResolver(["127.0.0.1"], port=port, lifetime=0.5)
        assert asyncio.run(r.mx("example.org")) == MxAnswer(DnsStatus.TEMPFAIL)
    finally:
        s.close()


def test_47_with_real_dns_and_delivery_to_the_a_record_without_mx(tmp_path: Path) -> None:
    msg = tmp_path / "mess"
    msg.write_bytes(MSG)

    async def body(r: DnsResolver, proto: Authority) -> list[Report]:
        reports = []
        for rcpt in ("joe@nx.example", f"joe@{BROKEN.rstrip('.')}"):
            reports.append(await deliver_remote(tmp_path, config(), SENDER, rcpt, msg, resolver=r))
        async with SmtpSink(host="127.0.0.6") as sink:
            reports.append(await deliver_remote(tmp_path, config(), SENDER, "joe@nomx.example", msg,
                                                resolver=r, port=sink.port))  # fmt: skip
        assert ("nomx.example.", "MX") in proto.queries and ("nomx.example.", "A") in proto.queries
        return reports

    nx, broken, nomx = asyncio.run(with_server(body))
    assert nx == Report(Letter.PERMANENT, "Sorry, I couldn't find any host named nx.example. (#5.1.2)\n")
    assert broken == Report(Letter.TEMPORARY, "Sorry, I couldn't find any host by that name. (#4.1.2)\n")
    assert nomx.letter is Letter.SUCCESS and nomx.text.startswith("127.0.0.6 accepted message.")

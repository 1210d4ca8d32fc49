"""DnsResolver against a real (tiny) DNS server on a loopback UDP port: PTR, RBL and return-MX answers.

The server answers from a table with dnspython's message codec: names with records, NXDOMAIN for
unknown names, NOERROR/no data for a known name without the asked type, SERVFAIL for "broken" names
and silence for "silent" names — the outcomes qmail-smtpd(8) SESSION START and MAIL CHECKS step 12 and
qmail-smtpd(8) RBL AND SIGNATURES tell apart.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from qldap.smtpd.dns import DnsResolver, mx_outcome
from qldap.smtpd.policy import MxAnswer, RblAnswer

RECORDS = {
    ("2.0.0.127.in-addr.arpa.", "PTR"): ["Client.Test."],
    ("2.0.0.127.bl.test.", "A"): ["127.0.0.2", "127.0.0.4"],
    ("good.test.", "MX"): ["10 mx.good.test."],
    ("mx.good.test.", "A"): ["192.0.2.25"],
    ("v6.test.", "MX"): ["10 mx.v6.test."],
    ("mx.v6.test.", "AAAA"): ["2001:db8::25"],
    ("plain.test.", "A"): ["192.0.2.26"],
    ("nullmx.test.", "MX"): ["0 ."],
    ("dangling.test.", "MX"): ["10 nowhere.test."],
    ("halfbroken.test.", "MX"): ["10 broken.test."],
}
KNOWN = {name for name, _ in RECORDS} | {"nodata.test."}
BROKEN = {"broken.test.", "3.0.0.127.bl.test."}
SILENT = {"4.0.0.127.in-addr.arpa."}


class FakeDns:
    """A UDP DNS server on 127.0.0.1 answering from :data:`RECORDS`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
            if name in SILENT:
                continue
            response = dns.message.make_response(query)
            if name in BROKEN:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif name not in KNOWN:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif (name, rdtype) in RECORDS:
                rrset = dns.rrset.from_text_list(name, 60, "IN", rdtype, RECORDS[(name, rdtype)])
                response.answer.append(rrset)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


PATIENT = 30.0  # seconds for a lookup that gets an answer: a hang guard, never reached on success


@pytest.fixture(scope="module")
def fake_dns() -> Iterator[FakeDns]:
    server = FakeDns()
    yield server
    server.close()


def resolver_for(server: FakeDns, timeout: float = PATIENT) -> DnsResolver:
    inner = dns.asyncresolver.Resolver(configure=False)
    inner.nameservers = ["127.0.0.1"]
    inner.port = server.port
    return DnsResolver(timeout=timeout, ptr_timeout=timeout, resolver=inner)


@pytest.fixture
def resolver(fake_dns: FakeDns) -> DnsResolver:
    """Patient: on a loaded machine a slow answer is still an answer, not a timeout."""
    return resolver_for(fake_dns)


def test_ptr(resolver: DnsResolver) -> None:
    """PTR: lower-cased without the final dot; none or NXDOMAIN → None."""

    async def go() -> list[str | None]:
        return [await resolver.ptr(ip) for ip in ("127.0.0.2", "127.0.0.9")]

    assert asyncio.run(go()) == ["client.test", None]


def test_ptr_from_a_silent_server_is_none(fake_dns: FakeDns) -> None:
    """A PTR query nobody answers ends at the timeout as None (the timeout's length is not the point)."""
    assert asyncio.run(resolver_for(fake_dns, timeout=0.5).ptr("127.0.0.4")) is None


def test_rbl(resolver: DnsResolver) -> None:
    """RBL A queries: addresses when listed, empty when not, soft on SERVFAIL."""

    async def go() -> list[RblAnswer]:
        names = ("2.0.0.127.bl.test", "9.0.0.127.bl.test", "3.0.0.127.bl.test")
        return [await resolver.rbl(n) for n in names]

    listed, unlisted, broken = asyncio.run(go())
    assert sorted(listed.addresses) == ["127.0.0.2", "127.0.0.4"] and not listed.soft
    assert unlisted == RblAnswer(()) and broken == RblAnswer(soft=True)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("good.test", MxAnswer.EXISTS),
        ("v6.test", MxAnswer.EXISTS),  # an MX host with only an IPv6 address
        ("plain.test", MxAnswer.EXISTS),  # no MX, an A record
        ("nxdomain.test", MxAnswer.MISSING),
        ("nodata.test", MxAnswer.MISSING),  # neither MX nor A
        ("nullmx.test", MxAnswer.MISSING),
        ("dangling.test", MxAnswer.MISSING),  # the MX host has no address
        ("broken.test", MxAnswer.TEMPFAIL),
        ("halfbroken.test", MxAnswer.TEMPFAIL),  # the MX host's lookup fails
    ],
)
def test_return_mx(resolver: DnsResolver, domain: str, expected: MxAnswer) -> None:
    """The return-MX rules of qmail-smtpd(8) MAIL CHECKS step 12 against real DNS answers."""
    assert asyncio.run(resolver.mx(domain)) is expected


def test_mx_outcome_is_pure() -> None:
    """The decision alone: any exchange with an address wins; unknowns make it temporary."""
    assert mx_outcome(["a.test.", "b.test."], {"a.test": False, "b.test": True}) is MxAnswer.EXISTS
    assert mx_outcome(["a.test.", "b.test."], {"a.test": False, "b.test": None}) is MxAnswer.TEMPFAIL
    assert mx_outcome(["."], {}) is MxAnswer.MISSING
    assert mx_outcome(None, {"": False}) is MxAnswer.MISSING

"""SPF (RFC 7208) through a loopback name server: the appendix A examples, section 7.4 macros, errors, limits.

Every case asks a real DNS server (tests/dnsserver.py) through dnspython, so the void-lookup and
10-lookup limits, SERVFAIL and timeouts are what a resolver really sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qldap.mailauth.resolve import Dns, DnsTempError
from qldap.mailauth.spf import SpfResult, _State, check_host, check_sender, expand, parse_record
from tests.dnsserver import ANSWER_TIMEOUT, SILENT_TIMEOUT, DnsServer, long_txt, txt

# RFC 7208 appendix A: the example.com / example.org zone
ZONE = {
    ("example.com", "MX"): ["10 mail-a.example.com.", "20 mail-b.example.com."],
    ("example.com", "A"): ["192.0.2.10", "192.0.2.11"],
    ("amy.example.com", "A"): ["192.0.2.65"],
    ("bob.example.com", "A"): ["192.0.2.66"],
    ("mail-a.example.com", "A"): ["192.0.2.129"],
    ("mail-b.example.com", "A"): ["192.0.2.130"],
    ("www.example.com", "CNAME"): ["example.com."],
    ("example.org", "MX"): ["10 mail-c.example.org."],
    ("mail-c.example.org", "A"): ["192.0.2.140"],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["example.com."],
    ("11.2.0.192.in-addr.arpa", "PTR"): ["example.com."],
    ("65.2.0.192.in-addr.arpa", "PTR"): ["amy.example.com."],
    ("66.2.0.192.in-addr.arpa", "PTR"): ["bob.example.com."],
    ("129.2.0.192.in-addr.arpa", "PTR"): ["mail-a.example.com."],
    ("130.2.0.192.in-addr.arpa", "PTR"): ["mail-b.example.com."],
    ("140.2.0.192.in-addr.arpa", "PTR"): ["mail-c.example.org."],
    ("10.0.0.10.in-addr.arpa", "PTR"): ["bob.example.com."],
}
IPS = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.65",
    "192.0.2.66",
    "192.0.2.129",
    "192.0.2.130",
    "192.0.2.140",
    "10.0.0.10",
]


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    srv = DnsServer(ZONE, silent=["slow.test"], servfail=["broken.test"])
    yield srv
    srv.close()


def results(server: DnsServer, domain: str, record: str | None, ips: list[str] = IPS) -> dict[str, str]:
    """Publish *record* at *domain* and evaluate every IP of *ips* for ``user@domain``."""
    if record is not None:
        server.update({(domain, "TXT"): [txt(record)]})

    async def go() -> dict[str, str]:
        dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT)
        return {ip: (await check_host(dns, ip, domain, f"user@{domain}")).result.value for ip in ips}

    return asyncio.run(go())


def passing(found: dict[str, str]) -> set[str]:
    return {ip for ip, r in found.items() if r == "pass"}


@pytest.mark.parametrize(
    ("record", "allowed"),
    [
        ("v=spf1 +all", set(IPS)),
        ("v=spf1 a -all", {"192.0.2.10", "192.0.2.11"}),
        ("v=spf1 a:example.org -all", set()),
        ("v=spf1 mx -all", {"192.0.2.129", "192.0.2.130"}),
        ("v=spf1 mx:example.org -all", {"192.0.2.140"}),
        ("v=spf1 mx mx:example.org -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
        ("v=spf1 mx/30 mx:example.org/30 -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
        (
            "v=spf1 ptr -all",
            {"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130"},
        ),
        ("v=spf1 ip4:192.0.2.128/28 -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
    ],
)
def test_appendix_a1_simple_examples(server: DnsServer, record: str, allowed: set[str]) -> None:
    """RFC 7208 A.1: who passes each example policy of example.com; everyone else gets ``fail``."""
    found = results(server, "example.com", record)
    assert passing(found) == allowed
    assert {r for ip, r in found.items() if ip not in allowed} <= {"fail"}


def test_appendix_a1_mx_cidr_covers_neighbours(server: DnsServer) -> None:
    """A.1 ``mx/30``: the whole /30 around each MX host passes, one address further does not."""
    found = results(
        server,
        "example.com",
        "v=spf1 mx/30 mx:example.org/30 -all",
        ["192.0.2.128", "192.0.2.131", "192.0.2.143", "192.0.2.144"],
    )
    assert found == {
        "192.0.2.128": "pass",
        "192.0.2.131": "pass",
        "192.0.2.143": "pass",
        "192.0.2.144": "fail",
    }


def test_appendix_a2_multiple_domains(server: DnsServer) -> None:
    """A.2: example.org includes example.com's and example.net's policies."""
    server.update(
        {
            ("example.com", "TXT"): [txt("v=spf1 a -all")],
            ("example.net", "TXT"): [txt("v=spf1 ip4:192.0.2.65 -all")],
        }
    )
    found = results(server, "example.org", "v=spf1 include:example.com include:example.net -all")
    assert passing(found) == {"192.0.2.10", "192.0.2.11", "192.0.2.65"}


def test_appendix_a3_dnsbl_style(server: DnsServer) -> None:
    """A.3: per-user lists under _spf.example.com via ``exists:%{l1r+}.%{d}`` and ``%{ir}``."""
    server.update(
        {
            ("mobile-users._spf.example.com", "TXT"): [txt("v=spf1 exists:%{l1r+}.%{d}")],
            ("remote-users._spf.example.com", "TXT"): [txt("v=spf1 exists:%{ir}.%{l1r+}.%{d}")],
            ("mary.mobile-users._spf.example.com", "A"): ["127.0.0.2"],
            ("fred.mobile-users._spf.example.com", "A"): ["127.0.0.2"],
            ("15.15.168.192.joel.remote-users._spf.example.com", "A"): ["127.0.0.2"],
            ("16.15.168.192.joel.remote-users._spf.example.com", "A"): ["127.0.0.2"],
            ("example.com", "TXT"): [
                txt("v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all")
            ],
        }
    )

    async def go() -> list[str]:
        dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT)
        cases = [
            ("198.51.100.7", "mary"),
            ("192.168.15.15", "joel"),
            ("192.168.15.16", "joel"),
            ("192.168.15.17", "joel"),
            ("192.0.2.129", "bob"),
            ("10.0.0.10", "bob"),
        ]
        return [
            (await check_host(dns, ip, "example.com", f"{u}@example.com")).result.value for ip, u in cases
        ]

    assert asyncio.run(go()) == ["pass", "pass", "pass", "fail", "pass", "fail"]


def test_appendix_a4_multiple_requirements(server: DnsServer) -> None:
    """A.4: pass only inside 192.0.2.0/24 *and* with a validated PTR under example.com."""
    server.update(
        {
            ("ip4._spf.example.com", "TXT"): [txt("v=spf1 -ip4:192.0.2.0/24 +all")],
            ("ptr._spf.example.com", "TXT"): [txt("v=spf1 -ptr:%{d2} +all")],
        }
    )
    record = "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all"
    found = results(server, "example.com", record)
    assert found["192.0.2.10"] == "pass" and found["192.0.2.129"] == "pass"
    assert found["192.0.2.140"] == "fail"  # PTR not under example.com
    assert found["10.0.0.10"] == "fail"  # outside the /24


MACRO_CASES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize(("macro", "expected"), MACRO_CASES)
def test_macro_examples_7_4(macro: str, expected: str) -> None:
    """section 7.4, sender strong-bad@email.example.com from 192.0.2.3."""
    import ipaddress

    st = _State(Dns(), ipaddress.ip_address("192.0.2.3"), "strong-bad@email.example.com", "h.example")
    assert expand(macro, st, "email.example.com") == expected


def test_macro_ipv6_and_escapes() -> None:
    """Section 7.4 IPv6 example, ``%%``/``%_``/``%-`` and URL-escaping of upper-case macros (section 7.3)."""
    import ipaddress

    st = _State(Dns(), ipaddress.ip_address("2001:db8::cb01"), "strong-bad@email.example.com", "h")
    assert expand("%{ir}.%{v}._spf.%{d2}", st, "email.example.com") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    st4 = _State(Dns(), ipaddress.ip_address("192.0.2.3"), "a b@x.example", "h")
    assert expand("%%%_%-%{S}", st4, "x.example", exp=True) == "% %20a%20b%40x.example"


def outcome(
    server: DnsServer,
    domain: str,
    ip: str = "192.0.2.10",
    sender: str | None = None,
    timeout: float = ANSWER_TIMEOUT,
) -> str:
    async def go() -> str:
        dns = Dns(server.resolver(), timeout=timeout)
        return (await check_host(dns, ip, domain, sender or f"u@{domain}")).result.value

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 -all", "fail"),
        ("v=spf1 ~all", "softfail"),
        ("v=spf1 ?all", "neutral"),
        ("v=spf1", "neutral"),  # no mechanism matched, no redirect
        ("v=spf1 ip4:192.0.2.10", "pass"),
        ("v=spf1 foo:bar -all", "permerror"),  # unknown mechanism
        ("v=spf1 ip4:192.0.2.300 -all", "permerror"),
        ("v=spf1 ip4:192.0.2.0/33 -all", "permerror"),
        ("v=spf1 a:%{x}.example -all", "permerror"),  # unknown macro letter
        ("v=spf1 a:%{c}.example -all", "permerror"),  # c only in exp
        ("v=spf1 redirect=a.example redirect=b.example", "permerror"),
        ("v=spf1 -all unknown-modifier=anything", "fail"),  # unknown modifiers are ignored
        ("v=spf1 -all foo", "permerror"),  # syntax error after the match still counts (section 4.6)
        ("v=spf1 include:nxdomain.example -all", "permerror"),
        ("v=spf1 redirect=nxdomain.example", "permerror"),
        ("v=spf1 include:slow.test -all", "temperror"),
        ("v=spf1 a:broken.test -all", "temperror"),
        ("V=SPF1 IP4:192.0.2.10 -ALL", "pass"),  # case-insensitive
        ("v=spf10 +all", "none"),  # not an SPF record
    ],
)
def test_results(server: DnsServer, record: str, expected: str) -> None:
    """Every result of section 2.6 from a one-line record at ``results.example``."""
    server.update({("results.example", "TXT"): [txt(record)]})
    timeout = SILENT_TIMEOUT if "slow" in record else ANSWER_TIMEOUT
    assert outcome(server, "results.example", timeout=timeout) == expected


def test_none_temperror_and_two_records(server: DnsServer) -> None:
    """No record → none; NXDOMAIN → none; a timeout or SERVFAIL on the TXT → temperror; two → permerror."""
    server.update(
        {
            ("norecord.example", "TXT"): [txt("some other text")],
            ("two.example", "TXT"): [txt("v=spf1 -all"), txt("v=spf1 +all")],
        }
    )
    assert outcome(server, "norecord.example") == "none"
    assert outcome(server, "nxdomain.example") == "none"
    assert outcome(server, "slow.test", timeout=SILENT_TIMEOUT) == "temperror"
    assert outcome(server, "broken.test") == "temperror"
    assert outcome(server, "two.example") == "permerror"
    assert outcome(server, "singlelabel") == "none"  # not a usable domain: no query at all


def test_ten_lookup_limit(server: DnsServer) -> None:
    """section 4.6.4: ten DNS-querying terms are fine, the eleventh is permerror (includes count too)."""
    chain = {
        (f"l{i}.limit.example", "TXT"): [txt(f"v=spf1 include:l{i + 1}.limit.example")] for i in range(12)
    }
    chain[("l12.limit.example", "TXT")] = [txt("v=spf1 +all")]
    server.update(chain)
    server.update(
        {
            ("ok.limit.example", "TXT"): [
                long_txt("v=spf1 " + " ".join(["a:mail-a.example.com"] * 9) + " ip4:192.0.2.10 -all")
            ]
        }
    )
    server.update(
        {
            ("over.limit.example", "TXT"): [
                long_txt("v=spf1 " + " ".join(["a:mail-a.example.com"] * 11) + " ip4:192.0.2.10 -all")
            ]
        }
    )
    assert outcome(server, "ok.limit.example") == "pass"
    assert outcome(server, "over.limit.example") == "permerror"
    assert outcome(server, "l0.limit.example") == "permerror"  # 12 nested includes
    assert outcome(server, "l3.limit.example") == "pass"  # 9 includes to the +all


def test_void_lookup_limit(server: DnsServer) -> None:
    """section 4.6.4: a third lookup answering NXDOMAIN/no data is permerror; two are tolerated."""
    server.update(
        {
            ("void2.example", "TXT"): [txt("v=spf1 a:no1.example a:no2.example ip4:192.0.2.10 -all")],
            ("void3.example", "TXT"): [
                txt("v=spf1 a:no1.example a:no2.example a:no3.example ip4:192.0.2.10")
            ],
        }
    )
    assert outcome(server, "void2.example") == "pass"
    assert outcome(server, "void3.example") == "permerror"


def test_mx_over_ten_names(server: DnsServer) -> None:
    """section 4.6.4: more than 10 MX names for one mx term is permerror."""
    server.update(
        {
            ("manymx.example", "MX"): [f"{i} mx{i}.example.com." for i in range(11)],
            ("manymx.example", "TXT"): [txt("v=spf1 mx -all")],
        }
    )
    assert outcome(server, "manymx.example") == "permerror"


def test_exp_explanation_on_fail(server: DnsServer) -> None:
    """section 6.2: a fail fetches the ``exp=`` TXT and expands its macros (here %{i} and %{d})."""
    server.update(
        {
            ("expl.example", "TXT"): [txt("v=spf1 -all exp=why.expl.example")],
            ("why.expl.example", "TXT"): [txt("%{i} is not one of %{d}'s designated mail servers.")],
        }
    )

    async def go() -> str:
        dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT)
        return (await check_host(dns, "192.0.2.99", "expl.example", "u@expl.example")).explanation

    assert asyncio.run(go()) == "192.0.2.99 is not one of expl.example's designated mail servers."


def test_ipv6_client(server: DnsServer) -> None:
    """ip6 with a prefix, and an ``a`` term asking AAAA for an IPv6 client."""
    server.update(
        {
            ("v6.example", "TXT"): [txt("v=spf1 ip6:2001:db8:1::/48 a:host6.example -all")],
            ("host6.example", "AAAA"): ["2001:db8:2::25"],
        }
    )
    assert outcome(server, "v6.example", ip="2001:db8:1:ff::1") == "pass"
    assert outcome(server, "v6.example", ip="2001:db8:2::25") == "pass"
    assert outcome(server, "v6.example", ip="2001:db8:3::1") == "fail"
    assert outcome(server, "v6.example", ip="192.0.2.10") == "fail"


def test_helo_identity_for_null_sender(server: DnsServer) -> None:
    """Sections 2.3, 2.4: the HELO name is checked first (postmaster@helo); for MAIL FROM:<> its result
    is the result, otherwise it rides along beside the MAIL FROM result."""
    server.update(
        {
            ("relay.example.com", "TXT"): [txt("v=spf1 ip4:192.0.2.65 -all")],
            ("relay.example.com", "A"): ["192.0.2.65"],
        }
    )

    async def go() -> list[tuple[str, str, bool, str | None]]:
        dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT)
        out = []
        for ip, helo, sender in [
            ("192.0.2.65", "relay.example.com", ""),
            ("192.0.2.66", "relay.example.com", ""),
            ("192.0.2.65", "[192.0.2.65]", ""),
            ("192.0.2.10", "relay.example.com", "u@example.com"),
            ("192.0.2.65", "relay.example.com", "u@example.com"),
            ("192.0.2.10", "unknown", "u@example.com"),
        ]:
            o = await check_sender(dns, ip, helo, sender)
            out.append((o.result.value, o.identity, o.helo, o.helo_result.value if o.helo_result else None))
        return out

    server.update({("example.com", "TXT"): [txt("v=spf1 a -all")]})
    assert asyncio.run(go()) == [
        ("pass", "relay.example.com", True, None),
        ("fail", "relay.example.com", True, None),
        ("none", "[192.0.2.65]", True, None),
        ("pass", "u@example.com", False, "fail"),  # HELO fails, MAIL FROM passes: both reported
        ("fail", "u@example.com", False, "pass"),
        ("pass", "u@example.com", False, None),  # "unknown" is no domain: no HELO check
    ]


def test_parse_record_rejects_before_evaluating() -> None:
    """section 4.6: the whole record is parsed first; a bad term anywhere is an error."""
    from qldap.mailauth.spf import _PermError

    assert [t.name for t in parse_record("v=spf1 ip4:1.2.3.4 a mx/24 ptr include:x.example -all").terms] == [
        "ip4",
        "a",
        "mx",
        "ptr",
        "include",
        "all",
    ]
    for bad in (
        "v=spf1 a:",
        "v=spf1 include",
        "v=spf1 all:x",
        "v=spf1 ip6:1.2.3.4",
        "v=spf1 mx//129",
        "v=spf1 exp= -all",
        "v=spf1 a/024",
    ):
        with pytest.raises(_PermError):
            parse_record(bad)


def test_answers_are_cached_for_their_ttl_errors_never(server: DnsServer) -> None:
    """Answers are kept for their TTL (60 s here), NXDOMAIN for 60 s; a timeout is asked again."""
    now = [1000.0]
    dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT, clock=lambda: now[0])
    server.update({("cached.example", "TXT"): [txt("v=spf1 -all")]})

    async def go() -> None:
        for _ in range(3):
            assert await dns.txt("cached.example") == (b"v=spf1 -all",)
            assert await dns.txt("nothing-here.example") is None
        assert dns.queries == 2
        now[0] += 61
        await dns.txt("cached.example")
        await dns.txt("nothing-here.example")
        assert dns.queries == 4
        dns.timeout = SILENT_TIMEOUT
        for _ in range(2):
            with pytest.raises(DnsTempError):
                await dns.txt("slow.test")
        assert dns.queries == 6

    asyncio.run(go())


@settings(max_examples=60, deadline=None)
@given(local=st.text(max_size=30), helo=st.text(max_size=30), ip=st.ip_addresses())
def test_any_sender_and_helo_end_in_a_result(server: DnsServer, local: str, helo: str, ip: object) -> None:
    """Macros expand whatever the client sent (spaces, dots, non-ASCII, empty labels) into names that
    are asked or refused, never a crash."""
    server.update(
        {
            ("macros.example", "TXT"): [
                txt("v=spf1 exists:%{l}.%{h}.%{ir}.%{v}.x.example a:%{L}.x.example ~all")
            ]
        }
    )

    async def go() -> SpfResult:
        dns = Dns(server.resolver(), timeout=ANSWER_TIMEOUT)
        return (await check_sender(dns, str(ip), helo, f"{local}@macros.example")).result

    assert asyncio.run(go()) in (SpfResult.SOFTFAIL, SpfResult.PERMERROR, SpfResult.NONE, SpfResult.FAIL)

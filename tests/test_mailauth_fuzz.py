"""Hostile input never crashes the inbound checks: arbitrary messages, SPF and DMARC records, headers.

A crash after DATA would not lose mail (no 250 is sent) but would refuse the same message on every
retry; so whatever a sender writes, the checks end in a result (permerror at worst).  No DNS is
needed: the DKIM cases use a Dns with no server, and SPF/DMARC records are parsed directly.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
from hypothesis import given, settings
from hypothesis import strategies as st

from qldap.mailauth.dkimverify import DkimOutcome, verify_message
from qldap.mailauth.dmarc import header_from_domain
from qldap.mailauth.dmarc import parse_record as parse_dmarc
from qldap.mailauth.resolve import Dns
from qldap.mailauth.results import authserv_id_of, field_values, header_end, strip_forged
from qldap.mailauth.spf import _PermError
from qldap.mailauth.spf import parse_record as parse_spf


def _offline_dns() -> Dns:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = 9  # discard: nothing answers, every lookup is a quick temporary error
    return Dns(res, timeout=0.05)


SIG = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA\n"
message_bytes = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda a, b: SIG + a + b"\n\n" + b, st.binary(max_size=200), st.binary(max_size=100)),
    st.builds(lambda a: b" " + a, st.binary(max_size=100)),  # opens with a continuation line
)


@settings(max_examples=150, deadline=None)
@given(message_bytes)
def test_dkim_verification_never_raises(message: bytes) -> None:
    out = asyncio.run(verify_message(_offline_dns(), message))
    assert all(isinstance(o, DkimOutcome) for o in out)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_spf_parser_raises_only_permerror(text: str) -> None:
    try:
        parse_spf("v=spf1 " + text)
    except _PermError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.lists(st.text(max_size=60), max_size=3))
def test_dmarc_and_header_parsers_never_raise(text: str, froms: list[str]) -> None:
    parse_dmarc("v=DMARC1;" + text)
    header_from_domain(froms)
    raw = text.encode("utf-8", "surrogateescape")
    header = raw[: header_end(raw)]
    kept, removed = strip_forged(header, "mx.example.org")
    assert removed >= 0 and len(kept) <= len(header)
    field_values(header, "From")
    authserv_id_of(b"Authentication-Results:" + raw)

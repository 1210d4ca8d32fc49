"""DKIM verification (keys from a loopback name server) and DMARC evaluation (RFC 7489) case by case.

DKIM: a Mail::DKIM (Perl) signature verifies (interoperability), a tampered body or header fails, a
missing key is permerror, a silent name server is temperror, several signatures are all reported,
ed25519-sha256 (dkimpy-signed) verifies.  DMARC: pass through aligned SPF, pass through aligned
DKIM, fail under p=none/quarantine/reject, organizational-domain fallback with sp=, strict against
relaxed alignment, pct, temperror and the malformed-From permerror.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.mailauth.dkimverify import DkimOutcome, DkimResult, verify_message
from qldap.mailauth.dmarc import (
    DmarcResult,
    Policy,
    check_dmarc,
    header_from_domain,
    org_domain,
    parse_record,
)
from qldap.mailauth.resolve import Dns
from qldap.mailauth.results import authserv_id_of, header_line, strip_forged
from qldap.mailauth.spf import SpfOutcome, SpfResult
from tests.dnsserver import ANSWER_TIMEOUT, SILENT_TIMEOUT, DnsServer, txt
from tests.mailauth_keys import Ed25519Key, RsaKey, ed25519_key, rsa_key

MESSAGE = (
    b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: interop\n"
    b"Date: Sun, 06 Dec 2026 12:00:00 +0000\nMessage-ID: <1@example.com>\n\nHello,\n\nsigned by Perl.\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[RsaKey, Ed25519Key]:
    return rsa_key(Path(tmp_path_factory.mktemp("keys"))), ed25519_key()


@pytest.fixture(scope="module")
def server(keys: tuple[RsaKey, Ed25519Key]) -> Iterator[DnsServer]:
    rsa, ed = keys
    srv = DnsServer(
        {
            ("sel._domainkey.example.com", "TXT"): [rsa.record],
            ("ed._domainkey.example.com", "TXT"): [ed.record],
            ("other._domainkey.example.net", "TXT"): [rsa.record],
            ("_dmarc.example.com", "TXT"): [txt("v=DMARC1; p=reject; rua=mailto:d@example.com")],
            ("_dmarc.none.test", "TXT"): [txt("v=DMARC1; p=none")],
            ("_dmarc.quarantine.test", "TXT"): [txt("v=DMARC1; p=quarantine")],
            ("_dmarc.org.test", "TXT"): [txt("v=DMARC1; p=reject; sp=quarantine")],
            ("_dmarc.nosp.test", "TXT"): [txt("v=DMARC1; p=reject")],
            ("_dmarc.strict.test", "TXT"): [txt("v=DMARC1; p=reject; adkim=s; aspf=s")],
            ("_dmarc.pct0.test", "TXT"): [txt("v=DMARC1; p=reject; pct=0")],
            ("_dmarc.two.test", "TXT"): [txt("v=DMARC1; p=reject"), txt("v=DMARC1; p=none")],
            ("_dmarc.bad.test", "TXT"): [txt("v=DMARC1; p=bogus")],
            ("_dmarc.badrua.test", "TXT"): [txt("v=DMARC1; p=bogus; rua=mailto:x@badrua.test")],
            ("_dmarc.notfirst.test", "TXT"): [txt("p=reject; v=DMARC1")],
            ("_dmarc.co.uk.test", "TXT"): [txt("v=DMARC1; p=reject")],
            ("_dmarc.example.co.uk", "TXT"): [txt("v=DMARC1; p=quarantine")],
        },
        silent=["_dmarc.slow.test", "slow._domainkey.example.com"],
    )
    yield srv
    srv.close()


def dns_for(server: DnsServer, timeout: float = ANSWER_TIMEOUT) -> Dns:
    return Dns(server.resolver(), timeout=timeout)


def verify(server: DnsServer, message: bytes, timeout: float = ANSWER_TIMEOUT) -> tuple[DkimOutcome, ...]:
    return asyncio.run(verify_message(dns_for(server, timeout), message))


# -- DKIM --------------------------------------------------------------------------------------------
def test_perl_signed_message_verifies(server: DnsServer, keys: tuple[RsaKey, Ed25519Key]) -> None:
    """Interop: Mail::DKIM signs (rsa-sha256), qldap verifies — with CRLF and with the queue's LF."""
    signed = keys[0].sign_perl(MESSAGE, "example.com", "sel")
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    for form in (signed, signed.replace(b"\r\n", b"\n")):
        (sig,) = verify(server, form)
        assert sig.result is DkimResult.PASS, sig
        assert (sig.domain, sig.selector, sig.algorithm, sig.identity) == ("example.com", "sel", "rsa-sha256",
                                                                           "@example.com")  # fmt: skip
        assert len(sig.b_prefix) == 8


def test_tampered_perl_signed_message_fails(server: DnsServer, keys: tuple[RsaKey, Ed25519Key]) -> None:
    """A changed body (body hash) or a changed signed header (signature) is dkim=fail."""
    signed = keys[0].sign_perl(MESSAGE, "example.com", "sel")
    body = signed.replace(b"signed by Perl.", b"signed by Perl!")
    header = signed.replace(b"Subject: interop", b"Subject: interop (changed)")
    assert verify(server, body)[0].result is DkimResult.FAIL
    assert "body hash" in verify(server, body)[0].reason
    assert verify(server, header)[0].result is DkimResult.FAIL


def test_key_errors(server: DnsServer, keys: tuple[RsaKey, Ed25519Key]) -> None:
    """No key record → permerror; a silent name server → temperror; a broken signature → permerror."""
    signed = keys[0].sign_perl(MESSAGE, "example.com", "sel")
    assert verify(server, signed.replace(b"s=sel;", b"s=nokey;"))[0].result is DkimResult.PERMERROR
    slow = signed.replace(b"s=sel;", b"s=slow;")
    assert verify(server, slow, SILENT_TIMEOUT)[0].result is DkimResult.TEMPERROR
    assert verify(server, signed.replace(b"a=rsa-sha256", b"a=rsa-md5"))[0].result is DkimResult.PERMERROR
    assert verify(server, MESSAGE) == ()


def test_every_signature_is_reported(server: DnsServer, keys: tuple[RsaKey, Ed25519Key]) -> None:
    """Two signatures (example.net by dkimpy over example.com by Perl), plus ed25519-sha256."""
    rsa, ed = keys
    twice = rsa.sign_dkimpy(rsa.sign_perl(MESSAGE, "example.com", "sel"), "example.net", "other")
    results = verify(server, twice)
    assert [(s.domain, s.result) for s in results] == [("example.net", DkimResult.PASS),
                                                       ("example.com", DkimResult.PASS)]  # fmt: skip
    (edsig,) = verify(server, ed.sign_dkimpy(MESSAGE, "example.com", "ed"))
    assert edsig.result is DkimResult.PASS and edsig.algorithm == "ed25519-sha256"


# -- DMARC -------------------------------------------------------------------------------------------
def spf(result: SpfResult, domain: str) -> SpfOutcome:
    return SpfOutcome(result, f"u@{domain}", domain)


def dk(result: DkimResult, domain: str) -> DkimOutcome:
    return DkimOutcome(result, domain=domain, selector="s")


def dmarc(server: DnsServer, from_domain: str, s: SpfOutcome | None, d: tuple[DkimOutcome, ...] = (),
          rng: random.Random | None = None, timeout: float = ANSWER_TIMEOUT):  # type: ignore[no-untyped-def]  # fmt: skip
    return asyncio.run(check_dmarc(dns_for(server, timeout), [f"Someone <x@{from_domain}>"], s, d, rng))


def test_pass_via_spf_alignment(server: DnsServer) -> None:
    """SPF pass for a subdomain of the From domain aligns in relaxed mode (same organizational domain)."""
    out = dmarc(server, "example.com", spf(SpfResult.PASS, "bounces.example.com"))
    assert out.result is DmarcResult.PASS and out.reason == "aligned SPF" and out.policy is Policy.REJECT


def test_pass_via_dkim_alignment(server: DnsServer, keys: tuple[RsaKey, Ed25519Key]) -> None:
    """SPF fails, but a real (Perl-made) example.com signature verifies and aligns."""
    signed = keys[0].sign_perl(MESSAGE, "example.com", "sel")
    sigs = verify(server, signed)
    out = dmarc(server, "example.com", spf(SpfResult.FAIL, "elsewhere.test"), sigs)
    assert out.result is DmarcResult.PASS and out.reason == "aligned DKIM"


def test_unaligned_passes_fail(server: DnsServer) -> None:
    """Passing SPF and DKIM for other organizations do not help: fail with p=reject."""
    out = dmarc(
        server, "example.com", spf(SpfResult.PASS, "elsewhere.test"), (dk(DkimResult.PASS, "example.net"),)
    )
    assert (out.result, out.policy, out.disposition) == (DmarcResult.FAIL, Policy.REJECT, Policy.REJECT)


POLICIES = [
    ("none.test", Policy.NONE),
    ("quarantine.test", Policy.QUARANTINE),
    ("example.com", Policy.REJECT),
]


@pytest.mark.parametrize(("domain", "policy"), POLICIES)
def test_fail_with_each_policy(server: DnsServer, domain: str, policy: Policy) -> None:
    out = dmarc(server, domain, spf(SpfResult.FAIL, domain))
    assert (out.result, out.policy, out.disposition) == (DmarcResult.FAIL, policy, policy)


def test_org_domain_fallback_and_sp(server: DnsServer) -> None:
    """No record at mail.org.test: the organizational domain's applies, with its sp= for subdomains."""
    out = dmarc(server, "mail.org.test", spf(SpfResult.FAIL, "mail.org.test"))
    assert out.org_record and out.policy is Policy.QUARANTINE and out.result is DmarcResult.FAIL
    direct = dmarc(server, "org.test", spf(SpfResult.FAIL, "org.test"))
    assert not direct.org_record and direct.policy is Policy.REJECT
    nosp = dmarc(server, "a.b.nosp.test", None)
    assert nosp.org_record and nosp.policy is Policy.REJECT  # no sp=: p= applies to subdomains
    assert org_domain("www.example.co.uk") == "example.co.uk"
    uk = dmarc(server, "mail.example.co.uk", None)  # the PSL knows co.uk: falls back to example.co.uk
    assert uk.org_record and uk.policy is Policy.QUARANTINE


def test_strict_against_relaxed(server: DnsServer) -> None:
    """adkim=s/aspf=s: a subdomain identifier no longer aligns; the exact domain does."""
    sub = dmarc(
        server,
        "strict.test",
        spf(SpfResult.PASS, "mail.strict.test"),
        (dk(DkimResult.PASS, "mail.strict.test"),),
    )
    assert sub.result is DmarcResult.FAIL
    exact = dmarc(
        server, "strict.test", spf(SpfResult.FAIL, "strict.test"), (dk(DkimResult.PASS, "strict.test"),)
    )
    assert exact.result is DmarcResult.PASS
    relaxed = dmarc(server, "example.com", None, (dk(DkimResult.PASS, "mail.example.com"),))
    assert relaxed.result is DmarcResult.PASS


def test_pct_downgrades_disposition(server: DnsServer) -> None:
    """pct=0: the failing message gets the next milder disposition (quarantine for reject)."""
    out = dmarc(server, "pct0.test", spf(SpfResult.FAIL, "pct0.test"), rng=random.Random(1))
    assert (out.result, out.policy, out.disposition) == (DmarcResult.FAIL, Policy.REJECT, Policy.QUARANTINE)


def test_none_temperror_permerror(server: DnsServer) -> None:
    """No record / two records / bad p= → none; silent DNS or an SPF temperror → temperror; bad From."""
    for domain in ("norecord.test", "two.test", "bad.test", "notfirst.test"):
        assert dmarc(server, domain, spf(SpfResult.FAIL, domain)).result is DmarcResult.NONE, domain
    badrua = dmarc(server, "badrua.test", spf(SpfResult.FAIL, "badrua.test"))
    assert badrua.result is DmarcResult.FAIL and badrua.policy is Policy.NONE  # bad p= with rua= is p=none
    slow = dmarc(server, "slow.test", spf(SpfResult.PASS, "slow.test"), timeout=SILENT_TIMEOUT)
    assert slow.result is DmarcResult.TEMPERROR
    assert (
        dmarc(server, "example.com", spf(SpfResult.TEMPERROR, "example.com")).result is DmarcResult.TEMPERROR
    )
    dkim_temp = dmarc(server, "example.com", None, (dk(DkimResult.TEMPERROR, "example.com"),))
    assert dkim_temp.result is DmarcResult.TEMPERROR
    two_from = asyncio.run(check_dmarc(dns_for(server), ["a@example.com", "b@example.com"], None, ()))
    assert two_from.result is DmarcResult.PERMERROR
    assert header_from_domain(["a@example.com, b@example.net"]) is None
    assert header_from_domain(["=?utf-8?q?J=C3=B6rg?= <J@Example.COM>"]) == "example.com"


def test_record_parsing() -> None:
    rec = parse_record("v=DMARC1; p=quarantine; sp=none; pct=50; adkim=s")
    assert rec is not None and (rec.p, rec.sp, rec.pct, rec.adkim_strict, rec.aspf_strict) == (
        Policy.QUARANTINE, Policy.NONE, 50, True, False)  # fmt: skip
    assert parse_record("v=DMARC2; p=reject") is None and parse_record("v=spf1 -all") is None


# -- Authentication-Results ----------------------------------------------------------------------------
def test_header_and_forged_field_removal() -> None:
    """RFC 8601: one result per line; fields with our authserv-id are removed, others kept (section 5)."""
    line = header_line(
        "mx.example.org",
        SpfOutcome(SpfResult.PASS, "u@example.com", "example.com"),
        (DkimOutcome(DkimResult.PASS, "example.com", "sel", "rsa-sha256", "@example.com", "abcdefgh"),),
        None,
    )
    assert line == (b"Authentication-Results: mx.example.org;\n\tspf=pass smtp.mailfrom=u@example.com;\n"
                    b"\tdkim=pass header.d=example.com header.i=@example.com header.s=sel header.a=rsa-sha256"
                    b" header.b=abcdefgh\n")  # fmt: skip
    header = (b"Received: x\nAuthentication-Results: MX.example.org; dmarc=pass\n"
              b"Authentication-Results: (comment) mx.example.org;\n\tspf=pass\n"
              b"Authentication-Results: \"mx.example.org\" 1; dkim=pass\n"
              b"Authentication-Results: other.example; spf=pass\nSubject: s\n")  # fmt: skip
    kept, removed = strip_forged(header, "mx.example.org")
    assert removed == 3
    assert kept == b"Received: x\nAuthentication-Results: other.example; spf=pass\nSubject: s\n"
    assert authserv_id_of(b"Subject: x\n") is None
    assert header_line("mx.example.org", None, (), None) == b"Authentication-Results: mx.example.org; none\n"

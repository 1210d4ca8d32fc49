"""DKIM signing: the signing domain, the signed fields, and signatures that independent verifiers accept.

The verifiers are Perl's Mail::DKIM and OpenDKIM (tests/peers), never dkimpy, which made them.
"""

from __future__ import annotations

import re

from qldap.control.files import ControlDir
from qldap.mailauth.dkimsign import (
    DkimSigner,
    fields_to_sign,
    from_domain,
    header_fields,
    sign_message,
    signing_domain,
)
from tests.conftest import QRoot
from tests.peers import configure_keys, mail_dkim, opendkim, without_signatures

MESSAGE = (
    b"Received: from client (127.0.0.1) by mx1.example.com\n"
    b"From: Joe Sender <joe@Example.COM>\n"
    b"To: Alice <alice@example.org>,\n  bob@example.org\n"
    b"Subject: quarterly   figures\n"
    b"Date: Sun, 06 Dec 2026 19:00:00 +0000\n"
    b"Message-ID: <20261206190000.1@example.com>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"Hello Alice,  \n\tthe figures are attached.\n\n\n"
)


def _signer(qroot: QRoot, keys: list[tuple[str, str, str]]) -> tuple[DkimSigner, dict[str, str]]:
    records = configure_keys(qroot.control_dir, keys)
    return DkimSigner(ControlDir(qroot.path)), records


def _tag(header: bytes, tag: str) -> str:
    flat = re.sub(rb"\s+", b"", header).decode()
    m = re.search(rf"(?:^|;){tag}=([^;]*)", flat.split(":", 1)[1])
    assert m is not None, header
    return m.group(1)


def test_signing_domain_is_the_from_domain_else_the_envelope_sender() -> None:
    assert signing_domain(MESSAGE, "bounce-x@lists.example.net") == "example.com"
    group = b"From: undisclosed-recipients:;\nTo: x@y\n\nbody\n"
    assert signing_domain(group, "a@Example.NET") == "example.net"
    assert signing_domain(b"Subject: no from\n\nbody\n", "a@example.net") == "example.net"
    assert signing_domain(b"Subject: no from\n\nbody\n", "") is None
    assert from_domain(header_fields(b"From: \"a@b\" <x@Real.Example.>\n\n")) == "real.example"
    assert from_domain(header_fields(b"From:\n first@one.example,\n second@two.example\n\n")) == "one.example"
    idn = "From: Jörg <joerg@Bücher.example>\n\n".encode()
    assert from_domain(header_fields(idn)) == "xn--bcher-kva.example"


def test_the_header_list_signs_present_fields_and_oversigns_from() -> None:
    h = fields_to_sign(header_fields(MESSAGE))
    assert h.count(b"from") == 2
    assert b"received" not in h and b"cc" not in h
    assert set(h) == {b"from", b"subject", b"date", b"message-id", b"to", b"mime-version", b"content-type"}
    assert fields_to_sign(header_fields(b"Subject: x\n\n")) == (b"from", b"subject")


def test_header_parsing_stops_at_the_body_and_unfolds() -> None:
    fields = header_fields(b"A: 1\nB: two\n  lines\n\nC: body\n")
    assert fields == [(b"a", b"1"), (b"b", b"two lines")]


def test_rsa_signature_verifies_in_mail_dkim_and_opendkim(qroot: QRoot) -> None:
    signer, records = _signer(qroot, [("example.com", "rsa2026", "rsa")])
    result = signer.sign(MESSAGE, "joe@example.com")
    assert result.signed and result.error is None and result.domain == "example.com"
    signed = result.header + MESSAGE
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert b"\r" not in result.header  # the queue's line ends
    assert _tag(result.header, "s") == "rsa2026"
    sigs, overall = mail_dkim(signed, records)
    assert overall == "pass", sigs
    assert [(s.result, s.domain, s.algorithm) for s in sigs] == [("pass", "example.com", "rsa-sha256")]
    assert opendkim(signed, records) == (0, "")


def test_ed25519_signature_verifies_in_opendkim(qroot: QRoot) -> None:
    signer, records = _signer(qroot, [("example.com", "ed2026", "ed25519")])
    result = signer.sign(MESSAGE, "")
    assert result.signed
    signed = result.header + MESSAGE
    assert _tag(result.header, "a") == "ed25519-sha256"
    assert opendkim(signed, records) == (0, "")
    # Mail::DKIM in Debian 12 predates RFC 8463 support: it must call the signature unsupported,
    # never "fail"; a later version must pass it
    sigs, _ = mail_dkim(signed, records)
    assert len(sigs) == 1
    assert sigs[0].result == "pass" or (sigs[0].result == "invalid" and "unsupported" in sigs[0].detail)


def test_dual_signature_each_verifies_on_its_own(qroot: QRoot) -> None:
    signer, records = _signer(qroot, [("example.com", "r1", "rsa"), ("example.com", "e1", "ed25519")])
    result = signer.sign(MESSAGE, "joe@example.com")
    assert result.header.count(b"DKIM-Signature:") == 2
    signed = result.header + MESSAGE
    sigs, overall = mail_dkim(signed, records)
    assert overall == "pass"
    assert {s.selector: s.result for s in sigs}["r1"] == "pass"
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        alone = without_signatures(signed, keep=algorithm)
        assert alone.count(b"DKIM-Signature:") == 1
        assert opendkim(alone, records) == (0, ""), algorithm


def test_a_changed_message_fails_in_both_verifiers(qroot: QRoot) -> None:
    """The verifiers can say no: a body or a signed header changed after signing."""
    signer, records = _signer(qroot, [("example.com", "r1", "rsa"), ("example.com", "e1", "ed25519")])
    signed = signer.sign(MESSAGE, "joe@example.com").header + MESSAGE
    altered_body = signed.replace(b"attached", b"attacked")
    _, overall = mail_dkim(altered_body, records)
    assert overall == "fail"
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        code, text = opendkim(without_signatures(altered_body, keep=algorithm), records)
        assert code != 0 and "signature" in text.lower(), text
    second_from = signed.replace(b"\n\nHello", b"\nFrom: mallory@evil.example\n\nHello")
    _, overall = mail_dkim(second_from, records)
    assert overall == "fail"  # From was over-signed


def test_relaxed_canonicalization_survives_whitespace_changes(qroot: QRoot) -> None:
    signer, records = _signer(qroot, [("example.com", "r1", "rsa")])
    signed = signer.sign(MESSAGE, "").header + MESSAGE
    respaced = signed.replace(b"quarterly   figures", b"quarterly figures")
    respaced = respaced.replace(b"Alice,  \n", b"Alice,\n")
    _, overall = mail_dkim(respaced.replace(b"\n", b"\r\n"), records)
    assert overall == "pass"


def test_subdomains_sign_with_the_parent_line(qroot: QRoot) -> None:
    signer, records = _signer(qroot, [(".example.com", "sub", "rsa")])
    msg = MESSAGE.replace(b"joe@Example.COM", b"joe@lists.example.com")
    result = signer.sign(msg, "")
    assert _tag(result.header, "d") == "example.com"
    _, overall = mail_dkim(result.header + msg, records)
    assert overall == "pass"


def test_other_domains_and_empty_tables_are_not_signed(qroot: QRoot) -> None:
    signer = DkimSigner(ControlDir(qroot.path))
    assert not signer.enabled
    unsigned = signer.sign(MESSAGE, "joe@example.com")
    assert not unsigned.signed and unsigned.error is None
    configure_keys(qroot.control_dir, [("example.org", "s", "ed25519")])
    assert signer.enabled
    other = signer.sign(MESSAGE, "joe@example.org")  # From: is example.com, which has no key
    assert not other.signed and other.error is None and other.domain == "example.com"


def test_a_broken_key_sends_unsigned_or_defers_under_dkimstrict(qroot: QRoot) -> None:
    signer, _ = _signer(qroot, [("example.com", "r1", "rsa")])
    (qroot.control_dir / "dkim" / "example.com.r1.key").write_bytes(b"garbage\n")
    result = signer.sign(MESSAGE, "")
    assert not result.signed and not result.defer
    assert result.error is not None and "bad DKIM key" in result.error
    qroot.control("dkimstrict", "1")
    assert signer.sign(MESSAGE, "").defer
    qroot.control("dkimkeys", "example.com:r1:rsa\n")  # a broken table is a failure as well
    broken = signer.sign(MESSAGE, "")
    assert broken.defer and broken.error is not None and "dkimkeys" in broken.error


def test_an_unparsable_header_is_a_signing_failure(qroot: QRoot) -> None:
    signer, _ = _signer(qroot, [("example.com", "r1", "rsa")])
    result = signer.sign(b"From: a@example.com\nnot a header line\n\nbody\n", "")
    assert not result.signed and result.error is not None and not result.defer


def test_sign_message_is_one_field_per_key(qroot: QRoot) -> None:
    signer, _ = _signer(qroot, [("example.com", "r1", "rsa"), ("example.com", "e1", "ed25519")])
    plan = signer.plan(MESSAGE, "")
    assert [k.selector for k in plan.keys] == ["r1", "e1"]
    header = sign_message(MESSAGE, plan.keys)
    assert header.endswith(b"\n") and header.count(b"\nDKIM-Signature:") == 1

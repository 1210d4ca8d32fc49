"""Inbound SPF/DKIM/DMARC end to end: smtplib → the real smtpd → the real queue, DNS from a loopback server.

What a site sees: Authentication-Results in the queued message (forged ones with our authserv-id
gone), ``550 5.7.1`` for a p=reject failure under ``dmarcreject`` and for an SPF fail under
``spfreject``, per-domain words overriding the rule's, a DNS timeout accepted and tagged
``temperror`` (451 only under ``tempfail``), relaying clients not checked.  Signatures come from
Perl's Mail::DKIM.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qldap.mailauth.resolve import Dns
from qldap.mailauth.spf import SpfResult
from qldap.queue.layout import create_queue
from qldap.smtpd.dns import DnsResolver, StaticResolver
from qldap.smtpd.mailcheck import InboundChecks
from tests.conftest import QRoot
from tests.dnsserver import ANSWER_TIMEOUT, SILENT_TIMEOUT, DnsServer, txt
from tests.e2e.smtpd import ServerThread, options, queued
from tests.mailauth_keys import RsaKey, rsa_key

Start = Callable[..., ServerThread]


def message(from_addr: str, extra: str = "") -> bytes:
    head = f"From: Sender <{from_addr}>\r\nTo: alice@example.org\r\nSubject: checks\r\n"
    head += "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m@x>\r\n"
    return f"{head}{extra}\r\nbody line\r\n".encode()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> RsaKey:
    return rsa_key(Path(tmp_path_factory.mktemp("dkim")))


@pytest.fixture(scope="module")
def zone(key: RsaKey) -> Iterator[DnsServer]:
    srv = DnsServer(
        {
            ("example.com", "TXT"): [txt("v=spf1 ip4:127.0.0.2 -all")],
            ("_dmarc.example.com", "TXT"): [txt("v=DMARC1; p=reject")],
            ("sel._domainkey.example.com", "TXT"): [key.record],
            ("forged.test", "TXT"): [txt("v=spf1 ip4:192.0.2.1 -all exp=why.forged.test")],
            ("why.forged.test", "TXT"): [txt("see https://forged.test/spf")],
            ("_dmarc.forged.test", "TXT"): [txt("v=DMARC1; p=reject")],
            ("helo.example.com", "TXT"): [txt("v=spf1 a -all")],
            ("helo.example.com", "A"): ["127.0.0.2"],
        },
        silent=["quiet.test", "_dmarc.quiet.test"],
    )
    yield srv
    srv.close()


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org")
    qroot.control("rcpthosts", "example.org\n.example.net")
    create_queue(qroot.path)
    return qroot


@pytest.fixture
def start(root: QRoot, zone: DnsServer) -> Iterator[Start]:
    running: list[ServerThread] = []

    def make(env: dict[str, str], timeout: float = ANSWER_TIMEOUT) -> ServerThread:
        dns = Dns(zone.resolver(), timeout=timeout)
        st = ServerThread(options(root.path, env), StaticResolver(), authdns=dns).start()
        running.append(st)
        return st

    yield make
    for st in running:
        st.stop()


def send(st: ServerThread, sender: str, data: bytes, source: str = "127.0.0.2", helo: str = "client.test",
         rcpt: str = "alice@example.org") -> None:  # fmt: skip
    with smtplib.SMTP(
        st.addr[0], st.addr[1], local_hostname=helo, source_address=(source, 0), timeout=30
    ) as s:
        s.sendmail(sender, [rcpt], data)


def only_message(root: QRoot) -> bytes:
    (msg,) = queued(root.path)
    return msg.message


def ar_fields(text: bytes) -> list[bytes]:
    header = text.split(b"\n\n", 1)[0]
    lines = header.replace(b"\n\t", b" ").split(b"\n")
    return [line for line in lines if line.lower().startswith(b"authentication-results:")]


def test_signed_message_tagged_and_forgeries_removed(root: QRoot, start: Start, key: RsaKey) -> None:
    """SPF pass + Mail::DKIM signature pass → dmarc=pass; our-id A-R fields in the message are removed."""
    forged = ("Authentication-Results: mx.example.org; dmarc=pass header.from=example.com\r\n"
              "Authentication-Results: other.example; spf=fail\r\n")  # fmt: skip
    signed = key.sign_perl(message("alice@example.com", forged), "example.com", "sel")
    st = start({"MAILAUTH": "", "LOGLEVEL": "2"})
    send(st, "bounce@example.com", signed)
    text = only_message(root)
    ours, other = ar_fields(text)
    assert ours == (b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=bounce@example.com; "
                    b"dkim=pass header.d=example.com header.i=@example.com header.s=sel header.a=rsa-sha256 "
                    b"header.b=" + ours.split(b"header.b=")[1].split(b";")[0] + b"; "
                    b"dmarc=pass (p=reject pct=100 dis=none) header.from=example.com")  # fmt: skip
    assert other == b"Authentication-Results: other.example; spf=fail"
    assert text.index(b"Authentication-Results: mx.example.org") < text.index(b"Received: from")
    assert any("mailauth: spf=pass dkim=pass dmarc=pass from example.com" in line for line in st.log)


def test_tampered_signature_fails_and_is_only_tagged(root: QRoot, start: Start, key: RsaKey) -> None:
    """Tag-only policy: a tampered Mail::DKIM message with no aligned SPF is dmarc=fail but accepted."""
    signed = key.sign_perl(message("alice@example.com"), "example.com", "sel").replace(
        b"body line", b"body lime"
    )
    send(start({"MAILAUTH": "tag"}), "someone@elsewhere.test", signed)
    (ar,) = ar_fields(only_message(root))
    assert b"spf=none smtp.mailfrom=someone@elsewhere.test;" in ar
    assert b"dkim=fail (body hash mismatch" in ar
    assert b"dmarc=fail (p=reject pct=100 dis=reject) header.from=example.com" in ar


def test_dmarc_reject_is_550_after_data(root: QRoot, start: Start) -> None:
    """dmarcreject: p=reject and nothing aligned passed → 550 5.7.1 at the final dot, nothing queued."""
    st = start({"MAILAUTH": "dmarcreject"})
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(st, "x@forged.test", message("x@forged.test"), source="127.0.0.3")
    assert err.value.smtp_code == 550
    assert err.value.smtp_error == b"5.7.1 DMARC: message rejected by the policy of forged.test (#5.7.1)"
    assert queued(root.path) == []


def test_per_domain_words_override_the_rule(root: QRoot, start: Start) -> None:
    """control/mailauthdomains: example.org says ``tag``, so the same failure is accepted and tagged."""
    root.control("mailauthdomains", "example.org:tag\n.example.net:dmarcreject")
    st = start({"MAILAUTH": "dmarcreject"})
    send(st, "x@forged.test", message("x@forged.test"), source="127.0.0.3")
    assert b"dmarc=fail (p=reject pct=100 dis=reject)" in ar_fields(only_message(root))[0]
    with pytest.raises(smtplib.SMTPDataError):
        send(st, "x@forged.test", message("x@forged.test"), source="127.0.0.3", rcpt="u@sub.example.net")


def test_spf_reject_at_mail(root: QRoot, start: Start) -> None:
    """spfreject: an SPF fail is refused at MAIL with 550 5.7.1 and the domain's explanation."""
    st = start({"MAILAUTH": "spfreject"})
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(st, "x@forged.test", message("x@forged.test"), source="127.0.0.3")
    assert err.value.smtp_code == 550
    assert err.value.smtp_error == (b"5.7.1 SPF: 127.0.0.3 is not allowed to send mail from forged.test "
                                    b"(see https://forged.test/spf) (#5.7.1)")  # fmt: skip
    assert queued(root.path) == []


def test_dns_timeout_is_accepted_with_temperror(root: QRoot, start: Start, zone: DnsServer) -> None:
    """A silent name server: never a 5xx, even with every rejection on; temperror in the header."""
    st = start({"MAILAUTH": "dmarcreject spfreject"}, SILENT_TIMEOUT)
    send(st, "x@quiet.test", message("x@quiet.test"))
    (ar,) = ar_fields(only_message(root))
    assert b"spf=temperror smtp.mailfrom=x@quiet.test" in ar and b"dmarc=temperror" in ar
    assert ("quiet.test.", "TXT") in zone.asked


def test_tempfail_answers_451(root: QRoot, start: Start) -> None:
    """tempfail: the SPF temperror becomes 451 4.7.1 at MAIL instead."""
    st = start({"MAILAUTH": "tempfail"}, SILENT_TIMEOUT)
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(st, "x@quiet.test", message("x@quiet.test"))
    assert err.value.smtp_code == 451 and err.value.smtp_error.startswith(b"4.7.1 SPF")


def test_tempfail_answers_451_after_data_for_dmarc(root: QRoot, start: Start) -> None:
    """tempfail: SPF passes, but the From domain's DMARC record cannot be fetched → 451 4.7.1 after DATA."""
    st = start({"MAILAUTH": "tempfail dmarcreject"})  # SPF must pass: the DMARC lookup waits 10 s
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(st, "bounce@example.com", message("x@quiet.test"))
    assert err.value.smtp_code == 451 and err.value.smtp_error.startswith(b"4.7.1 DMARC")
    assert queued(root.path) == []


def test_null_sender_checks_helo(root: QRoot, start: Start) -> None:
    """MAIL FROM:<>: the HELO identity is checked and reported as smtp.helo."""
    send(start({"MAILAUTH": ""}), "", message("mailer-daemon@helo.example.com"), helo="helo.example.com")
    (ar,) = ar_fields(only_message(root))
    assert b"spf=pass smtp.helo=helo.example.com;" in ar


def test_helo_checked_first_and_reported_beside_mail_from(root: QRoot, start: Start) -> None:
    """A HELO name with an SPF record is checked too (RFC 7208 section 2.3) and reported as smtp.helo."""
    send(start({"MAILAUTH": ""}), "bounce@example.com", message("alice@example.com"), helo="helo.example.com")
    (ar,) = ar_fields(only_message(root))
    assert b"spf=pass smtp.mailfrom=bounce@example.com; spf=pass smtp.helo=helo.example.com;" in ar


def test_relay_clients_are_not_checked(root: QRoot, start: Start, zone: DnsServer) -> None:
    """RELAYCLIENT: no SPF lookup, no header (forged ones still go); control/mailauth turns checks on."""
    root.control("mailauth", "spfreject")
    root.control("authservid", "auth.example.org")
    st = start({"RELAYCLIENT": ""})
    before = len(zone.asked)
    forged = (
        "Authentication-Results: auth.example.org; dmarc=pass\r\nAuthentication-Results: x.test; none\r\n"
    )
    send(st, "x@forged.test", message("x@forged.test", forged), source="127.0.0.3")
    assert ar_fields(only_message(root)) == [b"Authentication-Results: x.test; none"]
    assert len(zone.asked) == before
    st2 = start({})
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(st2, "x@forged.test", message("x@forged.test"), source="127.0.0.3")
    st3 = start({"NOMAILAUTH": ""})
    send(st3, "y@forged.test", message("y@forged.test"), source="127.0.0.3")


def test_large_message_verified_in_a_worker(root: QRoot, start: Start, key: RsaKey) -> None:
    """A 400 KiB message is verified in the spawned worker process: still dkim=pass, and a tampered
    copy fails there too."""
    big = message("alice@example.com").replace(b"body line\r\n", b"0123456789abcdef" * 64 * 400 + b"\r\n")
    signed = key.sign_perl(big, "example.com", "sel")
    st = start({"MAILAUTH": ""})
    send(st, "someone@elsewhere.test", signed)
    send(st, "someone@elsewhere.test", signed.replace(b"0123456789", b"9876543210", 1))
    first, second = sorted(queued(root.path), key=lambda m: b"9876543210" in m.message)  # intact first
    assert b"dkim=pass header.d=example.com" in ar_fields(first.message)[0]
    assert b"dkim=fail (body hash mismatch" in ar_fields(second.message)[0]
    assert st.server is not None and st.server.checks._pool is not None  # the worker did the work


def test_checks_share_the_daemons_resolver(zone: DnsServer) -> None:
    """Without an explicit Dns, the checks ask through the dnspython resolver of the daemon's
    DnsResolver (the one configured from /etc/resolv.conf in production)."""
    checks = InboundChecks.sharing(DnsResolver(resolver=zone.resolver()), None)
    out = asyncio.run(checks.check_spf("127.0.0.2", "client.test", "a@example.com"))
    assert out.result is SpfResult.PASS and ("example.com.", "TXT") in zone.asked
    assert isinstance(InboundChecks.sharing(StaticResolver(), None).dns, Dns)  # its own default resolver

"""The RFC 5321 path parser (qmail-smtpd(8), ADDRESSES) and the RFC 821 quoting used by the SMTP client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qldap.address import (
    Address,
    AddressSyntaxError,
    canonical_ipv4,
    is_bounce,
    parse_path,
    quote_address,
    quote_local,
    split_address,
)

OWN = frozenset({"192.0.2.1"})


def rcpt(arg: str) -> str:
    return parse_path(arg, own_ips=OWN, localiphost="mx.example.org", allow_empty=False).address


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("TO:<alice@example.org>", "alice@example.org"),
        ("to:<Alice@Example.ORG>", "Alice@Example.ORG"),  # case kept, FROM/TO not checked
        ("xyz:<a@b>", "a@b"),
        ("TO: <a@b>", "a@b"),
        ("TO:a@b", "a@b"),
        ("TO:   a@b SIZE=1", "a@b"),
        ("TO:<a@b", "a@b"),  # no '>' up to the line end
        ("TO:<@example.org:victim@elsewhere.test>", "victim@elsewhere.test"),
        ("TO:<@a.test,@b.test:alice@example.org>", "alice@example.org"),
        ('TO:<"a@b"@c>', "a@b@c"),
        ('TO:<"victim@elsewhere.test"@example.org>', "victim@elsewhere.test@example.org"),
        ('TO:<"a>b"@c>', "a>b@c"),
        ("TO:<a\\>b@c>", "a>b@c"),
        ('TO:<a\\"b@c>', 'a"b@c'),
        ("TO:<postmaster@[192.0.2.1]>", "postmaster@mx.example.org"),
        ("TO:<postmaster@[192.0.2.001]>", "postmaster@mx.example.org"),
        ("TO:<u@[198.51.100.7]>", "u@[198.51.100.7]"),
        ("TO:<u@[192.0.2.1]x>", "u@[192.0.2.1]x"),
        ("TO:<postmaster>", "postmaster"),
        ("TO:<victim%elsewhere.test@example.org>", "victim%elsewhere.test@example.org"),
    ],
)
def test_paths(arg: str, address: str) -> None:
    assert rcpt(arg) == address


@pytest.mark.parametrize(
    "arg",
    [
        "TO<>",  # the '<' form: empty path
        "TO:<>",
        "alice",  # neither '<' nor ':'
        "TO:<@example.org>",  # a route without ':'
        "TO:<@a,@b>",
        "TO:<" + "a" * 890 + "@example.org>",  # 902 characters
    ],
)
def test_syntax_errors(arg: str) -> None:
    with pytest.raises(AddressSyntaxError):
        rcpt(arg)


def test_length_limit_is_899() -> None:
    addr = "a" * (899 - len("@b.test")) + "@b.test"
    assert rcpt(f"TO:<{addr}>") == addr
    with pytest.raises(AddressSyntaxError):
        rcpt(f"TO:<a{addr}>")


def test_own_ip_needs_localiphost_and_own_address() -> None:
    assert parse_path("TO:<p@[192.0.2.1]>").address == "p@[192.0.2.1]"
    assert parse_path("TO:<p@[192.0.2.2]>", own_ips=OWN, localiphost="h").address == "p@[192.0.2.2]"
    assert parse_path("TO:<p@[192.0.2.1]>", own_ips=OWN, localiphost="h").address == "p@h"


def test_mail_bounce_and_params() -> None:
    p = parse_path("FROM:<> SIZE=2000 BODY=8BITMIME")
    assert p.address == "" and p.is_bounce
    assert p.size == 2000
    assert p.params == ("SIZE=2000", "BODY=8BITMIME")
    assert parse_path("FROM:<#@[]>").is_bounce
    assert parse_path("FROM:<a@b> size=12abc").size == 12
    assert parse_path("FROM:<a@b> SIZE=junk").size == 0
    assert parse_path("FROM:<a@b>").size is None
    assert parse_path("FROM:a@b SIZE=7").size == 7


def test_split_and_address() -> None:
    assert split_address("a@b@c") == ("a@b", "c")
    assert split_address("postmaster") == ("postmaster", "")
    a = Address.parse("x%y@z")
    assert (a.local, a.domain, a.has_at, str(a)) == ("x%y", "z", True, "x%y@z")
    assert str(Address.parse("joe")) == "joe"
    assert is_bounce("") and is_bounce("#@[]") and not is_bounce("a@b")


def test_canonical_ipv4() -> None:
    assert canonical_ipv4("010.0.0.1") == "10.0.0.1"
    assert canonical_ipv4("256.0.0.1") is None
    assert canonical_ipv4("1.2.3") is None
    assert canonical_ipv4("1.2.3.x") is None


@pytest.mark.parametrize(
    ("local", "quoted"),
    [
        ("alice", "alice"),
        ("a.b", "a.b"),
        ("a-b+c=d", "a-b+c=d"),
        ("", '""'),
        (".a", '".a"'),
        ("a.", '"a."'),
        ("a..b", '"a..b"'),
        ("a b", '"a b"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a@b", '"a@b"'),
    ],
)
def test_quote_local(local: str, quoted: str) -> None:
    assert quote_local(local) == quoted


def test_quote_address() -> None:
    assert quote_address("a b@example.org") == '"a b"@example.org'
    assert quote_address("victim@elsewhere.test@example.org") == '"victim@elsewhere.test"@example.org'
    assert quote_address("") == ""
    assert quote_address("postmaster") == "postmaster"


_DOMAIN = st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,2}\.?", fullmatch=True)
_LOCAL = st.text(alphabet='ab@%!":<>\\ .,[]', max_size=20)


@given(st.text(alphabet='ab@%!":<>\\ .,[]', max_size=40))
def test_parser_takes_any_text(text: str) -> None:
    """Arbitrary client text either fails with the syntax error or yields a bounded address."""
    try:
        parsed = parse_path("TO:" + text, allow_empty=False)
    except AddressSyntaxError:
        return
    assert 0 < len(parsed.address) <= 899


@given(_LOCAL, _DOMAIN, st.sampled_from(["", "@r.test:", "@r.test,@s.test:"]))
def test_no_second_route_hides_behind_the_checked_domain(local: str, domain: str, route: str) -> None:
    """However the local part is written (quoted, with '@', '%', '!' or a source route in front), the
    domain the relay check sees is the real last domain, and the SMTP client's quoting hands the next
    hop the very same address, so it cannot route on an '@' the check never saw."""
    quoted = quote_address(f"{local}@{domain}")
    parsed = parse_path(f"TO:<{route}{quoted}>", allow_empty=False).address
    assert parsed == f"{local}@{domain}"
    assert split_address(parsed)[1] == domain
    # the next hop parses what our SMTP client sends and sees the same address and domain
    assert parse_path(f"TO:<{quote_address(parsed)}>", allow_empty=False).address == parsed

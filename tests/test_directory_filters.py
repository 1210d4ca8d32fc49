"""Filters and candidate order: qmail-local(8), LOOKUP, and the login filter of auth_pop(8)."""

from __future__ import annotations

import pytest

from qldap.directory import rfc4515
from qldap.directory.errors import AddressWithoutHost, InvalidFilter
from qldap.directory.filters import (
    candidates,
    escape,
    mail_filter,
    real_domain,
    split_address,
    uid_filter,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("alice", "alice"),
        ("a*", "a\\2a"),
        ("(x)", "\\28x\\29"),
        ("a\\b", "a\\5cb"),
        ("a\0b", "a\\00b"),
        ("x)(uid=*", "x\\29\\28uid=\\2a"),
        ("üser", "üser"),  # other characters unchanged
        ("a\udcffb", "a\\ffb"),  # an undecodable byte is sent as that byte
        ("", ""),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_check1_mail_filter_with_and_without_objectclass() -> None:
    assert mail_filter("alice@example.com", "qmailUser") == (
        "(&(objectClass=qmailUser)(|(mail=alice@example.com)(mailAlternateAddress=alice@example.com)))"
    )
    assert mail_filter("alice@example.com") == (
        "(|(mail=alice@example.com)(mailAlternateAddress=alice@example.com))"
    )


def test_compound_objectclass_is_inserted_verbatim() -> None:
    f = mail_filter("a@b", "qmailUser)(objectClass=inetOrgPerson")
    assert f == (
        "(&(objectClass=qmailUser)(objectClass=inetOrgPerson)(|(mail=a@b)(mailAlternateAddress=a@b)))"
    )
    assert isinstance(rfc4515.parse(f), rfc4515.And)


def test_check2_to_4_injection_is_escaped_and_filter_keeps_its_shape() -> None:
    assert "a\\2a@example.com" in mail_filter("a*@example.com")
    f = mail_filter("x)(uid=*@example.com", "qmailUser")
    assert "x\\29\\28uid=\\2a@example.com" in f
    tree = rfc4515.parse(f)
    assert isinstance(tree, rfc4515.And) and len(tree.items) == 2
    inner = tree.items[1]
    assert isinstance(inner, rfc4515.Or) and len(inner.items) == 2
    assert all(isinstance(i, rfc4515.Compare) for i in inner.items)
    assert "a\\5cb@example.com" in mail_filter("a\\b@example.com")
    assert "a\\00b@example.com" in mail_filter("a\0b@example.com")


def test_check19_uid_filter() -> None:
    assert uid_filter("joe", "qmailUser") == "(&(objectClass=qmailUser)(uid=joe))"
    assert uid_filter("joe") == "(uid=joe)"
    assert uid_filter("a*b") == "(uid=a\\2ab)"
    assert uid_filter("a)(b\\\0") == "(uid=a\\29\\28b\\5c\\00)"


def test_split_at_last_at() -> None:
    assert split_address("a@b@example.com") == ("a@b", "example.com")
    assert split_address("@example.com") == ("", "example.com")
    with pytest.raises(AddressWithoutHost) as info:
        split_address("joe")
    assert info.value.text == "Sorry, address must include host name. (#5.1.3)"
    assert info.value.temporary is False


def addrs(local: str, domain: str, dash_ext: bool = True) -> list[str]:
    return [c.address for c in candidates(local, domain, dash_ext=dash_ext)]


def test_check7_dash_extension_order() -> None:
    assert addrs("aaaa-bbbb-cccc", "d.example") == [
        "aaaa-bbbb-cccc@d.example",
        "aaaa-bbbb-catchall@d.example",
        "aaaa-catchall@d.example",
        "catchall@d.example",
    ]


def test_check8_at_most_four_levels() -> None:
    got = addrs("a-b-c-d-e-f", "x.example")
    assert got == [
        "a-b-c-d-e-f@x.example",
        "a-b-c-d-catchall@x.example",
        "a-b-c-catchall@x.example",
        "a-b-catchall@x.example",
        "a-catchall@x.example",
        "catchall@x.example",
    ]
    assert "a-b-c-d-e-catchall@x.example" not in got


def test_empty_prefix_skipped_and_plain_address() -> None:
    assert addrs("-a", "x") == ["-a@x", "catchall@x"]
    assert addrs("alice", "x") == ["alice@x", "catchall@x"]


def test_check11_without_dash_extensions() -> None:
    assert addrs("a-b", "x.example", dash_ext=False) == ["a-b@x.example", "catchall@x.example"]


def test_dash_and_extension_of_each_candidate() -> None:
    got = [(c.address, c.dash, c.ext) for c in candidates("a-b-c-d", "x")]
    assert got == [
        ("a-b-c-d@x", "", ""),
        ("a-b-c-catchall@x", "-", "d"),
        ("a-b-catchall@x", "-", "c-d"),
        ("a-catchall@x", "-", "b-c-d"),
        ("catchall@x", "-", "a-b-c-d"),
    ]


def test_candidate_filters_escape_the_recipient_but_not_the_catchall_literal() -> None:
    cands = candidates("a*-b", "x(y")
    assert [c.filter() for c in cands] == [
        "(|(mail=a\\2a-b@x\\28y)(mailAlternateAddress=a\\2a-b@x\\28y))",
        "(|(mail=a\\2a-catchall@x\\28y)(mailAlternateAddress=a\\2a-catchall@x\\28y))",
        "(|(mail=catchall@x\\28y)(mailAlternateAddress=catchall@x\\28y))",
    ]


def test_check13_aliasdomains_mapping() -> None:
    table = {"mail.example.org": "example.org"}
    assert real_domain("mail.example.org", table) == "example.org"
    assert real_domain("MAIL.example.ORG", table) == "example.org"
    assert real_domain("other.org", table) == "other.org"


@pytest.mark.parametrize(
    "address",
    ["alice@example.com", "a-b-c-d-e-f@example.com", "x)(uid=*@example.com", "a\\b\0c@ex*ample.com",
     "üser-ext@exämple.org", "a\udcffb-c@example.com", "-lead@example.com", "=eq@example.com",
     "user@"],
)
@pytest.mark.parametrize(
    "objectclass",
    ["", "qmailUser", "qmailUser)(objectClass=inetOrgPerson", "qmailUser)(|(a=b)(c=d)", "q\\2amailUser"],
)
def test_candidate_filters_carry_the_tree_their_text_parses_to(address: str, objectclass: str) -> None:
    # the backends encode or evaluate the carried tree instead of parsing the text: the two must agree
    # for every recipient byte and every objectClass the text form accepts
    local, domain = split_address(address)
    for cand in candidates(local, domain):
        f = cand.filter(objectclass)
        assert isinstance(f, rfc4515.ParsedFilter)
        assert str(f) == f
        assert f.node == rfc4515.parse(str(f))
        assert rfc4515.tree_of(f) is f.node


@pytest.mark.parametrize("objectclass", ["qmailUser)(", "qmail(User", "a))(|(b=c)", "x\\zz", "a)(b:=c"])
def test_candidate_filter_with_an_unparsable_objectclass_stays_text(objectclass: str) -> None:
    # left to the backend as plain text, which refuses it as before (InvalidFilter → deferral)
    (cand, *_) = candidates("alice", "example.com")
    f = cand.filter(objectclass)
    assert not isinstance(f, rfc4515.ParsedFilter)
    with pytest.raises(InvalidFilter):
        rfc4515.tree_of(f)

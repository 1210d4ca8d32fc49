"""The embedded directory without a server: LDIF parsing, RFC 4515 filters, the LdifSearcher."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from qldap.directory import match, rfc4515
from qldap.directory.base import Scope
from qldap.directory.entry import Entry
from qldap.directory.errors import InvalidFilter, LookupFailed, NoSuchObject
from qldap.directory.ldif import LdifError, LdifSearcher, parse_ldif

LDIF = """version: 1
# a comment
#  continued comment

dn: dc=example,dc=com
objectClass: top
objectClass: dcObject
dc: example

dn: uid=alice,ou=people,
 dc=example,dc=com
objectClass: qmailUser
uid: alice
mail: Alice@Example.com
mailReplyText:: {reply}
description: a long
  value folded
qmailUID: 02000
mailMessageStore: /var/mail/Alice/
userPassword: secret

dn: uid=bob, ou=people, dc=example, dc=com
changetype: add
objectClass: QMAILUSER
uid: bob
mail: bob@example.com
mailAlternateAddress: b.ob@example.com
dnmember: UID=Alice , ou=people,dc=example,dc=com
""".format(reply=base64.b64encode("Bin im Urlaub.\nGrüße".encode()).decode())


def test_parse_ldif() -> None:
    entries = parse_ldif(LDIF)
    assert [e.dn for e in entries] == [
        "dc=example,dc=com",
        "uid=alice,ou=people,dc=example,dc=com",
        "uid=bob, ou=people, dc=example, dc=com",
    ]
    alice = entries[1]
    assert alice.single("mailReplyText") == "Bin im Urlaub.\nGrüße"
    assert alice.single("description") == "a long value folded"
    assert entries[0].values("objectclass") == ("top", "dcObject")


@pytest.mark.parametrize(
    "text",
    [
        "uid: x\n",
        "dn: a\nnovalue\n",
        "dn: a\nx:: !!!\n",
        "dn: a\nchangetype: delete\n",
        " lead\n",
        "dn: a\nx:< file:///e\n",
    ],
)
def test_parse_ldif_errors(text: str) -> None:
    with pytest.raises(LdifError):
        parse_ldif(text)


def entry(**attrs: list[str]) -> Entry:
    return Entry.build("uid=x,o=t", attrs.items())


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("(mail=alice@example.com)", True),
        ("(MAIL=ALICE@EXAMPLE.COM)", True),
        ("(mail=alice@example.com )", True),  # insignificant spaces
        ("(mail=alice*)", True),
        ("(mail=*@example.com)", True),
        ("(mail=a*e*m)", True),
        ("(mail=a*z*m)", False),
        ("(mail=*)", True),
        ("(mailHost=*)", False),
        ("(objectClass=QMAILUSER)", True),
        ("(&(objectClass=qmailUser)(|(mail=x)(mailAlternateAddress=al@example.com)))", True),
        ("(!(mail=alice@example.com))", False),
        ("(qmailUID=2000)", True),
        ("(qmailUID=02000)", False),  # not INTEGER syntax: Undefined, as in slapd
        ("(qmailUID>=1000)", False),  # qmailUID has no ordering rule (as slapd)
        ("(uidNumber>=1000)", True),
        ("(uidNumber<=999)", False),
        ("(uidNumber<=1000)", True),
        ("(mailMessageStore=/var/mail/alice/)", False),  # caseExact
        ("(mailMessageStore=/var/mail/Alice/)", True),
        ("(mail=alice\\40example.com)", True),
        ("(mail=a\\2a@example.com)", False),
        ("(mail=alice@example.com\\00)", False),
        ("(dnmember=uid=bob,o=t)", True),
        ("(uid;x-opt=x)", True),
        ("mail=alice@example.com", None),
        ("(mail=x)(mail=y)", None),
        ("(mail:caseExactMatch:=x)", None),
        ("(mail=\\zz)", None),
        ("(&(mail=x)", None),
    ],
)
def test_filter_evaluation(flt: str, expected: bool | None) -> None:
    e = entry(
        objectClass=["top", "qmailUser"], uid=["x"], mail=["Alice@Example.com"],
        mailAlternateAddress=["al@example.com"], qmailUID=["2000"], uidNumber=["1000"],
        mailMessageStore=["/var/mail/Alice/"], dnmember=["UID=Bob , O=T"],
    )  # fmt: skip
    if expected is None:
        with pytest.raises(InvalidFilter):
            rfc4515.parse(flt)
    else:
        assert match.matches(rfc4515.parse(flt), e) is expected


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_searcher_scopes_projection_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "directory.ldif"
    write(path, LDIF)
    s = LdifSearcher(path, "dc=example,dc=com")
    got = s.search("(mail=*)", ["mail"])
    assert [e.dn for e in got] == [
        "uid=alice,ou=people,dc=example,dc=com",
        "uid=bob, ou=people, dc=example, dc=com",
    ]
    assert got[0].names() == ("mail",)
    with pytest.raises(NoSuchObject):
        s.search("(objectClass=*)", ["uid"], base="ou=people,dc=example,dc=com")  # no such entry in file
    one = s.search("(objectClass=*)", ["uid"], base="UID=bob,ou=people,dc=example,dc=com", scope=Scope.BASE)
    assert [e.single("uid") for e in one] == ["bob"]
    assert s.search("(uid=carol)", ["uid"]) == []
    write(path, LDIF + "\ndn: uid=carol,dc=example,dc=com\nobjectClass: qmailUser\nuid: carol\nmail: c@x\n")
    assert [e.single("uid") for e in s.search("(uid=carol)", ["uid"])] == ["carol"]
    write(path, "garbage line\n")
    with pytest.raises(LookupFailed):
        s.search("(uid=carol)", ["uid"])
    path.unlink()
    with pytest.raises(LookupFailed):
        s.search("(uid=carol)", ["uid"])


def test_searcher_missing_base_and_bind(tmp_path: Path) -> None:
    path = tmp_path / "directory.ldif"
    write(path, LDIF)
    with pytest.raises(NoSuchObject):
        LdifSearcher(path, "dc=missing").search("(uid=alice)", ["uid"])
    s = LdifSearcher(path, "")
    assert len(s.search("(uid=*)", ["uid"])) == 2
    assert s.check_bind("uid=alice,ou=people,dc=example,dc=com", "secret")
    assert not s.check_bind("uid=alice,ou=people,dc=example,dc=com", "wrong")
    assert not s.check_bind("uid=alice,ou=people,dc=example,dc=com", "")
    assert not s.check_bind("uid=nobody,dc=example,dc=com", "secret")

"""The embedded LDIF directory answers exactly like slapd for the same LDIF.

The same tree is loaded into the real slapd and written to ``ROOT/directory.ldif``; both Directories
come from ``open_directory`` (ldapserver present → LDAP, absent → embedded) and run the same lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.directory.base import Ambiguous, Found, LookupResult, NotFound, Unavailable
from qldap.directory.ldif import LdifSearcher
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase
from tests.test_directory_ldap import TREE

RECIPIENTS = [
    "alice@example.com", "AL@EXAMPLE.COM", " alice@example.com", "nobody@example.com",
    "aaaa-bbbb-cccc@d.example", "aaaa-bbbb-cccc@e.example", "a-b-c-d-e-f@x.example", "dup@example.com",
    "a*@inj.example", "*@inj.example", "x)(mail=*@inj.example", "abc\0@inj.example", "a\\bc@inj2.example",
    "plain@oc.example", "acct@oc.example", "both@oc.example", "list@example.com", "list-foo@example.com",
    "@example.com", "alice@example.org",
]  # fmt: skip
LOGINS = ["alice", "ALICE", "twin", "nobody", "a*", "alice)(uid=*"]
FILTERS = [
    "(mail=*@example.com)", "(&(objectClass=qmailGroup)(membersonly=TRUE))", "(|(uid=alice)(uid=dup*))",
    "(!(mailAlternateAddress=*))", "(qmailUID>=1000)", "(mail=ALICE@example.com)", "(qmailUID=02000)",
    "(mailMessageStore=/VAR/mail/alice/)", "(mailMessageStore=/var/mail/alice/)", "(uid=*i*e)",
    "(objectClass=QMAILGROUP)", "(dnmember=UID=alice, {base})", "(mail=a\\5cbc@inj2.example)",
]  # fmt: skip


def outcome(r: LookupResult) -> tuple[object, ...]:
    if isinstance(r, Found):
        c = r.candidate
        return ("found", r.entry.dn.lower(), c.address, c.dash, c.ext, sorted(r.entry.attributes.items()))
    if isinstance(r, Unavailable):
        return ("unavailable", type(r.error).__name__, r.error.text)
    if isinstance(r, Ambiguous | NotFound):
        return (type(r).__name__, r)
    return (type(r).__name__,)


def run_all(d: Directory, base: str) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    out += [outcome(d.find_recipient(a)) for a in RECIPIENTS]
    out += [outcome(d.find_login(login)) for login in LOGINS]
    for flt in FILTERS:
        entries = d.search_filter(flt.replace("{base}", base))
        # LDAP guarantees no order among several entries (slapd answers in index order)
        out.append(("filter", flt, sorted((e.dn.lower(), sorted(e.attributes.items())) for e in entries)))
    out.append(outcome(d.find_group(f"cn=list,{base}")))
    out.append(outcome(d.find_entry(f"uid=ghost,{base}")))
    found = d.find_login("alice")
    assert isinstance(found, Found)
    out.append(("pw", d.verify_password(found.entry, "secret"), d.verify_password(found.entry, "nope")))
    return out


@pytest.fixture
def both(qroot: QRoot, ldap_base: LdapBase, tmp_path: Path) -> Iterator[tuple[Directory, Directory, str]]:
    ldap_base.load(TREE)
    name = ldap_base.dn.split(",", 1)[0].split("=", 1)[1]
    qroot.control("ldapbasedn", ldap_base.dn)
    qroot.control("ldapobjectclass", "qmailUser")
    top = f"dn: {ldap_base.dn}\nobjectClass: organizationalUnit\nou: {name}\n\n"
    (qroot.path / "directory.ldif").write_text(top + TREE.replace("{base}", ldap_base.dn))
    embedded = open_directory(ControlDir(qroot.path))
    assert isinstance(embedded.searcher, LdifSearcher)
    qroot.control("ldapserver", f"{ldap_base.slapd.host}:{ldap_base.slapd.port}")
    ldap = open_directory(ControlDir(qroot.path))
    assert not isinstance(ldap.searcher, LdifSearcher)
    yield ldap, embedded, ldap_base.dn
    ldap.close()


def test_embedded_directory_answers_like_slapd(both: tuple[Directory, Directory, str]) -> None:
    ldap, embedded, base = both
    expected = run_all(ldap, base)
    got = run_all(embedded, base)
    for want, have in zip(expected, got, strict=True):
        assert have == want
    # and the answers are the interesting ones, not all "not found"
    kinds = [o[0] for o in expected]
    assert kinds.count("found") >= 8 and "Ambiguous" in kinds and "NotFound" in kinds


@pytest.mark.parametrize("backend", ["slapd", "embedded"])
def test_same_rules_on_both_backends(both: tuple[Directory, Directory, str], backend: str) -> None:
    ldap, embedded, base = both
    d = ldap if backend == "slapd" else embedded
    r = d.find_recipient("aaaa-bbbb-cccc@d.example")
    assert isinstance(r, Found) and (r.candidate.dash, r.candidate.ext) == ("-", "cccc")
    assert d.find_recipient("dup@example.com") == Ambiguous(2, "dup@example.com")
    assert isinstance(d.find_recipient("x)(mail=*@inj.example"), NotFound)
    r = d.find_recipient("nobody@example.com")
    assert isinstance(r, Found) and r.entry.dn == f"uid=catchall,{base}" and r.candidate.ext == "nobody"
    assert d.find_login("twin") == Ambiguous(2, "twin")
    assert [e.dn for e in d.search_filter("(filtermember=*)")] == [f"cn=list,{base}"]

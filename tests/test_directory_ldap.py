"""Every lookup rule against the real slapd (qmail-local(8), LOOKUP; logins of auth_pop(8)).

The Directory runs over a Recording wrapper around the real WireSearcher: it records each filter that
reached slapd, so the exact search list is asserted, not assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from qldap.control.files import ControlDir
from qldap.directory import rfc4515
from qldap.directory.base import Ambiguous, Found, NotFound, Scope, Searcher, Trash, Unavailable
from qldap.directory.config import LdapConfig
from qldap.directory.entry import Entry
from qldap.directory.errors import AddressWithoutHost, InvalidFilter, NoSuchObject
from qldap.directory.filters import mail_filter
from qldap.directory.lookup import Directory
from qldap.directory.wire import WireSearcher
from qldap.passwords.schemes import make_hash
from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase

SSHA_SECRET = make_hash("ssha", "secret", b"abcd")


def person(uid: str, *lines: str, classes: Sequence[str] = ("inetOrgPerson", "qmailUser")) -> str:
    oc = "".join(f"objectClass: {c}\n" for c in classes)
    extra = "".join(f"{line}\n" for line in lines)
    names = f"cn: {uid}\nsn: {uid}\n" if "inetOrgPerson" in classes else ""
    return f"dn: uid={uid},{{base}}\n{oc}uid: {uid}\n{names}{extra}\n"


TREE = "".join(
    [
        person("alice", "mail: alice@example.com", "mailAlternateAddress: al@example.com",
               "qmailUID: 2000", "qmailGID: 2000", "mailMessageStore: /var/mail/alice/",
               f"userPassword: {SSHA_SECRET}"),
        person("abc", "mail: abc@inj.example"),
        person("bslash", "mail: a\\bc@inj2.example"),
        person("catchall", "mail: catchall@example.com"),
        person("dext", "mail: aaaa-bbbb-catchall@d.example"),
        person("dcatch", "mail: catchall@d.example"),
        person("dup1", "mail: dup@example.com"),
        person("dup2", "mail: dup@example.com"),
        person("alice2", "mail: alice@example.org"),
        person("plain", "mail: plain@oc.example", classes=("inetOrgPerson",)),
        person("both", "mail: both@oc.example"),
        person("acct", "mail: acct@oc.example", classes=("account", "qmailUser")),
        person("twin", "mail: twin1@example.net"),
        "dn: cn=twin2,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\ncn: twin2\nsn: t\n"
        "uid: twin\nmail: twin2@example.net\n\n",
        "dn: cn=list,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nobjectClass: qmailGroup\n"
        "cn: list\nsn: l\nmail: list@example.com\nmailAlternateAddress: list-catchall@example.com\n"
        "mailMessageStore: /var/mail/list/\nrfc822member: a@x\ndnmember: uid=alice,{base}\n"
        "filtermember: (mail=alice@example.com)\nmembersonly: TRUE\nbounceadmin: adm@x\n\n",
    ]
)  # fmt: skip


class Recording:
    """A Searcher wrapper that keeps the filters (and bases) of every search that was made."""

    def __init__(self, inner: Searcher) -> None:
        self.inner = inner
        self.filters: list[str] = []

    def search(
        self, filter: str, attributes: Sequence[str], *, base: str | None = None, scope: Scope = Scope.SUBTREE
    ) -> list[Entry]:
        self.filters.append(filter)
        return self.inner.search(filter, attributes, base=base, scope=scope)

    def check_bind(self, dn: str, password: str) -> bool:
        return self.inner.check_bind(dn, password)

    def close(self) -> None:
        self.inner.close()


def configure(qroot: QRoot, ldap_base: LdapBase, **controls: str) -> LdapConfig:
    s = ldap_base.slapd
    qroot.control("ldapserver", f"{s.host}:{s.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    qroot.control("ldapobjectclass", "qmailUser")
    for name, text in controls.items():
        qroot.control(name, text)
    return LdapConfig.from_control(ControlDir(qroot.path))


def directory(cfg: LdapConfig) -> tuple[Directory, Recording]:
    rec = Recording(WireSearcher(cfg))
    return Directory(cfg, rec), rec


@pytest.fixture
def tree(ldap_base: LdapBase) -> LdapBase:
    ldap_base.load(TREE)
    return ldap_base


@pytest.fixture
def std(qroot: QRoot, tree: LdapBase) -> tuple[Directory, Recording, str]:
    d, rec = directory(configure(qroot, tree))
    yield d, rec, tree.dn
    d.close()


def test_check1_exact_and_alternate_address(std: tuple[Directory, Recording, str]) -> None:
    d, rec, base = std
    r = d.find_recipient("alice@example.com")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice,{base}"
    assert (r.candidate.dash, r.candidate.ext) == ("", "")
    assert rec.filters == [
        "(&(objectClass=qmailUser)(|(mail=alice@example.com)(mailAlternateAddress=alice@example.com)))"
    ]
    user = r.user()
    assert (user.uid, user.qmail_uid, user.message_store) == ("alice", "2000", "/var/mail/alice/")
    assert user.password is None  # recipients never fetch userPassword
    r = d.find_recipient("AL@Example.COM")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice,{base}"


def test_check2_to_4_injection_never_matches_another_entry(std: tuple[Directory, Recording, str]) -> None:
    d, rec, _ = std
    for address in ["a*@inj.example", "*@inj.example", "x)(mail=*@inj.example", "abc)(|(mail=*@inj.example",
                    "abc\0@inj.example", "ab\\63@inj.example", "a\\5cbc@inj2.example", "*@*"]:  # fmt: skip
        rec.filters.clear()
        r = d.find_recipient(address)
        assert isinstance(r, NotFound), address
        for flt in rec.filters:
            tree = rfc4515.parse(flt)
            assert isinstance(tree, rfc4515.And) and len(tree.items) == 2
            assert isinstance(tree.items[1], rfc4515.Or) and len(tree.items[1].items) == 2
    r = d.find_recipient("a\\bc@inj2.example")  # the backslash itself is data
    assert isinstance(r, Found) and r.entry.single("mail") == "a\\bc@inj2.example"


def test_check7_search_list_without_entries(std: tuple[Directory, Recording, str]) -> None:
    d, rec, _ = std
    expected = ["aaaa-bbbb-cccc@e.example", "aaaa-bbbb-catchall@e.example", "aaaa-catchall@e.example",
                "catchall@e.example"]  # fmt: skip
    r = d.find_recipient("aaaa-bbbb-cccc@e.example")
    assert r == NotFound(tuple(expected))
    assert rec.filters == [mail_filter(a, "qmailUser") for a in expected]


def test_check8_six_searches(std: tuple[Directory, Recording, str]) -> None:
    d, rec, _ = std
    r = d.find_recipient("a-b-c-d-e-f@x.example")
    assert isinstance(r, NotFound) and len(rec.filters) == 6
    assert not any("a-b-c-d-e-catchall" in f for f in rec.filters)


def test_check9_first_dash_catchall_wins(std: tuple[Directory, Recording, str]) -> None:
    d, rec, base = std
    r = d.find_recipient("aaaa-bbbb-cccc@d.example")
    assert isinstance(r, Found) and r.entry.dn == f"uid=dext,{base}"
    assert r.candidate.address == "aaaa-bbbb-catchall@d.example"
    assert (r.candidate.dash, r.candidate.ext) == ("-", "cccc")
    assert len(rec.filters) == 2


def test_check10_catchall(std: tuple[Directory, Recording, str]) -> None:
    d, _, base = std
    r = d.find_recipient("nobody@example.com")
    assert isinstance(r, Found) and r.entry.dn == f"uid=catchall,{base}"
    assert (r.candidate.dash, r.candidate.ext) == ("-", "nobody")


def test_check11_dash_extensions_off(qroot: QRoot, tree: LdapBase) -> None:
    d, rec = directory(configure(qroot, tree, ldapdashext="0"))
    assert d.find_recipient("a-b@x.example") == NotFound(("a-b@x.example", "catchall@x.example"))
    assert len(rec.filters) == 2


def test_check12_several_entries_stop_without_catchall(std: tuple[Directory, Recording, str]) -> None:
    d, rec, _ = std
    assert d.find_recipient("dup@example.com") == Ambiguous(2, "dup@example.com")
    assert len(rec.filters) == 1


def test_check13_aliasdomains(qroot: QRoot, tree: LdapBase) -> None:
    d, rec = directory(configure(qroot, tree, aliasdomains="mail.example.org:example.org"))
    r = d.find_recipient("alice@mail.example.org")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice2,{tree.dn}"
    assert "alice@example.org" in rec.filters[0] and "mail.example.org" not in rec.filters[0]


def test_check68_trash_and_no_host(std: tuple[Directory, Recording, str]) -> None:
    d, rec, _ = std
    assert d.find_recipient("@example.com") == Trash()
    assert rec.filters == []
    with pytest.raises(AddressWithoutHost):
        d.find_recipient("alice")


def test_objectclass_restriction(qroot: QRoot, tree: LdapBase) -> None:
    d, _ = directory(configure(qroot, tree))
    assert isinstance(d.find_recipient("plain@oc.example"), NotFound)
    assert isinstance(d.find_recipient("acct@oc.example"), Found)
    d, _ = directory(configure(qroot, tree, ldapobjectclass=""))
    assert isinstance(d.find_recipient("plain@oc.example"), Found)
    d, _ = directory(configure(qroot, tree, ldapobjectclass="qmailUser)(objectClass=inetOrgPerson"))
    assert isinstance(d.find_recipient("both@oc.example"), Found)
    assert isinstance(d.find_recipient("acct@oc.example"), NotFound)
    assert isinstance(d.find_recipient("plain@oc.example"), NotFound)


def test_check18_19_logins(std: tuple[Directory, Recording, str]) -> None:
    d, rec, base = std
    r = d.find_login("alice")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice,{base}"
    assert rec.filters[-1] == "(&(objectClass=qmailUser)(uid=alice))"
    assert r.user().password == SSHA_SECRET
    assert d.find_login("twin") == Ambiguous(2, "twin")
    assert d.find_login("nobody") == NotFound(("nobody",))
    assert d.find_login("a*") == NotFound(("a*",))
    assert rec.filters[-1] == "(&(objectClass=qmailUser)(uid=a\\2a))"
    assert isinstance(d.find_login("alice@example.com"), NotFound)  # never matched on mail


def test_password_compare(std: tuple[Directory, Recording, str]) -> None:
    d, _, _ = std
    r = d.find_login("alice")
    assert isinstance(r, Found)
    assert d.verify_password(r.entry, "secret")
    assert not d.verify_password(r.entry, "Secret")
    assert not d.verify_password(r.entry, "")


def test_check20_rebind(qroot: QRoot, tree: LdapBase) -> None:
    d, _ = directory(configure(qroot, tree, ldaprebind="1"))
    r = d.find_login("alice")
    assert isinstance(r, Found)
    assert not r.entry.has("userPassword")  # not requested with rebind
    assert d.verify_password(r.entry, "secret")
    assert not d.verify_password(r.entry, "wrong")
    assert not d.verify_password(r.entry, "")  # an empty password would be an anonymous bind


def test_entries_groups_and_raw_filters(std: tuple[Directory, Recording, str]) -> None:
    d, _, base = std
    r = d.find_group(f"cn=list,{base}")
    assert isinstance(r, Found)
    g = r.group()
    assert g.rfc822_members == ("a@x",) and g.dn_members == (f"uid=alice,{base}",)
    assert g.filter_members == ("(mail=alice@example.com)",) and g.members_only == "TRUE"
    assert r.user().is_group
    assert d.find_entry(f"uid=ghost,{base}") == NotFound((f"uid=ghost,{base}",))
    found = d.search_filter(g.filter_members[0])
    assert [e.dn for e in found] == [f"uid=alice,{base}"]
    assert [e.dn for e in d.search_filter("mail=alice@example.com")] == [f"uid=alice,{base}"]
    with pytest.raises(InvalidFilter):
        d.search_filter("(mail=alice")


def test_base_dn_missing_is_temporary(qroot: QRoot, tree: LdapBase) -> None:
    cfg = configure(qroot, tree, ldapbasedn=f"ou=missing,{tree.dn}")
    d, _ = directory(cfg)
    r = d.find_recipient("alice@example.com")
    assert isinstance(r, Unavailable) and isinstance(r.error, NoSuchObject)
    assert r.error.text == "Temporary failure in LDAP lookup. (#4.4.3)."
    assert isinstance(d.find_login("alice"), Unavailable)

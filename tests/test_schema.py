"""The qmail schema: same facts as qmail-ldap's, both forms load into slapd 2.5 and behave as declared."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from qldap_slapd import QMAIL_LDIF, QMAIL_SCHEMA, SchemaForm, Slapd, SlapdError, find_program

from qldap.directory.ldif import parse_ldif
from tests.fixtures_slapd import LdapBase, SlapdFactory, require_slapd

ARC = "1.3.6.1.4.1.7914.1"
IA5, DSTRING, INT, BOOL, DN, NUM = (f"1.3.6.1.4.1.1466.115.121.1.{n}" for n in (26, 15, 27, 7, 12, 36))
CI5, CI5SUB, CX5 = "caseIgnoreIA5Match", "caseIgnoreIA5SubstringsMatch", "caseExactIA5Match"
CI, CISUB = "caseIgnoreMatch", "caseIgnoreSubstringsMatch"
INTM, DNM = "integerMatch", "distinguishedNameMatch"
Row = tuple[int, str, str | None, str | None, str, bool]


@dataclass(frozen=True)
class Attr:
    oid: str
    name: str
    equality: str | None
    substr: str | None
    syntax: str
    single: bool


# The facts of qmail-ldap's qmail.schema: (arc suffix, name, equality, substr, syntax, single-value).
_USER_ATTRS: list[Row] = [
    (1, "qmailUID", INTM, None, INT, True),
    (2, "qmailGID", INTM, None, INT, True),
    (3, "mailMessageStore", CX5, CI5SUB, IA5 + "{256}", True),
    (4, "mailAlternateAddress", CI5, CI5SUB, IA5 + "{256}", False),
    (6, "mailHost", CI5, CI5SUB, IA5 + "{256}", True),
    (7, "mailForwardingAddress", CI5, CI5SUB, IA5 + "{256}", False),
    (8, "deliveryProgramPath", CX5, CI5SUB, IA5 + "{256}", False),
    (9, "qmailDotMode", CI5, None, IA5 + "{32}", True),
    (10, "deliveryMode", CI5, None, IA5 + "{32}", False),
    (11, "mailReplyText", CI, CISUB, DSTRING + "{4096}", True),
    (12, "accountStatus", CI5, None, IA5, True),
    (14, "qmailAccountPurge", "numericStringMatch", None, NUM, True),
    (15, "mailQuotaSize", INTM, None, INT, True),
    (16, "mailQuotaCount", INTM, None, INT, True),
    (17, "mailSizeMax", INTM, None, INT, True),
]
USER_ATTRS = [Attr(f"{ARC}.2.1.{n}", name, eq, sub, syn, sv) for n, name, eq, sub, syn, sv in _USER_ATTRS]
_GROUP_ATTRS: list[Row] = [
    (1, "dnmember", DNM, None, DN, False),
    (2, "rfc822member", CI5, CI5SUB, IA5 + "{256}", False),
    (3, "filtermember", CI5, CI5SUB, IA5 + "{512}", False),
    (4, "senderconfirm", "booleanMatch", None, BOOL, True),
    (5, "membersonly", "booleanMatch", None, BOOL, True),
    (6, "confirmtext", CI, CISUB, DSTRING + "{4096}", True),
    (7, "dnmoderator", DNM, None, DN, False),
    (8, "rfc822moderator", CI5, CI5SUB, IA5 + "{256}", False),
    (9, "moderatortext", CI, CISUB, DSTRING + "{4096}", True),
    (10, "dnsender", DNM, None, DN, False),
    (11, "rfc822sender", CI5, CI5SUB, IA5 + "{256}", False),
    (12, "filtersender", CI5, CI5SUB, IA5 + "{512}", False),
    (13, "bounceadmin", CI5, CI5SUB, IA5 + "{256}", False),
]
GROUP_ATTRS = [Attr(f"{ARC}.3.1.{n}", name, eq, sub, syn, sv) for n, name, eq, sub, syn, sv in _GROUP_ATTRS]
_ADMIN_ATTRS: list[Row] = [
    (1, "qladnmanager", DNM, None, DN, False),
    (2, "qlaDomainList", CI5, CI5SUB, IA5 + "{256}", False),
    (3, "qlaUidPrefix", CI5, CI5SUB, IA5 + "{256}", True),
    (4, "qlaQmailUid", INTM, None, INT, True),
    (5, "qlaQmailGid", INTM, None, INT, True),
    (6, "qlaMailMStorePrefix", CI5, CI5SUB, IA5 + "{256}", True),
    (7, "qlaMailQuotaSize", INTM, None, INT, True),
    (8, "qlaMailQuotaCount", INTM, None, INT, True),
    (9, "qlaMailSizeMax", INTM, None, INT, True),
    (10, "qlaMailHostList", CI5, CI5SUB, IA5 + "{256}", False),
]
ADMIN_ATTRS = [Attr(f"{ARC}.4.1.{n}", name, eq, sub, syn, sv) for n, name, eq, sub, syn, sv in _ADMIN_ATTRS]
ALL_ATTRS = USER_ATTRS + GROUP_ATTRS + ADMIN_ATTRS
USER_MAY = {"uid", "mailMessageStore", "homeDirectory", "userPassword"} | {
    a.name for a in USER_ATTRS if a.name != "mailMessageStore"}
CLASSES = {  # name: (oid, must, may)
    "qmailUser": (f"{ARC}.2.2.1", {"mail"}, USER_MAY),
    "qmailGroup": (f"{ARC}.3.2.1", {"mail", "mailAlternateAddress", "mailMessageStore"},
                   {a.name for a in GROUP_ATTRS}),
    "qldapAdmin": (f"{ARC}.4.2.1",
                   {"qladnmanager", "qlaDomainList", "qlaMailMStorePrefix", "qlaMailHostList"},
                   {"qlaUidPrefix", "qlaQmailUid", "qlaQmailGid", "qlaMailQuotaSize", "qlaMailQuotaCount",
                    "qlaMailSizeMax"}),
}


def _lower(names: set[str]) -> set[str]:
    return {n.lower() for n in names}


def _parse_attr(d: str) -> Attr:
    def opt(key: str) -> str | None:
        m = re.search(rf"\b{key}\s+(\S+)", d)
        return m.group(1) if m else None

    oid = re.match(r"\(\s*([\d.]+)", d)
    name = re.search(r"NAME\s+'([^']+)'", d)
    syntax = opt("SYNTAX")
    assert oid and name and syntax, d
    return Attr(oid.group(1), name.group(1), opt("EQUALITY"), opt("SUBSTR"), syntax, "SINGLE-VALUE" in d)


def _parse_class(d: str) -> tuple[str, str, str, set[str], set[str]]:
    """(oid, name, kind, must, may) of an objectclass definition."""
    def names(key: str) -> set[str]:
        m = re.search(rf"\b{key}\s+(\([^)]*\)|\S+)", d)
        return {n.strip() for n in m.group(1).strip("()").split("$")} if m else set()

    oid = re.match(r"\(\s*([\d.]+)", d)
    name = re.search(r"NAME\s+'([^']+)'", d)
    kind = re.search(r"\b(AUXILIARY|STRUCTURAL|ABSTRACT)\b", d)
    assert oid and name and kind, d
    return oid.group(1), name.group(1), kind.group(1), names("MUST"), names("MAY")


def _schema_defs() -> tuple[list[str], list[str]]:
    body = "\n".join(ln for ln in QMAIL_SCHEMA.read_text().splitlines() if not ln.lstrip().startswith("#"))
    flat = " ".join(body.split())
    attrs = re.findall(r"attributetype\s+(\(.*?\))(?=\s*(?:attributetype|objectclass|$))", flat, re.I)
    classes = re.findall(r"objectclass\s+(\(.*?\))(?=\s*(?:attributetype|objectclass|$))", flat, re.I)
    return attrs, classes


def _ldif_defs() -> tuple[list[str], list[str]]:
    text = re.sub(r"\n ", "", QMAIL_LDIF.read_text())
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert "dn: cn=qmail,cn=schema,cn=config" in lines

    def values(key: str) -> list[str]:
        return [" ".join(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith(key + ":")]

    return values("olcAttributeTypes"), values("olcObjectClasses")


@pytest.mark.parametrize("source", [_schema_defs, _ldif_defs], ids=["schema", "ldif"])
def test_definitions_match_qmail_ldap(source: object) -> None:
    assert callable(source)
    attrs, classes = source()
    assert [_parse_attr(d) for d in attrs] == ALL_ATTRS
    parsed = {name: (oid, kind, _lower(must), _lower(may))
              for oid, name, kind, must, may in map(_parse_class, classes)}
    assert parsed == {name: (oid, "AUXILIARY", _lower(must), _lower(may))
                      for name, (oid, must, may) in CLASSES.items()}


def test_both_forms_hold_the_same_definitions() -> None:
    assert _schema_defs() == _ldif_defs()


def test_standard_attributes_are_used_not_redefined() -> None:
    names = {_parse_attr(d).name.lower() for d in _schema_defs()[0]}
    assert names.isdisjoint({"mail", "uid", "homedirectory", "userpassword", "cn"})


@pytest.mark.parametrize("form", ["schema", "ldif"])
def test_slaptest_accepts_the_configuration(form: SchemaForm, tmp_path: Path) -> None:
    require_slapd()
    server = Slapd(tmp_path / "st", schema_form=form)
    server.configure()
    slaptest = find_program("slaptest")
    assert slaptest is not None
    st = tmp_path / "st"
    conf = ["-F", str(st / "slapd.d")] if form == "ldif" else ["-f", str(st / "slapd.conf")]
    proc = subprocess.run([slaptest, "-u", *conf], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


SUCCESS, CONSTRAINT_VIOLATION, INVALID_SYNTAX, OBJECT_CLASS_VIOLATION = 0, 19, 21, 65


@dataclass(frozen=True)
class Tree:
    """The subtree and its server; changes go through OpenLDAP's own ldapmodify/ldapadd."""

    base: str
    slapd: Slapd

    def change(self, ldif: str, *, add: bool = False) -> int:
        """The LDAP result code of one ldapmodify (or ldapadd) of *ldif*."""
        try:
            (self.slapd.add_ldif if add else self.slapd.modify_ldif)(ldif)
        except SlapdError as exc:
            m = re.search(r"ldap_(?:modify|add): .*\((\d+)\)", str(exc))
            assert m, str(exc)
            return int(m.group(1))
        return SUCCESS


@pytest.fixture(params=["schema", "ldif"])
def tree(request: pytest.FixtureRequest, slapd: Slapd) -> Iterator[Tree]:
    """A subtree holding alice (qmailUser) and staff (qmailGroup), on a server of either schema form.

    The slapd.conf form uses a fresh subtree of the shared server; the cn=config form a private server.
    """
    if request.param == "schema":
        lb: LdapBase = request.getfixturevalue("ldap_base")
        server, base = lb.slapd, lb.dn
    else:
        factory: SlapdFactory = request.getfixturevalue("slapd_factory")
        server, base = factory(schema_form="ldif"), "dc=example,dc=com"
    server.add_ldif(ALICE.replace("{base}", base) + "\n" + STAFF.replace("{base}", base))
    yield Tree(base, server)


ALICE_VALUES = {
    "objectClass": ["inetOrgPerson", "qmailUser"], "uid": ["alice"], "cn": ["Alice Example"],
    "sn": ["Example"], "mail": ["alice@example.com"],
    "mailAlternateAddress": ["a.example@example.com", "alice@example.org"], "mailHost": ["mx1.example.com"],
    "mailMessageStore": ["/var/mail/a/alice/"], "homeDirectory": ["/home/alice"],
    "userPassword": ["{SSHA}aGVsbG8gd29ybGQgc2FsdA=="], "qmailUID": ["1001"], "qmailGID": ["1002"],
    "mailForwardingAddress": ["alice@elsewhere.example", "backup@example.net"],
    "deliveryProgramPath": ["/usr/bin/procmail -d alice"], "qmailDotMode": ["ldaponly"],
    "deliveryMode": ["noforward", "reply"], "mailReplyText": ["Back on Monday.\nAlice"],
    "accountStatus": ["active"], "qmailAccountPurge": ["1700000000"], "mailQuotaSize": ["10485760"],
    "mailQuotaCount": ["1000"], "mailSizeMax": ["5242880"],
}
STAFF_VALUES = {
    "objectClass": ["organizationalRole", "qmailUser", "qmailGroup"], "cn": ["staff"],
    "mail": ["staff@example.com"], "mailAlternateAddress": ["staff-catchall@example.com"],
    "mailMessageStore": ["/var/mail/lists/staff/"], "dnmember": ["uid=alice,{base}"],
    "rfc822member": ["carol@example.net"], "filtermember": ["(&(objectClass=qmailUser)(ou=sales))"],
    "senderconfirm": ["TRUE"], "membersonly": ["FALSE"], "confirmtext": ["Please confirm."],
    "dnmoderator": ["uid=alice,{base}"], "rfc822moderator": ["mod@example.net"],
    "moderatortext": ["Please approve."], "dnsender": ["uid=alice,{base}"],
    "rfc822sender": ["boss@example.net"], "filtersender": ["(ou=staff)"],
    "bounceadmin": ["owner@example.com"],
}


def _ldif(dn: str, values: dict[str, list[str]]) -> str:
    out = [f"dn: {dn}"]
    for attr, vals in values.items():
        for v in vals:
            out.append(f"{attr}:: {_b64(v)}" if "\n" in v else f"{attr}: {v}")
    return "\n".join(out) + "\n"


def _b64(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


ALICE = _ldif("uid=alice,{base}", ALICE_VALUES)
STAFF = _ldif("cn=staff,{base}", STAFF_VALUES)


def _read(tree: Tree, rdn: str) -> dict[str, list[str]]:
    [entry] = parse_ldif(tree.slapd.search(f"{rdn},{tree.base}", "(objectClass=*)", "*", scope="base"))
    return {k: sorted(vals) for k, vals in entry.attributes.items()}


def test_every_user_attribute_round_trips(tree: Tree) -> None:
    assert {a.name for a in USER_ATTRS} <= set(ALICE_VALUES)
    expected = {k.lower(): sorted(v) for k, v in ALICE_VALUES.items()}
    assert _read(tree, "uid=alice") == expected


def test_every_group_attribute_round_trips(tree: Tree) -> None:
    assert {a.name for a in GROUP_ATTRS} <= set(STAFF_VALUES)
    expected = {k.lower(): sorted(x.replace("{base}", tree.base) for x in v) for k, v in STAFF_VALUES.items()}
    assert _read(tree, "cn=staff") == expected


def test_server_publishes_the_schema(tree: Tree) -> None:
    [sub] = parse_ldif(tree.slapd.search("cn=Subschema", "(objectClass=subschema)", "attributeTypes",
                                         "objectClasses", scope="base"))
    ours = [d for d in sub.values("attributeTypes") if d.startswith(f"( {ARC}.")]
    attrs = {a.name: a for a in map(_parse_attr, ours)}
    our_classes = [d for d in sub.values("objectClasses") if d.startswith(f"( {ARC}.")]
    classes = {c[1]: c for c in map(_parse_class, our_classes)}
    assert set(attrs) == {a.name for a in ALL_ATTRS} and set(classes) == set(CLASSES)
    for a in ALL_ATTRS:
        live = attrs[a.name]
        want = (a.oid, a.single, a.syntax.split("{")[0], a.equality)
        assert (live.oid, live.single, live.syntax.split("{")[0], live.equality) == want, a.name
    for name, (oid, must, may) in CLASSES.items():
        live_oid, _, _, live_must, live_may = classes[name]
        assert (live_oid, _lower(live_must), _lower(live_may)) == (oid, _lower(must), _lower(may)), name


SECOND_VALUE = {INT: "2002", DSTRING: "another text", NUM: "1800000000", IA5: "other"}


def test_single_value_attributes_reject_a_second_value(tree: Tree) -> None:
    results = {}
    for a in USER_ATTRS + GROUP_ATTRS:
        rdn = "uid=alice" if a in USER_ATTRS else "cn=staff"
        base_syntax = a.syntax.split("{")[0]
        value = "FALSE" if a.name == "senderconfirm" else "TRUE" if base_syntax == BOOL else (
            f"uid=bob,{tree.base}" if base_syntax == DN else SECOND_VALUE[base_syntax])
        results[a.name] = tree.change(f"dn: {rdn},{tree.base}\nchangetype: modify\nadd: {a.name}\n"
                                      f"{a.name}: {value}\n")
    expected = {a.name: CONSTRAINT_VIOLATION if a.single else SUCCESS for a in USER_ATTRS + GROUP_ATTRS}
    assert results == expected


@pytest.mark.parametrize(("flt", "found"), [
    ("(mail=ALICE@EXAMPLE.COM)", "uid=alice"),
    ("(mailAlternateAddress=Alice@Example.ORG)", "uid=alice"),
    ("(mailAlternateAddress=*@EXAMPLE.org)", "uid=alice"),
    ("(accountStatus=ACTIVE)", "uid=alice"),
    ("(deliveryMode=REPLY)", "uid=alice"),
    ("(mailHost=MX1.example.COM)", "uid=alice"),
    ("(rfc822member=CAROL@example.NET)", "cn=staff"),
    ("(dnmember=UID=ALICE,{base})", "cn=staff"),
    ("(qmailUID=1001)", "uid=alice"),
    ("(mailMessageStore=/var/mail/a/alice/)", "uid=alice"),
    ("(mailMessageStore=/VAR/MAIL/A/ALICE/)", None),  # caseExactIA5Match
    ("(deliveryProgramPath=/USR/BIN/PROCMAIL -D ALICE)", None),  # caseExactIA5Match
    ("(mailMessageStore=/var/mail/a/*)", "uid=alice"),
    ("(deliveryProgramPath=*procmail*)", "uid=alice"),
])
def test_matching_follows_the_schema(tree: Tree, flt: str, found: str | None) -> None:
    out = tree.slapd.search(tree.base, flt.replace("{base}", tree.base.upper()), "1.1")
    assert [e.dn for e in parse_ldif(out)] == ([f"{found},{tree.base}"] if found else [])


@pytest.mark.parametrize(("rdn", "attr", "value"), [
    ("uid=alice", "qmailUID", "abc"),
    ("uid=alice", "qmailAccountPurge", "17e9"),
    ("uid=alice", "mailHost", "mx-ü.example.com"),
    ("cn=staff", "senderconfirm", "yes"),
    ("cn=staff", "dnmember", "not a dn"),
])
def test_values_must_fit_the_syntax(tree: Tree, rdn: str, attr: str, value: str) -> None:
    change = f"dn: {rdn},{tree.base}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n"
    assert tree.change(change) == INVALID_SYNTAX


@pytest.mark.parametrize(("classes", "attrs"), [
    (["account", "qmailUser"], {"uid": "nomail"}),  # qmailUser needs mail
    (["account", "qmailUser", "qmailGroup"], {"uid": "g", "mail": "g@example.com",
                                              "mailAlternateAddress": "g-catchall@example.com"}),
    (["account", "qmailUser"], {"uid": "u", "mail": "u@example.com", "dnmember": "uid=alice,{base}"}),
])
def test_object_class_rules_are_enforced(tree: Tree, classes: list[str], attrs: dict[str, str]) -> None:
    lines = [f"dn: uid={attrs['uid']},{tree.base}", *(f"objectClass: {c}" for c in classes),
             *(f"{k}: {v.replace('{base}', tree.base)}" for k, v in attrs.items())]
    assert tree.change("\n".join(lines) + "\n", add=True) == OBJECT_CLASS_VIOLATION


def test_ldif_form_loads_into_a_running_server_with_ldapadd(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(schema_form="ldif", qmail_schema=False, ldapi=True)
    alice = _ldif("uid=alice,dc=example,dc=com", ALICE_VALUES)
    with pytest.raises(SlapdError, match="objectClass: value #1 invalid"):
        server.add_ldif(alice)  # not known yet

    ldapadd = find_program("ldapadd")
    assert ldapadd is not None
    loaded = subprocess.run([ldapadd, "-Q", "-Y", "EXTERNAL", "-H", server.ldapi_url, "-f", str(QMAIL_LDIF)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    server.add_ldif(alice)
    found = server.search("dc=example,dc=com", "(mailAlternateAddress=ALICE@example.ORG)", "qmailUID")
    assert found == "dn: uid=alice,dc=example,dc=com\nqmailUID: 1001\n\n"

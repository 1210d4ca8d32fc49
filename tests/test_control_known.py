"""The control-file registry: complete against the spec, consistent kinds/defaults, derived values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.control.known import (
    ENTRIES,
    KNOWN,
    ControlFile,
    FromMe,
    Kind,
    defaults_for_me,
    effective_default,
    last_two_labels,
    lookup,
    parent_domain,
)
from tests.conftest import QRoot

SPEC = Path("/work/shared/spec")
spec_present = pytest.mark.skipif(not SPEC.is_dir(), reason="spec directory not available")


def _spec_text(name: str) -> str:
    return (SPEC / f"{name}.md").read_text()  # the external behaviour spec, when present


def _table_names(text: str, heading: str) -> set[str]:
    """Backticked names in the first column of the first table after *heading*."""
    section = text[text.index(heading) :]
    names: set[str] = set()
    in_table = False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            first = line.split("|")[1]
            names.update(re.findall(r"`([a-z0-9.-]+)`", first))
        elif in_table:
            break
    return names


def _spec_control_names() -> set[str]:
    names: set[str] = set()
    for md in SPEC.glob("*.md"):
        names.update(re.findall(r"control/([a-z0-9][a-z0-9.-]*[a-z0-9])", md.read_text()))
    names |= _table_names(_spec_text("smtpd"), "## 3. Control files")
    names |= _table_names(_spec_text("delivery"), "## 1. Configuration")
    names |= _table_names(_spec_text("services"), "### 3.1 Control files")
    services = _spec_text("services")
    shared = services[services.index("Shared LDAP controls:") :].split("\n", 1)[0]
    names.update(re.findall(r"`([a-z0-9.-]+)`", shared))
    names.discard("pbsenvs")  # only inside pbsadd's (misspelt) error text for the file pbsenv
    return names


@spec_present
def test_every_control_file_of_the_spec_is_known() -> None:
    names = _spec_control_names()
    assert len(names) > 40  # the extraction itself works
    missing = sorted(n for n in names if n not in KNOWN)
    assert missing == []


@spec_present
def test_queue_and_services_files_named_in_prose_are_known() -> None:
    for name in (
        "bigbrother", "virtualdomains", "percenthack", "smtproutes", "envnoathost", "queuelifetime",
        "concurrencylocal", "concurrencyremote", "holdlocal", "holdremote", "bouncefrom", "bouncehost",
        "bouncemaxbytes", "custombouncetext", "doublebounceto", "doublebouncehost", "timeoutconnect",
        "timeoutremote", "outgoingip", "helohost", "qmqpservers", "qmqpcip", "defaultdomain",
        "defaulthost", "plusdomain", "idhost", "remotecert", "tlsremoteciphers", "ldapgrouplogin",
        "ldapgrouppassword", "ldapcachettl", "defaultdelivery", "aliasempty",
    ):  # fmt: skip
        assert name in KNOWN, name
        prose = _spec_text("queue") + _spec_text("services") + _spec_text("delivery")
        assert name in prose or name == "ldapcachettl"


def test_names_are_unique_and_entries_are_ordered() -> None:
    assert len(ENTRIES) == len(KNOWN)
    assert list(KNOWN) == [e.name for e in ENTRIES]


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("timeoutsmtpd", 120), ("timeoutremote", 120), ("timeoutconnect", 60), ("databytes", 0),
        ("queuelifetime", 604800), ("concurrencylocal", 10), ("concurrencyremote", 20),
        ("ldaptimeout", 30), ("pbsport", 2821), ("pbstimeout", 600), ("pbscachesize", 1048576),
        ("bouncemaxbytes", 0), ("defaultquotasize", 0), ("ldapcachettl", 0),
        ("ldaprebind", False), ("ldapcluster", False), ("ldaplocaldelivery", True),
        ("ldapdefaultdotmode", "ldaponly"), ("outgoingip", "0.0.0.0"), ("pbsip", "0.0.0.0"),
        ("tlsciphers", "compat"), ("tlsdheparams", "none"), ("bouncefrom", "MAILER-DAEMON"),
        ("doublebounceto", "postmaster"), ("smtpgreeting", ""), ("ldapgrouplogin", ""),
        ("bouncehost", FromMe.ME), ("locals", FromMe.ME), ("helohost", FromMe.ME),
        ("rcpthosts", None), ("ldapuid", None),
    ],
)  # fmt: skip
def test_runtime_defaults_follow_the_spec(name: str, default: object) -> None:
    entry = lookup(name)
    assert entry is not None
    assert entry.default == default
    assert type(entry.default) is type(default)


def test_kinds_and_defaults_are_consistent() -> None:
    for e in ENTRIES:
        assert e.meaning and e.manual, e.name
        if e.kind is Kind.INTEGER:
            assert e.default is None or (type(e.default) is int and e.default >= 0), e.name
        elif e.kind is Kind.BOOLEAN:
            assert type(e.default) is bool, e.name
        elif e.kind is Kind.LINE:
            assert e.default is None or isinstance(e.default, str | FromMe), e.name
        elif e.kind is Kind.CDB:
            assert e.default is None and (e.name.endswith(".cdb")), e.name
        else:
            assert e.default is None or e.default is FromMe.ME, e.name


def test_registry_defaults_agree_with_the_reader(qroot: QRoot) -> None:
    """Reading an absent file through the matching ControlDir accessor yields the registry default."""
    ctl = ControlDir(qroot.path)
    for e in ENTRIES:
        if e.kind is Kind.INTEGER and isinstance(e.default, int):
            assert ctl.integer(e.name, e.default) == e.default
        elif e.kind is Kind.BOOLEAN:
            assert ctl.boolean(e.name, bool(e.default)) is e.default
        elif e.kind is Kind.LINE and e.default is FromMe.ME:
            assert ctl.line_or_me(e.name) == effective_default(e, ctl.me())


def test_obsolete_and_special_entries() -> None:
    obsolete = {e.name for e in ENTRIES if e.obsolete}
    assert {"ldapusername", "ldappasswdappend", "ldapdefaultquota", "rblonlyheader", "maxrcptcount",
            "tarpitdelay", "tarpitcount", "qmail-smtpd.cdb", "ldapclient"} == obsolete  # fmt: skip
    for name in ("ldapgrouplogin", "ldapgrouppassword", "ldapcachettl"):
        entry = lookup(name)
        assert entry is not None and not entry.obsolete
    me = lookup("me")
    assert me is not None and me.required and me.default is None
    assert lookup("no-such-file") is None


def test_effective_default() -> None:
    bouncehost = KNOWN["bouncehost"]
    assert effective_default(bouncehost, "mx.test") == "mx.test"
    assert effective_default(bouncehost, None) is None
    assert effective_default(KNOWN["queuelifetime"], "mx.test") == 604800
    assert isinstance(KNOWN["queuelifetime"], ControlFile)


def test_defaults_for_me() -> None:
    values = defaults_for_me("mx1.example.com")
    for name in ("defaulthost", "idhost", "bouncehost", "doublebouncehost", "helohost", "localiphost",
                 "envnoathost", "locals"):  # fmt: skip
        assert values[name] == "mx1.example.com", name
    assert values["defaultdomain"] == "example.com"
    assert values["plusdomain"] == "example.com"
    assert values["doublebounceto"] == "postmaster"
    assert values["bouncefrom"] == "MAILER-DAEMON"
    assert all(name in KNOWN for name in values)


@pytest.mark.parametrize(
    ("me", "parent", "last_two"),
    [
        ("mx1.example.com", "example.com", "example.com"),
        ("a.b.example.com", "b.example.com", "example.com"),
        ("example.com", "example.com", "example.com"),
        ("localhost", "localhost", "localhost"),
    ],
)
def test_derived_domains(me: str, parent: str, last_two: str) -> None:
    assert parent_domain(me) == parent
    assert last_two_labels(me) == last_two
    values = defaults_for_me(me)
    assert (values["defaultdomain"], values["plusdomain"]) == (parent, last_two)

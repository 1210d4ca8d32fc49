"""The wire LDAP client: its BER against an independent encoder's bytes, and wire-specific behaviour.

The LDAP behaviour suites (test_directory_ldap.py, test_directory_ldap_errors.py) run over WireSearcher
themselves; here: the encoder against LDAPMessages recorded from ldap3/pyasn1 (tests/data/ber_golden.json,
an independent BER implementation, recorded once when the ldap3 adapter was removed), the decoder,
and behaviour on real sockets.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from qldap_slapd import free_port

import tests.test_directory_ldap as ldap_suite
import tests.test_directory_ldap_errors as errors_suite
from qldap.control.files import ControlDir
from qldap.directory import ber
from qldap.directory.base import Found, NotFound, Scope
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    BadCredentials,
    InvalidFilter,
    LookupFailed,
    NoSuchObject,
    SearchTimeout,
    ServerUnreachable,
)
from qldap.directory.ldif import parse_ldif
from qldap.directory.lookup import Directory
from qldap.directory.open import OBSOLETE_CLIENT_NOTICE, make_searcher, open_directory
from qldap.directory.wire import WireSearcher
from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase
from tests.test_directory_ldap import person
from tests.test_directory_ldap_errors import FAILOVER, PATIENT, ScriptedLdap, cfg_for, silent

__all__ = ["silent"]  # a fixture used here

GOLDEN: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "ber_golden.json").read_text())


# -- BER against pyasn1's bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN["search"], ids=lambda c: f"{c['filter'][:30]}-{c['msgid']}")
def test_search_request_matches_pyasn1(case: dict[str, Any]) -> None:
    parts = ber.search_parts("ou=t1,dc=example,dc=com", ber.SCOPE_SUBTREE, tuple(case["attributes"]), 30)
    got = ber.search_request(case["msgid"], parts, ber.encode_filter(case["filter"]))
    assert got.hex() == case["hex"]


def test_base_search_with_all_attributes_and_limits_matches_pyasn1() -> None:
    case = GOLDEN["base_search"]
    parts = ber.search_parts(case["base"], ber.SCOPE_BASE, ber.attribute_list([]), 200, 2)
    assert ber.search_request(9, parts, ber.encode_filter("(objectClass=*)")).hex() == case["hex"]


@pytest.mark.parametrize("case", GOLDEN["bind"], ids=lambda c: f"{c['name'] or 'anon'}-v{c['version']}")
def test_bind_request_matches_pyasn1(case: dict[str, Any]) -> None:
    assert ber.bind_request(5, case["name"], case["password"], case["version"]).hex() == case["hex"]


def test_unbind_request() -> None:
    assert ber.unbind_request(3) == bytes.fromhex("30050201034200")


@pytest.mark.parametrize(
    "text", ["(mail=a", "mail=a", "(mail=\\zz)", "(cn:dn:=x)", "(mail=a)x", "((mail=a))", "(=a)", "(mail)"]
)
def test_invalid_filters_are_refused(text: str) -> None:
    with pytest.raises(InvalidFilter):
        ber.encode_filter(text)


def test_decode_entry_from_pyasn1_bytes() -> None:
    data = bytes.fromhex(GOLDEN["entry"]) + b"\x30"  # plus the start of the next message
    end = ber.frame(data)
    assert end == len(data) - 1 and ber.frame(data[: end - 1]) == -1
    msg = ber.decode_message(data, 0, end)
    assert (msg.msgid, msg.op) == (77, ber.SEARCH_ENTRY)
    got = ber.decode_entry(msg)
    assert got.dn == "uid=jü,dc=example,dc=com"
    assert got.values("mail") == ("a@x", "b@x") and got.values("OBJECTCLASS") == ("top", "qmailUser")


def _entry_message(dn: str, attrs: list[tuple[bytes, list[bytes]]]) -> bytes:
    body = ber.octets(dn) + ber.tlv(0x30, b"".join(
        ber.tlv(0x30, ber.tlv(0x04, name) + ber.tlv(0x31, b"".join(ber.tlv(0x04, v) for v in vals)))
        for name, vals in attrs))  # fmt: skip
    return ber.message(9, ber.tlv(ber.SEARCH_ENTRY, body))


def test_decode_entry_short_and_long_lengths_at_every_level() -> None:
    # the decoder reads short lengths inline and hands long ones to the generic header reader:
    # values, names, value sets and attributes of 127, 128 and 70,000 octets all come back intact
    long_name = b"x" * 130
    attrs = [
        (b"mail", [b"a@x", b"b" * 127, b"c" * 128]),
        (b"mailMessageStore", [b"/" + b"d" * 70000]),
        (long_name, [b"v"]),
        (b"Mail", [b"e@x"]),  # a repeated name (other case) is appended
        (b"empty", []),
        (b"description", [b"\xc3\xa9t\xe9"]),  # UTF-8, then an undecodable byte kept as a surrogate
    ]
    data = _entry_message("uid=a,dc=x", attrs)
    msg = ber.decode_message(data, 0, ber.frame(data))
    got = ber.decode_entry(msg)
    assert got.dn == "uid=a,dc=x"
    assert got.values("mail") == ("a@x", "b" * 127, "c" * 128, "e@x")
    assert got.values("mailmessagestore") == ("/" + "d" * 70000,)
    assert got.values("x" * 130) == ("v",)
    assert not got.has("empty")
    assert got.values("description") == ("ét\udce9",)
    for cut in range(1, len(data) - 1, 997):  # any inner length made to overrun is refused, never misread
        broken = bytearray(data)
        broken[cut] = 0x7F if broken[cut] < 0x80 else broken[cut]
        try:
            m = ber.decode_message(bytes(broken), 0, len(broken))
            ber.decode_entry(m)
        except ber.BerError:
            pass


def test_decode_result_and_malformed_input() -> None:
    data = bytes.fromhex("300c02010265070a012004000400")  # SearchResultDone noSuchObject
    msg = ber.decode_message(data, 0, ber.frame(data))
    assert ber.decode_result(msg) == ber.Result(32, "", "")
    with pytest.raises(ber.BerError):
        ber.frame(b"\x04\x00")
    truncated = bytes.fromhex("300c02010265090a012004000400")  # op length overruns the message
    with pytest.raises(ber.BerError):
        ber.decode_message(truncated, 0, len(truncated))


# -- wire-specific behaviour on real sockets ---------------------------------------------------------------


def test_one_client_and_a_leftover_ldapclient_file_is_ignored_with_a_log_line(
    qroot: QRoot, ldap_base: LdapBase
) -> None:
    ldap_base.load(person("alice", "mail: alice@example.com"))
    cfg = ldap_suite.configure(qroot, ldap_base)
    assert isinstance(make_searcher(cfg, ControlDir(qroot.path)), WireSearcher)
    lines: list[str] = []
    open_directory(ControlDir(qroot.path), log=lines.append).close()
    assert lines == []
    for leftover in ("ldap3", "openldap", ""):
        qroot.control("ldapclient", leftover)
        d = open_directory(ControlDir(qroot.path), log=lines.append)
        assert isinstance(d.searcher, WireSearcher)
        assert isinstance(d.find_recipient("alice@example.com"), Found)
        d.close()
    assert lines == [OBSOLETE_CLIENT_NOTICE] * 3


def test_missing_base_is_no_such_object_and_connection_stays_usable(ldap_base: LdapBase) -> None:
    ldap_base.load(person("alice", "mail: alice@example.com"))
    cfg = cfg_for(ldap_base.slapd.port, basedn="ou=gone," + ldap_base.dn, timeout=PATIENT)
    w = WireSearcher(cfg)
    with pytest.raises(NoSuchObject):
        w.search("(mail=alice@example.com)", ["mail"])
    got = w.search("(objectClass=*)", ["mail"], base=f"uid=alice,{ldap_base.dn}", scope=Scope.BASE)
    assert [e.values("mail") for e in got] == [("alice@example.com",)]
    assert len(w._idle) == 1  # the same connection served both
    w.close()


def test_silent_server_times_out_bind_and_search(silent: int) -> None:
    with pytest.raises(ServerUnreachable):
        WireSearcher(cfg_for(silent)).search("(uid=a)", ["uid"])
    server = ScriptedLdap([None])
    try:
        with pytest.raises(SearchTimeout):  # the bind is answered, the search never
            WireSearcher(cfg_for(server.port, timeout=FAILOVER)).search("(uid=a)", ["uid"])
    finally:
        server.close()


def test_bad_service_credentials_and_check_bind(ldap_base: LdapBase) -> None:
    s = ldap_base.slapd
    bad = replace(cfg_for(s.port, basedn=ldap_base.dn, timeout=PATIENT), login=s.rootdn, password="wrong")
    with pytest.raises(BadCredentials):
        WireSearcher(bad).search("(uid=a)", ["uid"])
    w = WireSearcher(cfg_for(s.port, basedn=ldap_base.dn, timeout=PATIENT))
    assert w.check_bind(s.rootdn, s.rootpw) is True
    assert w.check_bind(s.rootdn, "wrong") is False
    assert w.check_bind(s.rootdn, "") is False


class RawLdap:
    """Answers the bind with success, then the first search with *reply* (built from its message id)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            bind = errors_suite._read_message(conn)
            assert bind is not None
            conn.sendall(bytes.fromhex("300c02010161070a010004000400"))
            if errors_suite._read_message(conn) is not None:
                conn.sendall(self.reply)
                errors_suite._read_message(conn)

    def close(self) -> None:
        self.sock.close()


def _t(tag: int, body: bytes) -> bytes:  # short-form TLV, written out independently of ber.tlv
    assert len(body) < 128
    return bytes((tag, len(body))) + body


def _msg(msgid: int, op: bytes) -> bytes:
    return _t(0x30, bytes((2, 1, msgid)) + op)


_ENTRY = _t(0x64, _t(4, b"uid=a,dc=oth") + _t(0x30, _t(0x30, _t(4, b"u") + _t(0x31, _t(4, b"a")))))
_DONE_REFERRAL = _t(0x65, bytes.fromhex("0a010a04000400") + _t(0xA3, _t(4, b"ldap://elsewhere/")))


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        # a continuation reference, an entry, then referral (10): the entry received is the answer
        (
            _msg(2, _t(0x73, _t(4, b"ldap://other/dc=oth"))) + _msg(2, _ENTRY) + _msg(2, _DONE_REFERRAL),
            "entry",
        ),
        (_msg(0, _t(0x78, bytes.fromhex("0a013404000400"))), "lost"),  # notice of disconnection
        (_msg(2, b""), "garbage"),  # no protocolOp at all
        (_msg(2, _t(0x65, bytes.fromhex("0a015004000400"))), "other"),  # other (80)
    ],
)
def test_references_ignored_and_bad_answers_are_temporary(reply: bytes, outcome: str) -> None:
    server = RawLdap(reply)
    try:
        w = WireSearcher(cfg_for(server.port, timeout=PATIENT))
        if outcome == "entry":
            assert [e.dn for e in w.search("(uid=a)", ["u"])] == ["uid=a,dc=oth"]
        else:
            with pytest.raises(LookupFailed):
                w.search("(uid=a)", ["u"])
    finally:
        server.close()


@pytest.fixture
def members(ldap_base: LdapBase) -> Iterator[LdapBase]:
    ldap_base.load(
        "".join(
            person(f"m{i}", f"mail: m{i}@example.com", f"description: {i:04d}" + "é" * 400)
            for i in range(200)
        )
    )
    yield ldap_base


def test_many_threads_one_small_pool_real_slapd(members: LdapBase) -> None:
    cfg = cfg_for(members.slapd.port, basedn=members.dn, timeout=PATIENT)
    searcher = WireSearcher(cfg, pool_size=3)
    d = Directory(replace(cfg, objectclass="qmailUser"), searcher)
    problems: list[str] = []

    def work(n: int) -> None:
        for k in range(60):
            i = (n * 13 + k) % 220
            r = d.find_recipient(f"m{i}@example.com")
            ok = (
                isinstance(r, Found) and r.entry.dn == f"uid=m{i},{members.dn}"
                if i < 200
                else isinstance(r, NotFound)
            )
            if not ok:
                problems.append(f"m{i}: {r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert 1 <= len(searcher._idle) <= 3
    searcher.close()
    assert searcher._idle == []


def test_failover_order_and_unreachable_text(ldap_base: LdapBase, silent: int) -> None:
    ldap_base.load(person("bob", "mail: bob@example.com"))
    cfg = cfg_for(free_port(), silent, ldap_base.slapd.port, basedn=ldap_base.dn, timeout=FAILOVER)
    got = WireSearcher(cfg).search("(mail=bob@example.com)", ["mail"])
    assert [e.dn for e in got] == [f"uid=bob,{ldap_base.dn}"]
    with pytest.raises(ServerUnreachable) as info:
        WireSearcher(cfg_for(free_port(), silent)).search("(mail=bob@example.com)", ["mail"])
    assert info.value.text == "Unable to contact LDAP server. (#4.4.3)"


@pytest.mark.parametrize(
    ("text", "attrs", "count"),
    [
        ("(objectClass=*)", [], 201),  # every attribute of every entry: > 64 KiB, several reads
        ("(|(mail=m1*)(mail=*7@example.com))", ["mail", "description"], 111 + 20 - 11),
        ("(&(objectClass=qmailUser)(!(mail=m1*))(description=*é))", ["uid"], 89),
        ("(mail=M42@EXAMPLE.COM)", ["mail", "nosuchattr"], 1),
        ("(mail=\\2a)", ["mail"], 0),
    ],
)
def test_same_answers_as_ldapsearch(members: LdapBase, text: str, attrs: list[str], count: int) -> None:
    """The entries equal what ldapsearch prints (read by the embedded backend's LDIF parser)."""
    cfg = cfg_for(members.slapd.port, basedn=members.dn, timeout=PATIENT)
    wire = WireSearcher(cfg)

    def reference(base: str, flt: str, wanted: list[str], scope: str = "sub") -> list[Entry]:
        return sorted(parse_ldif(members.slapd.search(base, flt, *wanted, scope=scope)), key=lambda e: e.dn)

    got = sorted(wire.search(text, attrs), key=lambda e: e.dn)
    assert len(got) == count
    assert got == reference(members.dn, text, attrs)
    dn = f"uid=m5,{members.dn}"
    base = wire.search("(objectClass=*)", [], base=dn, scope=Scope.BASE)
    assert base == reference(dn, "(objectClass=*)", [], "base")
    assert base[0].values("description") == ("0005" + "é" * 400,)
    wire.close()

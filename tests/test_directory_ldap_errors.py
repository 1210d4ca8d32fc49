"""Failures of the LDAP backend on real sockets: failover, timeouts, result codes, bad credentials,
reconnects, thread safety and the result cache (qmail-local(8), LOOKUP).

Servers that misbehave on purpose are real TCP listeners: a closed port, a socket that accepts but never
answers, and ScriptedLdap, a tiny LDAP responder that answers binds and searches with chosen codes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from qldap_slapd import free_port

from qldap.directory.base import Found, NotFound, Unavailable
from qldap.directory.cache import ResultCache
from qldap.directory.config import LdapConfig, ServerAddress
from qldap.directory.errors import (
    BadCredentials,
    LookupFailed,
    NoSuchObject,
    SearchTimeout,
    ServerUnreachable,
)
from qldap.directory.lookup import Directory
from qldap.directory.wire import WireSearcher
from tests.fixtures_slapd import LdapBase, SlapdFactory
from tests.test_directory_ldap import Recording, person

FAST = 1  # ldaptimeout for tests that wait for a silent peer
# ldaptimeout where a real server's answer is expected: on a loaded machine a slow answer must not turn
# into a timeout, so it only guards against a hang
PATIENT = 30
# ldaptimeout where a silent peer (or a search nobody answers) is waited out while a real answer (another
# server's, or the bind before that search) is still expected: both sides of that race hang on it, so it
# is a compromise between the test's duration and the answering side's slack
FAILOVER = 5


def _read_message(conn: socket.socket) -> bytes | None:
    head = b""
    while len(head) < 2:
        chunk = conn.recv(2 - len(head))
        if not chunk:
            return None
        head += chunk
    size = head[1]
    extra = b""
    if size & 0x80:
        while len(extra) < size & 0x7F:
            extra += conn.recv((size & 0x7F) - len(extra))
        size = int.from_bytes(extra, "big")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return body


def _encode_len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x81, n])


def _result(msgid: bytes, tag: int, code: int) -> bytes:
    op = bytes([tag, 7, 0x0A, 1, code, 0x04, 0, 0x04, 0])
    inner = bytes([0x02, len(msgid)]) + msgid + op
    return bytes([0x30]) + _encode_len(len(inner)) + inner


class ScriptedLdap:
    """An LDAP responder on 127.0.0.1: binds get ``bind_codes`` (per protocol version, default success),
    searches take the next item of ``searches`` (a result code, or None = never answer)."""

    def __init__(self, searches: list[int | None], bind_codes: dict[int, int] | None = None) -> None:
        self.searches = list(searches)
        self.bind_codes = bind_codes or {}
        self.versions: list[int] = []
        self.search_count = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            while (body := _read_message(conn)) is not None:
                msgid = body[2 : 2 + body[1]]
                op = body[2 + body[1]]
                if op == 0x60:  # bindRequest: [APPLICATION 0] { version INTEGER, ... }
                    start = 2 + body[1]
                    version = body[start + 4]
                    self.versions.append(version)
                    conn.sendall(_result(msgid, 0x61, self.bind_codes.get(version, 0)))
                elif op == 0x63:  # searchRequest
                    self.search_count += 1
                    code = self.searches.pop(0) if self.searches else 0
                    if code is None:
                        self._stop.wait(30)
                        return
                    conn.sendall(_result(msgid, 0x65, code))
                else:  # unbind and the rest
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts TCP connections but never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def cfg_for(*ports: int, basedn: str = "dc=example,dc=com", timeout: int = FAST) -> LdapConfig:
    servers = tuple(ServerAddress("127.0.0.1", p) for p in ports)
    return replace(LdapConfig(), servers=servers, basedn=basedn, timeout=timeout, objectclass="qmailUser")


def test_check14_all_servers_down(silent: int) -> None:
    d = Directory(cfg_for(free_port(), silent), WireSearcher(cfg_for(free_port(), silent)))
    r = d.find_recipient("alice@example.com")
    assert isinstance(r, Unavailable) and isinstance(r.error, ServerUnreachable)
    assert r.error.text == "Unable to contact LDAP server. (#4.4.3)"


def test_check15_failover_past_closed_and_silent_servers(ldap_base: LdapBase, silent: int) -> None:
    ldap_base.load(person("alice", "mail: alice@example.com"))
    s = ldap_base.slapd
    cfg = cfg_for(free_port(), silent, s.port, basedn=ldap_base.dn, timeout=FAILOVER)
    d = Directory(cfg, WireSearcher(cfg))
    r = d.find_recipient("alice@example.com")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice,{ldap_base.dn}"


def test_check17_bad_credentials(ldap_base: LdapBase) -> None:
    s = ldap_base.slapd
    cfg = replace(cfg_for(s.port, basedn=ldap_base.dn, timeout=PATIENT), login=s.rootdn, password="wrong")
    r = Directory(cfg, WireSearcher(cfg)).find_recipient("alice@example.com")
    assert isinstance(r, Unavailable) and isinstance(r.error, BadCredentials)
    assert r.error.text == "Unable to login into LDAP server, bad credentials. (#4.4.3)"
    good = replace(cfg, password=s.rootpw)
    assert isinstance(Directory(good, WireSearcher(good)).find_recipient("alice@example.com"), NotFound)


def test_check16_search_timeout_stops_the_candidate_loop() -> None:
    server = ScriptedLdap([None])
    try:
        cfg = cfg_for(server.port, timeout=FAILOVER)  # the bind is answered, the search never
        rec = Recording(WireSearcher(cfg))
        r = Directory(cfg, rec).find_recipient("nobody@example.com")
        assert isinstance(r, Unavailable) and isinstance(r.error, SearchTimeout)
        assert r.error.text == "Timeout while performing search on LDAP server. (#4.4.3)"
        assert len(rec.filters) == 1
    finally:
        server.close()


@pytest.mark.parametrize(
    ("code", "error"),
    [(3, SearchTimeout), (51, SearchTimeout), (32, NoSuchObject), (80, LookupFailed), (53, LookupFailed)],
)
def test_check18_catchall_search_error_after_empty_exact_search(code: int, error: type[Exception]) -> None:
    server = ScriptedLdap([0, code])
    try:
        cfg = cfg_for(server.port, timeout=PATIENT)
        rec = Recording(WireSearcher(cfg))
        r = Directory(cfg, rec).find_recipient("nobody@example.com")
        assert isinstance(r, Unavailable) and type(r.error) is error
        assert len(rec.filters) == 2 and "catchall@example.com" in rec.filters[1]
        if error is not SearchTimeout:
            assert r.error.text == "Temporary failure in LDAP lookup. (#4.4.3)."
    finally:
        server.close()


def test_protocol_error_at_v3_bind_retries_with_v2() -> None:
    server = ScriptedLdap([0], bind_codes={3: 2})
    try:
        cfg = cfg_for(server.port, timeout=PATIENT)
        assert isinstance(Directory(cfg, WireSearcher(cfg)).find_recipient("a@x"), NotFound)
        assert server.versions[:2] == [3, 2]
    finally:
        server.close()


def test_other_bind_failure_is_temporary_failure() -> None:
    server = ScriptedLdap([], bind_codes={3: 53, 2: 53})
    try:
        cfg = cfg_for(server.port, timeout=PATIENT)
        r = Directory(cfg, WireSearcher(cfg)).find_recipient("a@x")
        assert isinstance(r, Unavailable) and type(r.error) is LookupFailed
    finally:
        server.close()


def test_reconnect_after_restart_and_errors_not_cached(slapd_factory: SlapdFactory) -> None:
    s = slapd_factory()
    s.add_ldif(person("alice", "mail: alice@example.com").replace("{base}", s.suffix))
    cfg = cfg_for(s.port, basedn=s.suffix, timeout=PATIENT)
    d = Directory(cfg, WireSearcher(cfg), ResultCache(3600))
    assert isinstance(d.find_recipient("alice@example.com"), Found)
    s.restart()  # the pooled connection is now dead
    assert isinstance(d.find_login("alice"), Found)
    s.stop()
    r = d.find_login("nobody")
    assert isinstance(r, Unavailable) and isinstance(r.error, ServerUnreachable)
    s.start()
    assert d.find_login("nobody") == NotFound(("nobody",))  # the error was not remembered


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_hits_within_ttl_and_sees_edits_after(ldap_base: LdapBase) -> None:
    ldap_base.load(person("alice", "mail: alice@example.com"))
    cfg = cfg_for(ldap_base.slapd.port, basedn=ldap_base.dn, timeout=PATIENT)
    clock = Clock()
    rec = Recording(WireSearcher(cfg))
    d = Directory(cfg, rec, ResultCache(30, clock=clock))
    assert isinstance(d.find_recipient("alice@example.com"), Found)
    assert isinstance(d.find_recipient("bob@example.com"), NotFound)
    searches = len(rec.filters)
    ldap_base.slapd.modify_ldif(
        f"dn: uid=alice,{ldap_base.dn}\nchangetype: modify\nreplace: mail\nmail: bob@example.com\n"
    )
    clock.now = 29
    assert isinstance(d.find_recipient("alice@example.com"), Found)
    assert isinstance(d.find_recipient("bob@example.com"), NotFound)
    assert len(rec.filters) == searches  # both answered from the cache
    clock.now = 31
    assert isinstance(d.find_recipient("alice@example.com"), NotFound)
    r = d.find_recipient("bob@example.com")
    assert isinstance(r, Found) and r.entry.dn == f"uid=alice,{ldap_base.dn}"


def test_many_threads_share_the_searcher(ldap_base: LdapBase) -> None:
    ldap_base.load("".join(person(f"u{i}", f"mail: u{i}@example.com") for i in range(20)))
    cfg = cfg_for(ldap_base.slapd.port, basedn=ldap_base.dn, timeout=PATIENT)
    searcher = WireSearcher(cfg, pool_size=4)
    d = Directory(cfg, searcher)
    problems: list[str] = []

    def work(n: int) -> None:
        for k in range(40):
            i = (n * 7 + k) % 25
            r = d.find_recipient(f"u{i}@example.com")
            if i < 20:
                ok = isinstance(r, Found) and r.entry.dn == f"uid=u{i},{ldap_base.dn}"
            else:
                ok = isinstance(r, NotFound)
            if not ok:
                problems.append(f"u{i}: {r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert len(searcher._idle) <= 4
    d.close()
    assert searcher._idle == []

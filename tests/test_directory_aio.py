"""Recipient lookups from the event loop (qldap.directory.aio) against a real slapd: the same answers as
the blocking client, several searches in flight on one connection, and trouble handed back (None) or
reported as Unavailable — never as NotFound."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from qldap.directory.aio import AsyncRecipients, usable
from qldap.directory.base import Ambiguous, Found, LookupResult, NotFound, Trash, Unavailable
from qldap.directory.cache import ResultCache
from qldap.directory.config import Scheme, ServerAddress, TlsSettings
from qldap.directory.errors import SearchTimeout
from qldap.directory.lookup import Directory
from qldap.directory.wire import WireSearcher
from tests.fixtures_slapd import LdapBase, SlapdFactory
from tests.test_directory_ldap import TREE, person
from tests.test_directory_ldap_errors import FAILOVER, PATIENT, ScriptedLdap, cfg_for

ADDRESSES = [
    "alice@example.com", "AL@example.com", "nobody@example.com", "dup@example.com",
    "aaaa-bbbb-cccc@d.example", "zz@d.example", "list@example.com", "list-x@example.com",
    "twin1@example.net", "@example.com",
    "a\\bc@inj2.example", "abc@inj.example", "plain@oc.example",
]  # fmt: skip


def _same(a: LookupResult, b: LookupResult) -> bool:
    if isinstance(a, Found) and isinstance(b, Found):
        return a.entry.dn == b.entry.dn and a.candidate == b.candidate
    return a == b


def test_the_loop_answers_as_the_blocking_client(ldap_base: LdapBase) -> None:
    ldap_base.load(TREE)
    cfg = cfg_for(ldap_base.slapd.port, basedn=ldap_base.dn, timeout=PATIENT)
    blocking = Directory(cfg, WireSearcher(cfg))
    assert usable(blocking)

    async def main() -> list[LookupResult | None]:
        aio = AsyncRecipients(Directory(cfg, WireSearcher(cfg)))
        try:
            return [await aio.find_recipient(a) for a in ADDRESSES]
        finally:
            aio.close()

    got = asyncio.run(main())
    kinds = set()
    for address, answer in zip(ADDRESSES, got, strict=True):
        assert answer is not None
        want = blocking.find_recipient(address)
        assert _same(answer, want), (address, answer, want)
        kinds.add(type(answer))
    assert {Found, NotFound, Ambiguous, Trash} <= kinds


def test_many_searches_in_flight_share_one_connection(ldap_base: LdapBase) -> None:
    ldap_base.load("".join(person(f"u{i}", f"mail: u{i}@example.com") for i in range(40)))
    cfg = cfg_for(ldap_base.slapd.port, basedn=ldap_base.dn, timeout=PATIENT)

    async def main() -> None:
        aio = AsyncRecipients(Directory(cfg, WireSearcher(cfg)))
        try:
            results = await asyncio.gather(*(aio.find_recipient(f"u{i}@example.com") for i in range(40)))
            for i, r in enumerate(results):
                assert isinstance(r, Found) and r.entry.dn.startswith(f"uid=u{i},")
            proto = aio._proto
            assert proto is not None and not proto.pending
            again = await aio.find_recipient("u7@example.com")
            assert isinstance(again, Found) and aio._proto is proto  # still the one connection
        finally:
            aio.close()

    asyncio.run(main())


def test_an_outage_is_handed_back_and_never_a_not_found(slapd_factory: SlapdFactory) -> None:
    s = slapd_factory()
    s.add_ldif(person("alice", "mail: alice@example.com").replace("{base}", s.suffix))
    cfg = cfg_for(s.port, basedn=s.suffix, timeout=PATIENT)
    directory = Directory(cfg, WireSearcher(cfg), ResultCache(3600))

    async def main() -> None:
        aio = AsyncRecipients(directory)
        try:
            assert isinstance(await aio.find_recipient("bob@example.com"), NotFound)
            assert directory.cache is not None
            directory.cache.clear()
            s.stop()
            # connection lost: the blocking path decides (Unavailable), and the loop path stays off a while
            assert await aio.find_recipient("bob@example.com") is None
            assert await aio.find_recipient("bob@example.com") is None
        finally:
            aio.close()

    try:
        asyncio.run(main())
        blocking = directory.find_recipient("bob@example.com")
        assert isinstance(blocking, Unavailable)
    finally:
        s.start()


def test_a_silent_server_is_a_search_timeout() -> None:
    server = ScriptedLdap([None])  # binds, then never answers the search
    try:
        cfg = cfg_for(server.port, timeout=FAILOVER)  # the bind is answered, the search never
        aio = AsyncRecipients(Directory(cfg, WireSearcher(cfg)))
        r = asyncio.run(aio.find_recipient("nobody@example.com"))
        assert isinstance(r, Unavailable) and isinstance(r.error, SearchTimeout)
        aio.close()
    finally:
        server.close()


def test_tls_and_the_ldif_file_stay_on_the_blocking_path() -> None:
    cfg = cfg_for(389)
    assert usable(Directory(cfg, WireSearcher(cfg)))
    tls = replace(cfg, servers=(ServerAddress("127.0.0.1", 636, Scheme.LDAPS),))
    assert not usable(Directory(tls, WireSearcher(replace(tls, tls=TlsSettings()))))
    starttls = replace(cfg, tls=replace(cfg.tls, start_tls=True))
    assert not usable(Directory(starttls, WireSearcher(cfg)))


def test_a_new_event_loop_gets_its_own_connection(ldap_base: LdapBase) -> None:
    ldap_base.load(person("alice", "mail: alice@example.com"))
    cfg = cfg_for(ldap_base.slapd.port, basedn=ldap_base.dn, timeout=5)
    aio = AsyncRecipients(Directory(cfg, WireSearcher(cfg)))
    for _ in range(2):  # e.g. a daemon restarted in-process by a test harness
        assert isinstance(asyncio.run(aio.find_recipient("alice@example.com")), Found)

"""The smtpd's PTR answers are remembered for their TTL; failures are asked again (qmail-smtpd(8)).

Against a real name server on loopback (tests/dnsserver.py): what the server was asked is the
observable behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from qldap.smtpd.dns import DnsResolver
from tests.dnsserver import SILENT_TIMEOUT, DnsServer

NAMED = "192.0.2.7"
NAMED_PTR = "7.2.0.192.in-addr.arpa"
UNNAMED = "192.0.2.8"
SILENT = "192.0.2.9"
SILENT_PTR = "9.2.0.192.in-addr.arpa"


@pytest.fixture
def server() -> Iterator[DnsServer]:
    srv = DnsServer({(NAMED_PTR, "PTR"): ["Client.Example.ORG."]}, silent=[SILENT_PTR])
    yield srv
    srv.close()


def _asked(server: DnsServer, ptr_name: str) -> int:
    return sum(1 for name, rdtype in server.asked if name == ptr_name + "." and rdtype == "PTR")


def test_a_name_is_asked_once_and_remembered(server: DnsServer) -> None:
    resolver = DnsResolver(resolver=server.resolver())

    async def twice() -> list[str | None]:
        return [await resolver.ptr(NAMED), await resolver.ptr(NAMED)]

    assert asyncio.run(twice()) == ["client.example.org", "client.example.org"]
    assert _asked(server, NAMED_PTR) == 1


def test_no_such_name_is_remembered_too(server: DnsServer) -> None:
    resolver = DnsResolver(resolver=server.resolver())

    async def twice() -> list[str | None]:
        return [await resolver.ptr(UNNAMED), await resolver.ptr(UNNAMED)]

    assert asyncio.run(twice()) == [None, None]
    assert _asked(server, "8.2.0.192.in-addr.arpa") == 1


def test_a_timeout_is_not_remembered(server: DnsServer) -> None:
    resolver = DnsResolver(resolver=server.resolver(SILENT_TIMEOUT), ptr_timeout=SILENT_TIMEOUT)

    async def twice() -> list[str | None]:
        return [await resolver.ptr(SILENT), await resolver.ptr(SILENT)]

    assert asyncio.run(twice()) == [None, None]
    assert _asked(server, SILENT_PTR) >= 2  # asked again: the next client may get its name

"""The DNS seam of remote delivery: MX and address queries answered as :mod:`qldap.remote.routes` data.

Why a seam: the choice of targets is pure policy (:func:`~qldap.remote.routes.select_targets`) that
needs only three outcomes per query — an answer (possibly empty), "the name does not exist"
(NXDOMAIN: permanent) and "could not ask" (SERVFAIL, timeout, refused, no server: temporary).  Keeping
that distinction in one place means a resolver outage can never turn into a bounce.  Delivery code
takes any :class:`Resolver`; :class:`DnsResolver` asks real servers through dnspython's asyncio
resolver, :class:`StaticResolver` answers from data (tests, fixed cluster tables) and records what
was asked, so a test can tell that no MX query happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from qldap.remote.routes import AddressAnswer, DnsStatus, MxAnswer, MxRecord

DEFAULT_LIFETIME = 30.0  # seconds for one query, retries included


class Resolver(Protocol):
    """What remote delivery and the QMQP client ask of DNS."""

    async def mx(self, domain: str) -> MxAnswer:
        """The MX records of *domain*."""
        ...

    async def addresses(self, name: str) -> AddressAnswer:
        """The addresses of *name*: IPv4 first, in answer order."""
        ...


def _absolute(name: str) -> str:
    """*name* as a fully qualified query name (no search list may be appended)."""
    return name if name.endswith(".") else name + "."


class DnsResolver:
    """Real DNS through ``dns.asyncresolver``; IPv6 addresses only when asked for.

    Args:
        nameservers: server addresses; None reads ``/etc/resolv.conf`` (an unreadable or empty
            configuration makes every query a temporary failure, never a permanent one).
        port: the servers' port.
        lifetime: seconds allowed per query including retries.
        ipv6: also query AAAA (after A) for :meth:`addresses`.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        lifetime: float = DEFAULT_LIFETIME,
        ipv6: bool = False,
    ) -> None:
        self._resolver: dns.asyncresolver.Resolver | None
        try:
            resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        except (dns.resolver.NoResolverConfiguration, OSError):
            resolver = None
        if resolver is not None:
            if nameservers is not None:
                resolver.nameservers = list(nameservers)
            resolver.port = port
            resolver.lifetime = lifetime
            resolver.timeout = min(resolver.timeout, lifetime)
            resolver.search = []
            if not resolver.nameservers:
                resolver = None
        self._resolver = resolver
        self._ipv6 = ipv6

    async def _query(self, name: str, rdtype: str) -> tuple[DnsStatus, list[object]]:
        if self._resolver is None:
            return DnsStatus.TEMPFAIL, []
        try:
            answer = await self._resolver.resolve(_absolute(name), rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return DnsStatus.NXDOMAIN, []
        except dns.resolver.NoAnswer:
            return DnsStatus.OK, []
        except (dns.exception.DNSException, OSError):
            # NoNameservers (SERVFAIL/REFUSED everywhere), LifetimeTimeout, YXDOMAIN, bad names …
            return DnsStatus.TEMPFAIL, []
        return DnsStatus.OK, list(answer)

    async def mx(self, domain: str) -> MxAnswer:
        """The MX records of *domain*; exchanges lower-cased, without the trailing dot."""
        status, rrs = await self._query(domain, "MX")
        records = []
        for rr in rrs:
            pref = getattr(rr, "preference", None)
            exchange = getattr(rr, "exchange", None)
            if isinstance(pref, int) and isinstance(exchange, dns.name.Name):
                records.append(MxRecord(pref, exchange.to_text(omit_final_dot=True).lower()))
        return MxAnswer(status, tuple(records))

    async def addresses(self, name: str) -> AddressAnswer:
        """A records (then AAAA when enabled); a failed AAAA query never hides usable A records."""
        status, rrs = await self._query(name, "A")
        found = [str(getattr(rr, "address", "")) for rr in rrs]
        if self._ipv6 and status is DnsStatus.OK:
            status6, rrs6 = await self._query(name, "AAAA")
            found.extend(str(getattr(rr, "address", "")) for rr in rrs6)
            if status6 is DnsStatus.TEMPFAIL and not found:
                status = DnsStatus.TEMPFAIL
        return AddressAnswer(status, tuple(a for a in found if a))


@dataclass
class StaticResolver:
    """Answers from tables; unknown names do not exist.  ``asked`` lists ``(rdtype, name)`` queries."""

    mx_answers: Mapping[str, MxAnswer] = field(default_factory=lambda: MappingProxyType({}))
    address_answers: Mapping[str, AddressAnswer] = field(default_factory=lambda: MappingProxyType({}))
    asked: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        mx: Mapping[str, Iterable[tuple[int, str]] | DnsStatus] | None = None,
        a: Mapping[str, Iterable[str] | DnsStatus] | None = None,
    ) -> StaticResolver:
        """Build from plain data: ``{"x.org": [(10, "mx.x.org")]}`` and ``{"mx.x.org": ["192.0.2.1"]}``.

        A :class:`DnsStatus` instead of records gives that status with an empty answer.
        """
        mxs = {
            k.lower(): MxAnswer(v) if isinstance(v, DnsStatus)
            else MxAnswer(DnsStatus.OK, tuple(MxRecord(p, h.lower()) for p, h in v))
            for k, v in (mx or {}).items()
        }  # fmt: skip
        addrs = {
            k.lower(): AddressAnswer(v) if isinstance(v, DnsStatus) else AddressAnswer(DnsStatus.OK, tuple(v))
            for k, v in (a or {}).items()
        }
        return cls(MappingProxyType(mxs), MappingProxyType(addrs))

    async def mx(self, domain: str) -> MxAnswer:
        """The table's MX answer; NXDOMAIN when the domain is not listed in either table."""
        key = domain.lower().rstrip(".")
        self.asked.append(("MX", key))
        if key in self.mx_answers:
            return self.mx_answers[key]
        return MxAnswer(DnsStatus.OK if key in self.address_answers else DnsStatus.NXDOMAIN)

    async def addresses(self, name: str) -> AddressAnswer:
        """The table's address answer; NXDOMAIN when the name is not listed."""
        key = name.lower().rstrip(".")
        self.asked.append(("A", key))
        if key in self.address_answers:
            return self.address_answers[key]
        return AddressAnswer(DnsStatus.OK if key in self.mx_answers else DnsStatus.NXDOMAIN)

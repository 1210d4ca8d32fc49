"""The smtpd's DNS questions: client PTR name, RBL A records, return-MX existence; one seam, two backends.

Why a seam (I/O behind one narrow interface, so tests swap the backend instead of patching): the
session glue asks three narrow questions and only needs typed answers
(:class:`~qldap.smtpd.policy.RblAnswer`, :class:`~qldap.smtpd.policy.MxAnswer`, a host name or None).
:class:`DnsResolver` asks real name servers with dnspython's asyncio resolver and a timeout per
question, so a dead name server costs one bounded pause and never blocks the event loop;
:class:`StaticResolver` answers from tables, which lets tests give canned answers (an RBL listing, a
PTR name, an NXDOMAIN sender domain) without patching anything inside the server.

Error rules: a PTR that cannot be found (or times out) is "no name" (tcpserver leaves TCPREMOTEHOST
unset); an RBL query that fails for any reason other than "no such name" is *soft* and ignored by the
policy; the return-MX check distinguishes "does not exist" from "could not tell" (421 and close).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from qldap.smtpd.policy import MxAnswer, RblAnswer

DEFAULT_TIMEOUT = 5.0
DEFAULT_PTR_TIMEOUT = 2.0
PTR_CACHE_MAX = 300.0
"""Seconds a PTR answer is kept at most, whatever its TTL."""
PTR_NEGATIVE_TTL = 60.0
"""Seconds "this address has no name" is kept."""
PTR_CACHE_SIZE = 4096
"""Client addresses remembered at most (the oldest is dropped first)."""
_MISSING = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


class Resolver(Protocol):
    """What the smtpd asks DNS; implementations never raise for DNS outcomes."""

    async def ptr(self, ip: str) -> str | None:
        """The lower-cased PTR name of *ip* without the final dot; None when there is none."""
        ...

    async def rbl(self, name: str) -> RblAnswer:
        """The A records at *name* (``d.c.b.a.<basedomain>``); ``soft`` when DNS could not answer."""
        ...

    async def mx(self, domain: str) -> MxAnswer:
        """Whether *domain* has a usable mail exchanger (MX hosts with addresses, else A records)."""
        ...


def clean_name(name: str) -> str:
    """A DNS name as TCPREMOTEHOST shows it: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def mx_outcome(mx_hosts: Iterable[str] | None, host_addresses: Mapping[str, bool | None]) -> MxAnswer:
    """Decide the return-MX check from what DNS said (pure; qmail-smtpd(8) MAIL CHECKS step 12).

    Args:
        mx_hosts: the MX exchanges of the domain (``.`` for a null MX); None when it has no MX.
        host_addresses: per exchange (or the domain itself when *mx_hosts* is None): True when it has
            an address, False when it has none, None when the lookup failed temporarily.
    """
    if mx_hosts is not None:
        hosts = [h for h in (clean_name(x) for x in mx_hosts) if h]
        if not hosts:
            return MxAnswer.MISSING  # null MX (".") or none: the domain says it takes no mail
    else:
        hosts = [""]
    results = [host_addresses.get(h) for h in hosts]
    if any(r is True for r in results):
        return MxAnswer.EXISTS
    if any(r is None for r in results):
        return MxAnswer.TEMPFAIL
    return MxAnswer.MISSING


class DnsResolver:
    """:class:`Resolver` over real name servers (``/etc/resolv.conf``) with per-question timeouts."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ptr_timeout: float = DEFAULT_PTR_TIMEOUT,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.ptr_timeout = ptr_timeout
        self._resolver = resolver
        self._ptr_cache: dict[str, tuple[str | None, float]] = {}

    def _get(self) -> dns.asyncresolver.Resolver:
        # created on first use: reading resolv.conf at import or in tests that never ask is wasted work
        if self._resolver is None:
            self._resolver = dns.asyncresolver.Resolver()
        return self._resolver

    def dnspython(self) -> dns.asyncresolver.Resolver | None:
        """The underlying resolver, shared with the SPF/DKIM/DMARC checks; None without resolv.conf."""
        try:
            return self._get()
        except (dns.resolver.NoResolverConfiguration, OSError):
            return None

    async def ptr(self, ip: str) -> str | None:
        """See :meth:`Resolver.ptr`; a timeout or any DNS error is None.

        Answers are kept for their TTL (at most :data:`PTR_CACHE_MAX` seconds; "no such name" for
        :data:`PTR_NEGATIVE_TTL`), errors and timeouts never.  Why: a client that opens one connection
        per message asks the same PTR every time, and on a name server that drops one datagram in a
        hundred every such loss held a greeting for the whole timeout (measured: 5 of 300 lookups
        took 2.1 s on the build machine).
        """
        if self.ptr_timeout <= 0:
            return None
        now = time.monotonic()
        hit = self._ptr_cache.get(ip)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._ptr_cache[ip]
        try:
            name = dns.reversename.from_address(ip)
            answer = await self._get().resolve(name, "PTR", lifetime=self.ptr_timeout)
        except _MISSING:
            self._remember_ptr(ip, None, PTR_NEGATIVE_TTL, now)
            return None
        except (dns.exception.DNSException, ValueError, OSError):
            return None
        found: str | None = None
        for rr in answer:
            text = clean_name(rr.target.to_text())
            if text:
                found = text
                break
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        self._remember_ptr(ip, found, min(ttl, PTR_CACHE_MAX), now)
        return found

    def _remember_ptr(self, ip: str, name: str | None, ttl: float, now: float) -> None:
        if ttl <= 0:
            return
        if len(self._ptr_cache) >= PTR_CACHE_SIZE:
            self._ptr_cache.pop(next(iter(self._ptr_cache)))  # the oldest entry goes first
        self._ptr_cache[ip] = (name, now + ttl)

    async def _addresses(self, name: str, rdtype: str = "A") -> tuple[str, ...] | None:
        """The addresses at *name*: () for NXDOMAIN/no data, None for a temporary failure."""
        try:
            answer = await self._get().resolve(name, rdtype, lifetime=self.timeout, search=False)
        except _MISSING:
            return ()
        except (dns.exception.DNSException, OSError):
            return None
        return tuple(rr.to_text() for rr in answer)

    async def rbl(self, name: str) -> RblAnswer:
        """See :meth:`Resolver.rbl`."""
        found = await self._addresses(name)
        return RblAnswer(soft=True) if found is None else RblAnswer(found)

    async def _has_address(self, host: str) -> bool | None:
        v4 = await self._addresses(host, "A")
        if v4:
            return True
        v6 = await self._addresses(host, "AAAA")
        if v6:
            return True
        return None if v4 is None or v6 is None else False

    async def mx(self, domain: str) -> MxAnswer:
        """See :meth:`Resolver.mx`."""
        try:
            answer = await self._get().resolve(domain, "MX", lifetime=self.timeout, search=False)
            hosts: list[str] | None = [rr.exchange.to_text() for rr in answer]
        except dns.resolver.NXDOMAIN:
            return MxAnswer.MISSING
        except dns.resolver.NoAnswer:
            hosts = None
        except (dns.exception.DNSException, OSError):
            return MxAnswer.TEMPFAIL
        targets = [domain] if hosts is None else hosts
        found: dict[str, bool | None] = {}
        for target in targets:
            key = "" if hosts is None else clean_name(target)
            if key == "" and hosts is not None:
                continue  # null MX, decided by mx_outcome
            found[key] = await self._has_address(target)
        return mx_outcome(hosts, found)


class StaticResolver:
    """:class:`Resolver` answering from tables (tests, or a host without DNS).

    ``ptr`` maps IPs to names; ``a`` maps query names to addresses (absent = NXDOMAIN); names in
    ``soft`` fail temporarily; ``mx`` maps domains to answers (absent = :attr:`MxAnswer.MISSING`).
    Every question asked is recorded in :attr:`asked` as ``(kind, name)``.
    """

    def __init__(
        self,
        *,
        ptr: Mapping[str, str] | None = None,
        a: Mapping[str, Iterable[str]] | None = None,
        soft: Iterable[str] = (),
        mx: Mapping[str, MxAnswer] | None = None,
    ) -> None:
        self._ptr = dict(ptr or {})
        self._a = {k.lower(): tuple(v) for k, v in (a or {}).items()}
        self._soft = frozenset(s.lower() for s in soft)
        self._mx = {k.lower(): v for k, v in (mx or {}).items()}
        self.asked: list[tuple[str, str]] = []

    async def ptr(self, ip: str) -> str | None:
        """The table's name for *ip*, lower-cased."""
        self.asked.append(("ptr", ip))
        name = self._ptr.get(ip)
        return clean_name(name) if name else None

    async def rbl(self, name: str) -> RblAnswer:
        """The table's addresses for *name*."""
        self.asked.append(("a", name))
        key = name.lower()
        if key in self._soft:
            return RblAnswer(soft=True)
        return RblAnswer(self._a.get(key, ()))

    async def mx(self, domain: str) -> MxAnswer:
        """The table's answer for *domain*."""
        self.asked.append(("mx", domain))
        return self._mx.get(domain.lower(), MxAnswer.MISSING)

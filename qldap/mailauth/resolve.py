"""The DNS seam of the inbound checks: TXT, address, MX and PTR answers with "temporary" kept apart.

Why a seam of its own: SPF, DKIM and DMARC each need to tell three outcomes apart — records,
"no such name / no data" (a definite answer, which SPF counts as a *void lookup*), and "could not
ask" (timeout, SERVFAIL, refused: ``temperror``, which must never become a permanent rejection).
:class:`Dns` asks through a dnspython asyncio resolver handed in by the caller — the smtpd passes
the one its own DNS questions use (``/etc/resolv.conf`` by default), tests pass one pointed at a
loopback name server — so there is one resolver configuration for the whole daemon.

Answers are kept in a small in-process cache for their TTL (at most :data:`MAX_TTL` seconds; "no
such name / no data" for :data:`NEGATIVE_TTL`), since the same sender domains, SPF includes and
DKIM keys come back message after message and one DNS round trip costs the daemon about half a
millisecond of CPU in dnspython.  A temporary failure is never cached.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

DEFAULT_TIMEOUT = 5.0
MAX_TTL = 3600
NEGATIVE_TTL = 60
CACHE_SIZE = 4096
_Value = tuple[bytes, ...] | tuple[str, ...] | None


class DnsTempError(Exception):
    """The name server could not answer (timeout, SERVFAIL, no server): a temporary error."""


class Dns:
    """Asynchronous DNS questions for the checks; each method raises :class:`DnsTempError` on trouble.

    ``None`` means NXDOMAIN, an empty tuple "the name exists but has no such records".
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        source: Callable[[], dns.asyncresolver.Resolver | None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._source = source  # asked on first use (the daemon's resolver reads resolv.conf lazily)
        self.timeout = timeout
        self.queries = 0  # questions sent to a name server, for tests and the benchmark
        self._cache: dict[tuple[str, str], tuple[float, _Value]] = {}
        self._cache_size = cache_size
        self._clock = clock

    def _cached(self, key: tuple[str, str]) -> tuple[bool, _Value]:
        hit = self._cache.get(key)
        if hit is None:
            return False, None
        if hit[0] < self._clock():
            del self._cache[key]
            return False, None
        return True, hit[1]

    def _keep(self, key: tuple[str, str], value: _Value, answer: dns.resolver.Answer | None) -> None:
        if self._cache_size <= 0:
            return
        ttl = NEGATIVE_TTL if answer is None or answer.rrset is None else min(answer.rrset.ttl, MAX_TTL)
        if len(self._cache) >= self._cache_size:  # drop the oldest half (insertion order)
            for old in list(self._cache)[: self._cache_size // 2]:
                del self._cache[old]
        self._cache[key] = (self._clock() + ttl, value)

    def _get(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None and self._source is not None:
            self._resolver, self._source = self._source(), None
        if self._resolver is None:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                raise DnsTempError(f"no resolver configuration: {exc}") from None
        return self._resolver

    async def _ask(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        self.queries += 1
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return None  # not a name at all: nothing can be there
        try:
            return await self._get().resolve(qname, rdtype, lifetime=self.timeout, search=False,
                                             raise_on_no_answer=False)  # fmt: skip
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.YXDOMAIN:
            return None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTempError(f"{name}/{rdtype}: {type(exc).__name__}") from None

    async def txt(self, name: str) -> tuple[bytes, ...] | None:
        """The TXT records at *name*, each one's character strings joined."""
        key = (name.lower(), "TXT")
        hit, value = self._cached(key)
        if hit:
            return value  # type: ignore[return-value]
        answer = await self._ask(name, "TXT")
        found = None if answer is None else tuple(b"".join(rr.strings) for rr in answer.rrset or ())
        self._keep(key, found, answer)
        return found

    async def addresses(self, name: str, ipv6: bool) -> tuple[str, ...] | None:
        """The A (or AAAA when *ipv6*) records at *name*."""
        rdtype = "AAAA" if ipv6 else "A"
        key = (name.lower(), rdtype)
        hit, value = self._cached(key)
        if hit:
            return value  # type: ignore[return-value]
        answer = await self._ask(name, rdtype)
        found = None if answer is None else tuple(rr.address for rr in answer.rrset or ())
        self._keep(key, found, answer)
        return found

    async def mx(self, name: str) -> tuple[str, ...] | None:
        """The MX exchanges at *name*, lowest preference first, without the final dot."""
        key = (name.lower(), "MX")
        hit, value = self._cached(key)
        if hit:
            return value  # type: ignore[return-value]
        answer = await self._ask(name, "MX")
        found = None
        if answer is not None:
            ranked = sorted((rr.preference, rr.exchange.to_text().rstrip(".")) for rr in answer.rrset or ())
            found = tuple(host for _pref, host in ranked)
        self._keep(key, found, answer)
        return found

    async def ptr(self, ip: str) -> tuple[str, ...] | None:
        """The PTR names of *ip*, without the final dot."""
        try:
            name = dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()
        except ValueError:
            return None
        key = (name, "PTR")
        hit, value = self._cached(key)
        if hit:
            return value  # type: ignore[return-value]
        answer = await self._ask(name, "PTR")
        found = None
        if answer is not None:
            found = tuple(rr.target.to_text().rstrip(".") for rr in answer.rrset or ())
        self._keep(key, found, answer)
        return found

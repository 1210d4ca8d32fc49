"""The DNS seam of the inbound checks: TXT, address, MX and PTR answers with "temporary" kept apart.

Why a seam of its own: SPF, DKIM and DMARC each need to tell three outcomes apart — records,
"no such name / no data" (a definite answer, which SPF counts as a *void lookup*), and "could not
ask" (timeout, SERVFAIL, refused: ``temperror``, which must never become a permanent rejection).
:class:`Dns` asks through a dnspython asyncio resolver handed in by the caller — the smtpd passes
the one its own DNS questions use (``/etc/resolv.conf`` by default), tests pass one pointed at a
loopback name server — so there is one resolver configuration for the whole daemon.
"""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

DEFAULT_TIMEOUT = 5.0


class DnsTempError(Exception):
    """The name server could not answer (timeout, SERVFAIL, no server): a temporary error."""


class Dns:
    """Asynchronous DNS questions for the checks; each method raises :class:`DnsTempError` on trouble.

    ``None`` means NXDOMAIN, an empty tuple "the name exists but has no such records".
    """

    def __init__(
        self, resolver: dns.asyncresolver.Resolver | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._resolver = resolver
        self.timeout = timeout
        self.queries = 0  # questions asked, for tests and the benchmark

    def _get(self) -> dns.asyncresolver.Resolver:
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
        answer = await self._ask(name, "TXT")
        if answer is None:
            return None
        return tuple(b"".join(rr.strings) for rr in answer.rrset or ())

    async def addresses(self, name: str, ipv6: bool) -> tuple[str, ...] | None:
        """The A (or AAAA when *ipv6*) records at *name*."""
        answer = await self._ask(name, "AAAA" if ipv6 else "A")
        if answer is None:
            return None
        return tuple(rr.address for rr in answer.rrset or ())

    async def mx(self, name: str) -> tuple[str, ...] | None:
        """The MX exchanges at *name*, lowest preference first, without the final dot."""
        answer = await self._ask(name, "MX")
        if answer is None:
            return None
        ranked = sorted((rr.preference, rr.exchange.to_text().rstrip(".")) for rr in answer.rrset or ())
        return tuple(host for _pref, host in ranked)

    async def ptr(self, ip: str) -> tuple[str, ...] | None:
        """The PTR names of *ip*, without the final dot."""
        try:
            name = dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()
        except ValueError:
            return None
        answer = await self._ask(name, "PTR")
        if answer is None:
            return None
        return tuple(rr.target.to_text().rstrip(".") for rr in answer.rrset or ())

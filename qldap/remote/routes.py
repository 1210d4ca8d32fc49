"""Where a remote message goes: ``smtproutes`` lookup and MX/address choice from DNS answers (qmail-send(8),
REMOTE DELIVERY).

Why DNS answers come in as data: the choice (preference order, random order among equals, the A
fallback, the self-MX rule and the exact failure texts) is policy that must be testable without a
resolver; the asyncio glue asks :func:`address_queries` which names to resolve, resolves them, and
hands the answers to :func:`select_targets`.  Failures raise :class:`TemporaryFailure` or
:class:`PermanentFailure` carrying qmail-remote's exact text.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from qldap.errors import PermanentFailure, TemporaryFailure

DEFAULT_PORT = 25
ME_WILDCARD = "0.0.0.0"

TEMP_DNS = "Sorry, I couldn't find any host by that name. (#4.1.2)"
NO_MX = "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)"
AMBIGUOUS_MX = (
    "Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
    "it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)"
)


def perm_dns_text(host: str) -> str:
    """The NXDOMAIN text naming the host that was looked up."""
    return f"Sorry, I couldn't find any host named {host}. (#5.1.2)"


@dataclass(frozen=True, slots=True)
class Credentials:
    """SMTP AUTH LOGIN credentials from an ``smtproutes`` value."""

    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Route:
    """An ``smtproutes`` decision: a fixed relay (``host`` set) or normal MX delivery (``host`` None)."""

    host: str | None = None
    port: int = DEFAULT_PORT
    credentials: Credentials | None = None

    @property
    def is_relay(self) -> bool:
        """True when a relay replaces the MX lookup."""
        return self.host is not None


MX_ROUTE = Route()


def parse_route(value: str) -> Route:
    """Parse an ``smtproutes`` value ``relay[:port][ user password]``; empty relay = MX (qmail-send(8), REMOTE
    DELIVERY).

    Only the text before the first space is ``host[:port]``; the rest is ``user password`` (the
    password is everything after the user's first space).  A port without digits means 25.
    """
    hostport, _, rest = value.partition(" ")
    if not hostport:
        return MX_ROUTE
    host, _, port_text = hostport.partition(":")
    digits = ""
    for ch in port_text:
        if not ch.isdigit():
            break
        digits += ch
    port = int(digits) if digits and 0 < int(digits) < 65536 else DEFAULT_PORT
    credentials = None
    user, _, password = rest.strip(" ").partition(" ")
    if user:
        credentials = Credentials(user, password)
    if not host:
        return MX_ROUTE
    return Route(host, port, credentials)


@dataclass(frozen=True, slots=True)
class SmtpRoutes:
    """The parsed ``smtproutes`` map: lower-cased keys to raw values."""

    table: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> SmtpRoutes:
        """Build from a ``ControlDir.mapping`` result (keys already lower-cased)."""
        return cls(MappingProxyType({k.lower(): v for k, v in mapping.items()}))

    def lookup(self, domain: str) -> Route:
        """The route for *domain*: probe the domain, each dot-suffix, then the empty key."""
        domain = domain.lower()
        for key in _probe_keys(domain):
            value = self.table.get(key)
            if value is not None:
                return parse_route(value)
        return MX_ROUTE


def _probe_keys(domain: str) -> list[str]:
    keys = [domain]
    keys.extend(domain[i:] for i, ch in enumerate(domain) if ch == ".")
    keys.append("")
    return keys


# -- DNS answers as data -----------------------------------------------------------------------


class DnsStatus(Enum):
    """The outcome class of one DNS query."""

    OK = "ok"  # answer section may still be empty (NODATA)
    NXDOMAIN = "nxdomain"
    TEMPFAIL = "tempfail"  # SERVFAIL, timeout, refused


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX answer."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class MxAnswer:
    """The MX query result for the recipient domain."""

    status: DnsStatus
    records: tuple[MxRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class AddressAnswer:
    """The A (and optionally AAAA) query result for one name, addresses in answer order."""

    status: DnsStatus
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try, with the preference of the MX that named it."""

    ip: str
    preference: int
    port: int = DEFAULT_PORT


def ip_literal(host: str) -> str | None:
    """The address of ``1.2.3.4`` or ``[1.2.3.4]`` (also ``[IPv6:…]``), else None."""
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def address_queries(domain: str, route: Route, mx: MxAnswer | None) -> tuple[str, ...]:
    """The names whose addresses the glue must resolve next.

    With a relay: the relay (unless it is an IP literal). Without: nothing before the MX answer is
    known (pass ``mx=None`` and query MX for *domain* first, unless *domain* is an IP literal); then
    the MX exchanges, or the domain itself when there is no MX (NODATA or NXDOMAIN).
    """
    if route.host is not None:
        return () if ip_literal(route.host) else (route.host,)
    if ip_literal(domain) or mx is None or mx.status is DnsStatus.TEMPFAIL:
        return ()
    if mx.status is DnsStatus.OK and mx.records:
        seen: list[str] = []
        for rec in mx.records:
            if rec.exchange.lower() not in seen:
                seen.append(rec.exchange.lower())
        return tuple(seen)
    return (domain.lower(),)


def needs_mx_query(domain: str, route: Route) -> bool:
    """True when an MX lookup of *domain* is part of the decision (no relay, no IP literal)."""
    return route.host is None and ip_literal(domain) is None


def _addresses_of(name: str, answer: AddressAnswer | None) -> tuple[tuple[str, ...], bool, bool]:
    """(addresses, soft failure, hard failure) for one name."""
    literal = ip_literal(name)
    if literal is not None:
        return (literal,), False, False
    if answer is None or answer.status is DnsStatus.TEMPFAIL:
        return (), True, False
    if answer.status is DnsStatus.NXDOMAIN:
        return (), False, True
    return answer.addresses, False, False


def select_relay_targets(route: Route, answer: AddressAnswer | None) -> tuple[Target, ...]:
    """Targets for a relay route: its addresses in answer order, no self-MX test.

    Raises:
        PermanentFailure: the relay name does not exist, or has no address.
        TemporaryFailure: the relay lookup failed temporarily.
    """
    assert route.host is not None
    addrs, soft, hard = _addresses_of(route.host, answer)
    if hard:
        raise PermanentFailure(perm_dns_text(route.host))
    if soft:
        raise TemporaryFailure(TEMP_DNS)
    if not addrs:
        raise PermanentFailure(NO_MX)
    return tuple(Target(ip, 0, route.port) for ip in addrs)


def order_exchanges(records: Sequence[MxRecord], rng: random.Random) -> list[MxRecord]:
    """MX records by ascending preference, records of equal preference in random order."""
    groups: dict[int, list[MxRecord]] = {}
    for rec in records:
        groups.setdefault(rec.preference, []).append(rec)
    ordered: list[MxRecord] = []
    for pref in sorted(groups):
        group = list(groups[pref])
        rng.shuffle(group)
        ordered.extend(group)
    return ordered


def select_targets(
    domain: str,
    mx: MxAnswer | None,
    answers: Mapping[str, AddressAnswer],
    my_addresses: frozenset[str],
    rng: random.Random,
    port: int = DEFAULT_PORT,
) -> tuple[Target, ...]:
    """Targets for normal (MX) delivery to *domain*, in the order to try them.

    *answers* maps each lower-cased name from :func:`address_queries` to its address answer.
    *my_addresses* are this host's interface addresses (``0.0.0.0`` always counts as me): only
    addresses with a preference below the best preference of any address that is me are kept.

    Raises:
        PermanentFailure: NXDOMAIN (``#5.1.2``), names without addresses (``#5.4.4``), or this host
            is the best MX (``#5.4.6``).
        TemporaryFailure: a temporary DNS failure left no address at all (``#4.1.2``).
    """
    candidates = _candidates(domain, mx, answers, rng)
    me = my_addresses | {ME_WILDCARD}
    pref_me = min((c.preference for c in candidates if _is_me(c.ip, me)), default=None)
    kept = tuple(
        Target(c.ip, c.preference, port) for c in candidates if pref_me is None or c.preference < pref_me
    )
    if not kept:
        raise PermanentFailure(AMBIGUOUS_MX)
    return kept


def _is_me(ip: str, me: frozenset[str]) -> bool:
    try:
        return str(ipaddress.ip_address(ip)) in me
    except ValueError:
        return False


def _candidates(
    domain: str, mx: MxAnswer | None, answers: Mapping[str, AddressAnswer], rng: random.Random
) -> list[Target]:
    literal = ip_literal(domain)
    if literal is not None:
        return [Target(literal, 0)]
    if mx is None or mx.status is DnsStatus.TEMPFAIL:
        raise TemporaryFailure(TEMP_DNS)
    if mx.status is DnsStatus.OK and mx.records:
        out: list[Target] = []
        soft = False
        for rec in order_exchanges(mx.records, rng):
            addrs, rec_soft, _hard = _addresses_of(rec.exchange, answers.get(rec.exchange.lower()))
            soft = soft or rec_soft
            out.extend(Target(ip, rec.preference) for ip in addrs)
        if not out:
            if soft:
                raise TemporaryFailure(TEMP_DNS)
            raise PermanentFailure(NO_MX)
        return out
    answer = answers.get(domain.lower())
    if answer is None and mx.status is DnsStatus.NXDOMAIN:
        answer = AddressAnswer(DnsStatus.NXDOMAIN)  # the name does not exist for A either
    addrs, soft, hard = _addresses_of(domain, answer)
    if hard:
        raise PermanentFailure(perm_dns_text(domain))
    if soft:
        raise TemporaryFailure(TEMP_DNS)
    if not addrs:
        raise PermanentFailure(NO_MX)
    return [Target(ip, 0) for ip in addrs]

"""SPF (RFC 7208): is this client IP authorised to send for the MAIL FROM (or HELO) domain?

Why our own evaluator and not pyspf: the checks must ask through the daemon's one dnspython resolver
(:class:`~qldap.mailauth.resolve.Dns`, asynchronous, pointed at a loopback server in tests) and keep
"could not ask" apart from "no such name" so DNS trouble ends in ``temperror`` and never in a
rejection.  The record is parsed completely before it is evaluated (section 4.6: a syntax error anywhere is
``permerror``), mechanisms are tried left to right, and the limits of section 4.6.4 hold for the whole
evaluation, includes and redirects included: at most 10 DNS-querying terms (include, a, mx, ptr,
exists, redirect), at most 10 MX or PTR names per term, at most 2 void lookups.

:func:`check_host` is the RFC's function; :func:`check_sender` applies it to the SMTP identities as
sections 2.3 and 2.4 say: for a null reverse-path the HELO identity is checked (as
``postmaster@helo``) and its result is the MAIL FROM result.  Macros (section 7) are expanded,
``p`` as ``unknown`` (its use is discouraged by the RFC and it costs lookups), and ``exp=``
explanations are fetched on ``fail``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from qldap.address import split_address
from qldap.mailauth.resolve import Dns, DnsTempError

MAX_LOOKUPS = 10
MAX_VOID = 2
MAX_NAMES = 10  # MX or PTR names looked at per term


class SpfResult(enum.Enum):
    """The results of section 2.6, spelled as Authentication-Results wants them."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIERS = {"+": SpfResult.PASS, "-": SpfResult.FAIL, "~": SpfResult.SOFTFAIL, "?": SpfResult.NEUTRAL}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
_MACRO = re.compile(r"%(?:\{([slodiphvcrtSLODIPHVCRT])(\d*)(r?)([.\-+,/_=]*)\}|(%)|(_)|(-)|(.|\Z))", re.I)
_CIDR = re.compile(r"(.*?)(?:/(\d+))?(?://(\d+))?\Z")


class _PermError(Exception):
    """The record (or one it includes) is broken: ``permerror``."""


class _TempError(Exception):
    """DNS could not answer: ``temperror``."""


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """The result of one check, for the Authentication-Results header and the logs."""

    result: SpfResult
    identity: str  # smtp.mailfrom (the sender, or postmaster@helo) or smtp.helo
    domain: str
    reason: str = ""
    explanation: str = ""
    helo: bool = False  # the identity checked was the HELO name
    helo_result: SpfResult | None = None  # the separate HELO check done first (section 2.3)
    helo_name: str = ""


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: SpfResult
    name: str
    spec: str | None  # domain-spec (unexpanded) or ip text
    cidr4: int | None = None
    cidr6: int | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    terms: tuple[_Term, ...]
    redirect: str | None
    exp: str | None


@dataclass(slots=True)
class _State:
    """What one evaluation carries through includes and redirects."""

    dns: Dns
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    lookups: int = 0
    void: int = 0
    now: float = field(default_factory=time.time)

    def count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError("more than 10 DNS lookups")

    def void_answer(self) -> None:
        self.void += 1
        if self.void > MAX_VOID:
            raise _PermError("more than 2 void lookups")


def valid_domain(name: str) -> bool:
    """section 4.3: a usable domain — dotted, labels of 1–63 octets, no empty label, not an IP literal."""
    name = name.rstrip(".")
    if not name or len(name) > 253 or "." not in name:
        return False
    labels = name.split(".")
    if any(not 0 < len(label) <= 63 for label in labels):
        return False
    return not labels[-1].isdigit()


def _check_macros(text: str, exp: bool) -> None:
    for m in _MACRO.finditer(text):
        if m.group(8) is not None:
            raise _PermError(f"bad macro in {text!r}")
        letter = m.group(1)
        if letter and letter.lower() in "crt" and not exp:
            raise _PermError(f"macro %{{{letter}}} only allowed in exp")


def _plen(text: str | None, maximum: int, where: str) -> int | None:
    """A prefix length: digits without a leading zero, at most *maximum* (section 5.6)."""
    if text is None:
        return None
    if not text.isdigit() or (text.startswith("0") and text != "0") or int(text) > maximum:
        raise _PermError(f"bad prefix length in {where}")
    return int(text)


def _parse_cidr(rest: str, name: str) -> tuple[str | None, int | None, int | None]:
    m = _CIDR.match(rest)
    assert m is not None
    return (m.group(1) or None), _plen(m.group(2), 32, name), _plen(m.group(3), 128, name)


def parse_record(text: str) -> _Record:
    """Parse one ``v=spf1`` record (section 4.6, section 5, section 6); raises on any syntax error.

    Raises:
        _PermError: unknown mechanism, bad prefix length, bad macro, repeated redirect/exp.
    """
    parts = text.split(" ")
    terms: list[_Term] = []
    redirect = exp = None
    for part in parts[1:]:
        if not part:
            continue
        name_match = re.match(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)\Z", part)
        if name_match is not None:
            name, value = name_match.group(1).lower(), name_match.group(2)
            _check_macros(value, exp=False)
            if name == "redirect":
                if redirect is not None or not value:
                    raise _PermError("bad redirect modifier")
                redirect = value
            elif name == "exp":
                if exp is not None or not value:
                    raise _PermError("bad exp modifier")
                exp = value
            continue  # unknown modifiers are ignored (section 6)
        qualifier = _QUALIFIERS.get(part[0])
        body = part[1:] if qualifier is not None else part
        qualifier = qualifier or SpfResult.PASS
        m = re.match(r"([A-Za-z0-9]+)(.*)\Z", body)
        if m is None or m.group(1).lower() not in _MECHANISMS:
            raise _PermError(f"unknown mechanism {part!r}")
        mech, rest = m.group(1).lower(), m.group(2)
        terms.append(_mechanism(qualifier, mech, rest, part))
    return _Record(tuple(terms), redirect, exp)


def _mechanism(qualifier: SpfResult, mech: str, rest: str, part: str) -> _Term:
    if mech == "all":
        if rest:
            raise _PermError(f"bad term {part!r}")
        return _Term(qualifier, mech, None)
    if mech in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise _PermError(f"bad term {part!r}")
        addr, slash, plen = rest[1:].partition("/")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise _PermError(f"bad address in {part!r}") from None
        if ip.version != (4 if mech == "ip4" else 6):
            raise _PermError(f"bad address in {part!r}")
        length = _plen(plen, ip.max_prefixlen, part) if slash else ip.max_prefixlen
        if mech == "ip4":
            return _Term(qualifier, mech, addr, cidr4=length)
        return _Term(qualifier, mech, addr, cidr6=length)
    if mech in ("a", "mx"):
        spec, v4, v6 = _parse_cidr(rest, part)
        if spec is not None:
            if not spec.startswith(":") or len(spec) == 1:
                raise _PermError(f"bad term {part!r}")
            spec = spec[1:]
            _check_macros(spec, exp=False)
        return _Term(qualifier, mech, spec, v4, v6)
    # include, exists need a domain-spec; ptr takes an optional one
    if not rest:
        if mech == "ptr":
            return _Term(qualifier, mech, None)
        raise _PermError(f"{mech} needs a domain")
    if not rest.startswith(":") or len(rest) == 1:
        raise _PermError(f"bad term {part!r}")
    _check_macros(rest[1:], exp=False)
    return _Term(qualifier, mech, rest[1:])


# -- macros (section 7) ---------------------------------------------------------------------------------
def _macro_value(letter: str, st: _State, domain: str) -> str:
    local, sdomain = split_address(st.sender)
    ip = st.ip
    match letter:
        case "s":
            return st.sender
        case "l":
            return local or "postmaster"
        case "o":
            return sdomain
        case "d":
            return domain
        case "i":
            if ip.version == 4:
                return str(ip)
            return ".".join(ip.exploded.replace(":", ""))
        case "p":
            return "unknown"
        case "v":
            return "in-addr" if ip.version == 4 else "ip6"
        case "h":
            return st.helo
        case "c":
            return str(ip)
        case "r":
            return "unknown"
        case _:  # "t"
            return str(int(st.now))


def expand(text: str, st: _State, domain: str, *, exp: bool = False) -> str:
    """Expand the macros of a domain-spec or an explanation string (section 7.3, section 7.4)."""

    def one(m: re.Match[str]) -> str:
        if m.group(5):
            return "%"
        if m.group(6):
            return " "
        if m.group(7):
            return "%20"
        if m.group(8) is not None:
            raise _PermError(f"bad macro in {text!r}")
        letter = m.group(1)
        if letter.lower() in "crt" and not exp:
            raise _PermError(f"macro %{{{letter}}} only allowed in exp")
        value = _macro_value(letter.lower(), st, domain)
        delims = m.group(4) or "."
        pieces = re.split("[" + re.escape(delims) + "]", value)
        if m.group(3):
            pieces.reverse()
        if m.group(2):
            keep = int(m.group(2))
            if keep == 0:
                raise _PermError("macro transformer of 0")
            pieces = pieces[-keep:]
        out = ".".join(pieces)
        if letter.isupper():
            out = urllib.parse.quote(out, safe="")
        return out

    result = _MACRO.sub(one, text)
    if not exp:
        while len(result) > 253 and "." in result:  # section 7.3: drop labels from the left
            result = result.split(".", 1)[1]
    return result


# -- evaluation (sections 4 and 5) -----------------------------------------------------------------
async def _record_text(st: _State, domain: str) -> str | None:
    try:
        records = await st.dns.txt(domain)
    except DnsTempError as exc:
        raise _TempError(str(exc)) from None
    if records is None:
        return None
    found = [r.decode("utf-8", "replace") for r in records]
    spf = [r for r in found if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if len(spf) > 1:
        raise _PermError(f"{domain} publishes {len(spf)} SPF records")
    return spf[0] if spf else None


def _in_network(target: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, term: _Term) -> bool:
    try:
        addr = ipaddress.ip_address(target)
    except ValueError:
        return False
    if addr.version != ip.version:
        return False
    plen = (term.cidr4 if ip.version == 4 else term.cidr6)
    plen = addr.max_prefixlen if plen is None else plen
    return ip in ipaddress.ip_network(f"{addr}/{plen}", strict=False)


async def _addresses(st: _State, name: str, *, count_void: bool = True) -> tuple[str, ...]:
    try:
        found = await st.dns.addresses(name, st.ip.version == 6)
    except DnsTempError as exc:
        raise _TempError(str(exc)) from None
    if not found and count_void:
        st.void_answer()
    return found or ()


async def _matches(st: _State, term: _Term, domain: str) -> bool:
    """Does *term* match the client (section 5)?  Raises _PermError/_TempError."""
    ip = st.ip
    name = term.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        return _in_network(term.spec or "", ip, term)
    st.count()
    target = expand(term.spec, st, domain) if term.spec is not None else domain
    if name == "include":
        inner = await _check(st, target)
        if inner.result is SpfResult.PASS:
            return True
        if inner.result in (SpfResult.FAIL, SpfResult.SOFTFAIL, SpfResult.NEUTRAL):
            return False
        if inner.result is SpfResult.TEMPERROR:
            raise _TempError(inner.reason)
        raise _PermError(f"include:{target} gave {inner.result.value}")
    if name == "a":
        return any(_in_network(a, ip, term) for a in await _addresses(st, target))
    if name == "mx":
        try:
            hosts = await st.dns.mx(target)
        except DnsTempError as exc:
            raise _TempError(str(exc)) from None
        if not hosts:
            st.void_answer()
            return False
        if len(hosts) > MAX_NAMES:
            raise _PermError(f"{target} has more than 10 MX records")
        for host in hosts:
            if any(_in_network(a, ip, term) for a in await _addresses(st, host, count_void=False)):
                return True
        return False
    if name == "ptr":
        return await _ptr_matches(st, target)
    # exists: an A query whatever the client's address family
    try:
        found = await st.dns.addresses(target, False)
    except DnsTempError as exc:
        raise _TempError(str(exc)) from None
    if not found:
        st.void_answer()
    return bool(found)


async def _ptr_matches(st: _State, target: str) -> bool:
    """section 5.5: a validated PTR name of the client equal to or under *target*."""
    try:
        names = await st.dns.ptr(str(st.ip))
    except DnsTempError:
        return False  # section 5.5: errors during ptr make it not match
    if not names:
        st.void_answer()
        return False
    target = target.lower().rstrip(".")
    for name in names[:MAX_NAMES]:
        lowered = name.lower()
        if lowered != target and not lowered.endswith("." + target):
            continue
        try:
            if str(st.ip) in (await st.dns.addresses(name, st.ip.version == 6) or ()):
                return True
        except DnsTempError:
            continue
    return False


async def _explain(st: _State, record: _Record, domain: str) -> str:
    if record.exp is None:
        return ""
    try:
        target = expand(record.exp, st, domain)
        texts = await st.dns.txt(target) if valid_domain(target) else None
    except (_PermError, DnsTempError):
        return ""
    if not texts or len(texts) != 1:
        return ""
    try:
        return expand(texts[0].decode("ascii"), st, domain, exp=True)
    except (_PermError, UnicodeDecodeError):
        return ""


async def _check(st: _State, domain: str) -> SpfOutcome:
    identity = st.sender
    if not valid_domain(domain):
        return SpfOutcome(SpfResult.NONE, identity, domain, "not a usable domain")
    try:
        text = await _record_text(st, domain)
        if text is None:
            return SpfOutcome(SpfResult.NONE, identity, domain, "no SPF record")
        record = parse_record(text)
        for term in record.terms:
            if await _matches(st, term, domain):
                explanation = await _explain(st, record, domain) if term.qualifier is SpfResult.FAIL else ""
                return SpfOutcome(term.qualifier, identity, domain, f"matched {term.name}", explanation)
        if record.redirect is not None:
            st.count()
            target = expand(record.redirect, st, domain)
            inner = await _check(st, target)
            if inner.result is SpfResult.NONE:
                return SpfOutcome(SpfResult.PERMERROR, identity, domain, f"redirect to {target}: no record")
            return inner
        return SpfOutcome(SpfResult.NEUTRAL, identity, domain, "no mechanism matched")
    except _PermError as exc:
        return SpfOutcome(SpfResult.PERMERROR, identity, domain, str(exc))
    except _TempError as exc:
        return SpfOutcome(SpfResult.TEMPERROR, identity, domain, str(exc))


async def check_host(dns: Dns, ip: str, domain: str, sender: str, helo: str = "") -> SpfOutcome:
    """section 4: the result of *domain*'s policy for client *ip* and *sender*.

    A *sender* without a local part is taken as ``postmaster@domain`` (section 4.3).
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return SpfOutcome(SpfResult.NONE, sender, domain, f"client address {ip!r} unusable")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if "@" not in sender:
        sender = "postmaster@" + domain
    elif sender.startswith("@"):
        sender = "postmaster" + sender
    st = _State(dns, addr, sender, helo)
    return await _check(st, domain.rstrip(".").lower())


async def check_sender(dns: Dns, ip: str, helo: str, sender: str) -> SpfOutcome:
    """Sections 2.3 and 2.4: the HELO identity is checked first (when it is a domain name), then
    the MAIL FROM identity; for a null sender the HELO result is the MAIL FROM result.

    The HELO result of a non-null sender rides along in ``helo_result`` (reported, not acted on:
    DMARC and the reject words judge the MAIL FROM identity).
    """
    helo_outcome = None
    if valid_domain(helo):
        helo_outcome = await check_host(dns, ip, helo, "postmaster@" + helo, helo)
    if not sender:
        if helo_outcome is None:
            return SpfOutcome(SpfResult.NONE, helo, helo, "no usable HELO name", helo=True)
        o = helo_outcome
        return SpfOutcome(o.result, helo, helo, o.reason, o.explanation, helo=True)
    domain = split_address(sender)[1]
    outcome = await check_host(dns, ip, domain, sender, helo)
    return SpfOutcome(outcome.result, sender, domain, outcome.reason, outcome.explanation,
                      helo_result=helo_outcome.result if helo_outcome is not None else None,
                      helo_name=helo)  # fmt: skip

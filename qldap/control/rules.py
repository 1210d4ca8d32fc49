"""Per-client-IP rules (tcprules format): parse the text file, pick the rule for a connection.

Replaces tcpserver's ``-x qmail-smtpd.cdb`` (qmail-smtpd(8), CLIENT RULES).  Each line is
``address:instructions``; instructions are ``allow`` or ``deny`` followed by ``,VAR="value"`` items, where any
character repeated around the value may stand in for ``"``.  Addresses: an IP (``1.2.3.4``), a prefix ending
in
``.`` (``10.``) or for IPv6 in ``:``, ranges (``1.2.3.4-9``, ``10.2-3.``), CIDR (``10.0.0.0/8``), a
host (``=mx.example.com``), a host suffix (``=.example.com``), any known host (``=``), everything
(empty), each optionally prefixed by ``<info>@``.  The most specific rule wins, in the order
(1)–(8) of qmail-smtpd(8), CLIENT RULES; CIDR entries rank among the dotted prefixes by prefix length.

Why an unparsable file is an error and not "allow all": the file usually *denies* someone or grants
RELAYCLIENT to someone; silently ignoring a typo would open or close the relay by accident.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from qldap.address import Address
from qldap.control.files import Signature, path_signature
from qldap.errors import ConfigError

MAX_EXPANSION = 65536  # addresses a single range line may expand to
MEMO_SIZE = 4096
"""Clients whose rule :meth:`RulesFile.match` remembers while the file is unchanged: the same
clients connect again and again, and matching parses the address and tries every prefix."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RulesError(ConfigError):
    """The rules file cannot be read or parsed; connections are refused until it is fixed."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: the address it was written for, allow/deny and the variables it sets, in order."""

    address: str
    allow: bool
    env: tuple[tuple[str, str], ...] = ()
    line: int = 0

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """*base* (service defaults + TCP facts) overridden by this rule's variables."""
        merged = dict(base)
        merged.update(self.env)
        return merged


@dataclass(frozen=True, slots=True)
class Rules:
    """A parsed rules file: exact-text keys (as the cdb held them) and CIDR networks."""

    exact: Mapping[str, Rule] = field(default_factory=dict)
    networks: tuple[tuple[Network, Rule], ...] = ()


EMPTY = Rules()


def parse_rules(text: str, *, source: str = "rules") -> Rules:
    """Parse a whole rules file; the first rule for an address wins, as in tcprules' cdb.

    Raises:
        RulesError: a line is not ``address:allow|deny[,VAR=qvalueq]…`` or an address is malformed.
    """
    exact: dict[str, Rule] = {}
    networks: list[tuple[Network, Rule]] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            address, allow, env = _split_line(line)
            if "/" in address:
                net = ipaddress.ip_network(address, strict=False)
                networks.append((net, Rule(address, allow, env, number)))
                continue
            for key in _expand(address):
                exact.setdefault(key, Rule(key, allow, env, number))
        except ValueError as exc:
            raise RulesError(f"{source}:{number}: {exc}") from None
    return Rules(exact, tuple(networks))


def _split_line(line: str) -> tuple[str, bool, tuple[tuple[str, str], ...]]:
    """Split at the ``:`` that begins the instructions (IPv6 addresses contain ``:`` themselves)."""
    pos = line.find(":")
    while pos >= 0:
        rest = line[pos + 1 :]
        for word, allow in (("allow", True), ("deny", False)):
            if rest.startswith(word) and rest[len(word) : len(word) + 1] in ("", ","):
                return line[:pos], allow, _variables(rest[len(word) :])
        pos = line.find(":", pos + 1)
    raise ValueError("expected address:allow or address:deny")


def _variables(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos] != ",":
            raise ValueError(f"expected ',' before {text[pos:]!r}")
        eq = text.find("=", pos)
        name = text[pos + 1 : eq] if eq >= 0 else ""
        if not name or "," in name:
            raise ValueError(f'expected ,VAR="value" at {text[pos:]!r}')
        if eq + 1 >= len(text):
            raise ValueError(f"missing quoted value for {name}")
        quote = text[eq + 1]
        end = text.find(quote, eq + 2)
        if end < 0:
            raise ValueError(f"unterminated value for {name}")
        out.append((name, text[eq + 2 : end]))
        pos = end + 1
    return tuple(out)


def _expand(address: str) -> list[str]:
    """The cdb keys of one address: ranges expanded, IPv6 in canonical form, hosts lowercased."""
    parsed = Address.parse(address)
    target = parsed.domain if parsed.has_at else address
    prefix = parsed.local + "@" if parsed.has_at else ""
    if target.startswith("="):
        return [prefix + target.lower()]
    if ":" in target:
        return [prefix + _ipv6_key(target)]
    parts = target.split(".")
    choices: list[list[str]] = []
    for part in parts:
        lo, dash, hi = part.partition("-")
        if dash:
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi) or int(hi) > 255:
                raise ValueError(f"bad range {part!r}")
            choices.append([str(n) for n in range(int(lo), int(hi) + 1)])
        elif part and (not part.isdigit() or int(part) > 255):
            raise ValueError(f"bad address {target!r}")
        else:
            choices.append([part])
    total = 1
    for c in choices:
        total *= len(c)
    if total > MAX_EXPANSION:
        raise ValueError(f"range {target!r} expands to too many addresses")
    return [prefix + ".".join(combo) for combo in itertools.product(*choices)]


def _ipv6_key(text: str) -> str:
    """A full IPv6 address in canonical text; a prefix (ending in ``:``) lowercased as written."""
    if text.endswith(":") and not text.endswith("::"):
        return text.lower()
    if text.endswith("::") and text.count("::") == 1 and text.count(":") < 8:
        # "2001:db8::" is a prefix of "2001:db8::1" as well as the address 2001:db8:: itself
        return text.lower()
    return str(ipaddress.IPv6Address(text))


def canonical_ip(ip: str) -> str:
    """The client address as rules see it: dotted quad, or canonical (compressed, lower) IPv6."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def match(rules: Rules, ip: str, host: str | None = None, info: str | None = None) -> Rule | None:
    """The rule for a client, most specific first (qmail-smtpd(8) CLIENT RULES order (1)–(8)); None = no
    rule."""
    ip = canonical_ip(ip)
    host = host.lower() if host else None
    exact = rules.exact
    keys: list[str] = []
    if info:
        keys.append(f"{info}@{ip}")
        if host:
            keys.append(f"{info}@={host}")
    keys.append(ip)
    if host:
        keys.append(f"={host}")
    for key in keys:
        if key in exact:
            return exact[key]
    best = _best_prefix(rules, ip)
    if best is not None:
        return best
    if host:
        for i, ch in enumerate(host):
            if ch == "." and f"={host[i:]}" in exact:
                return exact[f"={host[i:]}"]
        if "=" in exact:
            return exact["="]
    return exact.get("")


def _best_prefix(rules: Rules, ip: str) -> Rule | None:
    """Step (5): the longest textual prefix or CIDR network containing *ip*, by prefix length."""
    candidates: list[tuple[int, int, int, Rule]] = []
    for bits, text in _textual_prefixes(ip):
        rule = rules.exact.get(text)
        if rule is not None:
            candidates.append((-bits, 0, rule.line, rule))
    if rules.networks:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            addr = None
        if addr is not None:
            for net, rule in rules.networks:
                if net.version == addr.version and addr in net:
                    candidates.append((-net.prefixlen, 1, rule.line, rule))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[:3])[3]


def _textual_prefixes(ip: str) -> list[tuple[int, str]]:
    """``(bits, prefix)`` for each prefix of *ip* ending in its separator, longest first."""
    sep = ":" if ":" in ip else "."
    out: list[tuple[int, str]] = []
    for i in range(len(ip) - 2, 0, -1):
        if ip[i] != sep:
            continue
        prefix = ip[: i + 1]
        if sep == ".":
            bits = 8 * prefix.count(".")
        elif "::" in prefix:
            suffix = ip[i + 1 :]
            bits = 16 * (8 - (len(suffix.split(":")) if suffix else 0))
        else:
            bits = 16 * prefix.count(":")
        out.append((bits, prefix))
    return out


class RulesFile:
    """A rules file re-parsed whenever its stat signature changes (qmail-smtpd(8), CLIENT RULES)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._sig: Signature | None = None
        self._rules: Rules | RulesError = EMPTY
        self._memo: dict[tuple[str, str | None, str | None], Rule | None] = {}  # for self._rules

    def current(self) -> Rules:
        """The rules now in force; an absent file allows everyone (no rule matches).

        Raises:
            RulesError: the file cannot be read or parsed (raised again until it changes).
        """
        sig = path_signature(self.path)
        with self._lock:
            if sig != self._sig:
                self._rules = self._load(sig)
                self._sig = sig
                self._memo = {}
            rules = self._rules
        if isinstance(rules, RulesError):
            raise rules
        return rules

    def _load(self, sig: Signature) -> Rules | RulesError:
        if sig[1] < 0:
            return EMPTY
        try:
            with open(self.path, "rb") as fh:
                text = fh.read().decode("utf-8", "surrogateescape")
        except OSError as exc:
            return RulesError(f"unable to read {self.path}: {exc.strerror}")
        try:
            return parse_rules(text, source=self.path)
        except RulesError as exc:
            return exc

    def match(self, ip: str, host: str | None = None, info: str | None = None) -> Rule | None:
        """:func:`match` against :meth:`current`.

        Raises:
            RulesError: as :meth:`current`.
        """
        rules = self.current()
        key = (ip, host, info)
        memo = self._memo  # the answers for the rules just returned (replaced with them)
        if key in memo and rules is self._rules:
            return memo[key]
        rule = match(rules, ip, host, info)
        with self._lock:
            if rules is self._rules:
                if len(self._memo) >= MEMO_SIZE:
                    self._memo = {}
                self._memo[key] = rule
        return rule

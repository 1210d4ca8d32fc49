"""The queue manager's and remote delivery's settings, read once from ``control/`` into a frozen record.

Why one frozen record: the manager reads its control files at start and swaps in a new record on
SIGHUP (old values stay when the reload fails), so every pure decision (rewriting, scheduling,
bounces, routes) takes a ``SendConfig`` and never touches files.  The one live part is the
"is this domain local" check: ``locals.cdb`` is consulted per lookup (its changes need no HUP), so
it is a callable seam; :meth:`SendConfig.from_control` falls back to the plain ``locals`` list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qldap.control.files import ControlDir
from qldap.errors import ConfigError, TemporaryFailure
from qldap.remote.routes import SmtpRoutes

SPAWNER_LIMIT = 500
COOKIE_LENGTH = 32

IsLocal = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class LocalsList:
    """``control/locals`` as a set of lower-cased domains (default: ``me``)."""

    domains: frozenset[str]

    def contains(self, domain: str) -> bool:
        """True when *domain* (any case) is listed."""
        return domain.lower() in self.domains


def _capped(value: int) -> int:
    return min(value, SPAWNER_LIMIT)


def _custom_bounce_text(ctl: ControlDir) -> str | None:
    text = ctl.read_text("custombouncetext")
    if not text:
        return None
    body = text if text.endswith("\n") else text + "\n"
    if "\n\n" in body or body.startswith("\n"):
        raise ConfigError("control/custombouncetext must not contain an empty line")
    return body


def _cookie(ctl: ControlDir) -> str:
    value = ctl.line("smtpclustercookie")
    return (value or "")[:COOKIE_LENGTH]


@dataclass(frozen=True, slots=True)
class SendConfig:
    """Every control value the manager, bounces and remote delivery use, with qmail's defaults."""

    me: str
    is_local: IsLocal = field(compare=False)
    envnoathost: str
    percenthack: frozenset[str] = frozenset()
    virtualdomains: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    concurrencylocal: int = 10
    concurrencyremote: int = 20
    holdlocal: bool = False
    holdremote: bool = False
    queuelifetime: int = 604800
    bouncefrom: str = "MAILER-DAEMON"
    bouncehost: str = ""
    doublebouncehost: str = ""
    doublebounceto: str = "postmaster"
    bouncemaxbytes: int = 0
    custombouncetext: str | None = None
    helohost: str = ""
    timeoutconnect: int = 60
    timeoutremote: int = 120
    outgoingip: str = "0.0.0.0"
    smtproutes: SmtpRoutes = field(default_factory=SmtpRoutes)
    smtpclustercookie: str = ""
    ldapcluster: bool = False
    ldapclusterhosts: tuple[str, ...] = ()
    qmqpservers: tuple[str, ...] = ()

    @classmethod
    def from_control(cls, ctl: ControlDir, is_local: IsLocal | None = None) -> SendConfig:
        """Read every setting from *ctl*.

        *is_local* is the live "is this domain local" check (``Locals(ctl).contains``, which knows
        ``locals.cdb``); without it the ``locals`` list (default ``me``) is used.

        Raises:
            ConfigError: ``me`` is missing, a file is unreadable, ``custombouncetext`` contains an
                empty line, or ``locals.cdb`` exists but no *is_local* check was given.
        """
        me = ctl.me()
        if is_local is None:
            if ctl.exists("locals.cdb"):
                raise ConfigError("control/locals.cdb exists: a locals.cdb lookup must be supplied")
            is_local = LocalsList(frozenset(d.lower() for d in ctl.lines("locals", [me]))).contains
        return cls(
            me=me,
            is_local=is_local,
            envnoathost=ctl.line_or_me("envnoathost"),
            percenthack=frozenset(d.lower() for d in ctl.lines("percenthack")),
            virtualdomains=MappingProxyType(ctl.mapping("virtualdomains")),
            concurrencylocal=_capped(ctl.integer("concurrencylocal", 10)),
            concurrencyremote=_capped(ctl.integer("concurrencyremote", 20)),
            holdlocal=ctl.boolean("holdlocal"),
            holdremote=ctl.boolean("holdremote"),
            queuelifetime=ctl.integer("queuelifetime", 604800),
            bouncefrom=ctl.line("bouncefrom") or "MAILER-DAEMON",
            bouncehost=ctl.line_or_me("bouncehost"),
            doublebouncehost=ctl.line_or_me("doublebouncehost"),
            doublebounceto=ctl.line("doublebounceto", "postmaster") or "",
            bouncemaxbytes=ctl.integer("bouncemaxbytes", 0),
            custombouncetext=_custom_bounce_text(ctl),
            helohost=ctl.line_or_me("helohost"),
            timeoutconnect=ctl.integer("timeoutconnect", 60),
            timeoutremote=ctl.integer("timeoutremote", 120),
            outgoingip=ctl.line("outgoingip") or "0.0.0.0",
            smtproutes=SmtpRoutes.from_mapping(ctl.mapping("smtproutes")),
            smtpclustercookie=_cookie(ctl),
            ldapcluster=ctl.boolean("ldapcluster"),
            ldapclusterhosts=tuple(ctl.lines("ldapclusterhosts")),
            qmqpservers=tuple(ctl.lines("qmqpservers")),
        )

    @property
    def local_slots(self) -> int:
        """Effective local concurrency: 0 when held."""
        return 0 if self.holdlocal else self.concurrencylocal

    @property
    def remote_slots(self) -> int:
        """Effective remote concurrency: 0 when held."""
        return 0 if self.holdremote else self.concurrencyremote

    @property
    def doublebounce_recipient(self) -> str:
        """``doublebounceto@doublebouncehost`` (``@host`` when doublebounceto is empty: discarded)."""
        return f"{self.doublebounceto}@{self.doublebouncehost}"

    @property
    def cluster_hosts(self) -> frozenset[str]:
        """Lower-cased names that mean "this host" for cluster routing: ldapclusterhosts + me."""
        return frozenset(h.lower() for h in (*self.ldapclusterhosts, self.me))

    def bind_address(self) -> str:
        """The local address outgoing connections bind to.

        Raises:
            TemporaryFailure: ``outgoingip`` is not an IP address (``#4.3.0``).
        """
        try:
            return str(ipaddress.ip_address(self.outgoingip))
        except ValueError:
            raise TemporaryFailure("invalid ipaddr in control/outgoingip (#4.3.0)")

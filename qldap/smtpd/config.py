"""Read everything one SMTP session needs into a frozen SmtpdConfig: control files and environment.

Built once per connection (qmail-smtpd(8): control edits apply to the next session) from a
:class:`~qldap.control.files.ControlDir` and the session environment (service defaults, TCP facts and
client-rule variables, already merged by the glue).  After that, policy code reads only this record,
so it stays pure and testable without files.

Environment conventions (qmail-smtpd(8)): a variable is *set* when present, even if empty; numeric values take
the leading digits, junk counts as 0.  The domain questions of qmail-smtpd(8) ACCEPTED DOMAINS ("is this
domain local?", "does rcpthosts accept it?") are passed in as callables — normally ``Locals(ctl).contains``
and
``RcptHosts(ctl).accepts`` — because they are cdb-backed and must stay lazy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qldap.address import Address, leading_digits
from qldap.control.domains import AddressList
from qldap.control.files import ControlDir, ascii_lower
from qldap.errors import ConfigError
from qldap.mailauth.inbound import InboundPolicy, load_policy

DEFAULT_TIMEOUT = 120
DEFAULT_TARPITDELAY = 5
MAX_COOKIE = 32
MAX_LOGLEVEL = 4


class SenderCheck(enum.Enum):
    """SENDERCHECK: unset, set (normal), ``LOOSE`` or ``STRICT`` (any case)."""

    OFF = "off"
    NORMAL = "normal"
    LOOSE = "loose"
    STRICT = "strict"


class RblAction(enum.Enum):
    """What a matching rbllist entry does."""

    REJECT = "reject"
    ADDHEADER = "addheader"


SESSION_MEMO = 64  # domains remembered per session (a harvesting client cannot grow it further)


def per_session(answer: Callable[[str], bool]) -> Callable[[str], bool]:
    """*answer* (a locals or rcpthosts question) remembered for the rest of one SMTP session.

    Why: qmail-smtpd(8) reads its control files once when the connection starts; asking them again
    (a ``stat`` per file and question) for every RCPT of a long session costs system calls and GIL
    hand-overs while the answer cannot change for that session anyway.  An error is not remembered:
    the next question reads the files again.  At most :data:`SESSION_MEMO` domains are kept.
    """
    memo: dict[str, bool] = {}

    def remembered(domain: str) -> bool:
        hit = memo.get(domain)
        if hit is None:
            hit = answer(domain)
            if len(memo) < SESSION_MEMO:
                memo[domain] = hit
        return hit

    return remembered


@dataclass(frozen=True, slots=True)
class RblEntry:
    """One ``rbllist`` line: ``basedomain action matchon message…``."""

    basedomain: str
    action: RblAction
    matchon: str
    message: str


@dataclass(frozen=True, slots=True)
class SmtpdEnv:
    """The session environment variables of qmail-smtpd(8) ENVIRONMENT and the TCP facts of qmail-smtpd(8),
    CLIENT RULES, parsed once."""

    relayclient: str | None = None
    authorized: bool = False
    authrequired: bool = False
    authprepend: str = ""
    smtpauth: bool = False
    auth_tls_required: bool = False
    badrcptdelay: int = 0
    blockrelayprobe: bool = False
    nobounce: bool = False
    sanitycheck: bool = False
    returnmxcheck: bool = False
    maxrcptcount: int = 0
    tarpitcount: int = 0
    tarpitdelay: int = DEFAULT_TARPITDELAY
    ldapsoftok: bool = False
    loglevel: int = 0
    nolocal: bool = False
    nodkimsign: bool = False
    qmailqueue: str | None = None
    rbl: bool = False
    rblonlyheader: bool = False
    rejectexec: bool = False
    rcptcheck: bool = False
    sendercheck: SenderCheck = SenderCheck.OFF
    smtp550disconnect: bool = False
    greetdelay: int = 0
    dropprushgreet: bool = False
    greeting550: str | None = None
    greeting421: str | None = None
    databytes: int | None = None
    sslcert: str | None = None
    remote_ip: str = "unknown"
    remote_host: str | None = None
    remote_info: str | None = None
    remote_port: str | None = None
    local_ip: str | None = None
    local_host: str | None = None
    local_port: str | None = None
    proto: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> SmtpdEnv:
        """Parse the variables of *env* (names are case-sensitive, as in a process environment)."""

        def num(name: str, default: int = 0) -> int:
            value = env.get(name)
            return default if value is None else leading_digits(value)

        smtpauth = env.get("SMTPAUTH")
        sendercheck = env.get("SENDERCHECK")
        databytes = env.get("DATABYTES")
        return cls(
            relayclient=env.get("RELAYCLIENT"),
            authorized="AUTHORIZED" in env,
            authrequired="AUTHREQUIRED" in env,
            authprepend=env.get("AUTHPREPEND", ""),
            smtpauth=smtpauth is not None,
            auth_tls_required=smtpauth is not None and smtpauth.lower() == "tlsrequired",
            badrcptdelay=num("BADRCPTDELAY"),
            blockrelayprobe="BLOCKRELAYPROBE" in env,
            nobounce="NOBOUNCE" in env,
            sanitycheck="SANITYCHECK" in env,
            returnmxcheck="RETURNMXCHECK" in env,
            maxrcptcount=num("MAXRCPTCOUNT"),
            tarpitcount=num("TARPITCOUNT"),
            tarpitdelay=num("TARPITDELAY", DEFAULT_TARPITDELAY),
            ldapsoftok="LDAPSOFTOK" in env,
            loglevel=min(num("LOGLEVEL"), MAX_LOGLEVEL),
            nolocal="NOLOCAL" in env,
            nodkimsign="NODKIMSIGN" in env,
            qmailqueue=env.get("QMAILQUEUE"),
            rbl="RBL" in env,
            rblonlyheader="RBLONLYHEADER" in env,
            rejectexec="REJECTEXEC" in env,
            rcptcheck="RCPTCHECK" in env,
            sendercheck=_sendercheck(sendercheck),
            smtp550disconnect="SMTP550DISCONNECT" in env,
            greetdelay=num("GREETDELAY"),
            dropprushgreet="DROPRUSHGREET" in env,
            greeting550=env.get("550GREETING"),
            greeting421=env.get("421GREETING"),
            databytes=None if databytes is None else leading_digits(databytes),
            sslcert=env.get("SSLCERT"),
            remote_ip=env.get("TCPREMOTEIP") or "unknown",
            remote_host=env.get("TCPREMOTEHOST") or None,
            remote_info=env.get("TCPREMOTEINFO") or None,
            remote_port=env.get("TCPREMOTEPORT"),
            local_ip=env.get("TCPLOCALIP"),
            local_host=env.get("TCPLOCALHOST"),
            local_port=env.get("TCPLOCALPORT"),
            proto=env.get("PROTO"),
        )


def _sendercheck(value: str | None) -> SenderCheck:
    if value is None:
        return SenderCheck.OFF
    lowered = value.lower()
    if lowered == "loose":
        return SenderCheck.LOOSE
    if lowered == "strict":
        return SenderCheck.STRICT
    return SenderCheck.NORMAL


def parse_rbllist(lines: Collection[str]) -> tuple[RblEntry, ...]:
    """Parse ``rbllist`` lines (already stripped of comments and blanks).

    Raises:
        ConfigError: a line has fewer than four fields or an action other than reject/addheader.
    """
    out = []
    for line in lines:
        parts = line.split(None, 3)
        if len(parts) < 4:
            raise ConfigError(f"unable to parse control/rbllist line: {line!r}")
        basedomain, action, matchon, message = parts
        try:
            kind = RblAction(action.lower())
        except ValueError:
            raise ConfigError(f"unknown action {action!r} in control/rbllist") from None
        out.append(RblEntry(basedomain, kind, matchon, message))
    return tuple(out)


def _never(_domain: str) -> bool:
    return False


CONTROL_FILES = (
    "me", "timeoutsmtpd", "databytes", "smtpcert", "smtpgreeting", "smtpclustercookie", "localiphost",
    "badmailfrom", "badmailfrom-unknown", "goodmailfrom", "relaymailfrom", "badrcptto", "goodmailaddr",
    "signatures", "tlsciphers", "tlsdheparams", "cleartextpasswd",
)  # fmt: skip
"""The control files every session reads whatever its environment (:class:`_Controls`)."""


@dataclass(frozen=True, slots=True)
class _Controls:
    """What :data:`CONTROL_FILES` say, parsed: the part of a session's configuration shared by every
    session while those files are unchanged."""

    me: str
    timeout: int
    databytes: int
    default_cert: Path | None
    smtpgreeting: str
    cookie: str
    localiphost: str
    badmailfrom: AddressList
    badmailfrom_unknown: AddressList
    goodmailfrom: AddressList
    relaymailfrom: AddressList
    badrcptto: AddressList
    goodmailaddr: AddressList
    signatures: tuple[bytes, ...]
    tlsciphers: str
    tlsdheparams: str
    cram_md5: bool


_CONTROLS_MEMO: dict[Path, tuple[tuple[object, ...], _Controls]] = {}
_MEMO_DIRS = 8  # control directories remembered (one per daemon; tests make many)


def _controls(ctl: ControlDir) -> _Controls:
    """The parsed :data:`CONTROL_FILES` of *ctl*, reused while their signatures are unchanged.

    Why: every connection must see the controls as they are now (qmail-smtpd(8)), but parsing them
    again — 17 accessor calls and six address lists — when nothing changed is most of building a
    session's configuration.  The signatures come from *ctl* (a :meth:`ControlDir.checked` view
    answers known absent files without a ``stat``), so an edit still applies to the next session.

    Raises:
        ConfigError: ``me`` is missing or a control file cannot be examined or read.
    """
    snap = ctl.snapshot(CONTROL_FILES)
    hit = _CONTROLS_MEMO.get(ctl.dir)
    if hit is not None and hit[0] == snap:
        return hit[1]
    me = ctl.me()
    timeout = ctl.integer("timeoutsmtpd", DEFAULT_TIMEOUT)
    value = _Controls(
        me=me,
        timeout=timeout if timeout > 0 else 1,
        databytes=ctl.integer("databytes", 0),
        default_cert=ctl.path("smtpcert") if ctl.exists("smtpcert") else None,
        smtpgreeting=ctl.line("smtpgreeting", "") or "",
        cookie=(ctl.line("smtpclustercookie", "") or "")[:MAX_COOKIE],
        localiphost=ctl.line("localiphost") or me,
        badmailfrom=AddressList.from_control(ctl, "badmailfrom"),
        badmailfrom_unknown=AddressList.from_control(ctl, "badmailfrom-unknown"),
        goodmailfrom=AddressList.from_control(ctl, "goodmailfrom"),
        relaymailfrom=AddressList.from_control(ctl, "relaymailfrom"),
        badrcptto=AddressList.from_control(ctl, "badrcptto"),
        goodmailaddr=AddressList.from_control(ctl, "goodmailaddr"),
        signatures=tuple(s.encode("utf-8", "surrogateescape") for s in ctl.lines("signatures")),
        tlsciphers=ctl.line("tlsciphers") or "compat",
        tlsdheparams=ctl.line("tlsdheparams") or "none",
        cram_md5=ctl.boolean("cleartextpasswd", False),
    )
    if ctl.snapshot(CONTROL_FILES) == snap:  # nothing changed while reading: safe to reuse
        if len(_CONTROLS_MEMO) >= _MEMO_DIRS and ctl.dir not in _CONTROLS_MEMO:
            _CONTROLS_MEMO.clear()
        _CONTROLS_MEMO[ctl.dir] = (snap, value)
    return value


@dataclass(frozen=True, slots=True)
class SmtpdConfig:
    """Everything the SMTP policy consults, frozen for one session."""

    me: str
    env: SmtpdEnv = field(default_factory=SmtpdEnv)
    smtpgreeting: str = ""
    cookie: str = ""
    localiphost: str = ""
    timeout: int = DEFAULT_TIMEOUT
    databytes: int = 0
    own_ips: frozenset[str] = frozenset()
    badmailfrom: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    badmailfrom_unknown: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    goodmailfrom: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    relaymailfrom: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    badrcptto: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    goodmailaddr: AddressList = field(default_factory=lambda: AddressList(frozenset()))
    rbllist: tuple[RblEntry, ...] = ()
    signatures: tuple[bytes, ...] = ()
    cert_path: Path | None = None
    tlsciphers: str = "compat"
    tlsdheparams: str = "none"
    dash_ext: bool = False
    cram_md5: bool = False  # cleartextpasswd: stored passwords are usable for CRAM-MD5
    mailauth: InboundPolicy | None = None  # SPF/DKIM/DMARC checks on (qmail-smtpd(8) MAILAUTH)
    is_local: Callable[[str], bool] = field(default=_never, compare=False)
    rcpthosts_accepts: Callable[[str], bool] = field(default=_never, compare=False)

    @classmethod
    def load(
        cls,
        ctl: ControlDir,
        environ: Mapping[str, str],
        *,
        own_ips: Collection[str] = (),
        is_local: Callable[[str], bool] = _never,
        rcpthosts_accepts: Callable[[str], bool] = _never,
        dash_ext: bool = False,
    ) -> SmtpdConfig:
        """Read the control files of qmail-smtpd(8) CONTROL FILES and parse *environ* (qmail-smtpd(8),
        ENVIRONMENT).

        Raises:
            ConfigError: ``me`` is missing, a control file is unreadable, or ``rbllist`` is bad while
                RBL is set (the session answers ``421 unable to read controls (#4.3.0)``).
        """
        env = SmtpdEnv.from_environ(environ)
        c = _controls(ctl)
        databytes = env.databytes if env.databytes is not None else c.databytes
        return cls(
            me=c.me,
            env=env,
            smtpgreeting=c.smtpgreeting,
            cookie=c.cookie,
            localiphost=c.localiphost,
            timeout=c.timeout,
            databytes=databytes,
            own_ips=frozenset(own_ips),
            badmailfrom=c.badmailfrom,
            badmailfrom_unknown=c.badmailfrom_unknown,
            goodmailfrom=c.goodmailfrom,
            relaymailfrom=c.relaymailfrom,
            badrcptto=c.badrcptto,
            goodmailaddr=c.goodmailaddr,
            rbllist=parse_rbllist(ctl.lines("rbllist")) if env.rbl else (),
            signatures=c.signatures,
            cert_path=Path(env.sslcert) if env.sslcert else c.default_cert,
            tlsciphers=c.tlsciphers,
            tlsdheparams=c.tlsdheparams,
            dash_ext=dash_ext,
            cram_md5=c.cram_md5,
            mailauth=load_policy(ctl, environ),
            is_local=is_local,
            rcpthosts_accepts=rcpthosts_accepts,
        )

    @property
    def rbl_active(self) -> bool:
        """RBL is set and rbllist names at least one list."""
        return self.env.rbl and bool(self.rbllist)

    def domain_is_local(self, address: str) -> bool:
        """True when the domain after the last ``@`` of *address* is in locals (NOLOCAL irrelevant).

        Raises:
            ConfigError: the locals files cannot be read.
        """
        addr = Address.parse(address)
        return addr.has_at and self.is_local(ascii_lower(addr.domain))

    def acceptable(self, address: str) -> bool:
        """qmail-smtpd(8), ACCEPTED DOMAINS: may *address* be a recipient without relay permission?

        Raises:
            ConfigError: the locals or rcpthosts files cannot be read.
        """
        addr = Address.parse(address)
        if not addr.has_at:
            return True
        domain = ascii_lower(addr.domain)
        if not self.env.nolocal and self.is_local(domain):
            return True
        return self.rcpthosts_accepts(domain)

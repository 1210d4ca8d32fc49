"""Decide MAIL, RCPT and DATA in the order of qmail-smtpd(8), MAIL CHECKS and DATA: pure functions, first
failure wins.

Why verdicts may ask for a lookup instead of doing it: some checks need DNS (RBL, return MX) or the
directory (SENDERCHECK, RCPTCHECK), and a lookup must only happen when every earlier check passed
(no RBL query for a sender badmailfrom already refused).  So a verdict function either returns a
:class:`Verdict` or a *lookup request* (:class:`RblQuery`, :class:`MxQuery`, :class:`VerifyQuery`);
the glue performs it, adds the answer to :class:`Facts` and calls the same function again.  Nothing
here awaits, reads a file or touches a socket, and every reply comes from :mod:`replies`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, replace

from qldap.address import Address, AddressSyntaxError, PathArg, parse_path
from qldap.mailauth.spf import SpfOutcome, SpfResult
from qldap.queue.received import xrbl_line
from qldap.smtpd import replies
from qldap.smtpd.config import RblAction, RblEntry, SenderCheck, SmtpdConfig
from qldap.smtpd.reader import DataEnd
from qldap.smtpd.replies import Reply

MAX_HOPS = 100


# -- lookup answers -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Valid:
    """The verifier found the address (or LDAPSOFTOK turned a soft error into this)."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """The verifier says the address does not exist or is disabled; *text* is its reason."""

    text: str


@dataclass(frozen=True, slots=True)
class Soft:
    """The verifier could not ask (LDAP down, timeout, several entries)."""

    text: str = ""


VerifyAnswer = Valid | Invalid | Soft


class MxAnswer(enum.Enum):
    """The return-MX check's DNS answer for a sender domain."""

    EXISTS = "exists"
    MISSING = "missing"  # NXDOMAIN, no MX and no A, null MX, MX hosts without addresses
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class RblAnswer:
    """The A records found at one RBL query name; ``soft`` for a DNS error (ignored)."""

    addresses: tuple[str, ...] = ()
    soft: bool = False


# -- lookup requests ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RblQuery:
    """Look up A records of ``name`` (``d.c.b.a.<basedomain>``) for list *entry*."""

    entry: RblEntry
    name: str


@dataclass(frozen=True, slots=True)
class MxQuery:
    """Does *domain* have a usable mail exchanger (MX, else A)?"""

    domain: str


@dataclass(frozen=True, slots=True)
class VerifyQuery:
    """Ask the verifier (section 6) about *address*."""

    address: str


@dataclass(frozen=True, slots=True)
class SpfQuery:
    """Check SPF (qmail-smtpd(8) ``MAILAUTH``) for *sender* ("" = the HELO identity)."""

    sender: str


Lookup = RblQuery | MxQuery | VerifyQuery | SpfQuery


@dataclass(frozen=True, slots=True)
class Facts:
    """The lookup answers gathered so far for one MAIL or RCPT command."""

    rbl: tuple[RblAnswer, ...] = ()
    mx: MxAnswer | None = None
    verify: VerifyAnswer | None = None
    spf: SpfOutcome | None = None

    def add(self, answer: RblAnswer | MxAnswer | VerifyAnswer | SpfOutcome) -> Facts:
        """A copy with *answer* recorded (RBL answers accumulate in list order)."""
        if isinstance(answer, RblAnswer):
            return replace(self, rbl=(*self.rbl, answer))
        if isinstance(answer, MxAnswer):
            return replace(self, mx=answer)
        if isinstance(answer, SpfOutcome):
            return replace(self, spf=answer)
        return replace(self, verify=answer)


NO_FACTS = Facts()


# -- inputs and the verdict ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Client:
    """What the policy knows about the connection."""

    ip: str
    host: str | None  # TCPREMOTEHOST; None = no reverse DNS
    relayclient: str | None  # the session's initial RELAYCLIENT (after client rules)
    authenticated: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one command, with what the session must remember.

    ``delay`` is slept before the reply, ``close`` closes after it.  MAIL verdicts carry the relay
    permission of the transaction (``relay``, a RELAYCLIENT value or None) and the X-RBL lines; RCPT
    verdicts the address to store (``recipient``) and ``counted`` when the recipient counter moves.
    """

    reply: Reply
    delay: float = 0.0
    close: bool = False
    sender: str | None = None
    relay: str | None = None
    rbl_headers: tuple[str, ...] = ()
    recipient: str | None = None
    counted: bool = False
    spf: SpfOutcome | None = None

    @property
    def accepted(self) -> bool:
        """True for a 2xx reply."""
        return 200 <= self.reply.code < 300


# -- MAIL ---------------------------------------------------------------------------------------
def mail_verdict(cfg: SmtpdConfig, client: Client, arg: str, facts: Facts = NO_FACTS) -> Verdict | Lookup:
    """MAIL checks 1–13 of qmail-smtpd(8) MAIL CHECKS for the argument *arg* (``FROM:<…> …``)."""
    env = cfg.env
    try:
        path = parse_path(arg, own_ips=cfg.own_ips, localiphost=cfg.localiphost)
    except AddressSyntaxError:
        return Verdict(replies.SYNTAX_ERROR)
    if env.authrequired and not (client.authenticated or env.authorized):
        return Verdict(replies.AUTH_NEEDED)
    relay = "" if client.authenticated else client.relayclient
    size = path.size
    if cfg.databytes and size is not None and size > cfg.databytes:
        return Verdict(replies.SIZE_EXCEEDED)
    addr, bounce = path.address, path.is_bounce
    good = cfg.goodmailfrom.matches(addr)
    if not good and cfg.badmailfrom.matches(addr):
        return Verdict(replies.BAD_MAILFROM)
    if not good and client.host is None and cfg.badmailfrom_unknown.matches(addr):
        return Verdict(replies.bad_mailfrom_unknown(client.ip))
    if bounce and env.nobounce:
        return Verdict(replies.NO_BOUNCES)
    if not good and env.sanitycheck and not bounce:
        insane = _sanity(addr)
        if insane is not None:
            return Verdict(insane)
    if relay is None and cfg.relaymailfrom.matches(addr, allow_user_form=False):
        relay = ""
    headers: tuple[str, ...] = ()
    if not good and relay is None:
        rbl = _rbl(cfg, client.ip, facts)
        if not isinstance(rbl, tuple):
            return rbl
        headers = rbl
    if not good and env.returnmxcheck and not bounce and "@" in addr:
        mx = _return_mx(addr, facts)
        if mx is not None:
            return mx
    if not good and env.sendercheck is not SenderCheck.OFF and not bounce:
        checked = _sender_check(cfg, addr, facts)
        if checked is not None:
            return checked
    spf = None
    if cfg.mailauth is not None and relay is None:  # relaying and authenticated clients: not checked
        if facts.spf is None:
            return SpfQuery(addr)
        spf = facts.spf
        refused = _spf_refusal(cfg, client.ip, spf)
        if refused is not None:
            return Verdict(refused)
    return Verdict(replies.OK, sender=addr, relay=relay, rbl_headers=headers, spf=spf)


def _spf_refusal(cfg: SmtpdConfig, ip: str, spf: SpfOutcome) -> Reply | None:
    """``spfreject`` refuses a ``fail``, ``tempfail`` a ``temperror``; everything else is tagged."""
    actions = cfg.mailauth.actions if cfg.mailauth is not None else None
    if actions is None:
        return None
    if spf.result is SpfResult.FAIL and actions.spf_reject:
        return replies.spf_rejected(ip, spf.domain, spf.explanation)
    if spf.result is SpfResult.TEMPERROR and actions.tempfail:
        return replies.SPF_TEMPFAIL
    return None


def _sanity(addr: str) -> Reply | None:
    parsed = Address.parse(addr)
    if not parsed.has_at:
        return replies.SANITY_NO_AT
    if not parsed.local or not parsed.domain or addr[0] == "@":
        return replies.SANITY_NO_USER_OR_DOMAIN
    if "." not in parsed.domain:
        return replies.SANITY_NO_DOT
    return None


def rbl_query_name(ip: str, basedomain: str) -> str | None:
    """``d.c.b.a.<basedomain>`` for an IPv4 client; None for IPv6 or an unknown address."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if parsed.version != 4:
        return None
    return ".".join(reversed(str(parsed).split("."))) + "." + basedomain


def _rbl(cfg: SmtpdConfig, ip: str, facts: Facts) -> tuple[str, ...] | Verdict | Lookup:
    """Walk the rbllist in order: X-RBL lines to add, a rejection, or the next query needed."""
    if not cfg.rbl_active:
        return ()
    headers: list[str] = []
    for i, entry in enumerate(cfg.rbllist):
        name = rbl_query_name(ip, entry.basedomain)
        if name is None:
            return ()
        if i >= len(facts.rbl):
            return RblQuery(entry, name)
        answer = facts.rbl[i]
        if answer.soft or not answer.addresses:
            continue
        if entry.matchon != "any" and entry.matchon not in answer.addresses:
            continue
        if cfg.env.rblonlyheader or entry.action is RblAction.ADDHEADER:
            headers.append(xrbl_line(entry.basedomain, entry.matchon, entry.message))
            continue
        return Verdict(replies.rbl_rejected(ip, entry.message))
    return tuple(headers)


def _return_mx(addr: str, facts: Facts) -> Verdict | Lookup | None:
    domain = Address.parse(addr).domain
    if domain.startswith("["):
        return None  # an IP literal needs no MX
    if not domain:
        return Verdict(replies.RETURN_MX_MISSING)
    if facts.mx is None:
        return MxQuery(domain)
    if facts.mx is MxAnswer.TEMPFAIL:
        return Verdict(replies.RETURN_MX_TEMPFAIL, close=True)
    if facts.mx is MxAnswer.MISSING:
        return Verdict(replies.RETURN_MX_MISSING)
    return None


def _sender_check(cfg: SmtpdConfig, addr: str, facts: Facts) -> Verdict | Lookup | None:
    if cfg.goodmailaddr.matches_good(addr, dash_ext=cfg.dash_ext):
        return None
    if _needs_verify(cfg, addr):
        return _verified(cfg, addr, facts, delay=0.0)
    mode = cfg.env.sendercheck
    if mode is SenderCheck.NORMAL or (mode is SenderCheck.LOOSE and cfg.acceptable(addr)):
        return None
    return Verdict(replies.LOCAL_SENDER_REQUIRED)


def _verified(cfg: SmtpdConfig, addr: str, facts: Facts, *, delay: float) -> Verdict | Lookup | None:
    """None when the verifier accepts *addr*; else its rejection, or the query still needed."""
    answer = facts.verify
    if answer is None:
        return VerifyQuery(addr)
    if isinstance(answer, Invalid):
        return Verdict(replies.verify_invalid(answer.text), delay=delay)
    if isinstance(answer, Soft) and not cfg.env.ldapsoftok:
        return Verdict(replies.verify_soft(answer.text))
    return None


# -- RCPT ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transaction:
    """The open transaction as RCPT sees it: None sender = no MAIL accepted yet."""

    sender: str | None
    relay: str | None = None
    rcpt_count: int = 0


def rcpt_verdict(
    cfg: SmtpdConfig, client: Client, txn: Transaction, arg: str, facts: Facts = NO_FACTS
) -> Verdict | Lookup:
    """RCPT checks 1–9 of qmail-smtpd(8) RCPT CHECKS for the argument *arg* (``TO:<…>``)."""
    env = cfg.env
    if txn.sender is None:
        return Verdict(replies.MAIL_FIRST)
    try:
        path: PathArg = parse_path(arg, own_ips=cfg.own_ips, localiphost=cfg.localiphost, allow_empty=False)
    except AddressSyntaxError:
        return Verdict(replies.SYNTAX_ERROR)
    addr = path.address
    if env.blockrelayprobe and _probe(addr):
        return Verdict(replies.relay_probe(client.ip))
    if cfg.badrcptto.matches(addr):
        return Verdict(replies.BAD_RCPTTO)
    if txn.relay is not None:
        addr += txn.relay
    elif not cfg.acceptable(addr):
        return Verdict(replies.relay_denied(client.ip))
    count = txn.rcpt_count + 1
    if env.maxrcptcount and count > env.maxrcptcount:
        return Verdict(replies.TOO_MANY_RECIPIENTS, counted=True)
    if count > 1 and txn.sender in ("", "#@[]"):
        return Verdict(replies.BOUNCE_MANY_RECIPIENTS, counted=True)
    if env.rcptcheck and _needs_verify(cfg, addr):
        checked = _verified(cfg, addr, facts, delay=float(env.badrcptdelay))
        if isinstance(checked, Verdict):
            return replace(checked, counted=True)
        if checked is not None:
            return checked
    delay = 0.0
    if env.tarpitcount and env.tarpitdelay and count >= env.tarpitcount:
        delay = float(env.tarpitdelay)
    return Verdict(replies.OK, delay=delay, recipient=addr, counted=True)


def _needs_verify(cfg: SmtpdConfig, addr: str) -> bool:
    """Section 6: only addresses not in goodmailaddr whose domain is local are verified."""
    return not cfg.goodmailaddr.matches_good(addr, dash_ext=cfg.dash_ext) and cfg.domain_is_local(addr)


def _probe(addr: str) -> bool:
    """BLOCKRELAYPROBE: ``@``, ``%`` or ``!`` before the last ``@``."""
    parsed = Address.parse(addr)
    local = parsed.local if parsed.has_at else ""
    return "@" in local or "%" in local or "!" in local


# -- DATA ---------------------------------------------------------------------------------------
def data_start_verdict(txn: Transaction, recipients: int) -> Verdict | None:
    """None when DATA may start; else ``503 MAIL first`` or ``503 RCPT first``."""
    if txn.sender is None:
        return Verdict(replies.MAIL_FIRST)
    if recipients == 0:
        return Verdict(replies.RCPT_FIRST)
    return None


def data_end_verdict(cfg: SmtpdConfig, end: DataEnd, exec_hit: bool = False) -> Verdict | None:
    """Hops, size, REJECTEXEC in that order; None when the queue's result decides the reply."""
    if end.hops >= MAX_HOPS:
        return Verdict(replies.TOO_MANY_HOPS)
    if end.too_big:
        return Verdict(replies.SIZE_EXCEEDED)
    if exec_hit and cfg.env.rejectexec and cfg.signatures:
        return Verdict(replies.EXEC_REJECTED)
    return None

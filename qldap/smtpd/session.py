"""The per-connection SMTP state machine: which command is allowed when, and what the glue does next.

Sans-I/O: the asyncio glue feeds reader events in and gets *actions* out — :class:`Send` a reply
(with delays, close, a switch into DATA or TLS), perform a lookup (the requests of :mod:`policy`),
:class:`OpenQueue`, :class:`CommitQueue`, :class:`PrepareTls` or :class:`CheckLogin` — and reports
each outcome back through a method (``queue_opened``, ``data_end``, ``queue_done``, ``tls_ready``,
``tls_started``, ``auth_result``).  The commands each phase accepts are the table :data:`ALLOWED`.

Transaction rules (qmail-smtpd(8), COMMANDS): HELO/EHLO, RSET, MAIL, DATA and STARTTLS end the open
transaction; relay permission is re-derived at every MAIL from the session's initial RELAYCLIENT, AUTH and
relaymailfrom, so RSET restores the initial value and relaymailfrom lasts one transaction.
SMTP550DISCONNECT closes after a 5xx of the MAIL/RCPT/DATA checks (incl. 503 sequence errors), an
AUTH failure or restricted mode, never after 500/502 or a queue failure.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from qldap.mailauth.spf import SpfOutcome
from qldap.queue.received import received_header
from qldap.smtpd import replies
from qldap.smtpd.config import SmtpdConfig
from qldap.smtpd.policy import (
    NO_FACTS,
    Client,
    Facts,
    Lookup,
    Transaction,
    Verdict,
    data_end_verdict,
    data_start_verdict,
    mail_verdict,
    rcpt_verdict,
)
from qldap.smtpd.reader import Command, DataEnd
from qldap.smtpd.replies import Reply
from qldap.smtpd.sasl import Challenge, Failed, LoginAttempt, SaslExchange, cram_md5, parse_auth_arg

RESTRICTED_TIMEOUT = 20
AUTH_FAIL_BEFORE = 1.0
AUTH_FAIL_AFTER = 4.0


class Phase(enum.Enum):
    """Where the dialogue is."""

    RESTRICTED = "restricted"  # after a 550GREETING: only QUIT is useful
    COMMAND = "command"
    AUTH = "auth"  # lines belong to the SASL exchange
    DATA = "data"  # the reader delivers message events
    CLOSED = "closed"


COMMANDS = frozenset(
    {"HELO", "EHLO", "RSET", "NOOP", "VRFY", "HELP", "QUIT", "MAIL", "RCPT", "DATA", "AUTH", "STARTTLS"}
)
ALLOWED: Mapping[Phase, frozenset[str]] = {
    Phase.RESTRICTED: frozenset({"QUIT", "HELO", "EHLO"}),
    Phase.COMMAND: COMMANDS,
    Phase.AUTH: frozenset(),
    Phase.DATA: frozenset(),
    Phase.CLOSED: frozenset(),
}
"""The verbs each phase handles; any other verb gets the phase's refusal (502 or 503)."""

_BUFFERED = frozenset({"MAIL", "RCPT", "RSET"})  # replies that may wait in the PIPELINING buffer


class AuthResult(enum.Enum):
    """The credential check's answer (qmail-smtpd(8) SMTP AUTH table)."""

    OK = "ok"
    FAILURE = "failure"  # unknown user, wrong password, disabled account → 535
    TEMPORARY = "temporary"  # LDAP down, several entries → 454


@dataclass(frozen=True, slots=True)
class Send:
    """Send *reply*: sleep ``delay`` s before it and ``pause_after`` s after it, then act on the flags."""

    reply: Reply
    delay: float = 0.0
    pause_after: float = 0.0
    close: bool = False
    flush: bool = True
    stutter: int = 0  # GREETDELAY: send the greeting prefix one char per second, at most this many
    drop_rush: bool = False  # DROPRUSHGREET: input during the stutter → 554 and close
    begin_data: int | None = None  # switch the reader to DATA with this databytes limit
    start_tls: bool = False  # discard buffered input and run the TLS handshake


@dataclass(frozen=True, slots=True)
class OpenQueue:
    """Start the queue program; report with :meth:`Session.queue_opened`."""


@dataclass(frozen=True, slots=True)
class CommitQueue:
    """Finish the message and envelope; report with :meth:`Session.queue_done`.

    ``spf`` is set when the inbound checks ran at MAIL (qmail-smtpd(8) ``MAILAUTH``): the glue then
    verifies DKIM, evaluates DMARC and adds Authentication-Results before queueing.
    """

    envelope: bytes
    spf: SpfOutcome | None = None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PrepareTls:
    """Build the TLS context; report with :meth:`Session.tls_ready`."""


@dataclass(frozen=True, slots=True)
class CheckLogin:
    """Check these credentials; report with :meth:`Session.auth_result`."""

    attempt: LoginAttempt


Action = Send | OpenQueue | CommitQueue | PrepareTls | CheckLogin | Lookup


@dataclass(frozen=True, slots=True)
class Envelope:
    """A finished transaction as the queue sees it."""

    sender: str
    recipients: tuple[str, ...]

    def to_bytes(self) -> bytes:
        """``F<sender>\\0`` ``T<rcpt>\\0``… ``\\0``: the qmail-queue envelope on fd 1."""
        parts = [f"F{self.sender}\0", *(f"T{r}\0" for r in self.recipients), "\0"]
        return "".join(parts).encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _Txn:
    sender: str | None = None
    relay: str | None = None
    rbl_headers: tuple[str, ...] = ()
    recipients: list[str] = field(default_factory=list)
    rcpt_count: int = 0
    spf: SpfOutcome | None = None


class Session:
    """One SMTP connection's state; every method returns the next :data:`Action`."""

    def __init__(self, cfg: SmtpdConfig) -> None:
        self.cfg = cfg
        env = cfg.env
        self.phase = Phase.COMMAND
        self.helo = env.remote_host or "unknown"
        self.tls_protocol: str | None = None
        self.auth_user: str | None = None
        self._txn = _Txn()
        self._queued: _Txn | None = None
        self._sasl: SaslExchange | None = None
        self._pending_login: str | None = None

    # -- facts for the glue ---------------------------------------------------------------------
    @property
    def read_timeout(self) -> int:
        """Seconds to wait for the next line (20 in restricted mode)."""
        return RESTRICTED_TIMEOUT if self.phase is Phase.RESTRICTED else self.cfg.timeout

    @property
    def tls(self) -> bool:
        """True once the TLS handshake succeeded."""
        return self.tls_protocol is not None

    @property
    def transaction(self) -> Transaction:
        """The open transaction as the policy sees it."""
        t = self._txn
        return Transaction(t.sender, t.relay, t.rcpt_count)

    @property
    def recipients(self) -> tuple[str, ...]:
        """The accepted recipients (with RELAYCLIENT suffixes), in order."""
        return tuple(self._txn.recipients)

    @property
    def relayclient(self) -> str | None:
        """The RELAYCLIENT value of the current transaction (for the queue program's environment)."""
        return self._txn.relay

    def _client(self) -> Client:
        env = self.cfg.env
        return Client(env.remote_ip, env.remote_host, env.relayclient, self.auth_user is not None)

    def _send(
        self, reply: Reply, *, delay: float = 0.0, pause_after: float = 0.0, close: bool = False
    ) -> Send:
        """A Send for a check's reply: closes under SMTP550DISCONNECT when it is 5xx (not 500/502)."""
        if self.cfg.env.smtp550disconnect and reply.permanent and reply.code not in (500, 502):
            close = True
        if close:
            self.phase = Phase.CLOSED
        return Send(reply, delay=delay, pause_after=pause_after, close=close)

    # -- start and connection-level events ------------------------------------------------------
    def start(self) -> Send:
        """The greeting (section 1)."""
        cfg, env = self.cfg, self.cfg.env
        if env.greeting550 is not None:
            self.phase = Phase.RESTRICTED
            return self._send(replies.greeting_550(cfg.me, env.greeting550))
        if env.greeting421 is not None:
            # like 550GREETING, the session stays open in restricted mode until QUIT (qmail-smtpd(8))
            self.phase = Phase.RESTRICTED
            return Send(replies.greeting_421(cfg.me, env.greeting421))
        reply = replies.greeting(cfg.me, cfg.smtpgreeting, cfg.cookie)
        return Send(reply, stutter=env.greetdelay, drop_rush=env.dropprushgreet and env.greetdelay > 0)

    def timeout(self) -> Send:
        """The client was silent for :attr:`read_timeout` seconds."""
        self.phase = Phase.CLOSED
        return Send(replies.TIMEOUT, close=True)

    def too_long(self) -> Send:
        """A command line or header line over the limit."""
        self.phase = Phase.CLOSED
        return Send(replies.LINE_TOO_LONG, close=True)

    def bare_lf(self) -> Send:
        """An LF without CR in the data; the queue must be aborted."""
        self.phase = Phase.CLOSED
        return Send(replies.BARE_LF, close=True)

    # -- commands -------------------------------------------------------------------------------
    def command(self, cmd: Command, facts: Facts = NO_FACTS) -> Action:
        """Handle one command line; MAIL/RCPT may return a lookup: call again with the answer added."""
        if self.phase is Phase.AUTH:
            return self._auth_step(cmd.line)
        if cmd.verb not in ALLOWED[self.phase]:
            if self.phase is Phase.COMMAND:
                return Send(replies.UNIMPLEMENTED)
            return self._send(replies.BAD_SEQUENCE)
        if self.phase is Phase.RESTRICTED:
            return self._restricted(cmd.verb)
        flush = cmd.verb not in _BUFFERED
        handler = _HANDLERS[cmd.verb]
        action = handler(self, cmd.arg, facts)
        if isinstance(action, Send) and not flush and not action.close:
            return Send(action.reply, delay=action.delay, flush=False)
        return action

    def _restricted(self, verb: str) -> Send:
        if verb == "QUIT":
            return self._quit("", NO_FACTS)
        if self.cfg.env.greeting421 is not None and verb in ("HELO", "EHLO"):
            return self._send(replies.SERVICE_UNAVAILABLE)
        return self._send(replies.BAD_SEQUENCE)

    def _helo(self, arg: str, _facts: Facts, *, extended: bool = False) -> Send:
        cfg, env = self.cfg, self.cfg.env
        self._txn = _Txn()
        self.helo = arg
        if not extended:
            return Send(replies.helo(cfg.me, cfg.smtpgreeting))
        auth = env.smtpauth and (self.tls or not env.auth_tls_required)
        tls = cfg.cert_path is not None and not self.tls
        return Send(replies.ehlo(cfg.me, cfg.smtpgreeting, databytes=cfg.databytes, starttls=tls, auth=auth,
                                 cram_md5=cfg.cram_md5))

    def _rset(self, _arg: str, _facts: Facts) -> Send:
        self._txn = _Txn()
        return Send(replies.FLUSHED)

    def _quit(self, _arg: str, _facts: Facts) -> Send:
        self.phase = Phase.CLOSED
        return Send(replies.goodbye(self.cfg.me), close=True)

    def _mail(self, arg: str, facts: Facts) -> Action:
        result = mail_verdict(self.cfg, self._client(), arg, facts)
        if not isinstance(result, Verdict):
            return result
        self._txn = _Txn()
        if result.accepted:
            self._txn = _Txn(result.sender, result.relay, result.rbl_headers, spf=result.spf)
        return self._send(result.reply, delay=result.delay, close=result.close)

    def _rcpt(self, arg: str, facts: Facts) -> Action:
        result = rcpt_verdict(self.cfg, self._client(), self.transaction, arg, facts)
        if not isinstance(result, Verdict):
            return result
        if result.counted:
            self._txn.rcpt_count += 1
        if result.accepted and result.recipient is not None:
            self._txn.recipients.append(result.recipient)
        return self._send(result.reply, delay=result.delay, close=result.close)

    # -- DATA -----------------------------------------------------------------------------------
    def _data(self, _arg: str, _facts: Facts) -> Action:
        refused = data_start_verdict(self.transaction, len(self._txn.recipients))
        if refused is not None:
            return self._send(refused.reply)
        self._queued, self._txn = self._txn, _Txn()
        return OpenQueue()

    def queue_opened(self, ok: bool) -> Send:
        """The queue program started (or not): ``354`` and DATA mode, or ``451 qqt failure``."""
        if not ok:
            self._queued = None
            return Send(replies.QQT_FAILURE)
        self.phase = Phase.DATA
        return Send(replies.GO_AHEAD, begin_data=self.cfg.databytes)

    def trace_headers(self, when: datetime) -> str:
        """The X-RBL lines and the Received header that precede the data in the queued message."""
        txn = self._queued or self._txn
        env = self.cfg.env
        info = env.authprepend + self.auth_user if self.auth_user is not None else env.remote_info
        local = env.local_host or env.local_ip or "unknown"
        received = received_header(
            remote_host=env.remote_host,
            helo=self.helo,
            info=info,
            ip=env.remote_ip,
            sender=txn.sender or "",
            local=local,
            protocol=self.tls_protocol or "SMTP",
            recipient=txn.recipients[0] if txn.recipients else "",
            when=when,
        )
        return "".join(txn.rbl_headers) + received

    def data_end(self, end: DataEnd, exec_hit: bool = False) -> Send | CommitQueue:
        """The final dot: a rejection (abort the queue) or :class:`CommitQueue` with the envelope."""
        self.phase = Phase.COMMAND
        txn, self._queued = self._queued, None
        refused = data_end_verdict(self.cfg, end, exec_hit)
        if refused is not None or txn is None or txn.sender is None:
            reply = refused.reply if refused is not None else replies.QQT_FAILURE
            return self._send(reply)
        recipients = tuple(txn.recipients)
        return CommitQueue(Envelope(txn.sender, recipients).to_bytes(), txn.spf, recipients)

    def queue_done(self, result_text: str | None, *, unix_time: int, qp: int) -> Send:
        """The queue program's result (None = queued; else its ``D…``/``Z…`` text)."""
        if result_text is None:
            return Send(replies.queued(unix_time, qp, self.cfg.me))
        return Send(replies.queue_reply(result_text))

    # -- STARTTLS -------------------------------------------------------------------------------
    def _starttls(self, arg: str, _facts: Facts) -> Action:
        if self.cfg.cert_path is None:
            return Send(replies.UNIMPLEMENTED)
        if arg:
            return Send(replies.TLS_NO_PARAMETERS)
        if self.tls:
            return Send(replies.BAD_SEQUENCE)
        return PrepareTls()

    def tls_ready(self, ok: bool) -> Send:
        """The TLS context could (not) be built: ``220 ready for tls`` + handshake, or 454."""
        if not ok:
            return Send(replies.TLS_UNAVAILABLE)
        return Send(replies.TLS_READY, start_tls=True)

    def tls_started(self, protocol: str) -> None:
        """The handshake succeeded; *protocol* is the Received ``with`` text (received.tls_protocol)."""
        self.tls_protocol = protocol
        self.helo = self.cfg.env.remote_host or "unknown"
        self._txn = _Txn()

    # -- AUTH -----------------------------------------------------------------------------------
    def _auth(self, arg: str, _facts: Facts) -> Action:
        env = self.cfg.env
        if not env.smtpauth:
            return Send(replies.UNIMPLEMENTED)
        if self.auth_user is not None:
            return self._send(replies.AUTH_ALREADY)
        if env.auth_tls_required and not self.tls:
            return self._send(replies.AUTH_ENCRYPTION_REQUIRED)
        extra = {"CRAM-MD5": cram_md5(self._cram_challenge())} if self.cfg.cram_md5 else None
        parsed = parse_auth_arg(arg, extra)
        if parsed is None:
            return self._send(replies.AUTH_UNSUPPORTED)
        self._sasl = SaslExchange(*parsed)
        return self._sasl_outcome(self._sasl.start())

    def _cram_challenge(self) -> bytes:
        """A fresh ``<random.time@me>`` challenge (RFC 2195)."""
        return f"<{secrets.randbelow(10**10)}.{int(time.time())}@{self.cfg.me}>".encode()

    def _auth_step(self, line: str) -> Action:
        assert self._sasl is not None
        return self._sasl_outcome(self._sasl.respond(line))

    def _sasl_outcome(self, step: Challenge | Failed | LoginAttempt) -> Action:
        if isinstance(step, Challenge):
            self.phase = Phase.AUTH
            return Send(step.reply)
        self.phase = Phase.COMMAND
        self._sasl = None
        if isinstance(step, Failed):
            if step.reply.code == replies.AUTH_FAILURE.code:
                return self._send(step.reply, delay=AUTH_FAIL_BEFORE, pause_after=AUTH_FAIL_AFTER)
            return self._send(step.reply)
        self._pending_login = step.login
        return CheckLogin(step)

    def auth_result(self, result: AuthResult) -> Send:
        """The credential check finished: 235 (authenticated), 535 or 454 with the failure pauses."""
        login, self._pending_login = self._pending_login, None
        if result is AuthResult.OK and login is not None:
            self.auth_user = login
            return Send(replies.AUTH_OK)
        reply = replies.AUTH_FAILURE if result is AuthResult.FAILURE else replies.AUTH_TEMPFAIL
        return self._send(reply, delay=AUTH_FAIL_BEFORE, pause_after=AUTH_FAIL_AFTER)


_HANDLERS: Mapping[str, Callable[[Session, str, Facts], Action]] = {
    "HELO": Session._helo,
    "EHLO": lambda s, a, f: s._helo(a, f, extended=True),
    "RSET": Session._rset,
    "NOOP": lambda _s, _a, _f: Send(replies.OK),
    "VRFY": lambda _s, _a, _f: Send(replies.VRFY),
    "HELP": lambda _s, _a, _f: Send(replies.HELP),
    "QUIT": Session._quit,
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data,
    "AUTH": Session._auth,
    "STARTTLS": Session._starttls,
}

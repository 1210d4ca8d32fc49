"""The pre-authentication dialogue of qmail-popup as a sans-I/O state machine.

Bytes from the client go in through :meth:`Popup.receive`; out come effects: :class:`Reply` bytes,
one :class:`Authenticate` carrying the descriptor-3 record for the login module, :class:`StartTls`,
:class:`Close`.  The glue runs the login module (a process or an in-process check), then calls
:meth:`Popup.auth_done` with its exit status, which yields the auth_pop(8) reply text.

Why one attempt per connection: qmail-popup handed the connection to the login chain after the first
PASS and exited with it, so a client cannot guess passwords over one connection; kept.

The greeting carries the APOP-style timestamp ``<PID.UNIXTIME@HOSTNAME>`` when APOP is offered; it is
also the third field of the record, so APOP digests can be checked against it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from qldap.auth.fd3 import AuthExit, format_pop
from qldap.pop3.reader import Close, Command, CommandReader, Reply, TooLong

OK = b"+OK \r\n"
ERR_SYNTAX = b"-ERR syntax error\r\n"
ERR_USER_FIRST = b"-ERR USER first\r\n"
ERR_AUTH_FIRST = b"-ERR authorization first\r\n"
ERR_CHILD_CRASHED = b"-ERR aack, child crashed\r\n"
ERR_USAGE = b"-ERR usage: popup hostname subprogram\r\n"
STLS_OK = b"+OK Begin TLS negotiation\r\n"
SASL_CONTINUE = b"+ \r\n"

#: qmail-popup's reply for each exit status of the login module (auth_pop(8)).
EXIT_REPLIES: dict[int, bytes] = {
    AuthExit.CONFIG: b"-ERR error in server configuration\r\n",
    AuthExit.UNREACHABLE: b"-ERR unable to contact authorization server\r\n",
    AuthExit.BAD_LOGIN: b"-ERR authorization failed\r\n",
    AuthExit.DISABLED: b"-ERR account disabled\r\n",
    AuthExit.MAILHOST: b"-ERR mailhost is unreachable\r\n",
    AuthExit.MAILBOX_CORRUPT: b"-ERR mailbox is corrupted\r\n",
    AuthExit.EXEC_FAILED: b"-ERR unable to start subprogram\r\n",
    AuthExit.NO_MEMORY: b"-ERR out of memory\r\n",
    AuthExit.BAD_RECORD: b"-ERR user record incorrect\r\n",
    AuthExit.MAILBOX_CREATE: b"-ERR mailbox could not be created\r\n",
    AuthExit.NO_MAILBOX: b"-ERR the users mailbox does not exist\r\n",
}
ERR_TEMPORARY = b"-ERR temporary error\r\n"


def exit_reply(status: int | None) -> bytes | None:
    """The reply for a login module's exit *status*; None (crashed) → ``aack``; 0 → None (no reply)."""
    if status is None:
        return ERR_CHILD_CRASHED
    if status == 0:
        return None
    return EXIT_REPLIES.get(status, ERR_TEMPORARY)


def capa_reply(*, stls: bool, sasl_plain: bool) -> bytes:
    """The RFC 2449 CAPA answer; STLS and SASL PLAIN only where they can be used."""
    lines = [b"+OK Capability list follows", b"TOP", b"UIDL", b"USER"]
    if stls:
        lines.append(b"STLS")
    if sasl_plain:
        lines.append(b"SASL PLAIN")
    lines.append(b".")
    return b"".join(line + b"\r\n" for line in lines)


class LoginMethod(Enum):
    """How the client proved itself: the record format is the same, the check is not (APOP digests)."""

    PASS = "pass"
    APOP = "apop"
    SASL_PLAIN = "sasl-plain"


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Run the login module with *record* on descriptor 3; no further input is read by the popup."""

    record: bytes
    login: bytes
    method: LoginMethod

    def __repr__(self) -> str:  # the record holds the password
        return f"Authenticate(login={self.login!r}, method={self.method})"


@dataclass(frozen=True, slots=True)
class StartTls:
    """Flush the replies so far, then start TLS and call :meth:`Popup.tls_started`."""


Effect = Reply | Authenticate | StartTls | Close


class Phase(Enum):
    """Where the dialogue is."""

    AUTHORIZATION = "authorization"
    SASL = "sasl"  # AUTH PLAIN sent without an initial response: waiting for the base64 line
    TLS = "tls"  # STLS answered, waiting for the handshake
    AUTHENTICATING = "authenticating"
    DONE = "done"


def make_timestamp(pid: int, now: int, hostname: str) -> bytes:
    """``<PID.UNIXTIME@HOSTNAME>``."""
    return f"<{pid}.{now}@{hostname}>".encode("utf-8", "surrogateescape")


class Popup:
    """qmail-popup for one connection; see the module docstring for the effect protocol."""

    def __init__(
        self,
        hostname: str,
        *,
        pid: int,
        now: int,
        tls_available: bool = False,
        tls_active: bool = False,
        apop: bool = True,
    ) -> None:
        self.hostname = hostname
        self.timestamp = make_timestamp(pid, now, hostname)
        self.apop = apop
        self.phase = Phase.AUTHORIZATION
        self.tls_available = tls_available
        self.tls_active = tls_active
        self._reader = CommandReader()
        self._user: bytes | None = None
        self._handlers: dict[str, Callable[[bytes], list[Effect]]] = {
            "user": self._user_cmd,
            "pass": self._pass_cmd,
            "apop": self._apop_cmd,
            "quit": self._quit_cmd,
            "noop": lambda _arg: [Reply(OK)],
            "capa": self._capa_cmd,
            "stls": self._stls_cmd,
            "auth": self._auth_cmd,
        }

    def greeting(self) -> Reply:
        """``+OK <PID.TIME@HOST>\\r\\n``, or ``+OK HOST\\r\\n`` when APOP is not offered.

        RFC 1939 7: the timestamp *is* the APOP offer, and clients that prefer APOP (curl) use it
        whenever it is there; where APOP cannot succeed it only turns a good password into a failure.
        """
        if not self.apop:
            return Reply(b"+OK " + self.hostname.encode("utf-8", "surrogateescape") + b"\r\n")
        return Reply(b"+OK " + self.timestamp + b"\r\n")

    def receive(self, data: bytes) -> list[Effect]:
        """Feed client bytes; returns the effects in order.  Input after Authenticate/Close stays buffered."""
        self._reader.receive(data)
        out: list[Effect] = []
        while self.phase in (Phase.AUTHORIZATION, Phase.SASL):
            event = self._reader.next_event()
            if event is None:
                break
            out += self._handle(event)
        return out

    def pending_input(self) -> bytes:
        """Bytes the client sent after the authenticating command: the next stage's first input."""
        return self._reader.take_pending()

    def tls_started(self) -> list[Effect]:
        """The handshake succeeded: forget the USER name (RFC 2595) and accept commands again."""
        self._reader.discard()
        self._user = None
        self.tls_active = True
        self.phase = Phase.AUTHORIZATION
        return []

    def auth_done(self, status: int | None) -> list[Effect]:
        """The login module ended with exit *status* (None = crashed): reply if it failed, then close.

        Status 0 means the chain behind the module served the session, so nothing is written.
        """
        self.phase = Phase.DONE
        reply = exit_reply(status)
        return [Close()] if reply is None else [Reply(reply), Close()]

    # -- commands ---------------------------------------------------------------------------------

    def _handle(self, event: Command | TooLong) -> list[Effect]:
        if isinstance(event, TooLong):
            if self.phase is Phase.SASL:
                self.phase = Phase.AUTHORIZATION
            return [Reply(ERR_SYNTAX)]
        if self.phase is Phase.SASL:
            self.phase = Phase.AUTHORIZATION
            return self._sasl_plain(event.line.strip(b" "))
        handler = self._handlers.get(event.verb)
        if handler is None:
            return [Reply(ERR_AUTH_FIRST)]
        return handler(event.arg)

    def _user_cmd(self, arg: bytes) -> list[Effect]:
        if not arg:
            return [Reply(ERR_SYNTAX)]
        self._user = arg
        return [Reply(OK)]

    def _pass_cmd(self, arg: bytes) -> list[Effect]:
        if self._user is None:
            return [Reply(ERR_USER_FIRST)]
        if not arg:
            return [Reply(ERR_SYNTAX)]
        return self._authenticate(self._user, arg, LoginMethod.PASS)

    def _apop_cmd(self, arg: bytes) -> list[Effect]:
        if not self.apop:
            return [Reply(ERR_AUTH_FIRST)]  # not offered: answered like any unknown command
        name, sep, digest = arg.partition(b" ")
        if not sep:
            return [Reply(ERR_SYNTAX)]
        return self._authenticate(name, digest, LoginMethod.APOP)

    def _quit_cmd(self, _arg: bytes) -> list[Effect]:
        self.phase = Phase.DONE
        return [Reply(OK), Close()]

    def _capa_cmd(self, _arg: bytes) -> list[Effect]:
        return [Reply(capa_reply(stls=self._stls_offered(), sasl_plain=self.tls_active))]

    def _stls_offered(self) -> bool:
        return self.tls_available and not self.tls_active

    def _stls_cmd(self, _arg: bytes) -> list[Effect]:
        if not self._stls_offered():
            return [Reply(ERR_AUTH_FIRST)]
        self.phase = Phase.TLS
        self._reader.discard()
        return [Reply(STLS_OK), StartTls()]

    def _auth_cmd(self, arg: bytes) -> list[Effect]:
        """RFC 5034 ``AUTH PLAIN [initial-response]``, offered only once TLS is active."""
        if not self.tls_active:
            return [Reply(ERR_AUTH_FIRST)]
        mech, _sep, initial = arg.partition(b" ")
        if mech.upper() != b"PLAIN":
            return [Reply(ERR_SYNTAX)]
        initial = initial.strip(b" ")
        if not initial:
            self.phase = Phase.SASL
            return [Reply(SASL_CONTINUE)]
        return self._sasl_plain(initial)

    def _sasl_plain(self, response: bytes) -> list[Effect]:
        if response == b"=":  # RFC 5034: "=" is an empty initial response
            response = b""
        try:
            decoded = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            return [Reply(ERR_SYNTAX)]
        parts = decoded.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return [Reply(ERR_SYNTAX)]
        return self._authenticate(parts[1], parts[2], LoginMethod.SASL_PLAIN)

    def _authenticate(self, login: bytes, password: bytes, method: LoginMethod) -> list[Effect]:
        self.phase = Phase.AUTHENTICATING
        return [Authenticate(format_pop(login, password, self.timestamp), login, method)]

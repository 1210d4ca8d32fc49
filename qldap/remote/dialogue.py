"""Sans-I/O SMTP client for one connection of remote delivery (qmail-send(8), REMOTE DELIVERY): server bytes
in, actions out.

Why sans-I/O: every outcome of qmail-remote is a byte-exact text that users grep for (``… does not
like recipient.``, ``Possible duplicate!``), and the decision which reply leads where is a table;
the asyncio glue only connects, moves bytes, does the TLS handshake when asked (:class:`StartTls`)
and reports a lost connection or a timeout (:meth:`SmtpDialogue.connection_lost`).  The result is
qmail-remote's wire model: one ``r``/``h``/``s`` record per recipient, then one ``K``/``Z``/``D``
message record (:class:`RemoteOutcome`); a 4xx greeting or HELO asks for the next address instead.
Commands are sent one at a time (no pipelining), each awaited ``timeoutremote`` seconds by the glue.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Literal

from qldap.address import has_line_break, quote_address
from qldap.remote.routes import Credentials

SMTP_TEXT_LIMIT = 5000  # bytes of "Remote host said:" text kept per reply
QUIT = b"QUIT\r\n"
LOOPING = "Sorry. Message is looping within cluster, giving up. (#5.4.6)\n"
PARTIAL_LINE = "SMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
NO_CONNECTION = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"

def xtext(text: str) -> str:
    """RFC 3461 xtext: ``+XX`` for bytes outside 33–126 and for ``+`` and ``=``."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        out.append(f"+{byte:02X}" if byte < 33 or byte > 126 or byte in (43, 61) else chr(byte))
    return "".join(out)


def encode_body(message: bytes) -> bytes:
    """The DATA payload: LF → CRLF, a leading ``.`` doubled, then the terminating ``.`` line.

    The message must end with LF (see :func:`has_partial_final_line`).
    """
    lines = message.split(b"\n")[:-1]
    out = [b"." + line + b"\r\n" if line.startswith(b".") else line + b"\r\n" for line in lines]
    out.append(b".\r\n")
    return b"".join(out)


def has_partial_final_line(message: bytes) -> bool:
    """True when a non-empty message does not end with LF (SMTP cannot carry it)."""
    return bool(message) and not message.endswith(b"\n")


# -- replies --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete (possibly multi-line) server reply; lines without CR/LF."""

    code: int
    lines: tuple[bytes, ...]

    @property
    def said(self) -> str:
        """``Remote host said: `` plus every line, NUL → ``?``, at most 5000 bytes of lines."""
        text = b"".join(line + b"\n" for line in self.lines)[:SMTP_TEXT_LIMIT].replace(b"\0", b"?")
        return "Remote host said: " + text.decode("utf-8", "surrogateescape")

    @property
    def keywords(self) -> dict[str, tuple[str, ...]]:
        """EHLO extensions: upper-cased keyword → parameters (``AUTH=LOGIN`` counts as ``AUTH``)."""
        out: dict[str, tuple[str, ...]] = {}
        for line in self.lines[1:]:
            words = line[4:].decode("ascii", "replace").replace("=", " ", 1).split()
            if words:
                out[words[0].upper()] = tuple(w.upper() for w in words[1:])
        return out


def _code(line: bytes) -> int:
    """The reply code; a line without three digits counts as 400 (never taken as acceptance)."""
    head = line[:3]
    return int(head) if len(head) == 3 and head.isdigit() else 400


class ReplyReader:
    """Server bytes in, complete replies out (CR dropped, ``NNN-`` continuation lines joined)."""

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[bytes] = []

    def feed(self, data: bytes) -> list[Reply]:
        """Add bytes; return the replies they complete."""
        self._buf += data
        replies = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            line = line.replace(b"\r", b"")
            self._lines.append(line)
            if line[3:4] != b"-":
                replies.append(Reply(_code(self._lines[0]), tuple(self._lines)))
                self._lines = []
        return replies


# -- outcomes and actions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """``r`` accepted, ``h`` permanently refused, ``s`` temporarily refused, with its text."""

    letter: Literal["r", "h", "s"]
    text: str = ""


@dataclass(frozen=True, slots=True)
class MessageReport:
    """``K`` delivered, ``Z`` try later, ``D`` give up, with its text."""

    letter: Literal["K", "Z", "D"]
    text: str


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """qmail-remote's result: recipient records then the message record."""

    recipients: tuple[RecipientReport, ...]
    message: MessageReport

    def encode(self) -> bytes:
        """The NUL-terminated wire form written by ``qmail-remote``."""
        records = [r.letter + r.text for r in self.recipients] + [self.message.letter + self.message.text]
        return b"".join(rec.encode("utf-8", "surrogateescape") + b"\0" for rec in records)


def no_connection() -> RemoteOutcome:
    """The outcome when no address connected or every one asked for the next (qmail-tcpto(8))."""
    return RemoteOutcome((), MessageReport("Z", NO_CONNECTION))


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the server."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Do the TLS handshake now, then call ``tls_established`` or ``tls_failed``."""


@dataclass(frozen=True, slots=True)
class NextAddress:
    """Close this connection and try the next address (4xx greeting or HELO)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Finished:
    """The dialogue is over; close the connection (after sending any preceding :class:`Send`)."""

    outcome: RemoteOutcome


Action = Send | StartTls | NextAddress | Finished


@dataclass(frozen=True, slots=True)
class DialogueSettings:
    """Per-delivery client settings (from ``SendConfig`` and the route)."""

    helohost: str
    cookie: str = ""  # smtpclustercookie, already cut to 32 characters
    credentials: Credentials | None = None
    use_tls: bool = True


class _State(Enum):
    GREETING = auto()
    EHLO = auto()
    HELO = auto()
    STARTTLS = auto()
    TLS_HANDSHAKE = auto()
    EHLO_TLS = auto()
    AUTH = auto()
    AUTH_USER = auto()
    AUTH_PASSWORD = auto()
    MAIL = auto()
    RCPT = auto()
    DATA = auto()
    BODY = auto()
    DONE = auto()


_AUTH_STAGE = {_State.AUTH: "AUTH LOGIN", _State.AUTH_USER: "username", _State.AUTH_PASSWORD: "password"}


class SmtpDialogue:
    """One SMTP client session with server *ip* delivering *message* from *sender* to *recipients*."""

    def __init__(
        self,
        ip: str,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        settings: DialogueSettings,
    ) -> None:
        if not recipients:
            raise ValueError("a delivery needs at least one recipient")
        self.ip = ip
        self.sender = sender
        self.recipients = tuple(recipients)
        self.message = message
        self.settings = settings
        self._reader = ReplyReader()
        self._state = _State.GREETING
        self._features: dict[str, tuple[str, ...]] = {}
        self._tls: str | None = None  # "STARTTLS proto=…; cipher=…; fingerprint=…;" once encrypted
        self._authenticated = False
        self._results: list[RecipientReport] = []
        self._critical = False  # the final dot was sent

    @property
    def done(self) -> bool:
        """True once a :class:`Finished` or :class:`NextAddress` was returned."""
        return self._state is _State.DONE

    # -- inputs from the glue ------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Action]:
        """Bytes from the server; returns what to do next (empty: wait for more bytes)."""
        actions: list[Action] = []
        for reply in self._reader.feed(data):
            if self._state in (_State.DONE, _State.TLS_HANDSHAKE):
                break  # nothing more is expected; stray bytes are ignored
            actions.extend(self._on_reply(reply))
        return actions

    def connection_lost(self, why: str = "") -> list[Action]:
        """The connection closed or a reply timed out: ``Z … connection died`` (qmail-send(8), REMOTE
        DELIVERY)."""
        if self._state is _State.DONE:
            return []
        dup = "Possible duplicate! " if self._critical else ""
        if self._tls is not None or self._state is _State.TLS_HANDSHAKE:
            text = f"Connected to {self.ip} but TLS connection died: {why} {dup}(#4.4.2)\n"
        else:
            text = f"Connected to {self.ip} but connection died. {dup}(#4.4.2)\n"
        return self._finish("Z", text, quit=False)

    def tls_established(self, proto: str, cipher: str, fingerprint: str) -> list[Action]:
        """The glue finished the handshake: greet again over TLS."""
        if self._state is not _State.TLS_HANDSHAKE:
            raise RuntimeError("tls_established without a StartTls action")
        self._tls = f"STARTTLS proto={proto}; cipher={cipher}; fingerprint={fingerprint};\n"
        self._reader = ReplyReader()  # bytes received in clear after STARTTLS must not count
        self._state = _State.EHLO_TLS
        return [self._command(f"EHLO {self.settings.helohost}")]

    def tls_failed(self, reason: str) -> list[Action]:
        """The handshake failed: ``ZTLS not available: <reason>``."""
        if self._state is not _State.TLS_HANDSHAKE:
            raise RuntimeError("tls_failed without a StartTls action")
        return self._finish("Z", f"TLS not available: {reason}\n", quit=False)

    # -- the table ------------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> list[Action]:
        handler = {
            _State.GREETING: self._on_greeting,
            _State.EHLO: self._on_ehlo,
            _State.HELO: self._on_helo,
            _State.STARTTLS: self._on_starttls,
            _State.EHLO_TLS: self._on_ehlo_tls,
            _State.AUTH: self._on_auth,
            _State.AUTH_USER: self._on_auth,
            _State.AUTH_PASSWORD: self._on_auth,
            _State.MAIL: self._on_mail,
            _State.RCPT: self._on_rcpt,
            _State.DATA: self._on_data,
            _State.BODY: self._on_body,
        }[self._state]
        return handler(reply)

    def _on_greeting(self, reply: Reply) -> list[Action]:
        if reply.code >= 500:
            return self._fail("D", f"Connected to {self.ip} but greeting failed.\n", reply)
        if reply.code >= 400:
            return self._next(reply)
        if reply.code != 220:
            return self._fail("Z", f"Connected to {self.ip} but greeting failed.\n", reply)
        cookie = self.settings.cookie
        if cookie and reply.lines[-1].rstrip().endswith(cookie.encode("utf-8", "surrogateescape")):
            return self._finish("D", LOOPING)
        self._state = _State.EHLO
        return [self._command(f"EHLO {self.settings.helohost}")]

    def _on_ehlo(self, reply: Reply) -> list[Action]:
        if reply.code != 250:
            self._state = _State.HELO
            return [self._command(f"HELO {self.settings.helohost}")]
        self._features = reply.keywords
        if self.settings.use_tls and "STARTTLS" in self._features:
            self._state = _State.STARTTLS
            return [self._command("STARTTLS")]
        return self._after_greeting()

    def _on_helo(self, reply: Reply) -> list[Action]:
        text = f"Connected to {self.ip} but my name was rejected.\n"
        if reply.code >= 500:
            return self._fail("D", text, reply)
        if reply.code >= 400:
            return self._next(reply)
        if reply.code != 250:
            return self._fail("Z", text, reply)
        self._features = {}
        return self._after_greeting()

    def _on_starttls(self, reply: Reply) -> list[Action]:
        if reply.code != 220:
            return self._after_greeting()  # continue in clear
        self._state = _State.TLS_HANDSHAKE
        return [StartTls()]

    def _on_ehlo_tls(self, reply: Reply) -> list[Action]:
        if reply.code != 250:
            return self._fail("Z", f"TLS connected to {self.ip} but my name was rejected.\n", reply)
        self._features = reply.keywords
        return self._after_greeting()

    def _after_greeting(self) -> list[Action]:
        creds = self.settings.credentials
        if creds is None:
            return self._mail()
        if "LOGIN" not in self._features.get("AUTH", ()):
            text = f"Connected to {self.ip} but no SMTP AUTH support detected but needed.\n"
            return self._finish("Z", text)
        self._state = _State.AUTH
        return [self._command("AUTH LOGIN")]

    def _on_auth(self, reply: Reply) -> list[Action]:
        creds = self.settings.credentials
        assert creds is not None
        expected = 235 if self._state is _State.AUTH_PASSWORD else 334
        if reply.code != expected:
            stage = _AUTH_STAGE[self._state]
            text = f"Connected to {self.ip} but authentication was rejected ({stage}).\n"
            return self._fail("D" if reply.code >= 500 else "Z", text, reply)
        if self._state is _State.AUTH:
            self._state = _State.AUTH_USER
            return [Send(_b64(creds.user))]
        if self._state is _State.AUTH_USER:
            self._state = _State.AUTH_PASSWORD
            return [Send(_b64(creds.password))]
        self._authenticated = True
        return self._mail()

    def _mail(self) -> list[Action]:
        if has_line_break(self.sender):
            return self._finish("D", "The sender address contains a line break or NUL; not sent.\n")
        command = f"MAIL FROM:<{quote_address(self.sender)}>"
        if "SIZE" in self._features:
            size = len(self.message)
            command += f" SIZE={size + size // 32 + 1}"
        if self._authenticated:
            command += f" AUTH=<{xtext(self.sender)}>"
        self._state = _State.MAIL
        return [self._command(command)]

    def _on_mail(self, reply: Reply) -> list[Action]:
        text = f"Connected to {self.ip} but sender was rejected.\n"
        if reply.code >= 500:
            return self._fail("D", text, reply)
        if reply.code >= 400:
            return self._fail("Z", text, reply)
        self._state = _State.RCPT
        return self._next_rcpt()

    def _next_rcpt(self) -> list[Action]:
        """The next RCPT command; an address with CR, LF or NUL fails at once without being sent."""
        while len(self._results) < len(self.recipients):
            recipient = self.recipients[len(self._results)]
            if not has_line_break(recipient):
                return [self._command(f"RCPT TO:<{quote_address(recipient)}>")]
            self._results.append(RecipientReport("h", "The address holds a line break or NUL; not sent.\n"))
        return self._after_rcpts()

    def _on_rcpt(self, reply: Reply) -> list[Action]:
        if reply.code >= 500:
            self._results.append(RecipientReport("h", f"{self.ip} does not like recipient.\n{reply.said}"))
        elif reply.code >= 400:
            self._results.append(RecipientReport("s", f"{self.ip} does not like recipient.\n{reply.said}"))
        else:
            self._results.append(RecipientReport("r"))
        return self._next_rcpt()

    def _after_rcpts(self) -> list[Action]:
        if not any(r.letter == "r" for r in self._results):
            return self._finish("D", f"Giving up on {self.ip}.\n")
        self._state = _State.DATA
        return [self._command("DATA")]

    def _on_data(self, reply: Reply) -> list[Action]:
        text = f"{self.ip} failed on DATA command.\n"
        if reply.code >= 500:
            return self._fail("D", text, reply)
        if reply.code >= 400:
            return self._fail("Z", text, reply)
        if has_partial_final_line(self.message):
            return self._finish("D", PARTIAL_LINE, quit=False)  # mid-DATA: only closing is safe
        self._state = _State.BODY
        self._critical = True
        return [Send(encode_body(self.message))]

    def _on_body(self, reply: Reply) -> list[Action]:
        self._critical = False
        text = f"{self.ip} failed after I sent the message.\n"
        if reply.code >= 500:
            return self._fail("D", text, reply)
        if reply.code >= 400:
            return self._fail("Z", text, reply)
        return self._finish("K", f"{self.ip} accepted message.\n{reply.said}")

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _command(line: str) -> Send:
        return Send(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def _next(self, reply: Reply) -> list[Action]:
        self._state = _State.DONE
        return [NextAddress(reply)]

    def _fail(self, letter: Literal["K", "Z", "D"], text: str, reply: Reply) -> list[Action]:
        return self._finish(letter, text + reply.said)

    def _finish(self, letter: Literal["K", "Z", "D"], text: str, quit: bool = True) -> list[Action]:
        self._state = _State.DONE
        if self._tls is not None:
            text += self._tls
        outcome = RemoteOutcome(tuple(self._results), MessageReport(letter, text))
        actions: list[Action] = [Send(QUIT)] if quit else []
        actions.append(Finished(outcome))
        return actions


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")) + b"\r\n"

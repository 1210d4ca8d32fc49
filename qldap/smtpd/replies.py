"""Every reply qmail-smtpd can send, with its exact code and text (qmail-smtpd(8)); nothing is written inline.

Why constants and small builders instead of format strings at the call sites: the texts are part of
the contract (clients, log parsers and the acceptance checks compare them byte for byte, down to the
irregular full stops), so each one exists exactly once, here, and the tests import them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: a three-digit code and one or more text lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text of the last line (the only line for single-line replies)."""
        return self.lines[-1]

    @property
    def permanent(self) -> bool:
        """True for 5xx replies."""
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        """True for 4xx replies."""
        return 400 <= self.code < 500

    def render(self) -> str:
        """The reply as sent, CRLF line ends, ``-`` after the code on all but the last line."""
        if len(self.lines) == 1:  # most replies: no per-line generator
            return f"{self.code} {self.lines[0]}\r\n"
        last = len(self.lines) - 1
        return "".join(
            f"{self.code}{' ' if i == last else '-'}{line}\r\n" for i, line in enumerate(self.lines)
        )

    def to_bytes(self) -> bytes:
        """:meth:`render` encoded for the socket (non-ASCII octets of addresses survive)."""
        return self.render().encode("utf-8", "surrogateescape")


def _r(code: int, *lines: str) -> Reply:
    return Reply(code, lines)


# -- session start (qmail-smtpd(8), SESSION START) -----------------------------------------------
UNABLE_TO_READ_CONTROLS = _r(421, "unable to read controls (#4.3.0)")
NO_IP_ADDRESSES = _r(421, "unable to figure out my IP addresses (#4.3.0)")
OUT_OF_MEMORY = _r(421, "out of memory (#4.3.0)")
PROTOCOL_VIOLATION = _r(554, "SMTP protocol violation")
DEFAULT_550_GREETING = "Sorry, your mail was administratively denied. (#5.7.1)"
DEFAULT_421_GREETING = "Service temporarily not available (#4.3.2)"
BAD_SEQUENCE = _r(503, "bad sequence of commands (#5.5.1)")
SERVICE_UNAVAILABLE = _r(421, "Service temporarily not available (#4.3.2)")
TOO_MANY_FROM_IP = _r(421, "too many sessions from your address (#4.3.2)")  # qldap-services(5) per_ip
LINE_TOO_LONG = _r(500, "Text line too long.")
TIMEOUT = _r(451, "timeout (#4.4.2)")


def _with_greeting(me: str, smtpgreeting: str) -> str:
    return f"{me} {smtpgreeting}" if smtpgreeting else me


def greeting(me: str, smtpgreeting: str = "", cookie: str = "") -> Reply:
    """``220 <me> ESMTP[ <smtpgreeting>][ <cookie>]``; the cookie (cut to 32) must stay last."""
    text = f"{me} ESMTP"
    if smtpgreeting:
        text += f" {smtpgreeting}"
    if cookie:
        text += f" {cookie[:32]}"
    return _r(220, text)


def greeting_prefix(me: str) -> str:
    """The part GREETDELAY sends one character per second: ``220 <me> ESMTP `` ."""
    return f"220 {me} ESMTP "


def greeting_550(me: str, text: str) -> Reply:
    """The 550GREETING reply (code 554): ``554 <me> <text>``, the default text when *text* is empty."""
    return _r(554, f"{me} {text or DEFAULT_550_GREETING}")


def greeting_421(me: str, text: str) -> Reply:
    """The 421GREETING reply: ``421 <me> <text>``, the default text when *text* is empty."""
    return _r(421, f"{me} {text or DEFAULT_421_GREETING}")


# -- simple commands (qmail-smtpd(8), COMMANDS) --------------------------------------------------
OK = _r(250, "ok")
FLUSHED = _r(250, "flushed")
VRFY = _r(252, "send some mail, i'll try my best")
HELP = _r(
    214,
    "qmail home page: http://pobox.com/~djb/qmail.html",
    "qmail-ldap patch home page: http://www.nrg4u.com",
)
UNIMPLEMENTED = _r(502, "unimplemented (#5.5.1)")


def goodbye(me: str) -> Reply:
    """``221 <me> Goodbye.``"""
    return _r(221, f"{me} Goodbye.")


def helo(me: str, smtpgreeting: str = "") -> Reply:
    """``250 <me>[ <smtpgreeting>]``"""
    return _r(250, _with_greeting(me, smtpgreeting))


def ehlo(
    me: str,
    smtpgreeting: str = "",
    *,
    databytes: int = 0,
    starttls: bool = False,
    auth: bool = False,
    cram_md5: bool = False,
) -> Reply:
    """The multi-line EHLO reply in the order of qmail-smtpd(8) COMMANDS (SIZE only when databytes ≠ 0)."""
    lines = [_with_greeting(me, smtpgreeting), "PIPELINING"]
    if databytes:
        lines.append(f"SIZE {databytes}")
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH LOGIN PLAIN CRAM-MD5" if cram_md5 else "AUTH LOGIN PLAIN")
    lines.append("8BITMIME")
    return Reply(250, tuple(lines))


# -- MAIL (qmail-smtpd(8), MAIL CHECKS) ----------------------------------------------------------
SYNTAX_ERROR = _r(555, "syntax error (#5.5.4)")
AUTH_NEEDED = _r(530, "authentication needed")
SIZE_EXCEEDED = _r(552, "sorry, that message size exceeds my databytes limit (#5.3.4)")
BAD_MAILFROM = _r(553, "sorry, your mail was administratively denied. (#5.7.1)")
NO_BOUNCES = _r(554, "RFC2821 bounces are administratively denied")
SANITY_NO_AT = _r(554, "mailfrom without @ is administratively denied")
SANITY_NO_USER_OR_DOMAIN = _r(554, "mailfrom without user or domain part is administratively denied")
SANITY_NO_DOT = _r(554, "mailfrom without . in domain part is administratively denied")
RETURN_MX_TEMPFAIL = _r(421, "DNS temporary failure at return MX check, try again later (#4.3.0)")
RETURN_MX_MISSING = _r(554, "refused mailfrom because return MX does not exist")
LOCAL_SENDER_REQUIRED = _r(554, "refused mailfrom because valid local sender address required")


def spf_rejected(ip: str, domain: str, explanation: str = "") -> Reply:
    """``spfreject`` (qmail-smtpd(8)): the sender domain's SPF policy says ``fail`` for this client."""
    why = f" ({explanation})" if explanation else ""
    return _r(550, f"5.7.1 SPF: {ip} is not allowed to send mail from {domain}{why} (#5.7.1)")


SPF_TEMPFAIL = _r(451, "4.7.1 SPF: temporary DNS failure checking the sender, try again later (#4.7.1)")
DMARC_TEMPFAIL = _r(451, "4.7.1 DMARC: temporary DNS failure checking the message, try again later (#4.7.1)")


def dmarc_rejected(domain: str) -> Reply:
    """``dmarcreject`` (qmail-smtpd(8)): the From domain publishes p=reject and nothing aligned passed."""
    return _r(550, f"5.7.1 DMARC: message rejected by the policy of {domain} (#5.7.1)")


def bad_mailfrom_unknown(ip: str) -> Reply:
    """badmailfrom-unknown hit for a client without reverse DNS."""
    return _r(
        553,
        f"sorry, your mail from a host [{ip}] without valid reverse DNS was administratively denied (#5.7.1)",
    )


def rbl_rejected(ip: str, message: str) -> Reply:
    """A ``reject`` rbllist entry matched."""
    return _r(553, f"sorry, your mailserver [{ip}] is rejected by {message}")


# -- RCPT (qmail-smtpd(8), RCPT CHECKS) and verification (qmail-smtpd(8), ADDRESS VERIFICATION) ---
MAIL_FIRST = _r(503, "MAIL first (#5.5.1)")
RCPT_FIRST = _r(503, "RCPT first (#5.5.1)")
BAD_RCPTTO = _r(553, "sorry, mail to that recipient is not accepted (#5.7.1)")
TOO_MANY_RECIPIENTS = _r(553, "sorry, too many recipients (#5.7.1)")
BOUNCE_MANY_RECIPIENTS = _r(
    550, "sorry, I don't accept bounce messages with more than one recipient. Go read RFC2821. (#5.7.1)"
)
VERIFY_TEMPFAIL_TEXT = "temporary failure in address verification (#4.3.0)"


def relay_probe(ip: str) -> Reply:
    """BLOCKRELAYPROBE: ``@``, ``%`` or ``!`` before the last ``@``."""
    return _r(553, f"sorry, we don't relay for [{ip}] (#5.7.1)")


def relay_denied(ip: str) -> Reply:
    """The recipient domain is not ours and the client may not relay."""
    return _r(553, f"sorry, relaying denied from your location [{ip}] (#5.7.1)")


def verify_invalid(text: str) -> Reply:
    """The verifier says the local address does not exist or is disabled: ``554 <text>``.

    554, not 550: qmail-ldap's qmail-smtpd answers RCPTCHECK and SENDERCHECK rejections with 554, and
    a drop-in replacement must give clients and log parsers the same code (docs/conformance.md).
    """
    return _r(554, text)


def verify_soft(text: str) -> Reply:
    """The verifier could not decide: ``451 <text>`` (a default text when it gave none)."""
    return _r(451, text or VERIFY_TEMPFAIL_TEXT)


# -- DATA (qmail-smtpd(8), DATA) -----------------------------------------------------------------
QQT_FAILURE = _r(451, "qqt failure (#4.3.0)")
GO_AHEAD = _r(354, "go ahead punk, make my day")
BARE_LF = _r(451, "See http://pobox.com/~djb/docs/smtplf.html.")
TOO_MANY_HOPS = _r(554, "too many hops, this message is looping (#5.4.6)")
EXEC_REJECTED = _r(552, "we don't accept email with this MIME content (#5.3.4)")


def queued(unix_time: int, qp: int, me: str) -> Reply:
    """``250 ok <unix-time> qp <qp> by <me>`` after the queue accepted the message."""
    return _r(250, f"ok {unix_time} qp {qp} by {me}")


def queue_reply(letter_text: str) -> Reply:
    """The reply for a qmail-queue result text: ``D<text>`` → ``554 <text>``, else ``451 <text>``."""
    if letter_text.startswith("D"):
        return _r(554, letter_text[1:])
    if letter_text.startswith("Z"):
        return _r(451, letter_text[1:])
    return _r(451, letter_text)


# -- STARTTLS (qmail-smtpd(8), COMMANDS) ---------------------------------------------------------
TLS_NO_PARAMETERS = _r(501, "Syntax error (no parameters allowed) (#5.5.4)")
TLS_UNAVAILABLE = _r(454, "TLS not available: unable to initialize ctx (#4.3.0)")
TLS_READY = _r(220, "ready for tls")

# -- AUTH (qmail-smtpd(8), SMTP AUTH) ------------------------------------------------------------
AUTH_ALREADY = _r(503, "you are already authenticated")
AUTH_ENCRYPTION_REQUIRED = _r(538, "Encryption required for requested authentication mechanism")
AUTH_UNSUPPORTED = _r(504, "authentication type not supported")
AUTH_ABORTED = _r(501, "authentication exchange aborted. (#4.3.0)")
AUTH_MALFORMED = _r(501, "authentication exchange failed")
AUTH_OK = _r(235, "nice to meet you")
AUTH_FAILURE = _r(535, "authentication failure")
AUTH_TEMPFAIL = _r(454, "temporary authentication failure (#4.3.0)")


def auth_challenge(challenge: bytes) -> Reply:
    """``334 <base64 challenge>`` (``334 `` with a trailing space for an empty challenge)."""
    return _r(334, base64.b64encode(challenge).decode("ascii"))

"""SMTP AUTH LOGIN and PLAIN as generators: challenges out, client lines in, a LoginAttempt back.

Why generators (STYLE.md pattern 8): a mechanism is a small dialogue whose next step depends on the
previous answer; a generator holds that state without I/O, so the asyncio glue just relays lines and
the tests drive it with plain strings.  Each mechanism yields a raw challenge (``b"Username:"``),
receives the client's base64 line, and returns the credentials; checking them is someone else's job.

:class:`SaslExchange` wraps one run and turns the two protocol failures into their replies: a line
``*`` aborts at once (qmail-smtpd(8), SMTP AUTH), bad base64 or a missing part fails the exchange.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field

from qldap.smtpd import replies
from qldap.smtpd.replies import Reply


class AuthAborted(Exception):
    """The client answered ``*``."""


class AuthSyntaxError(Exception):
    """The client's answer is not base64, or a required part is missing."""


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """Credentials to check; the password never appears in a repr (and so never in a log).

    For CRAM-MD5 ``password`` holds the client's hex digest and ``challenge`` the challenge it signed.
    """

    login: str
    password: str = field(repr=False)
    challenge: bytes | None = field(default=None, repr=False)


Exchange = Generator[bytes, str, LoginAttempt]
Mechanism = Callable[[str | None], Exchange]


def decode_line(line: str) -> str:
    """Decode one base64 client line (UTF-8, undecodable octets kept as surrogates).

    Raises:
        AuthAborted: the line is ``*``.
        AuthSyntaxError: the line is not valid base64.
    """
    line = line.strip(" \t")
    if line == "*":
        raise AuthAborted
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise AuthSyntaxError("bad base64") from None
    return raw.decode("utf-8", "surrogateescape")


def login(initial: str | None) -> Exchange:
    """AUTH LOGIN: ``Username:`` unless given with the command, then always ``Password:``.

    Raises:
        AuthAborted, AuthSyntaxError: see :func:`decode_line`; an empty user name is a syntax error.
    """
    user = decode_line(initial) if initial is not None else decode_line((yield b"Username:"))
    if not user:
        raise AuthSyntaxError("empty user name")
    password = decode_line((yield b"Password:"))
    return LoginAttempt(user, password)


def plain(initial: str | None) -> Exchange:
    """AUTH PLAIN: one ``authzid NUL authcid NUL password`` message; authcid is the login.

    Raises:
        AuthAborted, AuthSyntaxError: see :func:`decode_line`; fewer than three parts or an empty
            authcid is a syntax error.
    """
    data = decode_line(initial) if initial is not None else decode_line((yield b""))
    parts = data.split("\0")
    if len(parts) != 3 or not parts[1]:
        raise AuthSyntaxError("expected authzid NUL authcid NUL password")
    return LoginAttempt(parts[1], parts[2])


def cram_md5(challenge: bytes) -> Mechanism:
    """AUTH CRAM-MD5 (RFC 2195) with *challenge*: the client answers ``login SP hex-digest``.

    Only offered where the stored password is available in clear (``cleartextpasswd``): the server
    must compute HMAC-MD5 with the password as key.
    """

    def exchange(initial: str | None) -> Exchange:
        if initial is not None:
            raise AuthSyntaxError("CRAM-MD5 takes no initial response")
        answer = decode_line((yield challenge))
        user, _sep, digest = answer.rpartition(" ")
        if not user or len(digest) != 32:
            raise AuthSyntaxError("expected login SP digest")
        return LoginAttempt(user, digest.lower(), challenge)

    return exchange


MECHANISMS: Mapping[str, Mechanism] = {"LOGIN": login, "PLAIN": plain}


def parse_auth_arg(
    arg: str, extra: Mapping[str, Mechanism] | None = None
) -> tuple[Mechanism, str | None] | None:
    """Split ``AUTH`` arguments into the mechanism and its optional initial response; None if unknown.

    *extra* adds mechanisms this session offers beyond LOGIN and PLAIN (CRAM-MD5).
    """
    words = arg.split()
    if not words:
        return None
    name = words[0].upper()
    mechanism = MECHANISMS.get(name) or (extra or {}).get(name)
    if mechanism is None:
        return None
    return mechanism, (words[1] if len(words) > 1 else None)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this ``334`` reply and pass the client's next line to :meth:`SaslExchange.respond`."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange is over without credentials; send this reply."""

    reply: Reply


Step = Challenge | Failed | LoginAttempt


class SaslExchange:
    """One run of a mechanism, with the failures turned into replies (qmail-smtpd(8), SMTP AUTH)."""

    def __init__(self, mechanism: Mechanism, initial: str | None) -> None:
        self._gen = mechanism(initial)
        self._started = False

    def start(self) -> Step:
        """The first step: a challenge, or (with an initial response) possibly the result already."""
        self._started = True
        return self._step(None)

    def respond(self, line: str) -> Step:
        """Feed the client's answer to the last challenge."""
        if not self._started:
            return self.start()
        return self._step(line)

    def _step(self, line: str | None) -> Step:
        try:
            challenge = next(self._gen) if line is None else self._gen.send(line)
        except StopIteration as done:
            attempt: LoginAttempt = done.value
            if not attempt.password:
                return Failed(replies.AUTH_FAILURE)  # an empty password never authenticates
            return attempt
        except AuthAborted:
            return Failed(replies.AUTH_ABORTED)
        except AuthSyntaxError:
            return Failed(replies.AUTH_MALFORMED)
        return Challenge(replies.auth_challenge(challenge))

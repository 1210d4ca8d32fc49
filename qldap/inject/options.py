"""Command lines and environment of ``qmail-inject`` and ``sendmail``, read once into frozen records.

Everything here is pure: argv lists and environment mappings in, records out (qmail-inject(1)).  The
option scanner follows qmail's ``getopt``: options end at the first non-option word, at ``-`` or after
``--``; an option argument is either glued (``-fjoe``) or the next word (``-f joe``).  It is a
generator so that ``sendmail -bp`` acts as soon as it is seen, as the C program did, even when a later
word would be a usage error.

Why the environment becomes a record: qmail-inject's behaviour depends on a dozen variables
(``QMAILINJECT``, ``QMAILUSER`` …) and on control files overridden by more variables; reading them in
one place keeps :func:`qldap.inject.headers.prepare` a pure function that tests drive with literals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from qldap.address import Address
from qldap.control.files import ascii_lower
from qldap.errors import QldapError

INJECT_OPTIONS = "aAhHnNf:"
SENDMAIL_OPTIONS = "vimte:f:p:o:B:F:EJxb:"
SENDMAIL_USAGE = "sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]"
INJECT_USAGE = "qmail-inject [ -nNaAhH ] [ -fsender ] [ recip ... ]"


class UsageError(QldapError):
    """A command line the program does not understand (exit 100)."""


class RecipientMode(Enum):
    """Where qmail-inject takes the envelope recipients from."""

    DEFAULT = "A"  # the arguments if there are any, else the header
    ARGS = "a"
    HEADERS = "h"
    BOTH = "H"


@dataclass(frozen=True, slots=True)
class InjectOptions:
    """``qmail-inject [-nNaAhH] [-fsender] [recip…]``; *sender* is the raw ``-f`` text."""

    mode: RecipientMode = RecipientMode.DEFAULT
    queue: bool = True  # False with -n: print the message instead
    sender: str | None = None
    args: tuple[str, ...] = ()

    @property
    def effective_mode(self) -> RecipientMode:
        """:attr:`mode` with DEFAULT resolved: arguments when there are any, else the header."""
        if self.mode is RecipientMode.DEFAULT:
            return RecipientMode.ARGS if self.args else RecipientMode.HEADERS
        return self.mode

    @property
    def from_args(self) -> bool:
        """True when the arguments are recipients."""
        return self.effective_mode is not RecipientMode.HEADERS

    @property
    def from_headers(self) -> bool:
        """True when header addresses (To, Cc, Bcc … or their Resent- forms) are recipients."""
        return self.effective_mode is not RecipientMode.ARGS


class SendmailAction(Enum):
    """What a ``sendmail`` command line asks for."""

    INJECT = "inject"
    MAILQ = "mailq"  # -bp or the name mailq
    SMTPD = "smtpd"  # -bs
    NEWALIASES = "newaliases"


@dataclass(frozen=True, slots=True)
class SendmailOptions:
    """A parsed ``sendmail`` command line."""

    action: SendmailAction
    headers: bool = False  # -t
    sender: str | None = None  # -f
    fullname: str | None = None  # -F
    args: tuple[str, ...] = ()


class _Scanner:
    """qmail-style getopt over *argv* (without the program name); :attr:`rest` once exhausted."""

    def __init__(self, prog: str, argv: Sequence[str], spec: str, swallow: str = "") -> None:
        self.prog = prog
        self.argv = list(argv)
        self.with_arg = {spec[i] for i in range(len(spec) - 1) if spec[i + 1] == ":"}
        self.letters = set(spec.replace(":", ""))
        self.swallow = set(swallow)  # letters that eat the rest of their word (sendmail -E/-J)
        self.rest: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        i = 0
        while i < len(self.argv):
            word = self.argv[i]
            if word == "--":
                i += 1
                break
            if not word.startswith("-") or word == "-":
                break
            pos = 1
            while pos < len(word):
                letter = word[pos]
                pos += 1
                if letter not in self.letters:
                    raise UsageError(f"{self.prog}: illegal option -- {letter}")
                if letter in self.swallow:
                    yield letter, word[pos:]
                    break
                if letter in self.with_arg:
                    if pos < len(word):
                        value = word[pos:]
                    elif i + 1 < len(self.argv):
                        i += 1
                        value = self.argv[i]
                    else:
                        raise UsageError(f"{self.prog}: option requires an argument -- {letter}")
                    yield letter, value
                    break
                yield letter, None
            i += 1
        self.rest = tuple(self.argv[i:])


def parse_inject(argv: Sequence[str]) -> InjectOptions:
    """``qmail-inject``'s command line (without the program name).

    Raises:
        UsageError: an unknown option or ``-f`` without an argument.
    """
    mode = RecipientMode.DEFAULT
    queue = True
    sender: str | None = None
    scanner = _Scanner("qmail-inject", argv, INJECT_OPTIONS)
    for letter, value in scanner:
        if letter == "f":
            sender = value
        elif letter == "n":
            queue = False
        elif letter == "N":
            queue = True
        else:
            mode = RecipientMode(letter)
    return InjectOptions(mode, queue, sender, scanner.rest)


def parse_sendmail(prog: str, argv: Sequence[str]) -> SendmailOptions:
    """``sendmail``'s command line; *prog* is the name it was called by (``mailq``, ``newaliases`` …).

    ``-bp`` and ``-bs`` decide at once (later words are not examined); ``-bm``, ``-B``, ``-p``, ``-v``,
    ``-i``, ``-x``, ``-m``, ``-e``, ``-o…``, ``-E…``, ``-J…`` are accepted and ignored.

    Raises:
        UsageError: an unknown option, a missing option argument, or ``-b`` with another letter.
    """
    headers = False
    sender: str | None = None
    fullname: str | None = None
    scanner = _Scanner("sendmail", argv, SENDMAIL_OPTIONS, swallow="EJ")
    for letter, value in scanner:
        if letter == "t":
            headers = True
        elif letter == "f":
            sender = value
        elif letter == "F":
            fullname = value
        elif letter == "b":
            mode = (value or "")[:1]
            if mode == "p":
                return SendmailOptions(SendmailAction.MAILQ)
            if mode == "s":
                return SendmailOptions(SendmailAction.SMTPD)
            if mode != "m":
                raise UsageError(f"sendmail: unknown -b mode {value!r}")
    name = os.path.basename(prog)
    if name == "mailq":
        return SendmailOptions(SendmailAction.MAILQ)
    if name == "newaliases":
        return SendmailOptions(SendmailAction.NEWALIASES)
    return SendmailOptions(SendmailAction.INJECT, headers, sender, fullname, scanner.rest)


def inject_argv(opts: SendmailOptions) -> tuple[str, ...]:
    """The qmail-inject command line sendmail hands over: ``-H`` (with -t) or ``-a``, ``-f``, ``--``."""
    out = ["-H" if opts.headers else "-a"]
    if opts.sender is not None:
        out += ["-f", opts.sender]
    return (*out, "--", *opts.args)


def inject_environ(opts: SendmailOptions, environ: Mapping[str, str]) -> dict[str, str]:
    """qmail-inject's environment under sendmail: ``-F`` → ``MAILNAME``; ``-f`` → ``QMAILUSER``/``QMAILHOST``.

    With ``-f user@host`` the From: line is built from that address; a sender without ``@`` sets only
    the user (the host then comes from ``defaulthost``, so inherited ``QMAILHOST``/``MAILHOST`` are
    removed); an empty sender (``-f ''``, a bounce) leaves the From: user alone.
    """
    env = dict(environ)
    if opts.fullname is not None:
        env["MAILNAME"] = opts.fullname
    if opts.sender:
        sender = Address.parse(opts.sender)
        if sender.has_at:
            env["QMAILUSER"], env["QMAILHOST"] = sender.local, sender.domain
        else:
            env["QMAILUSER"] = opts.sender
            env.pop("QMAILHOST", None)
            env.pop("MAILHOST", None)
    return env


SMTPD_FACTS = (
    ("RELAYCLIENT", ""),
    ("DATABYTES", "0"),
    ("PROTO", "TCP"),
    ("TCPLOCALIP", "127.0.0.1"),
    ("TCPLOCALHOST", "localhost"),
    ("TCPREMOTEIP", "127.0.0.1"),
    ("TCPREMOTEHOST", "localhost"),
    ("TCPREMOTEINFO", "sendmail-bs"),
)


def smtpd_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The SMTP daemon's environment for ``sendmail -bs``: a trusted localhost client unless PROTO is set."""
    env = dict(environ)
    if "PROTO" not in env:
        env.update(SMTPD_FACTS)
    return env


# -- environment ------------------------------------------------------------------------------


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class InjectEnv:
    """What qmail-inject takes from its environment (qmail-inject(1)).

    ``user``/``host``/``fullname`` build a missing From:; ``return_user``/``return_host`` the default
    envelope sender.  The flags are the ``QMAILINJECT`` letters; ``followup`` the lower-cased
    addresses of the ``QMAILMFTFILE`` file (None when unset or absent).
    """

    user: str = "anonymous"
    host: str | None = None
    fullname: str | None = None
    return_user: str = "anonymous"
    return_host: str | None = None
    name_comment: bool = False  # c
    drop_return_path: bool = False  # s
    drop_from: bool = False  # f
    drop_message_id: bool = False  # i
    verp_recipient: bool = False  # r
    verp_message: bool = False  # m
    followup: frozenset[str] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], followup: frozenset[str] | None = None) -> InjectEnv:
        """Read the variables the way qmail-inject does: a variable set to ``""`` still counts as set."""
        letters = environ.get("QMAILINJECT", "")
        user = _first(environ, "QMAILUSER", "MAILUSER", "USER", "LOGNAME") or "anonymous"
        host = _first(environ, "QMAILHOST", "MAILHOST")
        return cls(
            user=user,
            host=host,
            fullname=_first(environ, "QMAILNAME", "MAILNAME", "NAME"),
            return_user=_first(environ, "QMAILSUSER") or user,
            return_host=_first(environ, "QMAILSHOST") or host,
            name_comment="c" in letters,
            drop_return_path="s" in letters,
            drop_from="f" in letters,
            drop_message_id="i" in letters,
            verp_recipient="r" in letters,
            verp_message="m" in letters,
            followup=followup,
        )


def followup_addresses(text: str) -> frozenset[str]:
    """The ``QMAILMFTFILE`` list: one address per line, blank and ``#`` lines skipped, case-folded."""
    out = set()
    for raw in text.split("\n"):
        line = raw.rstrip(" \t\r")
        if line and not line.startswith("#"):
            out.add(ascii_lower(line))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Controls:
    """The four host names qmail-inject completes addresses and Message-IDs with."""

    defaultdomain: str
    defaulthost: str
    plusdomain: str
    idhost: str


CONTROL_OVERRIDES = (
    ("defaultdomain", "QMAILDEFAULTDOMAIN"),
    ("defaulthost", "QMAILDEFAULTHOST"),
    ("plusdomain", "QMAILPLUSDOMAIN"),
    ("idhost", "QMAILIDHOST"),
)
CONTROL_NAMES = ("me", *(name for name, _ in CONTROL_OVERRIDES))


def controls_from(files: Mapping[str, str | None], environ: Mapping[str, str]) -> Controls:
    """Effective controls from file values (``name`` → first line, None when absent) and the environment.

    An absent or empty file falls back to ``me``, and without ``me`` to the file's own name (as
    qmail's ``control_rldef``); a set environment variable overrides both.
    """
    me = files.get("me") or None
    values: dict[str, str] = {}
    for name, variable in CONTROL_OVERRIDES:
        value = environ.get(variable)
        if value is None:
            value = files.get(name) or me or name
        values[name] = value
    return Controls(**values)

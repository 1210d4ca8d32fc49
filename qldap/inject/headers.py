"""qmail-inject's header completion: a message and its settings in, the queued bytes and envelope out.

:func:`prepare` is sans-I/O (qmail-inject(1)).  It splits the header from the body the way qmail does (a
line that is not a header field ends the header; a blank line is then inserted), rewrites every
address header (To, Cc, Bcc, From, Sender, Reply-To … and their Resent- forms), drops ``Bcc``,
``Resent-Bcc``, ``Return-Path`` and ``Content-Length``, adds ``Date``, ``Message-ID``, ``From`` and
``Cc: recipient list not shown: ;`` when missing, and collects the envelope sender and recipients.

Addresses are completed (:class:`Completer`) in this order: a source route is dropped, then a
trailing ``.`` or ``@``; no ``@`` → ``@defaulthost``; a trailing ``+`` → ``.plusdomain``; a domain
without a dot (and not a ``[literal]``) → ``.defaultdomain``; ``<>`` and ``x@[]`` are left alone.
The RFC 822 token work (and why it is not :mod:`email`) is in :mod:`qldap.inject.tokens`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qldap.control.files import ascii_lower
from qldap.dates import qmail_date
from qldap.errors import PermanentFailure
from qldap.inject.options import Controls, InjectEnv, InjectOptions
from qldap.inject.tokens import (
    Kind,
    Rewrite,
    SyntaxProblem,
    Token,
    quote2,
    quote_need,
    quote_string,
    render,
    rewrite_list,
    tokenize,
    unparse,
    unquote,
)
from qldap.records import to_bytes, to_text

VERP_SUFFIX = "-@[]"
NOT_SHOWN = "Cc: recipient list not shown: ;\n"


# -- address completion -----------------------------------------------------------------------


class Completer:
    """The completion rules for one set of :class:`Controls` (module docstring)."""

    def __init__(self, controls: Controls) -> None:
        self.host = tokenize("@" + controls.defaulthost)
        self.plus = tokenize("." + controls.plusdomain)
        self.domain = tokenize("." + controls.defaultdomain)

    def __call__(self, addr: list[Token]) -> list[Token]:
        """The completed form of one address (reading order)."""
        if not addr:
            return addr
        if len(addr) >= 2 and addr[-2].kind is Kind.AT and addr[-1] == Token(Kind.LITERAL):
            return addr  # x@[] (VERP) stays
        if addr[0].kind is Kind.AT:  # source route @a,@b:user@host
            colon = next((j for j, t in enumerate(addr) if t.kind is Kind.COLON), len(addr) - 1)
            addr = addr[colon + 1 :]
        for stray in (Kind.DOT, Kind.AT):
            if not addr:
                return addr
            if addr[-1].kind is stray:
                addr = addr[:-1]
        if not addr:
            return addr
        if not any(t.kind is Kind.AT for t in addr):
            addr = addr + self.host
        last = addr[-1]
        if last.kind is Kind.ATOM and last.text.endswith("+"):
            addr = [*addr[:-1], Token(Kind.ATOM, last.text[:-1]), *self.plus]
        domain: list[Token] = []
        for token in reversed(addr):
            if token.kind is Kind.AT:
                break
            domain.append(token)
        if any(t.kind in (Kind.DOT, Kind.LITERAL) for t in domain):
            return addr
        return addr + self.domain

    def address(self, text: str) -> str:
        """A command-line address (``-f``, recipients) completed, as envelope text.

        Raises:
            SyntaxProblem: it cannot be tokenized.
        """
        return unquote(self(tokenize(quote2(text))))


# -- the message --------------------------------------------------------------------------------

RECIPIENT_FIELDS = frozenset({"to", "cc", "bcc", "apparently-to"})
RESENT_RECIPIENT_FIELDS = frozenset({"resent-to", "resent-cc", "resent-bcc"})
SENDER_FIELDS = frozenset({
    "sender", "from", "reply-to", "return-receipt-to", "errors-to",
    "resent-sender", "resent-from", "resent-reply-to",
})  # fmt: skip
DROPPED_FIELDS = frozenset({"bcc", "resent-bcc", "return-path", "content-length"})
RESENT_FIELDS = frozenset({
    "resent-sender", "resent-from", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc",
    "resent-date", "resent-message-id",
})  # fmt: skip
KNOWN_FIELDS = frozenset({
    *RECIPIENT_FIELDS, *RESENT_RECIPIENT_FIELDS, *SENDER_FIELDS, *RESENT_FIELDS, "date", "message-id",
    "subject", "received", "return-path", "delivered-to", "content-length", "content-type",
    "content-transfer-encoding", "notice-requested-upon-delivery-to", "mail-followup-to",
})  # fmt: skip


def field_valid(line: str) -> bool:
    """True when *line* starts a header field: a name of printable non-blank characters, then ``:``."""
    name, colon, _ = line.partition(":")
    name = name.rstrip(" \t")
    return bool(colon) and bool(name) and all("!" <= c <= "~" for c in name)


def field_name(field: str) -> str | None:
    """The lower-cased name of a header field qmail-inject knows, else None."""
    name, colon, _ = field.partition(":")
    if not colon:
        return None
    key = ascii_lower(name.rstrip(" \t"))
    return key if key in KNOWN_FIELDS else None


@dataclass(frozen=True, slots=True)
class Split:
    """A message cut into header fields (each with its continuation lines) and the rest."""

    fields: tuple[str, ...]
    body: bytes  # from the blank line on (b"" when the message ended inside the header)


def split_message(message: bytes) -> Split:
    """Cut *message* the way qmail-inject reads it.

    A last line without ``\\n`` gets one; a ``From `` line in the header becomes ``MBOX-Line: From …``;
    the header ends at a blank line or at the first line that is neither a field nor a continuation,
    in which case a blank line is put before it.
    """
    if message and not message.endswith(b"\n"):
        message += b"\n"
    fields: list[str] = []
    pos = 0
    while pos < len(message):
        end = message.index(b"\n", pos) + 1
        line = to_text(message[pos:end])
        if fields and line[0] in " \t":
            fields[-1] += line
        elif line == "\n":
            return Split(tuple(fields), message[pos:])
        elif line.startswith("From "):
            fields.append("MBOX-Line: " + line)
        elif field_valid(line):
            fields.append(line)
        else:
            return Split(tuple(fields), b"\n" + message[pos:])
        pos = end
    return Split(tuple(fields), b"")


@dataclass(frozen=True, slots=True)
class Prepared:
    """What to queue: the completed message, the envelope sender and recipients."""

    message: bytes
    sender: str
    recipients: tuple[str, ...]


def message_id(idhost: str, now: float, pid: int) -> str:
    """``Message-ID: <YYYYMMDDHHMMSS.<pid>.qmail@idhost>\\n`` (UTC)."""
    return f"Message-ID: <{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}.{pid}.qmail@{idhost}>\n"


class _Completion:
    """The state of one :func:`prepare` call while its header fields are read."""

    def __init__(self, env: InjectEnv, complete: Completer, sender: str | None) -> None:
        self.env = env
        self.complete = complete
        self.sender = sender
        self.seen: set[str] = set()
        self.saved: list[str] = []
        self.header_rcpts: list[str] = []
        self.resent_rcpts: list[str] = []
        self.tocc: list[str] = []

    def collector(self, *lists: list[str]) -> Rewrite:
        found: list[str] = []

        def rewrite(addr: list[Token]) -> list[Token]:
            addr = self.complete(addr)
            found.append(unquote(addr))
            return addr

        def run(tokens: list[Token]) -> list[Token]:
            out = rewrite_list(tokens, rewrite)
            for target in lists:  # found is right to left: store in reading order
                target.extend(a for a in reversed(found) if a)
            return out

        return run

    def return_path(self, tokens: list[Token]) -> list[Token]:
        def rewrite(addr: list[Token]) -> list[Token]:
            addr = self.complete(addr)
            if self.sender is None:
                self.sender = unquote(addr) + (VERP_SUFFIX if self.env.verp_recipient else "")
            return addr

        return rewrite_list(tokens, rewrite)

    def field(self, field: str) -> None:
        name = field_name(field)
        env = self.env
        if (env.drop_from and name == "from") or (env.drop_message_id and name == "message-id"):
            return
        if env.drop_return_path and name == "return-path":
            return
        if name is None:
            self.saved.append(field)
            return
        self.seen.add(name)
        run: Rewrite | None = None
        if name in ("to", "cc"):
            run = self.collector(self.header_rcpts, self.tocc)
        elif name in RECIPIENT_FIELDS:
            run = self.collector(self.header_rcpts)
        elif name in RESENT_RECIPIENT_FIELDS:
            run = self.collector(self.resent_rcpts)
        elif name == "return-path":
            run = self.return_path
        elif name in SENDER_FIELDS:
            run = self.collector()
        if run is not None:
            try:
                field = unparse(run(tokenize(field)))
            except SyntaxProblem:
                raise PermanentFailure("unable to parse this line:\n" + field.rstrip("\n")) from None
        if name not in DROPPED_FIELDS:
            self.saved.append(field)

    def rewritten(self, text: str, run: Rewrite) -> str:
        """A generated field passed through the same rewriting as the message's own."""
        return unparse(run(tokenize(text)))


def _default_from(c: _Completion) -> str:
    env = c.env
    user = quote_string(env.user) if quote_need(env.user) else env.user
    address = user + ("@" + env.host if env.host is not None else "")
    name = env.fullname
    if name is None:
        text = f"From: {address}"
    elif env.name_comment:
        text = f"From: {address} {render(Token(Kind.COMMENT, name))}"
    else:
        text = f"From: {render(Token(Kind.QUOTE, name))} <{address}>"
    return c.rewritten(text, c.collector())


def _default_sender(c: _Completion, now: float, pid: int) -> None:
    env = c.env
    user = env.return_user
    if env.verp_message:
        user += f"-{int(now)}.{pid}"
    if env.verp_recipient:
        user += "-"
    host = "" if env.return_host is None else "@" + env.return_host
    text = "Return-Path: " + quote_string(user) + host
    c.rewritten(text, c.return_path)


def _added_fields(c: _Completion, controls: Controls, now: float, pid: int) -> list[str]:
    resent = bool(c.seen & RESENT_FIELDS)
    prefix = "Resent-" if resent else ""
    low = "resent-" if resent else ""
    added: list[str] = []
    if low + "date" not in c.seen:
        added.append(f"{prefix}Date: {qmail_date(now)}\n")
    if low + "message-id" not in c.seen:
        added.append(prefix + message_id(controls.idhost, now, pid))
    if low + "from" not in c.seen:
        added.append(prefix + _default_from(c))
    if low + "to" not in c.seen and low + "cc" not in c.seen:
        added.append(prefix + NOT_SHOWN)
    followup = c.env.followup
    wanted = followup and any(ascii_lower(a) in followup for a in c.tocc)
    if wanted and not resent and "mail-followup-to" not in c.seen:
        added.append("Mail-Followup-To: " + ",\n  ".join(quote2(a) for a in c.tocc) + "\n")
    return added


def prepare(
    message: bytes, opts: InjectOptions, env: InjectEnv, controls: Controls, now: float, pid: int
) -> Prepared:
    """Complete *message* as qmail-inject does and work out its envelope.

    With ``opts.queue`` False (``-n``) the result starts with the ``Return-Path:`` line qmail-inject
    prints.  Recipients are the arguments and/or the header's To/Cc/Bcc/Apparently-To (their
    Resent- forms instead when the message has any Resent- field), following ``opts``; the sender
    is ``-f``, else the first ``Return-Path:`` (unless ``QMAILINJECT`` has ``s``), else the default.

    Raises:
        PermanentFailure: ``unable to parse address: …`` for a bad argument or ``-f``, ``unable to
            parse this line:`` and the field for a header that is not an address list.
    """
    complete = Completer(controls)
    sender: str | None = None
    if opts.sender is not None:
        try:
            sender = complete.address(opts.sender)
        except SyntaxProblem:
            raise PermanentFailure("unable to parse this line:\n" + quote2(opts.sender)) from None
    arg_rcpts: list[str] = []
    if opts.from_args:
        for arg in opts.args:
            try:
                rcpt = complete.address(arg)
            except SyntaxProblem:
                raise PermanentFailure(f"unable to parse address: {arg}") from None
            if rcpt:
                arg_rcpts.append(rcpt)
    split = split_message(message)
    c = _Completion(env, complete, sender)
    for field in split.fields:
        c.field(field)
    if c.sender is None:
        _default_sender(c, now, pid)
    assert c.sender is not None
    head: list[str] = []
    if not opts.queue:
        head.append(f"Return-Path: <{quote2(c.sender)}>\n")
    head += _added_fields(c, controls, now, pid)
    head += c.saved
    recipients = list(arg_rcpts)
    if opts.from_headers:
        recipients += c.resent_rcpts if c.seen & RESENT_FIELDS else c.header_rcpts
    return Prepared(to_bytes("".join(head)) + split.body, c.sender, tuple(recipients))

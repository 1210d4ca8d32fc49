"""DKIM signing of one outgoing message: which keys, which header fields, the signature lines.

The pieces, and why they are apart:

* :func:`signing_domain` picks the domain whose keys sign: the ``From:`` header's domain, because
  DMARC (RFC 7489 section 3.1) judges a signature by its alignment with that domain; only a message
  without a usable ``From:`` falls back to the envelope sender's domain.
* :class:`DkimSigner` turns a message into the :class:`PrivateKey` records that must sign it
  (control/dkimkeys through a :class:`~qldap.mailauth.keys.KeyTable`, files through a
  :class:`~qldap.mailauth.keys.KeyCache`).  This part reads files and is cheap.
* :func:`sign_message` is the expensive, pure part: dkimpy computes one ``DKIM-Signature`` per key
  (relaxed/relaxed, the fields of :data:`SIGNED_FIELDS` that are present, ``From`` once more than
  present so that no second ``From`` can be added).  It takes and returns plain bytes and picklable
  records, so a daemon can run it in a worker process: dkimpy's big-number arithmetic and regular
  expressions hold the interpreter lock (docs/mailauth.md has the figures).

Messages are in the queue's form (LF line ends); the signature lines come back LF-terminated too,
ready to be put in front of the message.  What a failure does (send unsigned and log, or defer under
control/dkimstrict) is the caller's decision, made with :func:`failure_defers`.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dkim

from qldap.address import Address
from qldap.control.files import ControlDir, Signature, ascii_lower
from qldap.errors import ConfigError
from qldap.mailauth.keys import CONTROL, STRICT_CONTROL, KeyCache, KeyTable, PrivateKey

SIGNED_FIELDS: tuple[bytes, ...] = (
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"in-reply-to", b"references", b"resent-date", b"resent-from",
    b"resent-sender", b"resent-to", b"resent-cc", b"resent-message-id", b"list-id", b"list-help",
    b"list-unsubscribe", b"list-unsubscribe-post", b"list-subscribe", b"list-post", b"list-owner",
    b"list-archive",
)  # fmt: skip
"""Header fields signed when present (RFC 6376 section 5.4.1's list, minus trace and volatile fields)."""

CANONICALIZATION = (b"relaxed", b"relaxed")
HEADER_LIMIT = 1 << 18  # bytes of header looked at to find From: (a longer header is malformed anyway)
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


class SigningError(Exception):
    """dkimpy could not sign this message (its header cannot be parsed as RFC 5322 fields)."""


def header_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of *message* as (lowercased name, unfolded value) pairs, in order."""
    end = len(message)
    for sep in (b"\n\n", b"\r\n\r\n"):
        at = message.find(sep, 0, HEADER_LIMIT)
        if at != -1:
            end = min(end, at)
    fields: list[tuple[bytes, bytes]] = []
    for line in message[: min(end, HEADER_LIMIT)].split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
            continue
        m = _FIELD.match(line)
        if m is None:
            break  # not a header line: the header ends here (or the message has none)
        fields.append((m.group(1).lower(), line[m.end() :].strip()))
    return fields


def from_domain(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The lowercased domain of the first address in the (first) ``From:`` field, if it has one."""
    values = [value for name, value in fields if name == b"from"]
    if not values:
        return None
    text = values[0].decode("utf-8", "surrogateescape")
    for _display, addr in email.utils.getaddresses([text]):
        parsed = Address.parse(addr)
        if parsed.has_at and parsed.local and parsed.domain:
            return _ascii_domain(parsed.domain.strip().rstrip("."))
    return None


def _ascii_domain(domain: str) -> str:
    """*domain* lowercased, an internationalized one in its ASCII (IDNA) form as control files hold it."""
    if domain.isascii():
        return ascii_lower(domain)
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()


def signing_domain(message: bytes, envelope_sender: str) -> str | None:
    """Whose keys sign *message*: the ``From:`` domain, else the envelope sender's domain, else None."""
    found = from_domain(header_fields(message))
    if found:
        return found
    sender = Address.parse(envelope_sender)
    return _ascii_domain(sender.domain) if sender.has_at and sender.domain else None


def fields_to_sign(fields: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
    """The ``h=`` list: every present field of :data:`SIGNED_FIELDS` as often as it occurs, and
    ``from`` once more (over-signing, RFC 6376 section 8.15: a second From: added later breaks the
    signature)."""
    counts: dict[bytes, int] = {}
    for name, _value in fields:
        if name in SIGNED_FIELDS:
            counts[name] = counts.get(name, 0) + 1
    counts[b"from"] = counts.get(b"from", 0) + 1
    return tuple(name for name in SIGNED_FIELDS for _ in range(counts.get(name, 0)))


def sign_message(message: bytes, keys: Sequence[PrivateKey]) -> bytes:
    """The ``DKIM-Signature`` lines (LF line ends) that *keys* make for *message*, one per key.

    Pure and picklable in and out: safe to run in a thread or a worker process.

    Raises:
        SigningError: dkimpy refused the message or a key.
    """
    include = fields_to_sign(header_fields(message))
    out = []
    for key in keys:
        try:
            signer = dkim.DKIM(message, signature_algorithm=key.algorithm.dkim_name, linesep=b"\n")
            line = signer.sign(
                key.selector.encode("ascii"), key.domain.encode("ascii"), key.data,
                canonicalize=CANONICALIZATION, include_headers=list(include),
            )  # fmt: skip
        except dkim.DKIMException as exc:
            raise SigningError(f"unable to sign for {key.domain} ({key.selector}): {exc}") from None
        out.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class SignPlan:
    """What to sign a message with: the keys of its signing domain (empty = leave it unsigned)."""

    domain: str | None
    keys: tuple[PrivateKey, ...] = ()


class DkimSigner:
    """The keys of control/dkimkeys, re-read when the control files change; thread-safe."""

    def __init__(self, ctl: ControlDir) -> None:
        self.ctl = ctl
        self._cache = KeyCache()
        self._table: tuple[tuple[Signature, ...], KeyTable] | None = None

    def table(self) -> KeyTable:
        """control/dkimkeys and control/dkimstrict as they are now.

        Raises:
            ConfigError: a file cannot be read or a line is malformed.
        """
        snap = self.ctl.snapshot((CONTROL, STRICT_CONTROL))
        held = self._table
        if held is not None and held[0] == snap:
            return held[1]
        table = KeyTable.from_control(self.ctl)
        self._table = (snap, table)
        return table

    @property
    def enabled(self) -> bool:
        """True when control/dkimkeys names at least one key (a broken file counts as enabled)."""
        try:
            return bool(self.table().entries)
        except ConfigError:
            return True

    def plan(self, message: bytes, envelope_sender: str) -> SignPlan:
        """The keys that sign *message* (sent by *envelope_sender*), loaded.

        Raises:
            ConfigError: control/dkimkeys is broken, or a key file of the signing domain is
                (:class:`~qldap.mailauth.keys.KeyFileError`).
        """
        table = self.table()
        if not table.entries:
            return SignPlan(None)
        domain = signing_domain(message, envelope_sender)
        if domain is None:
            return SignPlan(None)
        return SignPlan(domain, tuple(self._cache.load(e) for e in table.for_domain(domain)))

    def failure_defers(self) -> bool:
        """control/dkimstrict: does a signing failure defer the message instead of sending it unsigned?

        A strictness file that cannot be read counts as strict: defer rather than guess.
        """
        try:
            return self.table().strict
        except ConfigError:  # dkimkeys is broken; dkimstrict itself may still be readable
            try:
                return self.ctl.boolean(STRICT_CONTROL, False)
            except ConfigError:
                return True

    def sign(self, message: bytes, envelope_sender: str) -> SignResult:
        """Plan and sign in this thread (qmail-inject, bounces): the outcome, never an exception."""
        try:
            plan = self.plan(message, envelope_sender)
            if not plan.keys:
                return SignResult(b"", plan.domain)
            return SignResult(sign_message(message, plan.keys), plan.domain)
        except (ConfigError, SigningError) as exc:
            return SignResult(b"", None, str(exc), self.failure_defers())


@dataclass(frozen=True, slots=True)
class SignResult:
    """A signing attempt: the lines to prepend (empty = none) or what went wrong and whether to defer."""

    header: bytes
    domain: str | None
    error: str | None = None
    defer: bool = False

    @property
    def signed(self) -> bool:
        """True when there are signature lines to prepend."""
        return bool(self.header)

"""Parse the path argument of SMTP MAIL/RCPT into a mail address; the only RFC 5321 path parser.

Why one parser: the relay check, the badmailfrom/badrcptto lists, the verifier and the queue envelope
must all see the *same* address.  A second parser that disagreed about quoting or source routes is how
``<"victim@elsewhere"@example.org>`` slips past a relay check, so every component imports this one.

The rules (qmail-smtpd(8), ADDRESSES) follow qmail-smtpd's ``addrparse``: the path is the text after the first
``<`` up to the first ``>`` outside quotes (or, without ``<``, after the first ``:`` up to the first
unquoted space); a source route ``@a,@b:`` is dropped; quotes and backslashes are removed; a
``[d.d.d.d]`` domain naming one of our own addresses becomes ``localiphost``.  The domain is the text
after the **last** ``@``.

This module is a core module: it imports nothing else of qldap.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

MAX_ADDRESS = 899  # longer addresses are a syntax error (qmail: 900 including the NUL)
BOUNCE_ADDRESSES = ("", "#@[]")

# RFC 821 "atom" characters: a local part made only of these (and inner single dots) needs no quotes.
_ATOM = frozenset("!#$%&'*+-/0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


class AddressSyntaxError(ValueError):
    """The MAIL/RCPT argument is not a usable path (smtpd answers ``555 syntax error (#5.5.4)``)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mail address split at its last ``@``; ``domain`` is empty when there is no ``@``."""

    local: str
    domain: str
    has_at: bool

    @classmethod
    def parse(cls, text: str) -> Address:
        """Split *text* at the last ``@`` (no parsing of quotes: *text* is already an address)."""
        at = text.rfind("@")
        if at < 0:
            return cls(text, "", False)
        return cls(text[:at], text[at + 1 :], True)

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.has_at else self.local


@dataclass(frozen=True, slots=True)
class PathArg:
    """A parsed MAIL/RCPT argument: the address and the ESMTP parameters that followed the path."""

    address: str
    params: tuple[str, ...] = ()

    @property
    def is_bounce(self) -> bool:
        """True for the null sender ``<>`` and qmail's ``#@[]``."""
        return self.address in BOUNCE_ADDRESSES

    @property
    def size(self) -> int | None:
        """The value of a ``SIZE=n`` parameter (leading digits, junk = 0), None when absent."""
        for param in self.params:
            if param[:5].upper() == "SIZE=":
                return leading_digits(param[5:])
        return None


def leading_digits(text: str) -> int:
    """qmail's ``scan_ulong``: the value of the leading decimal digits of *text*, 0 when there are none."""
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return int(text[:end]) if end else 0


def split_address(addr: str) -> tuple[str, str]:
    """``(local, domain)`` split at the last ``@``; ``(addr, "")`` when there is no ``@``."""
    at = addr.rfind("@")
    if at < 0:
        return addr, ""
    return addr[:at], addr[at + 1 :]


def is_bounce(addr: str) -> bool:
    """True for the null sender (``""``) and qmail's ``#@[]``."""
    return addr in BOUNCE_ADDRESSES


def parse_path(
    arg: str,
    *,
    own_ips: Collection[str] = frozenset(),
    localiphost: str = "",
    allow_empty: bool = True,
) -> PathArg:
    """Parse the argument of ``MAIL FROM:`` / ``RCPT TO:`` (everything after the verb).

    Args:
        arg: the command argument, e.g. ``FROM:<a@b> SIZE=10``.
        own_ips: our own IPv4 addresses in dotted-quad form; ``[ip]`` domains naming one of them are
            replaced by *localiphost* (when that is non-empty).
        localiphost: the replacement domain (control/localiphost, default ``me``).
        allow_empty: False for RCPT, where ``<>`` is a syntax error.

    Raises:
        AddressSyntaxError: no path, a source route without ``:``, an empty RCPT path, an address
            holding CR, LF or NUL, or one longer than 899 characters.
    """
    lt = arg.find("<")
    if lt >= 0:
        text = arg[lt + 1 :]
        terminator = ">"
    else:
        colon = arg.find(":")
        if colon < 0:
            raise AddressSyntaxError("no path")
        text = arg[colon + 1 :].lstrip(" ")
        terminator = " "
    if text.startswith("@"):
        colon = text.find(":")
        if colon < 0:
            raise AddressSyntaxError("source route without ':'")
        text = text[colon + 1 :]
    address, rest = _unquote(text, terminator)
    address = _map_own_ip(address, own_ips, localiphost)
    if has_line_break(address):
        raise AddressSyntaxError("CR, LF or NUL in the address")
    if len(address) > MAX_ADDRESS:
        raise AddressSyntaxError("address too long")
    if not address and not allow_empty:
        raise AddressSyntaxError("empty path")
    return PathArg(address, tuple(rest.split()))


def has_line_break(address: str) -> bool:
    """True when *address* holds CR, LF or NUL: it could split a log line, a header or an SMTP command.

    qmail-smtpd accepted a CR inside a path; qldap refuses it (qmail-smtpd(8)), and the bounce
    writer and the SMTP client check again for addresses that came in through another door.
    """
    return "\r" in address or "\n" in address or "\0" in address


def _unquote(text: str, terminator: str) -> tuple[str, str]:
    """Copy *text* up to an unquoted *terminator*, dropping quotes and backslashes; return the rest too."""
    if '"' not in text and "\\" not in text:  # the common case, no per-character loop
        end = text.find(terminator)
        if end < 0:
            return text, ""
        return text[:end], text[end + 1 :]
    out: list[str] = []
    escaped = quoted = False
    for i, ch in enumerate(text):
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == terminator and not quoted:
            return "".join(out), text[i + 1 :]
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        else:
            out.append(ch)
    return "".join(out), ""


def _map_own_ip(address: str, own_ips: Collection[str], localiphost: str) -> str:
    """Replace a ``[d.d.d.d]`` domain naming one of *own_ips* by *localiphost*."""
    at = address.rfind("@")
    if at < 0 or not localiphost or not address.endswith("]") or address[at + 1 : at + 2] != "[":
        return address
    ip = canonical_ipv4(address[at + 2 : -1])
    if ip is not None and ip in own_ips:
        return address[: at + 1] + localiphost
    return address


def canonical_ipv4(text: str) -> str | None:
    """``d.d.d.d`` with each part 0–255 in canonical form (``010`` → ``10``), None when not an address."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    values = []
    for part in parts:
        if not part or not part.isdigit() or not part.isascii():
            return None
        value = int(part)
        if value > 255:
            return None
        values.append(str(value))
    return ".".join(values)


def quote_local(local: str) -> str:
    """qmail's ``quote``: the local part as is when it is a dot-atom, else in quotes.

    A dot-atom is non-empty, made of RFC 821 atom characters (printable ASCII except the specials)
    with inner single dots; inside quotes CR, LF, ``"`` and ``\\`` get a backslash.
    """
    if local and not _needs_quotes(local):
        return local
    escaped = "".join("\\" + ch if ch in '\r\n"\\' else ch for ch in local)
    return f'"{escaped}"'


def quote_address(addr: str) -> str:
    """qmail's ``quote2``: the part before the last ``@`` quoted as needed (``a b@c`` → ``"a b"@c``).

    The empty address (the null sender) stays empty.
    """
    if not addr:
        return addr
    at = addr.rfind("@")
    if at < 0:
        return quote_local(addr)
    return f"{quote_local(addr[:at])}@{addr[at + 1 :]}"


def _needs_quotes(local: str) -> bool:
    last = len(local) - 1
    for i, ch in enumerate(local):
        if ch == ".":
            if i == 0 or i == last or local[i + 1] == ".":
                return True
        elif ch not in _ATOM:
            return True
    return False

"""Decide which domains and addresses the control files name: locals, rcpthosts, address lists.

Used per SMTP RCPT (qmail-smtpd(8), CONTROL FILES and ACCEPTED DOMAINS) and per recipient by the queue
preprocessor (qmail-send(8), PREPROCESSING step 3), so every question costs at most one ``stat`` per file
involved: text lists come from the signature-keyed cache of :class:`~qldap.control.files.ControlDir`, cdb
files from its shared
:class:`~qldap.control.cdb.CdbReader`s, both re-read only after the file changed.

Why errors are never "no": an unreadable ``locals.cdb`` or ``rcpthosts.cdb`` raises
:class:`~qldap.errors.ConfigError` (a temporary failure for the caller), because answering "not
local" would bounce mail and answering "not acceptable" would refuse it for good.

Lowercasing is ASCII-only (qmail's ``case_lowerb``) so lookups agree with the keys qmail-cdb writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from qldap.address import Address
from qldap.control.cdb import Cdb
from qldap.control.files import ControlDir, ascii_lower

CATCHALL = "catchall"
"""The catch-all local part (build constant LDAP_CATCH_ALL)."""

DASH_EXT_LEVELS = 4
"""How many ``-`` separated levels the dash-extension catch-all forms consider."""

BREAK = "-"
"""The user-extension delimiter (build constant auto_break)."""

LOCALS_FILES = ("locals.cdb", "locals", "me")
"""Control files :class:`Locals` reads (for :meth:`ControlDir.snapshot`)."""

RCPTHOSTS_FILES = ("rcpthosts.cdb", "rcpthosts", "morercpthosts.cdb")
"""Control files :class:`RcptHosts` reads."""


def _key(domain: str) -> bytes:
    return domain.encode("utf-8", "surrogateescape")


def _domain_of(address: str) -> str | None:
    """Text after the last ``@``, or None when the address has none."""
    parsed = Address.parse(address)
    return parsed.domain if parsed.has_at else None


def domain_suffixes(domain: str) -> Iterator[str]:
    """The domain, then each suffix that starts at a dot: ``a.b.c``, ``.b.c``, ``.c``.

    An empty domain yields nothing (qmail-smtpd(8), ACCEPTED DOMAINS: ``example.com`` matches only itself,
    ``.example.com`` only subdomains).
    """
    for i, ch in enumerate(domain):
        if i == 0 or ch == ".":
            yield domain[i:]


class Locals:
    """The local domains: ``locals.cdb`` if present, else ``locals``, else ``me`` (exact, any case)."""

    def __init__(self, ctl: ControlDir) -> None:
        self._ctl = ctl

    def contains(self, domain: str) -> bool:
        """True when *domain* (compared ASCII-lowercased, trailing dot kept) is a local domain.

        Raises:
            ConfigError: ``locals.cdb`` exists but is unreadable or corrupt, ``locals`` is unreadable,
                or neither exists and ``me`` is missing.
        """
        wanted = ascii_lower(domain)
        cdb = self._ctl.cdb("locals.cdb").current()
        if cdb is not None:
            return _key(wanted) in cdb
        entries = self._ctl.entry_set("locals")
        if entries is None:
            return wanted == ascii_lower(self._ctl.me())
        return wanted in entries

    def contains_address(self, address: str) -> bool:
        """True when the domain of *address* (after its last ``@``) is local; no ``@`` → False.

        Raises:
            ConfigError: as :meth:`contains`.
        """
        domain = _domain_of(address)
        return domain is not None and self.contains(domain)


class RcptHosts:
    """The further domains SMTP accepts mail for (``rcpthosts``, ``morercpthosts.cdb``, ``rcpthosts.cdb``)."""

    def __init__(self, ctl: ControlDir) -> None:
        self._ctl = ctl

    def accepts(self, domain: str) -> bool:
        """True when *domain* or one of its dot-suffixes is listed (qmail-smtpd(8) ACCEPTED DOMAINS step 2).

        ``rcpthosts.cdb``, when present, replaces both other files; otherwise ``rcpthosts`` then
        ``morercpthosts.cdb``.  Nothing present means nothing accepted: never an open relay.

        Raises:
            ConfigError: one of the files exists but cannot be read, or a cdb is corrupt.
        """
        keys = list(domain_suffixes(ascii_lower(domain)))
        if not keys:
            return False
        main = self._ctl.cdb("rcpthosts.cdb").current()
        if main is not None:
            return _any_in_cdb(main, keys)
        entries = self._ctl.entry_set("rcpthosts")
        if entries and any(k in entries for k in keys):
            return True
        more = self._ctl.cdb("morercpthosts.cdb").current()
        return more is not None and _any_in_cdb(more, keys)


def _any_in_cdb(cdb: Cdb, keys: Iterable[str]) -> bool:
    return any(_key(k) in cdb for k in keys)


def acceptable_rcpt_domain(ctl: ControlDir, address: str, *, nolocal: bool) -> bool:
    """qmail-smtpd(8), ACCEPTED DOMAINS: may SMTP accept *address* without relay permission?

    No ``@`` → acceptable (``envnoathost`` will complete it).  Otherwise the domain after the last
    ``@`` must be local (unless *nolocal*, the NOLOCAL variable) or accepted by ``rcpthosts``.

    Raises:
        ConfigError: a control file needed for the answer cannot be read.
    """
    domain = _domain_of(address)
    if domain is None:
        return True
    if not nolocal and Locals(ctl).contains(domain):
        return True
    return RcptHosts(ctl).accepts(domain)


@dataclass(frozen=True, slots=True)
class AddressList:
    """An address list file (badmailfrom, badrcptto, goodmailaddr …) with entries ASCII-lowercased."""

    entries: frozenset[str]

    @classmethod
    def of(cls, entries: Iterable[str]) -> AddressList:
        """Build from raw entries (any case)."""
        return cls(frozenset(ascii_lower(e) for e in entries))

    @classmethod
    def from_control(cls, ctl: ControlDir, name: str) -> AddressList:
        """The list in ``control/NAME``; an absent file is an empty list.

        Raises:
            ConfigError: the file exists but cannot be read.
        """
        return cls(ctl.entry_set(name) or frozenset())

    def __bool__(self) -> bool:
        return bool(self.entries)

    def matches(self, address: str, *, allow_user_form: bool = True) -> bool:
        """qmail-smtpd(8), CONTROL FILES: the whole address, ``@domain`` (from the last ``@``) or ``user@`` is
        listed.

        *allow_user_form* False drops the ``user@`` form (``relaymailfrom``).
        """
        if not self.entries:
            return False  # most lists are absent or empty: no parsing for every MAIL and RCPT
        return any(form in self.entries for form in _forms(ascii_lower(address), allow_user_form))

    def matches_good(self, address: str, *, dash_ext: bool = False) -> bool:
        """The ``goodmailaddr`` rule: :meth:`matches`, or ``catchall@domain``, or with *dash_ext*
        ``a-catchall@domain``, ``a-b-catchall@domain`` … (the first ≤4 ``-`` of the local part)."""
        if not self.entries:
            return False
        lowered = ascii_lower(address)
        if any(form in self.entries for form in _forms(lowered, True)):
            return True
        return any(form in self.entries for form in catchall_forms(lowered, dash_ext=dash_ext))


def _forms(address: str, allow_user_form: bool) -> Iterator[str]:
    yield address
    parsed = Address.parse(address)
    if parsed.has_at:
        yield "@" + parsed.domain
        if allow_user_form:
            yield parsed.local + "@"


def catchall_forms(address: str, *, dash_ext: bool) -> list[str]:
    """The catch-all addresses standing for *address*, most specific first.

    ``aaaa-bbbb-cccc@d`` with *dash_ext* → ``aaaa-bbbb-catchall@d``, ``aaaa-catchall@d``,
    ``catchall@d``; without → ``catchall@d``.  Only the first :data:`DASH_EXT_LEVELS` dashes count
    and empty prefixes are skipped (qmail-local(8), LOOKUP).  No ``@`` → no forms.
    """
    parsed = Address.parse(address)
    if not parsed.has_at:
        return []
    local, domain_part = parsed.local, "@" + parsed.domain
    out: list[str] = []
    if dash_ext:
        dashes = [i for i, ch in enumerate(local) if ch == BREAK][:DASH_EXT_LEVELS]
        for pos in reversed(dashes):
            if pos > 0:
                out.append(f"{local[:pos]}{BREAK}{CATCHALL}{domain_part}")
    out.append(f"{CATCHALL}{domain_part}")
    return out


def address_in_list(
    address: str, entries: AddressList | Iterable[str], *, allow_user_form: bool = True
) -> bool:
    """qmail-smtpd(8) CONTROL FILES as a function: is *address* listed in *entries* (any case)?

    Pass an :class:`AddressList` to avoid re-lowering the entries on every call.
    """
    lst = entries if isinstance(entries, AddressList) else AddressList.of(entries)
    return lst.matches(address, allow_user_form=allow_user_form)


def good_mail_addr(address: str, entries: AddressList | Iterable[str], *, dash_ext: bool = False) -> bool:
    """The ``goodmailaddr`` variant of :func:`address_in_list` (catch-all forms, qmail-smtpd(8), CONTROL
    FILES)."""
    lst = entries if isinstance(entries, AddressList) else AddressList.of(entries)
    return lst.matches_good(address, dash_ext=dash_ext)

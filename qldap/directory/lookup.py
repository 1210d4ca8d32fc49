"""Directory: the questions every service asks (recipient, login, password, group, raw filter).

Why one class over a Searcher: RCPTCHECK, local delivery, the POP3/SMTP auth modules, qmail-group and
qmail-ldaplookup must agree byte for byte on filters, candidate order and error handling; both
backends (slapd via the wire client, the embedded LDIF) run exactly this code and differ only in ``search``.
"""

from __future__ import annotations

from collections.abc import Sequence

from qldap.directory import schema
from qldap.directory.base import (
    Ambiguous,
    Found,
    LookupResult,
    NotFound,
    Scope,
    Searcher,
    Trash,
    Unavailable,
)
from qldap.directory.cache import ResultCache
from qldap.directory.config import LdapConfig
from qldap.directory.entry import Entry
from qldap.directory.errors import DirectoryUnavailable, NoSuchObject
from qldap.directory.filters import Candidate, candidates, escape, real_domain, split_address, uid_filter

_ANY = "(objectClass=*)"


class Directory:
    """Lookups over one backend with one configuration; thread-safe when the searcher is."""

    def __init__(self, config: LdapConfig, searcher: Searcher, cache: ResultCache | None = None) -> None:
        self.config = config
        self.searcher = searcher
        self.cache = cache
        self._login_attrs = schema.USER_ATTRIBUTES + (() if config.rebind else (schema.PASSWORD,))

    # -- recipients ----------------------------------------------------------------------------------

    def recipient_candidates(self, address: str) -> tuple[Candidate, ...]:
        """The candidates searched for *address*, in order (aliasdomains applied, dash_ext honoured).

        Raises:
            AddressWithoutHost: *address* has no ``@``.
        """
        local, domain = split_address(address)
        domain = real_domain(domain, self.config.alias_domains)
        return candidates(local, domain, dash_ext=self.config.dash_ext)

    def find_recipient(self, address: str) -> LookupResult:
        """Resolve a recipient as qmail-local(8), LOOKUP: the first candidate with one entry wins.

        Empty local part → Trash (no search).  Several entries for one candidate → Ambiguous and the
        loop stops; an error stops it too (Unavailable), later candidates are never tried.

        Raises:
            AddressWithoutHost: *address* has no ``@``.
        """
        query = self.recipient_query(address)
        if isinstance(query, Trash):
            return query
        key, found_by = query
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        result = self._first_match(found_by)
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def recipient_query(self, address: str) -> tuple[tuple[str, str, str], tuple[Candidate, ...]] | Trash:
        """For an asynchronous searcher: the cache key and the candidates of *address*, or Trash.

        The same steps as :meth:`find_recipient` up to the searches, so both ways agree; the caller
        searches the candidates in order, ends at the first :func:`candidate_answer`, and stores the
        result with :meth:`remember`.

        Raises:
            AddressWithoutHost: *address* has no ``@``.
        """
        local, domain = split_address(address)
        if not local:
            return Trash()
        domain = real_domain(domain, self.config.alias_domains)
        return ("rcpt", local, domain), candidates(local, domain, dash_ext=self.config.dash_ext)

    def cached(self, key: tuple[str, str, str]) -> LookupResult | None:
        """The cached answer for a :meth:`recipient_query` key (None: ask the directory)."""
        return self.cache.get(key) if self.cache is not None else None

    def remember(self, key: tuple[str, str, str], result: LookupResult) -> None:
        """Store an answer found for a :meth:`recipient_query` key (errors are never stored)."""
        if self.cache is not None:
            self.cache.put(key, result)

    def _first_match(self, cands: Sequence[Candidate]) -> LookupResult:
        oc = self.config.objectclass
        searched: list[str] = []
        for cand in cands:
            searched.append(cand.address)
            try:
                entries = self.searcher.search(cand.filter(oc), schema.USER_ATTRIBUTES)
            except DirectoryUnavailable as exc:
                return Unavailable(exc)
            answer = candidate_answer(cand, entries)
            if answer is not None:
                return answer
        return NotFound(tuple(searched))

    # -- logins and passwords ------------------------------------------------------------------------

    def find_login(self, login: str) -> LookupResult:
        """The entry whose ``uid`` is *login* (auth_pop(8), qmail-smtpd(8), SMTP AUTH): exactly one required.

        userPassword is fetched unless ``ldaprebind`` is on.  Never matches on ``mail``.
        """
        key = ("login", login)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        cand = Candidate(login, "", "", escape(login))
        try:
            entries = self.searcher.search(uid_filter(login, self.config.objectclass), self._login_attrs)
        except DirectoryUnavailable as exc:
            return Unavailable(exc)
        result: LookupResult
        if len(entries) == 1:
            result = Found(entries[0], cand)
        elif entries:
            result = Ambiguous(len(entries), login)
        else:
            result = NotFound((login,))
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def verify_password(self, entry: Entry, password: str, *, cleartext: bool = False) -> bool:
        """True when *password* is the entry's password; an empty password is always False.

        With ``ldaprebind`` a fresh connection binds as the entry's DN; otherwise the fetched
        userPassword is compared (qldap.passwords.schemes; absent → False).

        Raises:
            DirectoryUnavailable: the rebind could not be attempted (server down, other error).
            MalformedHash: the stored hash cannot be decoded (auth exit 25).
            NotUnique: the entry has several userPassword values.
        """
        if not password:
            return False
        if self.config.rebind:
            return self.searcher.check_bind(entry.dn, password)
        stored = entry.single(schema.PASSWORD)
        if stored is None:
            return False
        from qldap.passwords.schemes import check_password  # lazy: only logins need the hash code

        return check_password(stored, password, cleartext=cleartext)

    # -- entries by DN, groups, raw filters -----------------------------------------------------------

    def find_entry(self, dn: str, attributes: Sequence[str] = schema.USER_ATTRIBUTES) -> LookupResult:
        """The entry at *dn* (base search); a DN that does not exist is NotFound."""
        try:
            entries = self.searcher.search(_ANY, attributes, base=dn, scope=Scope.BASE)
        except NoSuchObject:
            return NotFound((dn,))
        except DirectoryUnavailable as exc:
            return Unavailable(exc)
        if not entries:
            return NotFound((dn,))
        return Found(entries[0], Candidate(dn, "", "", dn))

    def find_group(self, dn: str) -> LookupResult:
        """The qmailGroup entry at *dn* (``QLDAPGROUP``) with every group attribute."""
        return self.find_entry(dn, schema.GROUP_ATTRIBUTES)

    def search_filter(
        self,
        raw_filter: str,
        attributes: Sequence[str] = schema.USER_ATTRIBUTES,
        *,
        base: str | None = None,
        scope: Scope = Scope.SUBTREE,
    ) -> list[Entry]:
        """Entries matching a trusted raw filter (filtermember/filtersender, ``qmail-ldaplookup -f``).

        A filter without outer parentheses (``mail=x``) is wrapped in them.

        Raises:
            InvalidFilter: *raw_filter* is not RFC 4515 syntax.
            DirectoryUnavailable: the search could not be done.
        """
        text = raw_filter.strip()
        if not text.startswith("("):
            text = f"({text})"  # like libldap: a bare item is one filter
        return self.searcher.search(text, attributes, base=base, scope=scope)

    def search_candidate(
        self, candidate: Candidate, attributes: Sequence[str] = schema.USER_ATTRIBUTES
    ) -> list[Entry]:
        """All entries matching one candidate's filter (qmail-ldaplookup shows them all).

        Raises:
            DirectoryUnavailable: the search could not be done.
        """
        return self.searcher.search(candidate.filter(self.config.objectclass), attributes)

    def close(self) -> None:
        """Release the backend's connections."""
        self.searcher.close()


def candidate_answer(cand: Candidate, entries: Sequence[Entry]) -> LookupResult | None:
    """One entry → Found; several → Ambiguous (the candidate loop stops); none → None (try the next)."""
    if len(entries) == 1:
        return Found(entries[0], cand)
    if entries:
        return Ambiguous(len(entries), cand.address)
    return None

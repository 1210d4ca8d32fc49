"""The LDAP backend: ldap3 connections with failover, binds, timeouts and result-code mapping.

The only module importing ldap3 (STYLE.md §10).  Why a small pool of bound connections: daemons ask
many short questions from several threads; binding per lookup would double the round trips, and an
ldap3 Connection must not be shared by two threads at once.  A pooled connection that fails with a
socket error (idle close, slapd restart) is dropped and the operation retried once on a new one;
timeouts are never retried (delivery.md §3.4: later candidates are not searched either).

Failover (delivery.md §2): servers in ``ldapserver`` order; a refused connection or no answer to the
bind within ``ldaptimeout`` moves on; all failed → ServerUnreachable.  invalidCredentials (49) →
BadCredentials; protocolError (2) at an LDAPv3 bind → one retry with LDAPv2.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import ldap3
from ldap3.core import exceptions as lx

from qldap.directory.base import Scope
from qldap.directory.config import LdapConfig, ServerAddress
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    BadCredentials,
    InvalidFilter,
    LookupFailed,
    NoSuchObject,
    SearchTimeout,
    ServerUnreachable,
)

_INVALID_CREDENTIALS = 49
_PROTOCOL_ERROR = 2
_NO_SUCH_OBJECT = 32
_TIMEOUT_CODES = frozenset({3, 51, 85})  # timeLimitExceeded, busy, (client) timeout
_SCOPES = {Scope.BASE: ldap3.BASE, Scope.SUBTREE: ldap3.SUBTREE}
DEFAULT_POOL = 8


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | lx.LDAPResponseTimeoutError)


class LdapSearcher:
    """A Searcher talking to the servers of an LdapConfig, binding as *login*/*password*."""

    def __init__(self, config: LdapConfig, *, pool_size: int = DEFAULT_POOL) -> None:
        if not config.servers:
            raise ValueError("LdapSearcher needs at least one server")
        self.config = config
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._idle: list[ldap3.Connection] = []

    # -- connections ----------------------------------------------------------------------------------

    def _bound(self, user: str, password: str) -> ldap3.Connection:
        """A connection bound as *user* (anonymous when empty), trying each server in order.

        Raises:
            BadCredentials: a server refused the credentials.
            LookupFailed: a server answered the bind with another error.
            ServerUnreachable: no server could be reached or answered in time.
        """
        problems: list[str] = []
        for address in self.config.servers:
            # a fresh Server each time: ldap3 remembers failed addresses and would skip a server that
            # has come back; connections are pooled, so this costs one resolution per reconnect only
            server = ldap3.Server(
                address.host, port=address.port, get_info=ldap3.NONE, connect_timeout=self.config.timeout
            )
            conn = self._bind_one(address, server, user, password, problems)
            if conn is not None:
                return conn
        raise ServerUnreachable("; ".join(problems))

    def _bind_one(
        self, address: ServerAddress, server: ldap3.Server, user: str, password: str, problems: list[str]
    ) -> ldap3.Connection | None:
        for version in (3, 2):
            conn = ldap3.Connection(
                server,
                user=user or None,
                password=password if user else None,
                version=version,
                client_strategy=ldap3.SYNC,
                auto_bind=ldap3.AUTO_BIND_NONE,
                raise_exceptions=False,
                receive_timeout=self.config.timeout,
                auto_escape=False,
                check_names=False,
                read_only=True,
                return_empty_attributes=False,
                auto_referrals=True,
            )
            try:
                conn.open(read_server_info=False)
                ok = conn.bind(read_server_info=False)
            except lx.LDAPException as exc:
                _close(conn)
                problems.append(f"{address}: {exc}")
                return None
            if ok:
                return conn
            code = conn.result.get("result") if conn.result else None
            text = f"{address}: bind: {conn.result.get('description') if conn.result else conn.last_error}"
            _close(conn)
            if code == _INVALID_CREDENTIALS:
                raise BadCredentials(text)
            if code == _PROTOCOL_ERROR and version == 3:
                continue
            raise LookupFailed(text)
        return None  # pragma: no cover - the loop always returns or raises

    def _acquire(self) -> tuple[ldap3.Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._bound(self.config.login, self.config.password), False

    def _release(self, conn: ldap3.Connection) -> None:
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        _close(conn)

    # -- Searcher -------------------------------------------------------------------------------------

    def search(
        self, filter: str, attributes: Sequence[str], *, base: str | None = None, scope: Scope = Scope.SUBTREE
    ) -> list[Entry]:
        """Entries matching *filter* under *base* (default ldapbasedn) with only *attributes*.

        Raises:
            ServerUnreachable, BadCredentials: no usable connection.
            SearchTimeout: time limit, busy, or no answer within ldaptimeout.
            NoSuchObject: the base does not exist.
            InvalidFilter: *filter* is not valid filter syntax.
            LookupFailed: any other error.
        """
        where = self.config.basedn if base is None else base
        while True:
            conn, reused = self._acquire()
            try:
                conn.search(
                    where,
                    filter,
                    search_scope=_SCOPES[scope],
                    attributes=list(attributes) or [ldap3.ALL_ATTRIBUTES],
                    time_limit=self.config.timeout,
                )
            except lx.LDAPInvalidFilterError as exc:
                self._release(conn)
                raise InvalidFilter(str(exc))
            except lx.LDAPException as exc:
                _close(conn)
                if _is_timeout(exc):
                    raise SearchTimeout(str(exc))
                if reused and isinstance(exc, lx.LDAPCommunicationError):
                    continue  # stale pooled connection: once more on a fresh one
                raise LookupFailed(str(exc))
            result = conn.result or {}
            code = result.get("result", 0)
            if code in (0, 10):  # success, or a referral ldap3 has already chased
                entries = _entries(conn.response or ())
                self._release(conn)
                return entries
            self._release(conn)
            detail = f"{result.get('description')}: {result.get('message')}"
            if code in _TIMEOUT_CODES:
                raise SearchTimeout(detail)
            if code == _NO_SUCH_OBJECT:
                raise NoSuchObject(detail)
            raise LookupFailed(detail)

    def check_bind(self, dn: str, password: str) -> bool:
        """True when a fresh connection binds as *dn* with *password*; empty password → False.

        Raises:
            ServerUnreachable: no server could be reached.
            LookupFailed: the bind failed for another reason than invalid credentials.
        """
        if not password or not dn:
            return False
        try:
            conn = self._bound(dn, password)
        except BadCredentials:
            return False
        _close(conn)
        return True

    def close(self) -> None:
        """Unbind every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


def _close(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except (lx.LDAPException, OSError):
        pass


def _entries(response: Sequence[dict[str, object]]) -> list[Entry]:
    """The ldap3 response converted once into Entries (raw bytes decoded as UTF-8)."""
    out = []
    for item in response:
        if item.get("type") != "searchResEntry":
            continue
        raw = item.get("raw_attributes")
        pairs = (
            [(name, [v.decode("utf-8", "surrogateescape") for v in values]) for name, values in raw.items()]
            if isinstance(raw, Mapping)  # ldap3's CaseInsensitiveDict is a Mapping, not a dict
            else []
        )
        out.append(Entry.build(str(item.get("dn", "")), pairs))
    return out

"""WireSearcher: qldap's LDAP client, a minimal LDAPv3 client over plain blocking sockets.

Why its own client and not ldap3: per lookup ldap3 spent ≈ 1.2 ms of Python building pyasn1 objects
and dicts, ten times what slapd needs to answer (docs/benchmarks.md); qldap needs only a simple bind,
a search and an unbind, encoded by :mod:`qldap.directory.ber` with the constant parts cached.  It is
the only LDAP client (the ldap3 adapter and ``control/ldapclient`` were removed).

* Failover (qmail-ldap's ``ldapserver`` semantics, docs/operations.md): servers in ``ldapserver``
  order; a refused connection, a silent peer (no bind answer within ``ldaptimeout``) or a dropped
  connection moves on; all failed → ServerUnreachable.  invalidCredentials (49) → BadCredentials;
  protocolError (2) at an LDAPv3 bind → one retry with LDAPv2; any other bind code → LookupFailed.
* Search: timeLimitExceeded (3), busy (51) or no answer within ``ldaptimeout`` → SearchTimeout
  (never retried, the connection is dropped); noSuchObject (32) → NoSuchObject; referral (10) and
  continuation references are ignored (the entries received are the answer); any other code,
  a malformed answer or a connection lost on a fresh connection → LookupFailed.  A pooled
  connection found dead (idle close, slapd restart) is dropped and the search retried once.
* Pool: up to ``pool_size`` idle bound connections, each used by one thread at a time.
* Transport (:mod:`qldap.directory.transport`): ``host:port``/``ldap://``, ``ldaps://`` and
  ``ldapi://`` lines; ``ldapstarttls`` upgrades the ``ldap://`` ones.  A TLS failure skips the
  server like a refused connection, and its reason is logged (when a *log* is given) as
  ``warning: LDAP server ADDRESS: TLS certificate verification failed: …``, at most once a minute
  per server and reason.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence

from qldap.directory import ber, transport
from qldap.directory.base import Scope
from qldap.directory.config import LdapConfig, Scheme, ServerAddress
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    BadCredentials,
    LookupFailed,
    NoSuchObject,
    SearchTimeout,
    ServerUnreachable,
)

_SUCCESS = 0
_PROTOCOL_ERROR = 2
_REFERRAL = 10
_INVALID_CREDENTIALS = 49
_NO_SUCH_OBJECT = 32
_TIMEOUT_CODES = frozenset({3, 51, 85})  # timeLimitExceeded, busy, (client) timeout
_SCOPES = {Scope.BASE: ber.SCOPE_BASE, Scope.SUBTREE: ber.SCOPE_SUBTREE}
_MAX_ID = 2**31 - 1
_CHUNK = 65536


def search_outcome(entries: list[Entry], result: ber.Result, where: str) -> list[Entry]:
    """The entries of a finished search, or the error its result code means (one table for the
    blocking client and the asynchronous one in aio.py, so both answer an outage alike).

    Raises:
        SearchTimeout: time limit exceeded, busy, or a client-side timeout code.
        NoSuchObject: the search base does not exist.
        LookupFailed: any other non-success code.
    """
    code = result.code
    if code in (_SUCCESS, _REFERRAL):
        return entries
    detail = f"{where}: result {code}: {result.message}"
    if code in _TIMEOUT_CODES:
        raise SearchTimeout(detail)
    if code == _NO_SUCH_OBJECT:
        raise NoSuchObject(detail)
    raise LookupFailed(detail)
DEFAULT_POOL = 8
_RELOG_SECONDS = 60.0  # the same failure of the same server is logged at most once a minute


class ConnectionLost(Exception):
    """The peer closed the connection, reset it, or sent an unsolicited notice of disconnection."""


class WireConnection:
    """One connection to one server; not thread-safe (the pool hands it to one thread at a time).

    With *start_tls* (and a ``ldap://`` server) the connection is upgraded before anything else is
    sent; a refusal or a failed handshake raises TlsFailure and the socket is closed.
    """

    def __init__(
        self,
        address: ServerAddress,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        *,
        start_tls: bool = False,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._sock = transport.connect(address, timeout, tls)
        self._buf = b""
        self._pos = 0
        self._next_id = 0
        if start_tls and tls is not None and address.scheme is Scheme.LDAP:
            try:
                self._start_tls(tls)
            except BaseException:
                self._sock.close()
                raise

    def _start_tls(self, tls: ssl.SSLContext) -> None:
        """RFC 4511 section 4.14: ask, and on success (0) run the handshake on the same socket."""
        msgid = self._id()
        self._send(ber.start_tls_request(msgid))
        try:
            msg = self._receive(msgid, time.monotonic() + self.timeout)
        except TimeoutError:
            raise transport.TlsFailure("StartTLS failed: no answer within ldaptimeout")
        except (ConnectionLost, ber.BerError, OSError) as exc:
            raise transport.TlsFailure(f"StartTLS failed: {exc}")
        if msg.op != ber.EXTENDED_RESPONSE:
            raise transport.TlsFailure(f"StartTLS failed: unexpected operation {msg.op:#x}")
        result = ber.decode_result(msg)
        if result.code != _SUCCESS:
            raise transport.TlsFailure(f"StartTLS refused: result {result.code} {result.message}".rstrip())
        if self._pos != len(self._buf):
            raise transport.TlsFailure("StartTLS failed: data after the answer, before the handshake")
        self._sock = transport.wrap(self._sock, tls, self.address.host)

    def _id(self) -> int:
        self._next_id = self._next_id % _MAX_ID + 1
        return self._next_id

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectionLost(str(exc)) from exc

    def _receive(self, msgid: int, deadline: float) -> ber.Message:
        """The next message for *msgid*; TimeoutError past *deadline*, ConnectionLost on EOF/reset.

        The buffer is consumed by moving ``_pos``, not by slicing, so a large answer (thousands of
        entries in one read) is decoded in linear time.
        """
        while True:
            left = deadline - time.monotonic()
            if left <= 0:  # also bounds a server streaming entries (or bytes) without end
                raise TimeoutError("no complete answer within ldaptimeout")
            buf, pos = self._buf, self._pos
            end = ber.frame(buf, pos)
            if end >= 0:
                self._pos = end
                msg = ber.decode_message(buf, pos, end)
                if msg.msgid == msgid:
                    return msg
                if msg.msgid == 0:  # unsolicited notification: the server is going away
                    raise ConnectionLost("notice of disconnection")
                raise ber.BerError(f"answer to message {msg.msgid} while waiting for {msgid}")
            try:
                self._sock.settimeout(left)  # no syscall: Python polls with this timeout
                chunk = self._sock.recv(_CHUNK)
            except TimeoutError:
                raise
            except OSError as exc:
                raise ConnectionLost(str(exc)) from exc
            if not chunk:
                raise ConnectionLost("connection closed by the server")
            self._buf = buf[pos:] + chunk if pos < len(buf) else chunk
            self._pos = 0

    def bind(self, name: str, password: str, version: int) -> ber.Result:
        """Send a simple bind and return the server's result."""
        msgid = self._id()
        self._send(ber.bind_request(msgid, name, password, version))
        msg = self._receive(msgid, time.monotonic() + self.timeout)
        if msg.op != ber.BIND_RESPONSE:
            raise ber.BerError(f"unexpected operation {msg.op:#x} in answer to a bind")
        return ber.decode_result(msg)

    def search(self, parts: tuple[bytes, bytes], encoded_filter: bytes) -> tuple[list[Entry], ber.Result]:
        """Run one search; entries and the final result (references skipped)."""
        msgid = self._id()
        self._send(ber.search_request(msgid, parts, encoded_filter))
        deadline = time.monotonic() + self.timeout
        entries: list[Entry] = []
        while True:
            msg = self._receive(msgid, deadline)
            op = msg.op
            if op == ber.SEARCH_ENTRY:
                entries.append(ber.decode_entry(msg))
            elif op == ber.SEARCH_DONE:
                return entries, ber.decode_result(msg)
            elif op != ber.SEARCH_REFERENCE:
                raise ber.BerError(f"unexpected operation {op:#x} in answer to a search")

    def close(self) -> None:
        """Unbind (best effort) and close the socket."""
        try:
            self._sock.settimeout(0.5)
            self._sock.sendall(ber.unbind_request(self._id()))
        except OSError:
            pass
        finally:
            self._sock.close()


class WireSearcher:
    """A Searcher talking LDAPv3 itself to the servers of an LdapConfig, bound as login/password."""

    def __init__(
        self, config: LdapConfig, *, pool_size: int = DEFAULT_POOL, log: Callable[[str], None] | None = None
    ) -> None:
        """Raises ConfigError when a TLS control file cannot be used (checked once, here)."""
        if not config.servers:
            raise ValueError("WireSearcher needs at least one server")
        self.config = config
        self.pool_size = pool_size
        self.log = log
        self._tls = transport.tls_context(config.tls) if config.tls.needed_by(config.servers) else None
        self._lock = threading.Lock()
        self._idle: list[WireConnection] = []
        self._logged: dict[ServerAddress, tuple[str, float]] = {}

    def _problem(self, problems: list[str], address: ServerAddress, text: str) -> None:
        """Record why *address* was skipped; log it when new for that server or once a minute."""
        problems.append(f"{address}: {text}")
        if self.log is None:
            return
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(address)
            if last is not None and last[0] == text and now - last[1] < _RELOG_SECONDS:
                return
            self._logged[address] = (text, now)
        self.log(f"warning: LDAP server {address}: {text}")

    # -- connections ----------------------------------------------------------------------------------

    def _bound(self, user: str, password: str) -> WireConnection:
        """A connection bound as *user* (anonymous when empty), trying each server in order.

        Raises:
            BadCredentials: a server refused the credentials.
            LookupFailed: a server answered the bind with another error.
            ServerUnreachable: no server could be reached or answered in time.
        """
        problems: list[str] = []
        for address in self.config.servers:
            conn = self._bind_one(address, user, password, problems)
            if conn is not None:
                return conn
        raise ServerUnreachable("; ".join(problems))

    def _bind_one(
        self, address: ServerAddress, user: str, password: str, problems: list[str]
    ) -> WireConnection | None:
        for version in (3, 2):
            try:
                conn = WireConnection(
                    address, self.config.timeout, self._tls, start_tls=self.config.tls.start_tls
                )
            except transport.TlsFailure as exc:
                self._problem(problems, address, str(exc))
                return None
            except OSError as exc:
                self._problem(problems, address, f"unable to connect: {exc.strerror or exc}")
                return None
            try:
                result = conn.bind(user, password if user else "", version)
            except (OSError, ConnectionLost, ber.BerError) as exc:
                conn.close()
                if isinstance(conn._sock, ssl.SSLSocket) and isinstance(exc, ConnectionLost):
                    # TLS 1.3: a refused client certificate shows only now, as a closed connection
                    self._problem(problems, address, f"bind: TLS connection ended after the handshake "
                                  f"({exc}); does the server require a client certificate? "
                                  "(control/ldaptlscert)")
                    return None
                self._problem(problems, address, f"bind: {exc}")
                return None
            if result.code == _SUCCESS:
                return conn
            conn.close()
            text = f"{address}: bind: result {result.code} {result.message}".rstrip()
            if result.code == _INVALID_CREDENTIALS:
                raise BadCredentials(text)
            if result.code == _PROTOCOL_ERROR and version == 3:
                continue
            raise LookupFailed(text)
        return None  # pragma: no cover - the loop always returns or raises

    def _acquire(self) -> tuple[WireConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._bound(self.config.login, self.config.password), False

    def _release(self, conn: WireConnection) -> None:
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

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
        encoded = ber.encode_query(filter)  # InvalidFilter before any connection is taken
        where = self.config.basedn if base is None else base
        parts = ber.search_parts(where, _SCOPES[scope], ber.attribute_list(attributes), self.config.timeout)
        while True:
            conn, reused = self._acquire()
            try:
                entries, result = conn.search(parts, encoded)
            except TimeoutError as exc:
                conn.close()
                raise SearchTimeout(f"{conn.address}: {exc}")
            except ConnectionLost as exc:
                conn.close()
                if reused:
                    continue  # stale pooled connection: once more on a fresh one
                raise LookupFailed(f"{conn.address}: {exc}")
            except (OSError, ber.BerError) as exc:
                conn.close()
                raise LookupFailed(f"{conn.address}: {exc}")
            self._release(conn)
            if result.code == _SUCCESS:
                return entries  # the usual answer: no error text to build
            return search_outcome(entries, result, str(conn.address))

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
        conn.close()
        return True

    def close(self) -> None:
        """Unbind every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

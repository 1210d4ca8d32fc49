"""Recipient lookups on the event loop: one LDAP connection, several searches in flight on it.

Why: smtpd asks the directory at every RCPT.  Through :class:`~qldap.directory.wire.WireSearcher`
each question is a thread hand-off and back (a futex wake, a self-pipe write, an epoll wake and GIL
hand-overs with the queue writer's threads), which on a loaded two-core machine costs more CPU than
the search itself.  Here the request is written from the loop and the answer dispatched by message
id when it arrives (RFC 4511 allows many outstanding operations on one connection), so concurrent
sessions share one connection and no thread is involved.

Deliberately narrow — everything unusual stays with the thread-pool path, which has the complete
failover and TLS logic (docs/operations.md):

* used only when the first ``ldapserver`` is plain ``ldap://``/``host:port`` or ``ldapi://`` and
  StartTLS is off;
* :meth:`AsyncRecipients.find_recipient` returns None whenever it cannot ask (no connection, the
  bind failed, the connection dropped under a request): the caller then asks the blocking path,
  which fails over or answers Unavailable (451) as before.  After a failure the connection is not
  tried again for :data:`RETRY_AFTER` seconds;
* a search without an answer within ``ldaptimeout`` is a SearchTimeout (Unavailable, 451), as in
  the blocking client, and drops the connection; server result codes map as there.

Filters, candidates, their order, the cache (``ldapcachettl``) and the Found/Ambiguous/NotFound rules
come from :class:`~qldap.directory.lookup.Directory`, so both paths answer alike.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

from qldap.directory import ber, schema
from qldap.directory.base import LookupResult, NotFound, Trash, Unavailable
from qldap.directory.config import Scheme
from qldap.directory.entry import Entry
from qldap.directory.errors import DirectoryUnavailable, SearchTimeout
from qldap.directory.lookup import Directory, candidate_answer
from qldap.directory.wire import WireSearcher, search_outcome

RETRY_AFTER = 5.0  # seconds the loop path stays off after a connection failure
_SUCCESS = 0
_MAX_ID = 2**31 - 1


class _Lost(Exception):
    """The connection cannot carry this request (closed, reset, never bound): ask the blocking path."""


def usable(directory: Directory) -> bool:
    """True when *directory* talks to slapd itself (not the LDIF file, not wrapped for metrics) and its
    first server can be asked from the loop (plain TCP or a Unix socket, no TLS)."""
    config = directory.config
    if type(directory.searcher) is not WireSearcher or not config.servers or config.tls.start_tls:
        return False
    return config.servers[0].scheme in (Scheme.LDAP, Scheme.LDAPI)


class _Protocol(asyncio.Protocol):
    """Frames answers and hands each to the request waiting for its message id."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, tuple[asyncio.Future[tuple[list[Entry], ber.Result]], list[Entry]]] = {}
        self.closed = False
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        try:
            while (end := ber.frame(buf, pos)) >= 0:
                msg = ber.decode_message(buf, pos, end)
                pos = end
                self._dispatch(msg)
        except (ber.BerError, _Lost) as exc:
            self.fail(exc)
            return
        self._buf = buf[pos:]

    def _dispatch(self, msg: ber.Message) -> None:
        if msg.msgid == 0:  # unsolicited notice of disconnection
            raise _Lost("notice of disconnection")
        waiting = self.pending.get(msg.msgid)
        if waiting is None:
            return  # the answer to a request that timed out meanwhile
        fut, entries = waiting
        if msg.op == ber.SEARCH_ENTRY:
            entries.append(ber.decode_entry(msg))
        elif msg.op in (ber.SEARCH_DONE, ber.BIND_RESPONSE):
            del self.pending[msg.msgid]
            if not fut.done():
                fut.set_result((entries, ber.decode_result(msg)))
        elif msg.op != ber.SEARCH_REFERENCE:
            raise ber.BerError(f"unexpected operation {msg.op:#x}")

    def fail(self, exc: BaseException) -> None:
        """Drop the connection and hand *exc* to every waiting request."""
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut, _entries in pending.values():
            if not fut.done():
                fut.set_exception(_Lost(str(exc)))
        if self.transport is not None:
            try:
                self.transport.abort()
            except RuntimeError:
                # the event loop already ended (qmail-smtpd on stdio closes its parts after
                # asyncio.run returned): nothing can run any more, the process is ending
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or _Lost("connection closed by the server"))


def _expire(fut: asyncio.Future[tuple[list[Entry], ber.Result]]) -> None:
    """ldaptimeout passed without a complete answer."""
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncRecipients:
    """``find_recipient`` of *directory* from the event loop over one shared, bound connection."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.config = directory.config
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol | None] | None = None
        self._off_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._parts = ber.search_parts(
            self.config.basedn, ber.SCOPE_SUBTREE, ber.attribute_list(schema.USER_ATTRIBUTES),
            self.config.timeout,
        )  # fmt: skip

    def _id(self) -> int:
        return next(self._ids) % _MAX_ID + 1

    async def find_recipient(self, address: str) -> LookupResult | None:
        """The directory's answer for *address*, or None when the blocking path must be asked.

        Raises:
            AddressWithoutHost: *address* has no ``@``.
        """
        query = self.directory.recipient_query(address)
        if isinstance(query, Trash):
            return query
        key, cands = query
        hit = self.directory.cached(key)
        if hit is not None:
            return hit
        oc = self.config.objectclass
        searched: list[str] = []
        result: LookupResult | None = None
        for cand in cands:
            searched.append(cand.address)
            try:
                entries = await self._search(ber.encode_query(cand.filter(oc)))
            except _Lost:
                return None
            except DirectoryUnavailable as exc:
                return Unavailable(exc)
            result = candidate_answer(cand, entries)
            if result is not None:
                break
        if result is None:
            result = NotFound(tuple(searched))
        self.directory.remember(key, result)
        return result

    async def _search(self, encoded_filter: bytes) -> Sequence[Entry]:
        proto = await self._connection()
        loop = self._loop  # the running loop, as _connection just checked
        assert loop is not None and proto.transport is not None
        msgid = self._id()
        fut: asyncio.Future[tuple[list[Entry], ber.Result]] = loop.create_future()
        proto.pending[msgid] = (fut, [])
        proto.transport.write(ber.search_request(msgid, self._parts, encoded_filter))
        # a timer instead of asyncio.wait_for: the same deadline without wait_for's extra task
        # machinery and loop look-ups (each a getpid() system call) on every RCPT
        timer = loop.call_later(self.config.timeout, _expire, fut)
        try:
            entries, result = await fut
        except TimeoutError:
            proto.fail(TimeoutError("no answer within ldaptimeout"))
            raise SearchTimeout(f"{self.config.servers[0]}: no complete answer within ldaptimeout") from None
        finally:
            timer.cancel()
        return search_outcome(entries, result, str(self.config.servers[0]))

    async def _connection(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a connection belongs to the loop that made it
            self._loop, self._proto, self._connecting = loop, None, None
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        if time.monotonic() < self._off_until:
            raise _Lost("recently failed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        proto = await asyncio.shield(connecting)
        if self._connecting is connecting:
            self._connecting = None
        if proto is None:
            raise _Lost("unable to connect")
        return proto

    async def _connect(self) -> _Protocol | None:
        """A bound connection to the first server, or None (and the loop path off for a while)."""
        loop = asyncio.get_running_loop()
        server = self.config.servers[0]
        proto: _Protocol | None = None
        try:
            async with asyncio.timeout(self.config.timeout):
                if server.scheme is Scheme.LDAPI:
                    _t, proto = await loop.create_unix_connection(_Protocol, server.path)
                else:
                    _t, proto = await loop.create_connection(_Protocol, server.host, server.port)
                msgid = self._id()
                fut: asyncio.Future[tuple[list[Entry], ber.Result]] = loop.create_future()
                proto.pending[msgid] = (fut, [])
                assert proto.transport is not None
                login = self.config.login
                proto.transport.write(ber.bind_request(msgid, login, self.config.password if login else ""))
                _entries, result = await fut
        except (OSError, TimeoutError, _Lost, ber.BerError):
            if proto is not None:
                proto.fail(_Lost("bind failed"))
            self._off_until = time.monotonic() + RETRY_AFTER
            return None
        if result.code != _SUCCESS:
            proto.fail(_Lost(f"bind: result {result.code}"))
            self._off_until = time.monotonic() + RETRY_AFTER
            return None
        self._proto = proto
        return proto

    def close(self) -> None:
        """Drop the connection (SIGHUP, shutdown)."""
        if self._proto is not None:
            self._proto.fail(_Lost("closed"))
            self._proto = None

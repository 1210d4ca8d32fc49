"""Deliver one message to one remote recipient over SMTP (qmail-remote's role) and say K, Z or D.

This is the asyncio glue around the pure parts: :mod:`~qldap.remote.routes` picks the addresses
from ``smtproutes`` and DNS answers (the resolver is a seam, :mod:`~qldap.remote.dns`),
:mod:`~qldap.remote.tcpto` remembers addresses that time out, and the sans-I/O
:class:`~qldap.remote.dialogue.SmtpDialogue` decides every command and outcome; here we only
connect (``timeoutconnect``, bound to ``outgoingip``), move bytes (``timeoutremote`` per read and
per write), upgrade to TLS when the dialogue asks, and close.

Why the result goes through qmail-remote's wire form: the manager's report for a remote recipient
is defined as the *folding* of qmail-remote's NUL-terminated ``r/h/s`` + ``K/Z/D`` records
(qmail-send(8), REMOTE DELIVERY), so the outcome is encoded exactly as qmail-remote would print it and folded
by
:func:`~qldap.reports.fold_remote_output` — one rule, no second formatter to drift.

"Me" for the self-MX rule is ``0.0.0.0`` plus this host's *interface* addresses (as qmail's
``ipme``): the kernel's ``/32 host LOCAL`` entries of ``/proc/net/fib_trie`` and the addresses of
``/proc/net/if_inet6`` — not every locally routable address (127.0.0.2 is routable, not an interface
address).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qldap.address import Address
from qldap.control.files import ControlDir
from qldap.errors import ConfigError, DeliveryFailure
from qldap.queue.layout import QueueLayout
from qldap.remote.dialogue import (
    Action,
    DialogueSettings,
    Finished,
    MessageReport,
    NextAddress,
    RemoteOutcome,
    SmtpDialogue,
    StartTls,
    no_connection,
)
from qldap.remote.dns import DnsResolver, Resolver
from qldap.remote.routes import (
    DEFAULT_PORT,
    AddressAnswer,
    Route,
    SmtpRoutes,
    Target,
    address_queries,
    ip_literal,
    needs_mx_query,
    select_relay_targets,
    select_targets,
)
from qldap.remote.tcpto import TcptoTable, read_table, update_table
from qldap.reports import Report, fold_remote_output, no_host_name_report

READ_SIZE = 65536
WRITE_CHUNK = 65536
CLOSE_GRACE = 1.0  # seconds allowed for QUIT to leave before the connection is dropped
READ_FAILED = "Unable to read message. (#4.3.0)\n"
FIB_TRIE = "/proc/net/fib_trie"
IF_INET6 = "/proc/net/if_inet6"

Clock = Callable[[], float]
TlsFactory = Callable[[], ssl.SSLContext]


# -- this host's addresses ---------------------------------------------------------------------


def parse_fib_trie(text: str) -> frozenset[str]:
    """The IPv4 interface addresses in ``/proc/net/fib_trie`` text: entries marked ``/32 host LOCAL``."""
    found: set[str] = set()
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|--"):
            current = line[3:].strip()
        elif line.startswith("/32 host LOCAL") and current is not None:
            found.add(current)
    return frozenset(found)


def parse_if_inet6(text: str) -> frozenset[str]:
    """The IPv6 interface addresses in ``/proc/net/if_inet6`` text (first column, 32 hex digits)."""
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
            except ValueError:
                continue
    return frozenset(found)


def interface_addresses(fib_trie: str = FIB_TRIE, if_inet6: str = IF_INET6) -> frozenset[str]:
    """This host's interface addresses; a file that cannot be read contributes nothing."""
    found: frozenset[str] = frozenset()
    for path, parse in ((fib_trie, parse_fib_trie), (if_inet6, parse_if_inet6)):
        try:
            found |= parse(Path(path).read_text(encoding="ascii", errors="replace"))
        except OSError:
            continue
    return found


# -- TLS ------------------------------------------------------------------------------------------


def client_tls_context(ctl: ControlDir) -> ssl.SSLContext:
    """The client context: no certificate, name or date checks (qmail-send(8), REMOTE DELIVERY);
    ``remotecert`` offered if set.

    ``tlsremoteciphers`` other than ``compat`` is an OpenSSL cipher list.

    Raises:
        ssl.SSLError: the certificate or the cipher list is unusable.
        OSError: the certificate file cannot be read.
        ConfigError: a control file is unreadable.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ciphers = ctl.line("tlsremoteciphers") or "compat"
    if ciphers != "compat":
        ctx.set_ciphers(ciphers)
    if ctl.exists("remotecert"):
        cert = str(ctl.path("remotecert"))
        ctx.load_cert_chain(cert, cert)
    return ctx


def _tls_details(writer: asyncio.StreamWriter) -> tuple[str, str, str]:
    """(protocol version, cipher, SHA-256 of the server certificate) of an encrypted connection."""
    obj = writer.get_extra_info("ssl_object")
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        return "unknown", "unknown", ""
    cipher = obj.cipher()
    cert = obj.getpeercert(binary_form=True)
    fingerprint = hashlib.sha256(cert).hexdigest() if cert else ""
    return obj.version() or "unknown", cipher[0] if cipher else "unknown", fingerprint


# -- one connection -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """An open connection to a target."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The connect did not work; ``timed_out`` tells a timeout (counted in tcpto) from a refusal."""

    timed_out: bool


async def connect(target: Target, bind: str, timeout: float) -> Connected | ConnectFailed:
    """Open a TCP connection to *target* within *timeout* seconds, from *bind* unless it is a wildcard."""
    local: tuple[str, int] | None = None
    bind_ip = ipaddress.ip_address(bind)
    if not bind_ip.is_unspecified and bind_ip.version == ipaddress.ip_address(target.ip).version:
        local = (bind, 0)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.ip, target.port, local_addr=local, limit=READ_SIZE), timeout
        )
    except TimeoutError:
        return ConnectFailed(timed_out=True)
    except OSError:
        return ConnectFailed(timed_out=False)
    return Connected(reader, writer)


async def _write(writer: asyncio.StreamWriter, data: bytes, timeout: float) -> None:
    view = memoryview(data)
    for start in range(0, len(view), WRITE_CHUNK):
        writer.write(view[start : start + WRITE_CHUNK])
        async with asyncio.timeout(timeout):
            await writer.drain()


async def converse(
    conn: Connected, dialogue: SmtpDialogue, timeout: float, tls: TlsFactory
) -> Finished | NextAddress:
    """Run *dialogue* over *conn* until it finishes or asks for the next address; closes *conn*.

    A failed write or read while the dialogue runs is a lost connection; a failed ``QUIT`` after the
    outcome is decided changes nothing.
    """
    pending: deque[Action] = deque()
    try:
        while True:
            while pending:
                action = pending.popleft()
                if isinstance(action, Finished | NextAddress):
                    return action
                if isinstance(action, StartTls):
                    pending.extend(await _start_tls(conn, dialogue, timeout, tls))
                    continue
                try:
                    await _write(conn.writer, action.data, timeout)
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    if not dialogue.done:
                        pending = deque(dialogue.connection_lost(_why(exc)))
            try:
                async with asyncio.timeout(timeout):  # cheaper than wait_for: no task per reply
                    data = await conn.reader.read(READ_SIZE)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                pending.extend(dialogue.connection_lost(_why(exc)))
                continue
            pending.extend(dialogue.feed(data) if data else dialogue.connection_lost("end of file"))
    finally:
        await _close(conn.writer)


async def _start_tls(
    conn: Connected, dialogue: SmtpDialogue, timeout: float, tls: TlsFactory
) -> list[Action]:
    try:
        ctx = tls()
    except (ssl.SSLError, OSError, ConfigError) as exc:
        return dialogue.tls_failed(_why(exc))
    try:
        await conn.writer.start_tls(ctx, ssl_handshake_timeout=timeout)
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        return dialogue.tls_failed(_why(exc))
    return dialogue.tls_established(*_tls_details(conn.writer))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)  # set by OpenSSL errors, absent on some raised by Python
        if reason:
            return str(reason)
        return str(exc.args[-1]) if exc.args else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    """Let buffered bytes (QUIT) go, without waiting for the server's answer."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)
    except (OSError, TimeoutError, ssl.SSLError):
        pass  # the connection is gone either way; the outcome is already decided


# -- target selection -----------------------------------------------------------------------------


async def find_targets(
    domain: str,
    route: Route,
    resolver: Resolver,
    my_addresses: frozenset[str],
    rng: random.Random,
    port: int = DEFAULT_PORT,
) -> tuple[Target, ...]:
    """The addresses to try for *domain* (qmail-send(8), REMOTE DELIVERY): the relay's, or the MX choice with
    the self-MX rule.

    Raises:
        DeliveryFailure: a DNS or self-MX failure carrying qmail-remote's text.
    """
    if route.host is not None:
        literal = ip_literal(route.host)
        answer = None if literal else await resolver.addresses(route.host)
        return select_relay_targets(route, answer)
    mx = await resolver.mx(domain) if needs_mx_query(domain, route) else None
    names = address_queries(domain, route, mx)
    answers: dict[str, AddressAnswer] = {}
    if names:
        results = await asyncio.gather(*(resolver.addresses(name) for name in names))
        answers = dict(zip(names, results, strict=True))
    return select_targets(domain, mx, answers, my_addresses, rng, port)


# -- the delivery ---------------------------------------------------------------------------------


class _Tcpto:
    """The timeout memory for one delivery.  Unusable files only switch the memory off, as in qmail."""

    def __init__(self, path: str, clock: Clock, pid: int) -> None:
        self.path, self.clock, self.pid = path, clock, pid
        try:
            self.table = read_table(path)
        except OSError:
            self.table = TcptoTable()

    def is_down(self, ip: str) -> bool:
        return self.table.is_down(ip, int(self.clock()), self.pid)

    def record(self, ip: str, timed_out: bool) -> None:
        if not timed_out and ip not in {e.ip for e in self.table.entries()}:
            return  # nothing remembered for this address: no need to lock and rewrite the file
        now = int(self.clock())
        try:
            self.table = update_table(
                self.path, lambda t: t.record_timeout(ip, now) if timed_out else t.record_success(ip)
            )
        except OSError:
            pass  # a remembered timeout is an optimisation; failing to store one is not a delivery problem


def _fold(outcome: RemoteOutcome) -> Report:
    return fold_remote_output(outcome.encode())


def _failure_outcome(failure: DeliveryFailure) -> RemoteOutcome:
    text = failure.text if failure.text.endswith("\n") else failure.text + "\n"
    return RemoteOutcome((), MessageReport("Z" if failure.temporary else "D", text))


class RemoteSettings(Protocol):
    """What one remote delivery reads from the manager's configuration (``send.config.SendConfig``).

    A protocol rather than the class itself: ``send`` sits above ``remote`` (docs/architecture.md).
    """

    me: str
    helohost: str
    timeoutconnect: int
    timeoutremote: int
    smtpclustercookie: str

    @property
    def smtproutes(self) -> SmtpRoutes: ...

    def bind_address(self) -> str: ...


async def deliver_remote(
    root: Path,
    cfg: RemoteSettings,
    sender: str,
    recipient: str,
    message_path: Path,
    *,
    resolver: Resolver | None = None,
    tcpto_path: Path | None = None,
    my_addresses: frozenset[str] | None = None,
    port: int = DEFAULT_PORT,
    rng: random.Random | None = None,
    clock: Clock = time.time,
    pid: int | None = None,
    tls: TlsFactory | None = None,
) -> Report:
    """Deliver *message_path* from *sender* to *recipient*; the folded K/Z/D report (never raises).

    Args:
        root: the qmail root (``control/`` for TLS settings, ``queue/lock/tcpto``).
        cfg: helohost, timeouts, outgoingip, smtproutes, smtpclustercookie.
        resolver: DNS seam; default real DNS from ``/etc/resolv.conf``.
        tcpto_path: the timeout table; default ``ROOT/queue/lock/tcpto``.
        my_addresses: "me" for the self-MX rule; default this host's interface addresses.
        port: the SMTP port of MX targets (routes carry their own).
        rng: shuffles equal MX preferences.
        clock, pid: time and process id for the tcpto rules.
        tls: builds the client context when a server offers STARTTLS; default from ``control/``.
    """
    rcpt = Address.parse(recipient)
    if not rcpt.has_at:
        return no_host_name_report()
    domain = rcpt.domain
    try:
        bind = cfg.bind_address()
        route = cfg.smtproutes.lookup(domain)
        mine = interface_addresses() if my_addresses is None else my_addresses
        targets = await find_targets(
            domain, route, resolver or DnsResolver(), mine, rng or random.Random(), port
        )
        message = await asyncio.to_thread(Path(message_path).read_bytes)
    except DeliveryFailure as exc:
        return _fold(_failure_outcome(exc))
    except OSError:
        return _fold(RemoteOutcome((), MessageReport("Z", READ_FAILED)))
    table = os.fspath(tcpto_path or QueueLayout.of(root).tcpto)
    memory = _Tcpto(table, clock, os.getpid() if pid is None else pid)
    settings = DialogueSettings(
        helohost=cfg.helohost or cfg.me, cookie=cfg.smtpclustercookie, credentials=route.credentials
    )
    factory = tls or (lambda: client_tls_context(ControlDir(root)))
    for target in targets:
        if memory.is_down(target.ip):
            continue
        conn = await connect(target, bind, cfg.timeoutconnect)
        memory.record(target.ip, isinstance(conn, ConnectFailed) and conn.timed_out)
        if isinstance(conn, ConnectFailed):
            continue
        dialogue = SmtpDialogue(target.ip, sender, (recipient,), message, settings)
        result = await converse(conn, dialogue, cfg.timeoutremote, factory)
        if isinstance(result, Finished):
            return _fold(result.outcome)
    return _fold(no_connection())

"""The asyncio SMTP daemon: listeners, what every connection shares, reload and stop.

Everything SMTP decides lives in the sans-I/O core (:mod:`reader`, :mod:`session`, :mod:`policy`);
one connection's bytes and the session's requests are carried by :mod:`connection`.  This module
holds what all connections share: the listeners, the limits, the controls/rules/directory that a
reload replaces, the thread pools, TLS contexts, DNS (:mod:`dns`), the verifier (:mod:`verify`),
the credential check (:mod:`auth`) and the queue hand-off (:mod:`queueing`).

Per connection, as tcpserver + qmail-smtpd did per process (qmail-smtpd(8), CLIENT RULES): past
``max_sessions`` the client gets ``421`` at once; a PTR lookup with a short timeout gives TCPREMOTEHOST; the
client rules pick allow/deny (deny, or an unparsable rules file, closes without a byte) and their variables;
the session environment is service defaults < TCP facts < rule variables; controls are re-read (stat-checked)
into a frozen SmtpdConfig.  A broken control file answers ``421 unable to read controls (#4.3.0)``.

Signals (wired by the CLI): :meth:`SmtpServer.reload` (SIGHUP) re-opens controls, rules and the
directory for new sessions; :meth:`SmtpServer.stop` (SIGTERM) stops accepting, answers idle
sessions ``421``, lets sessions in DATA finish within ``stop_grace`` seconds, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qldap.address import canonical_ipv4
from qldap.control.domains import Locals, RcptHosts
from qldap.control.files import ControlDir, path_signature
from qldap.control.limits import DEFAULT_DEADLINE, ClientCounter, SessionLimits
from qldap.control.rules import RulesFile
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.mailauth.resolve import Dns
from qldap.pbs.config import PbsConfig, PbsRole, load_config
from qldap.smtpd.auth import Authenticator
from qldap.smtpd.config import SmtpdConfig, SmtpdEnv
from qldap.smtpd.connection import Connection
from qldap.smtpd.dns import DnsResolver, Resolver
from qldap.smtpd.mailcheck import InboundChecks
from qldap.smtpd.queueing import QueueHandoff
from qldap.smtpd.signing import SubmissionSigner
from qldap.smtpd.verify import Verifier

DEFAULT_MAX_SESSIONS = 50
DEFAULT_LOOKUP_WORKERS = 4
DEFAULT_QUEUE_WORKERS = 0
"""Queue writer helper processes (qmail-smtpd(8), --queue-workers); 0 = the in-process injector on
:data:`INJECT_THREADS` threads.  Decision: 0 by default, because on the two shared cores this project
is measured on, helpers cost more CPU per message in all (their fsync and context-switch kernel time,
cold caches) than the lock hand-overs they remove, and accepted fewer messages per second; they take
the queue writing out of the daemon's one event loop, which pays where that loop is the bottleneck
and cores are free (docs/benchmarks.md, "smtpd: queue writes in helper processes")."""
INJECT_THREADS = 8
RULES_FILE = "qmail-smtpd.rules"
_CIPHERS = {
    "secure": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM",
    "default": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM",
    "legacy": "DEFAULT:@SECLEVEL=1",
    "insecure": "ALL:@SECLEVEL=0",
    "all": "ALL:@SECLEVEL=0",
}  # "compat" keeps the ssl module's defaults; anything else is an OpenSSL cipher string

LogWriter = Callable[[str], None]


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How one ``qldap smtpd`` runs; ``environ`` holds the service-wide session variables."""

    root: Path
    listen: tuple[tuple[str, int], ...]
    rules: Path | None = None  # None: ROOT/control/qmail-smtpd.rules
    environ: Mapping[str, str] = field(default_factory=dict)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_per_ip: int = 0  # sessions from one client address; 0 = no limit (qldap-services(5) limits:)
    session_deadline: float = DEFAULT_DEADLINE  # seconds a whole session may last; 0 = none
    lookup_workers: int = DEFAULT_LOOKUP_WORKERS
    queue_workers: int = DEFAULT_QUEUE_WORKERS  # queue writer processes (0: in-process on threads)
    stop_grace: float = 30.0
    worker: bool = False  # one of several processes on the same port (``--processes``, SO_REUSEPORT)


def tls_context(cert: Path, ciphers: str) -> ssl.SSLContext:
    """A server context from a PEM file holding the chain and the key (qmail-smtpd(8), COMMANDS).

    Raises:
        OSError, ssl.SSLError: the file is unreadable or not a usable certificate and key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    chosen = _CIPHERS.get(ciphers.lower(), ciphers)
    if ciphers.lower() != "compat":
        ctx.set_ciphers(chosen)
    return ctx


class _Parts:
    """What a reload replaces: the controls, the rules, the directory and the checks built on it."""

    def __init__(
        self, options: ServerOptions, pool: ThreadPoolExecutor, log: Callable[[str], None] | None = None
    ) -> None:
        self.ctl = ControlDir(options.root)
        self.locals = Locals(self.ctl)
        self.rcpthosts = RcptHosts(self.ctl)
        self.rules = RulesFile(options.rules or self.ctl.path(RULES_FILE))
        directory: Directory | ConfigError
        try:
            directory = open_directory(self.ctl, log=log)
        except ConfigError as exc:
            directory = exc
        self.directory = directory
        self.dash_ext = directory.config.dash_ext if isinstance(directory, Directory) else False
        self.verifier = Verifier(directory, options.root, pool)
        self.auth = Authenticator(directory, pool, cleartext=self.ctl.boolean("cleartextpasswd", False))
        # POP-before-SMTP (pbscheck in-process): only when control/pbsservers exists
        self.pbs: PbsConfig | ConfigError | None = None
        if self.ctl.exists("pbsservers"):
            try:
                self.pbs = load_config(self.ctl, PbsRole.CLIENT)
            except ConfigError as exc:
                self.pbs = exc

    def close(self) -> None:
        self.verifier.close()
        if isinstance(self.directory, Directory):
            self.directory.close()


class SmtpServer:
    """The daemon: :meth:`start` the listeners, :meth:`reload` on SIGHUP, :meth:`stop` on SIGTERM."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        resolver: Resolver | None = None,
        log: LogWriter | None = None,
        handoff: QueueHandoff | None = None,
        authdns: Dns | None = None,
    ) -> None:
        self.options = options
        self.resolver: Resolver = resolver or DnsResolver()
        self.write_log = log or _stderr
        self.level = SmtpdEnv.from_environ(options.environ).loglevel
        # a worker's lines name its pid: session numbers count per process (qmail-smtpd(8), LOG)
        self.name = f"qmail-smtpd[{os.getpid()}]" if options.worker else "qmail-smtpd"
        self.lookup_pool = ThreadPoolExecutor(options.lookup_workers, thread_name_prefix="qldap-lookup")
        threads = max(options.queue_workers, INJECT_THREADS)  # injector threads, QMAILQUEUE programs
        self.handoff = handoff or QueueHandoff(
            options.root, workers=threads, writers=options.queue_workers, log=self.log
        )
        self.parts = _Parts(options, self.lookup_pool, self.log)
        self.signing = SubmissionSigner(self.parts.ctl)  # DKIM for relayed mail (qldap-dkim(8))
        self.checks = InboundChecks.sharing(self.resolver, authdns)
        self.connections: set[Connection] = set()
        self.clients = ClientCounter(SessionLimits(options.max_sessions, options.max_per_ip,
                                                   options.session_deadline))
        self.own_ips: frozenset[str] = frozenset({"127.0.0.1"})
        self.ids = itertools.count(1)
        self._servers: list[asyncio.Server] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # set by start(); the connections' loop
        self._tls: dict[tuple[str, tuple[int, int, int], str], ssl.SSLContext] = {}

    def log(self, text: str, level: int = 1) -> None:
        """Write a daemon-wide ``qmail-smtpd: text`` line when *level* ≤ the service LOGLEVEL
        (``qmail-smtpd[PID]: text`` in a worker of ``--processes``)."""
        if level <= self.level:
            self.write_log(f"{self.name}: {text}")

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listener; return the bound ``(host, port)`` pairs (port 0 → the chosen port).

        Raises:
            OSError: a listener cannot be bound.
        """
        loop = self.loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        for host, port in self.options.listen:
            srv = await loop.create_server(
                lambda: Connection(self), host, port, reuse_address=True, backlog=512,
                reuse_port=self.options.worker or None,
            )
            self._servers.append(srv)
            for sock in srv.sockets:
                name = sock.getsockname()
                bound.append((str(name[0]), int(name[1])))
        self.own_ips = self.own_ips | {h for h, _ in bound if canonical_ipv4(h) and h != "0.0.0.0"}
        return bound

    def reload(self) -> None:
        """SIGHUP: new sessions use freshly read controls, rules and directory settings."""
        old, self.parts = self.parts, _Parts(self.options, self.lookup_pool, self.log)
        self._tls.clear()
        old.close()  # its searcher reconnects if a running session still asks it
        self.handoff.renew()  # queue writers read the qmail users and controls afresh
        self.log("reloaded controls, rules and directory settings", 2)

    def tls(self, cfg: SmtpdConfig) -> ssl.SSLContext | None:
        """The TLS context for *cfg*'s certificate (cached until the file changes); None on failure."""
        cert = cfg.cert_path
        if cert is None:
            return None
        key = (str(cert), path_signature(cert), cfg.tlsciphers)
        ctx = self._tls.get(key)
        if ctx is None:
            try:
                ctx = tls_context(cert, cfg.tlsciphers)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.log(f"unable to initialize TLS from {cert}: {exc}", 1)
                return None
            self._tls[key] = ctx
        return ctx

    async def stop(self) -> None:
        """Stop accepting; idle sessions get 421, sessions in DATA may finish within ``stop_grace``."""
        for srv in self._servers:
            srv.close()
        conns = list(self.connections)
        for conn in conns:
            conn.request_stop()
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.options.stop_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for srv in self._servers:
            await srv.wait_closed()
        await self.handoff.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Release thread pools and directory connections (blocking: waits for running hand-offs)."""
        self.handoff.close()
        self.checks.close()
        self.signing.close()
        self.lookup_pool.shutdown(wait=True)
        self.parts.close()

"""``qldap smtpd``: run the SMTP daemon on one or more listeners until SIGTERM.

    qldap smtpd --root DIR --listen HOST:PORT [--listen ...] [--rules FILE] [--env KEY=VALUE]...
                [--processes N]

The session environment's service defaults are this process's environment overridden by ``--env``
items (``qldap up`` passes services.yaml's ``env`` as the environment).  When every listener is
bound, one line ``qldap smtpd: listening on HOST:PORT`` per listener goes to stderr (port 0 shows the
port chosen), then the session log lines of qmail-smtpd(8) LOG (``LOGLEVEL`` per session, ``LOGTIMESTAMPS``
as every daemon, passwords never written).  SIGHUP reloads controls, rules and
directory settings; SIGTERM/SIGINT stop cleanly (exit 0).  A listener that cannot be bound is
``qldap smtpd: fatal: …`` and exit 111.  ``--processes N`` (N > 1) runs N worker processes on the
same listeners (:mod:`qldap.cli.smtpd_workers`); the session limits then count per worker.

    qmail-smtpd [--root DIR] [ARG...]

serves one session on stdin/stdout instead (inetd, tcpserver, ``sendmail -bs``): the session
environment is this process's environment as given (PROTO, TCPREMOTEIP/HOST/INFO, TCPLOCALIP/HOST,
RELAYCLIENT, DATABYTES …; the rules file is not read, tcpserver applied it already).  The root is
``--root``, else ``$QLDAP_ROOT``, else /var/qmail.  Further arguments (the checkpassword program of
qmail-ldap's run scripts) are accepted and ignored: SMTP AUTH is checked in-process.  Exit 0 when
the session ended (QUIT, EOF, timeout), 111 when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from qldap.cli._run import run, start_metrics, steady_malloc
from qldap.control.files import ControlDir, find_root
from qldap.control.limits import DEFAULT_DEADLINE
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.logs import Logger
from qldap.smtpd.dns import DEFAULT_PTR_TIMEOUT, DnsResolver
from qldap.smtpd.server import (
    DEFAULT_LOOKUP_WORKERS,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_QUEUE_WORKERS,
    ServerOptions,
    SmtpServer,
)
from qldap.smtpd.stdio import serve_stdio

PROG = "qldap smtpd"
STDIO_PROG = "qmail-smtpd"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as a pair.

    Raises:
        argparse.ArgumentTypeError: no port, or a port outside 0–65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_env(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty: a variable is *set* when present).

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty name.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The options of ``qldap smtpd``."""
    p = argparse.ArgumentParser(prog=PROG, description="SMTP receiving daemon (qmail-smtpd)")
    p.add_argument("--root", required=True, type=Path, help="the qmail root (control/, queue/)")
    p.add_argument("--listen", action="append", required=True, type=parse_listen, metavar="HOST:PORT")
    p.add_argument("--rules", type=Path, help="client rules file (default ROOT/control/qmail-smtpd.rules)")
    p.add_argument("--env", action="append", default=[], type=parse_env, metavar="KEY=VALUE",
                   help="a service-wide session variable (repeatable)")  # fmt: skip
    p.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, help="concurrent sessions")
    p.add_argument("--max-per-ip", type=int, default=0,
                   help="concurrent sessions from one client address (0: no limit)")  # fmt: skip
    p.add_argument("--session-deadline", type=float, default=DEFAULT_DEADLINE,
                   help="seconds a whole session may last (0: none)")  # fmt: skip
    p.add_argument("--queue-workers", type=int, default=DEFAULT_QUEUE_WORKERS,
                   help="queue writer processes (0: write on threads in-process)")  # fmt: skip
    p.add_argument("--lookup-workers", type=int, default=DEFAULT_LOOKUP_WORKERS,
                   help="threads asking the directory concurrently")  # fmt: skip
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes on the listeners (SO_REUSEPORT), limits per worker")  # fmt: skip
    p.add_argument("--dns-timeout", type=float, default=DEFAULT_PTR_TIMEOUT,
                   help="seconds for the client PTR lookup (0: none)")  # fmt: skip
    return p


def log_writer(options: ServerOptions) -> Callable[[str], None]:
    """Session log lines through the shared writer: LOGTIMESTAMPS prefixes, the LDAP password redacted."""
    logger = Logger.from_env("qmail-smtpd", options.environ)
    try:
        logger.add_secret(ControlDir(options.root).line("ldappassword") or "")
    except ConfigError:
        pass  # unreadable: the session reports it; nothing to redact yet

    def write(line: str) -> None:
        logger.relay(logger.prefix() + line)

    return write


def announce(bound: Sequence[tuple[str, int]]) -> None:
    """The ready lines: ``qldap smtpd: listening on HOST:PORT`` per listener (``qldap up`` relays them)."""
    for host, port in bound:
        shown = f"[{host}]" if ":" in host else host
        sys.stderr.write(f"{PROG}: listening on {shown}:{port}\n")
    sys.stderr.flush()


async def serve(
    options: ServerOptions, dns_timeout: float, ready: Callable[[Sequence[tuple[str, int]]], None] = announce
) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 after a clean stop.  *ready* gets the bound listeners
    (a worker of ``--processes`` tells its parent instead; the parent serves the metrics)."""
    resolver = DnsResolver(ptr_timeout=dns_timeout)
    if not options.worker:
        start_metrics(PROG, "smtpd", options.environ)
    server = SmtpServer(options, resolver=resolver, log=log_writer(options))
    try:
        bound = await server.start()
    except OSError as exc:
        await asyncio.get_running_loop().run_in_executor(None, server.close)
        raise ConfigError(f"unable to listen: {exc.strerror or exc}") from exc
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    ready(bound)
    await stop.wait()
    await server.stop()
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``qldap smtpd ARGS``)."""

    def body(args: Sequence[str]) -> int:
        ns = build_parser().parse_args(list(args))
        environ = dict(os.environ)
        environ.update(ns.env)
        options = ServerOptions(
            root=ns.root.resolve(),
            listen=tuple(ns.listen),
            rules=ns.rules,
            environ=environ,
            max_sessions=max(1, ns.max_sessions),
            max_per_ip=max(0, ns.max_per_ip),
            session_deadline=max(0.0, ns.session_deadline),
            queue_workers=max(0, ns.queue_workers),
            lookup_workers=max(1, ns.lookup_workers),
        )
        steady_malloc()  # no mmap/mremap/munmap around every socket read (workers inherit it)
        if ns.processes > 1:
            from qldap.cli.smtpd_workers import serve_workers

            return serve_workers(options, ns.processes, lambda opts, ready: asyncio.run(
                serve(opts, ns.dns_timeout, ready)), announce)  # fmt: skip
        return asyncio.run(serve(options, ns.dns_timeout))

    return run(PROG, body, argv)


def build_stdio_parser() -> argparse.ArgumentParser:
    """The options of ``qmail-smtpd`` (one session on stdin/stdout)."""
    p = argparse.ArgumentParser(prog=STDIO_PROG, description="one SMTP session on stdin/stdout")
    p.add_argument("--root", type=Path, help="the qmail root (default $QLDAP_ROOT, else /var/qmail)")
    p.add_argument("ignored", nargs="*", help="accepted for qmail-ldap run scripts; ignored")
    return p


def stdio_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``qmail-smtpd``: one session on fd 0/1, settings from ``os.environ``."""

    def body(args: Sequence[str]) -> int:
        ns = build_stdio_parser().parse_args(list(args))
        options = ServerOptions(root=find_root(ns.root).resolve(), listen=(), environ=dict(os.environ))
        return serve_stdio(options, log=log_writer(options), resolver=DnsResolver())

    return run(STDIO_PROG, body, argv)


if __name__ == "__main__":
    sys.exit(main())

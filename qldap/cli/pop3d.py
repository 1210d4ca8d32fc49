"""``qldap pop3d --root DIR --listen HOST:PORT``: the POP3 daemon (popup + login check + pop3d in one).

Reads once at start: ``control/me`` (greeting host), ``defaultdelivery`` (its first maildir line is the
maildir of a user without MAILDIR, as local delivery writes it), the LDAP controls (one directory shared by
the login threads), ``dirmaker``/``automaildirmake``/``cleartextpasswd``, the POP-before-SMTP client
controls when ``control/pbsservers`` exists, and the TLS certificate for STLS from ``$SSLCERT`` or
``control/pop3cert`` (one PEM file holding the certificate chain and the key).  ``POP3_LOGLEVEL``
comes from the environment.  Prints ``qldap pop3d: listening on HOST:PORT`` per listener on stderr
when ready.  SIGHUP re-reads the controls for new connections.  SIGTERM/SIGINT stop accepting and
end the dialogues in progress without applying any deletions (a session already handed to its own
process finishes there), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from qldap.auth.check import cleartext_enabled
from qldap.auth.modules import MailboxSettings
from qldap.cli._run import start_metrics
from qldap.control.files import ControlDir, find_root
from qldap.control.limits import DEFAULT_DEADLINE, SessionLimits
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.local.spawn import default_maildir
from qldap.logs import stamper
from qldap.pbs.config import PbsConfig, PbsRole, load_config
from qldap.pop3.server import DEFAULT_FAILURE_DELAY, DEFAULT_MAX_SESSIONS, Pop3dConfig, Pop3Server

PROG = "qldap pop3d"
DEFAULT_LISTEN = "0.0.0.0:110"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port).

    Raises:
        ValueError: no port or a bad one.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


_stamp = stamper(os.environ)  # LOGTIMESTAMPS


def _log(text: str) -> None:
    sys.stderr.write(_stamp() + text + "\n")
    sys.stderr.flush()


def tls_context(ctl: ControlDir) -> ssl.SSLContext | None:
    """The STLS server context from ``$SSLCERT`` or ``control/pop3cert``; None when neither exists.

    Raises:
        ConfigError: the file exists but is not a usable certificate and key.
    """
    path = os.environ.get("SSLCERT") or (str(ctl.path("pop3cert")) if ctl.exists("pop3cert") else "")
    if not path:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"unable to load the POP3 certificate {path}: {exc}")
    return context


def read_config(ctl: ControlDir) -> Pop3dConfig:
    """Everything the daemon reads at start.

    Raises:
        ConfigError: a control file is missing (``me``), unreadable or illegal.
    """
    pbs: PbsConfig | None = None
    if ctl.exists("pbsservers") and "NOPBS" not in os.environ:
        pbs = load_config(ctl, PbsRole.CLIENT)
    return Pop3dConfig(
        hostname=ctl.me(),
        settings=MailboxSettings.from_control(ctl),
        aliasempty=default_maildir(ctl),
        tls=tls_context(ctl),
        pbs=pbs,
        cleartext=cleartext_enabled(ctl),
        loglevel=os.environ.get("POP3_LOGLEVEL", ""),
    )


async def _serve(ctl: ControlDir, listens: Sequence[tuple[str, int]], limits: SessionLimits,
                 failure_delay: float) -> int:
    try:
        start_metrics(PROG, "pop3d", os.environ)
        cfg = replace(read_config(ctl), limits=limits, failure_delay=failure_delay)
        directory = open_directory(ctl, log=lambda text: _log(f"{PROG}: {text}"))
    except ConfigError as exc:
        _log(f"{PROG}: fatal: {exc}")
        return ExitCode.TEMPORARY
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pop3d") as executor:
        server = Pop3Server(cfg, directory, executor, _log)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def reload() -> None:
            """SIGHUP: new connections use freshly read controls and directory; a failure keeps the old."""
            try:
                new_cfg, new_directory = read_config(ctl), open_directory(ctl)
                new_cfg = replace(new_cfg, limits=limits, failure_delay=failure_delay)
            except ConfigError as exc:
                _log(f"{PROG}: alert: unable to reload controls: {exc}")
                return
            server.cfg, server.directory = new_cfg, new_directory  # sessions in flight keep the old one
            _log(f"{PROG}: reloaded controls")

        loop.add_signal_handler(signal.SIGHUP, reload)
        servers = []
        try:
            for where in listens:
                srv = await loop.create_server(server.protocol, where[0], where[1], reuse_address=True)
                servers.append(srv)
                host, port = srv.sockets[0].getsockname()[:2]
                _log(f"qldap pop3d: listening on {host}:{port}")
        except OSError as exc:
            _log(f"{PROG}: fatal: unable to listen: {exc.strerror or exc}")
            return ExitCode.TEMPORARY
        await stop.wait()
        for srv in servers:
            srv.close()
        for task in list(server.tasks):  # a session child keeps serving its client on its own
            task.cancel()
        if server.tasks:
            await asyncio.wait(server.tasks)
        directory.close()
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """``qldap pop3d [--root DIR] [--listen HOST:PORT]...``."""
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--root", help="qmail root (default $QLDAP_ROOT or /var/qmail)")
    parser.add_argument("--listen", action="append", default=[], help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, help="concurrent sessions")
    parser.add_argument("--max-per-ip", type=int, default=0,
                        help="concurrent sessions from one client address (0: no limit)")
    parser.add_argument("--session-deadline", type=float, default=DEFAULT_DEADLINE,
                        help="seconds a whole session may last (0: none)")
    parser.add_argument("--failure-delay", type=float, default=DEFAULT_FAILURE_DELAY,
                        help="seconds before a failed login is answered")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    limits = SessionLimits(max(1, args.max_sessions), max(0, args.max_per_ip),
                           max(0.0, args.session_deadline))
    try:
        listens = [parse_listen(text) for text in (args.listen or [DEFAULT_LISTEN])]
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(_serve(ControlDir(find_root(args.root)), listens, limits,
                                  max(0.0, args.failure_delay)))
    except KeyboardInterrupt:
        return ExitCode.OK

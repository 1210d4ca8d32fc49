"""``qldap qmqpd --root DIR --listen HOST:PORT``: the QMQP server cluster members forward mail to.

qmail-qmqpd accepts from any peer without relay checks (qmail-qmqpd(8)), so listen only on the cluster's
private network.  Prints ``qldap qmqpd: listening on HOST:PORT`` per listener once its signal handlers
exist; SIGTERM/SIGINT stop it (exit 0); SIGHUP is accepted and changes nothing (the controls it uses,
``me`` and ``databytes``, are read at start).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from qldap.cli._run import start_metrics
from qldap.control.files import find_root
from qldap.control.limits import DEFAULT_DEADLINE, ClientCounter, SessionLimits
from qldap.control.services import parse_listen
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.remote.qmqpd import DEFAULT_MAX_SESSIONS, serve_qmqpd

PROG = "qldap qmqpd"
DEFAULT_LISTEN = "0.0.0.0:628"


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def _serve(root: Path, listens: Sequence[tuple[str, int]], limits: SessionLimits) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    running = []
    clients = ClientCounter(limits)  # shared by every listener: the limits are per daemon
    try:
        start_metrics(PROG, "qmqpd", os.environ)
        for host, port in listens:
            server, injector = await serve_qmqpd(root, host, port, clients=clients)
            running.append((server, injector))
            bound = server.sockets[0].getsockname()
            _log(f"qldap qmqpd: listening on {bound[0]}:{bound[1]}")
    except ConfigError as exc:
        _log(f"{PROG}: fatal: unable to read controls: {exc}")
        return ExitCode.TEMPORARY
    except OSError as exc:
        _log(f"{PROG}: fatal: unable to listen: {exc.strerror or exc}")
        return ExitCode.TEMPORARY
    try:
        await stop.wait()
    finally:
        for server, injector in running:
            server.close()
            await server.wait_closed()
            injector.close()
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qldap qmqpd``."""
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--root", help="qmail root (default $QLDAP_ROOT or /var/qmail)")
    parser.add_argument("--listen", action="append", default=[], help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, help="concurrent sessions")
    parser.add_argument("--max-per-ip", type=int, default=0,
                        help="concurrent sessions from one client address (0: no limit)")
    parser.add_argument("--session-deadline", type=float, default=DEFAULT_DEADLINE,
                        help="seconds a whole session may last (0: none)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    limits = SessionLimits(max(1, args.max_sessions), max(0, args.max_per_ip),
                           max(0.0, args.session_deadline))
    try:
        listens = [parse_listen(text) for text in (args.listen or [DEFAULT_LISTEN])]
    except ValueError as exc:
        _log(f"{PROG}: fatal: {exc}")
        return ExitCode.USAGE
    return asyncio.run(_serve(find_root(args.root), [(lst.host, lst.port) for lst in listens], limits))


if __name__ == "__main__":
    sys.exit(main())

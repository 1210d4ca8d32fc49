"""``qldap pbsdbd --root DIR`` and the console script ``pbsdbd``: the POP-before-SMTP cache daemon.

Reads ``pbsip pbsport pbssecret pbscachesize pbstimeout`` once, binds the UDP socket, prints
``qldap pbsdbd: listening on IP:PORT`` on stderr and serves until SIGTERM/SIGINT (exit 0).  SIGHUP
re-reads the secret (the cache and its size stay).  Fatal errors are ``pbsdbd: fatal: …``, exit 111.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from qldap.cli._run import start_metrics
from qldap.control.files import ControlDir, find_root
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.pbs.config import PbsRole, load_config
from qldap.pbs.daemon import open_endpoint

PROG = "pbsdbd"


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _fatal(text: str) -> int:
    _log(f"{PROG}: fatal: {text}")
    return ExitCode.TEMPORARY


async def _serve(ctl: ControlDir) -> int:
    try:
        start_metrics(PROG, "pbsdbd", os.environ)
        cfg = load_config(ctl, PbsRole.DAEMON)
    except ConfigError as exc:
        return _fatal(f"unable to read controls: {exc}")
    try:
        transport, protocol = await open_endpoint(cfg, _log)
    except OSError as exc:
        return _fatal(f"unable to bind UDP socket: {exc.strerror or exc}")
    host, port = transport.get_extra_info("sockname")[:2]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def reload() -> None:
        try:
            protocol.secret = load_config(ctl, PbsRole.DAEMON).secret
        except ConfigError as exc:
            _log(f"{PROG}: warning: reload failed, keeping the old settings: {exc}")

    loop.add_signal_handler(signal.SIGHUP, reload)
    _log(f"qldap pbsdbd: listening on {host}:{port}")  # after the handlers: a supervisor may signal at once
    try:
        await stop.wait()
    finally:
        transport.close()
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """``qldap pbsdbd [--root DIR]`` / ``pbsdbd``."""
    parser = argparse.ArgumentParser(prog="qldap pbsdbd")
    parser.add_argument("--root", help="qmail root (default $QLDAP_ROOT or /var/qmail)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return asyncio.run(_serve(ControlDir(find_root(args.root))))
    except KeyboardInterrupt:
        return ExitCode.OK

"""`qldap`: the umbrella command (init, demo, and later the daemons and `up`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qldap.cli._run import run
from qldap.exitcodes import ExitCode

PROG = "qldap"


def _cmd_init(args: argparse.Namespace) -> int:
    from qldap.setup.init import InitOptions, closed_parent, init_root

    opts = InitOptions(
        root=Path(args.dir),
        me=args.me or _default_me(),
        ldap_uris=tuple(args.ldap or ()),
        basedn=args.basedn or "",
        demo=args.demo,
    )
    init_root(opts)
    print(f"qldap: created root {opts.root} (me = {opts.me})")
    closed = closed_parent(opts.root)
    if closed is not None:
        print(f"qldap: warning: {closed} is not searchable by other users; deliveries run as the "
              "mailbox owners and will be deferred until it is (chmod o+x)", file=sys.stderr)
    if args.demo:
        print(f"qldap: demo directory in {opts.root / 'directory.ldif'}")
    return ExitCode.OK


def _default_me() -> str:
    import socket

    return socket.getfqdn() or "localhost"


def _cmd_demo(args: argparse.Namespace) -> int:
    from qldap.setup.demo import run_demo

    return run_demo(keep=args.keep, out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `qldap` and its subcommands."""
    p = argparse.ArgumentParser(prog=PROG, description="qmail-ldap style mail server")
    sub = p.add_subparsers(dest="command", required=True)

    pi = sub.add_parser("init", help="create a qmail root with sane control files")
    pi.add_argument("dir")
    pi.add_argument("--me", help="this host's name (control/me); default: the FQDN")
    pi.add_argument("--ldap", action="append", metavar="URI", help="LDAP server, ldap://host[:port]")
    pi.add_argument("--basedn", help="search base (control/ldapbasedn)")
    pi.add_argument("--demo", action="store_true", help="add a sample directory.ldif")
    pi.set_defaults(func=_cmd_init)

    sub.add_parser("up", help="run every daemon of ROOT/services.yaml under one supervisor (qldap up DIR)")
    sub.add_parser("stats", help="summarise the queue manager's log (qmailanalog style)")
    sub.add_parser("dkim", help="DKIM keys: keygen DOMAIN SELECTOR, records (qldap dkim --help)")
    for name in DAEMONS:
        sub.add_parser(name, help=f"run the {name} daemon alone (qldap {name} --help)")

    pd = sub.add_parser("demo", help="zero-setup demonstration on the embedded directory")
    pd.add_argument("--keep", action="store_true", help="keep the temporary root and print its path")
    pd.set_defaults(func=_cmd_demo)
    return p


#: Daemon subcommands: `qldap NAME ARGS…` runs ``qldap.cli.NAME.main(ARGS)`` (each module owns its options).
DAEMONS = ("smtpd", "send", "pop3d", "pbsdbd", "qmqpd")
#: Other subcommands implemented in their own modules: name → (module, function).
DELEGATED = {
    "up": ("qldap.supervise", "up_main"),
    "stats": ("qldap.cli.stats", "stats_main"),
    "dkim": ("qldap.cli.dkim", "dkim_main"),
}


def die_with_supervisor() -> None:
    """Under `qldap up` (QLDAP_SUPERVISOR_PID set): get SIGTERM when the supervisor dies (Linux).

    Without it a kill -9 of the supervisor leaves the daemons running in their own sessions, holding
    ports, sendmutex and the queue, so a new `qldap up` could not take over.
    """
    import os
    import signal

    parent = os.environ.get("QLDAP_SUPERVISOR_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != parent:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `qldap`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in DAEMONS:
        die_with_supervisor()
    if args and (args[0] in DAEMONS or args[0] in DELEGATED):
        import importlib

        modname, func = DELEGATED.get(args[0], (f"qldap.cli.{args[0]}", "main"))
        rc: int = getattr(importlib.import_module(modname), func)(args[1:])
        return rc

    def body(a: Sequence[str]) -> int:
        args = build_parser().parse_args(list(a))
        rc: int = args.func(args)
        return rc

    return run(PROG, body, args)


if __name__ == "__main__":
    sys.exit(main())


"""`qmail-newu [--root DIR]`: compile ``users/assign`` into ``users/cdb`` atomically (qmail-newu).

Exit 0 on success; 111 with ``qmail-newu: fatal: …`` when ``assign`` is unreadable, malformed or
truncated (no final ``.``), or the cdb cannot be written — the old ``users/cdb`` then stays in place.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from qldap.cli._run import fatal, run
from qldap.control.cdb import write_cdb
from qldap.control.files import find_root
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.local.users import compile_assign

PROG = "qmail-newu"


def _body(args: Sequence[str]) -> int:
    if (args and args[0] != "--root") or len(args) not in (0, 2):
        fatal(PROG, "usage: qmail-newu [--root DIR]")
        return ExitCode.TEMPORARY
    users = find_root(args[1] if args else None) / "users"
    try:
        text = (users / "assign").read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        fatal(PROG, f"unable to read users/assign: {exc.strerror}")
        return ExitCode.TEMPORARY
    try:
        items = list(compile_assign(text))
    except ConfigError as exc:
        fatal(PROG, str(exc))
        return ExitCode.TEMPORARY
    write_cdb(users / "cdb", items, tmp=users / "cdb.tmp")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qmail-newu``."""
    return run(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())

"""``qmail-tcpto`` and ``qmail-tcpok``: show and clear remote delivery's remembered connect timeouts.

``qmail-tcpto`` prints ``<ip> timed out <s> seconds ago; # recent timeouts: <n>`` for every address
with at least one recent timeout (qmail-tcpto(8)); ``qmail-tcpok`` zeroes the table so that every
address is tried again at once.  Both take ``[--root DIR]`` (default ``$QLDAP_ROOT`` or
``/var/qmail``) and exit 111 when the table cannot be read or written.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from qldap.cli._run import fatal
from qldap.control.files import find_root
from qldap.exitcodes import ExitCode
from qldap.queue.layout import QueueLayout
from qldap.remote.tcpto import clear_table, read_table


def _root(prog: str, args: Sequence[str]) -> str | None:
    """``--root DIR`` / ``--root=DIR`` or nothing; None (after a usage line) for anything else."""
    arg: str | None = None
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word == "--root" and rest:
            arg = rest.pop(0)
        elif word.startswith("--root="):
            arg = word[len("--root=") :]
        else:
            sys.stderr.write(f"usage: {prog} [--root DIR]\n")
            return None
    return os.fspath(find_root(arg))


def tcpto_main(argv: Sequence[str] | None = None) -> int:
    """``qmail-tcpto``: list the remembered timeouts; 0, or 111 on trouble (100 on bad usage)."""
    root = _root("qmail-tcpto", sys.argv[1:] if argv is None else argv)
    if root is None:
        return ExitCode.PERMANENT
    path = QueueLayout(root).tcpto
    try:
        os.stat(path)  # unlike delivery, which treats a missing table as empty, the tool reports it
        table = read_table(path)
    except OSError as exc:
        fatal("qmail-tcpto", f"unable to read {path}: {exc.strerror or exc}")
        return ExitCode.TEMPORARY
    lines = table.report(int(time.time()))
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return ExitCode.OK


def tcpok_main(argv: Sequence[str] | None = None) -> int:
    """``qmail-tcpok``: forget every remembered timeout; 0, or 111 on trouble (100 on bad usage)."""
    root = _root("qmail-tcpok", sys.argv[1:] if argv is None else argv)
    if root is None:
        return ExitCode.PERMANENT
    path = QueueLayout(root).tcpto
    try:
        clear_table(path)
    except OSError as exc:
        fatal("qmail-tcpok", f"unable to clear {path}: {exc.strerror or exc}")
        return ExitCode.TEMPORARY
    return ExitCode.OK

"""``qmail-cdb file.cdb file.tmp``: compile a domain list on stdin into a cdb (qmail-cdb(8)).

Each stdin line is ASCII-lowercased and stripped of trailing spaces, tabs and LF (a CR stays, as in
the C tool); empty lines and lines starting with ``#`` are skipped; every other line becomes a key
with empty data.  The database is written to ``file.tmp`` (mode 0644), fsynced and renamed onto
``file.cdb``, so readers such as the SMTP server never see a partial file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from qldap.cli._run import fatal, run
from qldap.control.cdb import CdbError, write_cdb
from qldap.exitcodes import ExitCode

PROG = "qmail-cdb"
USAGE = "usage: qmail-cdb file.cdb file.tmp"


class _StdinError(Exception):
    """Reading stdin failed; carries the OS error text."""


def key_of(line: bytes) -> bytes | None:
    """The cdb key for one input line, or None when the line is skipped (empty or ``#``)."""
    key = line.lower().rstrip(b" \t\n")
    if not key or key.startswith(b"#"):
        return None
    return key


def _items(stream: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    while True:
        try:
            line = stream.readline()
        except OSError as exc:
            raise _StdinError(exc.strerror or str(exc)) from exc
        if not line:
            return
        key = key_of(line)
        if key is not None:
            yield key, b""


def _body(args: Sequence[str]) -> int:
    if len(args) != 2:
        sys.stderr.write(f"{PROG}: {USAGE}\n")
        return ExitCode.TEMPORARY
    target, tmp = args
    try:
        write_cdb(target, _items(sys.stdin.buffer), tmp=tmp, mode=0o644)
    except _StdinError as exc:
        fatal(PROG, f"unable to read from stdin: {exc}")
        return ExitCode.TEMPORARY
    except CdbError as exc:
        fatal(PROG, str(exc))
        return ExitCode.TEMPORARY
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    """Console script entry point; returns 0 or 111."""
    return run(PROG, _body, argv)

"""`qmail-verify`: the address verifier co-process (qmail-verify(8)).

Reads NUL-terminated addresses on stdin and answers each on stdout: ``K`` (exists, also noaccess),
``D<text>\\0`` (no such address, disabled, no host part) or ``Z<text>\\0`` (temporary: an LDAP error
or duplicate entries).  A directory that cannot be reached at all (connect, bind or search timeout)
ends the process with exit 111 and no answer, as the original does, so the caller restarts it; bad
control files exit 100; end of input exits 0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qldap.address import Address
from qldap.cli._run import fatal
from qldap.control.cdb import CdbReader
from qldap.control.files import ControlDir, find_root
from qldap.directory.base import Unavailable
from qldap.directory.errors import BadCredentials, SearchTimeout, ServerUnreachable
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.smtpd.policy import Invalid, Valid
from qldap.smtpd.verify import NO_MAILBOX, answer_for, system_account_knows, users_cdb_knows

PROG = "qmail-verify"
NO_HOST = "Sorry, address must include host name. (#5.1.3)"


class _Fatal(Exception):
    """The directory cannot be reached: exit 111 without an answer."""


def _root(argv: Sequence[str]) -> Path:
    if len(argv) >= 2 and argv[0] == "--root":
        return Path(argv[1])
    if os.environ.get("QLDAP_ROOT"):
        return find_root(None)
    cwd = Path.cwd()
    return cwd if (cwd / "control").is_dir() else find_root(None)


def answer(directory: Directory, root: Path, address: str) -> bytes:
    """The reply for one address.

    Raises:
        _Fatal: the directory could not be contacted, bound to, or searched in time.
    """
    parsed = Address.parse(address)
    if not parsed.has_at:
        return b"D" + NO_HOST.encode() + b"\0"
    result = directory.find_recipient(address)
    if isinstance(result, Unavailable) and isinstance(
        result.error, ServerUnreachable | BadCredentials | SearchTimeout
    ):
        raise _Fatal(result.error.text)
    verdict = answer_for(result)
    if verdict is None:
        local = parsed.local
        known = directory.config.local_delivery and (
            users_cdb_knows(CdbReader(root / "users" / "cdb"), local) or system_account_knows(local)
        )
        verdict = Valid() if known else Invalid(NO_MAILBOX)
    if isinstance(verdict, Valid):
        return b"K"
    if isinstance(verdict, Invalid):
        return b"D" + verdict.text.encode("utf-8", "surrogateescape") + b"\0"
    return b"Z" + verdict.text.encode("utf-8", "surrogateescape") + b"\0"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``qmail-verify [--root DIR]`` (default: the current directory)."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = _root(args)
    try:
        ControlDir(root).me()
        directory = open_directory(ControlDir(root))
    except ConfigError as exc:
        fatal(PROG, f"unable to read controls: {exc}")
        return ExitCode.PERMANENT
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    buf = b""
    try:
        while True:
            chunk = stdin.read1(4096) if hasattr(stdin, "read1") else stdin.read(4096)
            if not chunk:
                return ExitCode.OK
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    reply = answer(directory, root, raw.decode("utf-8", "surrogateescape"))
                except ConfigError:
                    reply = b"ZTrouble reading users/cdb in qmail-verify.\0"
                    stdout.write(reply)
                    stdout.flush()
                    return ExitCode.TEMPORARY
                stdout.write(reply)
                stdout.flush()
    except _Fatal:
        return ExitCode.TEMPORARY
    finally:
        directory.close()

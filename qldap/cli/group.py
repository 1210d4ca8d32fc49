"""``qmail-group`` and ``qmail-secretary``: the mail-group programs as run from a delivery instruction.

Both take the qmail-local environment (``SENDER``, ``LOCAL``, ``HOST``, ``EXT``; qmail-group also
``QLDAPGROUP``) and the message on stdin, and answer with qmail's exit codes: 0 done, 99 done and
stop the instruction list, 100 permanent, 111 temporary.  Messages they send go through
``QMAILQUEUE`` when set, else straight into the queue under the qmail root.
"""

from __future__ import annotations

import getopt
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from qldap.cli._run import run
from qldap.control.files import find_root
from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.exitcodes import ExitCode
from qldap.group.deliver import USAGE as GROUP_USAGE
from qldap.group.deliver import deliver_group
from qldap.group.policy import sender_from_return_path
from qldap.group.secretary import (
    DEFAULT_APPROVE,
    DEFAULT_CONFIRM,
    Held,
    Inject,
    Released,
    Secretary,
    SecretaryConfig,
)
from qldap.queue.codes import QueueError, failure_for
from qldap.queue.envelope import Envelope
from qldap.queue.external import queue_program, run_queue_program
from qldap.queue.inject import how_invoked, inject
from qldap.queue.layout import resolve_ids
from qldap.queue.message import MessageFile

GROUP = "qmail-group"
SECRETARY = "qmail-secretary"
STOP = 99  # done; qmail-local skips the remaining instructions
SECRETARY_USAGE = (
    "qmail-secretary: usage:\n"
    "    qmail-secretary [ -Z ] [ -c | -C ] [[ -m addr ] ... ] [ -M file ] maildir\n"
    "    qmail-secretary -z ezmlmdir [ -c | -C ] [[ -m addr ] ... ] [ -M file ] maildir [ ezmlm-send ... ]\n"
)
_EZMLM_PERMANENT = frozenset({100, 64, 65, 70, 76, 77, 78, 112})


def queue_injector(root: Path, environ: Mapping[str, str]) -> Inject:
    """The injection seam for these programs: ``QMAILQUEUE`` if set, else the queue under *root*."""
    program = queue_program(environ)

    def send(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        envelope = Envelope(sender, rcpts)
        if program is not None:
            result = run_queue_program(program, data, envelope)
            if not result.accepted:
                raise failure_for(result.text)
            return result.pid
        ids = resolve_ids()
        uid = os.getuid()
        try:
            how = how_invoked(uid, ids)
            queued = inject(root, data, envelope, how=how, uid=uid, pid=os.getpid(), ids=ids)
        except QueueError as exc:
            raise exc.failure() from None
        return queued.qp

    return send


@contextmanager
def stdin_message() -> Iterator[MessageFile]:
    """The message on stdin; a pipe is first copied to a temporary file (the programs re-read it)."""
    try:
        os.lseek(0, 0, os.SEEK_SET)
    except OSError:
        with tempfile.TemporaryFile() as spool:
            while chunk := os.read(0, 1 << 16):
                spool.write(chunk)
            spool.flush()
            yield MessageFile(spool.fileno())
        return
    yield MessageFile(0)


def _need(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if value is None:
        raise PermanentFailure(f"{name} not set")
    return value


def _group(args: Sequence[str]) -> int:
    if len(args) != 1:
        sys.stderr.write(GROUP_USAGE + "\n")
        return ExitCode.PERMANENT
    env = os.environ
    sender, local, host = _need(env, "SENDER"), _need(env, "LOCAL"), _need(env, "HOST")
    dn = _need(env, "QLDAPGROUP")
    ext = env.get("EXT", "")
    root = find_root(None)
    with stdin_message() as mf:
        text = deliver_group(root, dn, local, host, "-" if ext else "", ext, sender, mf,
                             queue_injector(root, env), maildir=Path(args[0]))  # fmt: skip
    if text:
        sys.stderr.write(text + "\n")
    return ExitCode.OK


def group_main(argv: Sequence[str] | None = None) -> int:
    """``qmail-group Maildir``: console entry point."""
    return run(GROUP, _group, argv)


# -- qmail-secretary ----------------------------------------------------------------------------------


def _line_file(name: str, where: str) -> str:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            return f.readline().rstrip("\n").rstrip(" \t\r")
    except FileNotFoundError:
        raise PermanentFailure(f"{where}/{name} does not exist") from None
    except OSError as exc:
        raise TemporaryFailure(f"unable to read {where}/{name}: {exc.strerror}") from None


def _text_file(name: str, default: str) -> str:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise TemporaryFailure(f"unable to read {name}: {exc.strerror}") from None


def _list_file(name: str) -> list[str]:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        raise PermanentFailure(f"{name} does not exist") from None
    except OSError as exc:
        raise TemporaryFailure(f"unable to read {name}: {exc.strerror}") from None
    return [line for line in lines if line and not line.startswith("#")]


def _release_ezmlm(path: Path, program: Sequence[str]) -> int:
    """Run the ezmlm program on a released post (stdin = the file, SENDER from its Return-Path)."""
    env = dict(os.environ)
    with open(path, "rb") as f:
        sender = sender_from_return_path(f.read(1 << 16))
        if sender is not None:
            env["SENDER"] = sender
        f.seek(0)
        try:
            code = subprocess.run(list(program), stdin=f, env=env, check=False).returncode
        except OSError as exc:
            raise TemporaryFailure(f"Unable to exec: {exc.strerror}") from None
    if code < 0:
        raise TemporaryFailure("Aack, child crashed.")
    if code in (0, STOP):
        try:
            os.unlink(path)
        except OSError as exc:
            sys.stderr.write(f"qmail-secretary: warn: Could not unlink message: {exc.strerror}\n")
        return STOP
    return ExitCode.PERMANENT if code in _EZMLM_PERMANENT else ExitCode.TEMPORARY


def _secretary(args: Sequence[str]) -> int:
    try:
        opts, rest = getopt.getopt(list(args), "cCm:M:z:Z")
    except getopt.GetoptError:
        sys.stderr.write(SECRETARY_USAGE)
        return ExitCode.PERMANENT
    env = os.environ
    sender, local, host = _need(env, "SENDER"), _need(env, "LOCAL"), _need(env, "HOST")
    confirm, moderators, modfile, ezmlm_dir = False, [], None, None
    for opt, value in opts:
        if opt in ("-c", "-C"):
            confirm = opt == "-c"
        elif opt == "-m":
            moderators.append(value)
        elif opt == "-M":
            modfile = value
        elif opt == "-z":
            ezmlm_dir = value
        else:
            ezmlm_dir = None
    if not rest or (ezmlm_dir is None) != (len(rest) == 1):
        sys.stderr.write(SECRETARY_USAGE)
        return ExitCode.PERMANENT
    maildir, program = Path(rest[0]), rest[1:]
    if ezmlm_dir is not None:
        try:
            os.chdir(ezmlm_dir)
        except OSError as exc:
            raise TemporaryFailure(f"unable to switch to {ezmlm_dir}: {exc.strerror}") from None
        if modfile is not None:
            moderators += _list_file(modfile)
        d = ezmlm_dir
        cfg = SecretaryConfig(
            maildir=maildir, in_local=_line_file("inlocal", d), in_host=_line_file("inhost", d),
            out_local=_line_file("outlocal", d), out_host=_line_file("outhost", d),
            mailing_list=_line_file("mailinglist", d), confirm=confirm, moderators=tuple(moderators),
            confirm_text=_text_file("text/confirm", DEFAULT_CONFIRM),
            approve_text=_text_file("text/approve", DEFAULT_APPROVE), ezmlm=True,
        )  # fmt: skip
    else:
        if modfile is not None:
            moderators += _list_file(modfile)
        ext = env.get("EXT", "")
        base = local[: len(local) - len(ext) - 1] if ext else local
        cfg = SecretaryConfig.for_group(
            maildir, base, host, confirm=confirm, moderators=tuple(moderators),
            confirm_text=env.get("CONFIRMMESS"), approve_text=env.get("APPROVEMESS"),
        )  # fmt: skip
    with stdin_message() as mf:
        outcome = Secretary(cfg, queue_injector(find_root(None), env)).handle(local, host, sender, mf)
    if isinstance(outcome, Released):
        if ezmlm_dir is not None:
            return _release_ezmlm(outcome.path, program)
        sys.stdout.buffer.write(b"K" + os.fsencode(outcome.path) + b"\0")
        sys.stdout.buffer.flush()
        return STOP
    if outcome.text:
        sys.stderr.write(outcome.text + "\n")
    return STOP if isinstance(outcome, Held) else ExitCode.OK


def secretary_main(argv: Sequence[str] | None = None) -> int:
    """``qmail-secretary [-Z] [-c|-C] [-m addr]... [-M file] maildir``: console entry point."""
    return run(SECRETARY, _secretary, argv)


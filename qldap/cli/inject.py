"""``qmail-inject`` and ``sendmail``/``mailq``/``newaliases``: queue a locally written message
(qmail-inject(1)).

qmail-inject reads the message on stdin, completes its header (:func:`qldap.inject.headers.prepare`)
and queues it in-process with :func:`qldap.queue.inject.inject`, or hands it to the program named by
``QMAILQUEUE`` when that is set; ``-n`` prints it instead.  A refusal is reported as
``qmail-inject: fatal: <text>`` with exit 100 (permanent, ``D``) or 111 (temporary, ``Z``).

A message queued by either is DKIM-signed first when control/dkimkeys has a key for its From:
domain (qldap-dkim(8)); a signing failure sends it unsigned with a warning, or exits 111 under
control/dkimstrict.

sendmail translates its command line into a qmail-inject one (``-t`` → ``-H``, else ``-a``; ``-f`` and
``-F`` also shape the From: line) and runs it in this process, so its errors carry qmail-inject's
prefix as with the C programs.  ``-bp`` (or the name ``mailq``) runs qmail-qread's code and ``-bs`` the
SMTP daemon's stdin/stdout mode; both are looked up when asked for, so sendmail works without them.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from qldap.cli._run import fatal, run
from qldap.control.files import ControlDir, find_root
from qldap.errors import TemporaryFailure
from qldap.exitcodes import ExitCode
from qldap.inject.headers import Prepared, prepare
from qldap.inject.options import (
    CONTROL_NAMES,
    SENDMAIL_USAGE,
    Controls,
    InjectEnv,
    InjectOptions,
    SendmailAction,
    UsageError,
    controls_from,
    followup_addresses,
    inject_argv,
    inject_environ,
    parse_inject,
    parse_sendmail,
    smtpd_environ,
)
from qldap.mailauth.dkimsign import DkimSigner
from qldap.queue.codes import QueueError, QueueExit, failure_for
from qldap.queue.envelope import Envelope, check_address
from qldap.queue.external import queue_program, run_queue_program
from qldap.queue.inject import how_invoked, inject
from qldap.queue.layout import resolve_ids
from qldap.records import to_text

PROG = "qmail-inject"
SENDMAIL = "sendmail"
QREAD_MODULE = "qldap.cli.qread"
SMTPD_MODULE = "qldap.cli.smtpd"
NEWALIASES_TEXT = "there is no aliases database: aliases are ~alias/.qmail-* files and directory entries"


def read_followup(path: str | None) -> frozenset[str] | None:
    """The ``QMAILMFTFILE`` addresses; None when the variable is unset or empty or the file is absent.

    Raises:
        TemporaryFailure: the file exists but cannot be read.
    """
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TemporaryFailure(f"unable to read {path}: {exc.strerror}") from exc
    return followup_addresses(to_text(data))


def load_controls(root: Path, environ: Mapping[str, str]) -> Controls:
    """``defaultdomain``, ``defaulthost``, ``plusdomain``, ``idhost`` of *root* with their overrides.

    Raises:
        ConfigError: a control file exists but cannot be read.
    """
    control = ControlDir(root)
    return controls_from({name: control.line(name) for name in CONTROL_NAMES}, environ)


def _read_stdin() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except OSError as exc:
        raise TemporaryFailure(f"read error: {exc.strerror}") from exc


def queue_message(root: Path, prepared: Prepared, environ: Mapping[str, str]) -> None:
    """Queue *prepared* under *root*, through ``QMAILQUEUE``'s program when that is set.

    Raises:
        PermanentFailure, TemporaryFailure: the queue's refusal with its caller text (qmail-queue(8), EXIT
        STATUS).
    """
    envelope = Envelope(prepared.sender, prepared.recipients)
    try:
        for address in (envelope.sender, *envelope.recipients):
            check_address(address)
        program = queue_program(environ)
        if program is not None:
            result = run_queue_program(program, prepared.message, envelope, env=environ, cwd=root)
            if not result.accepted:
                raise failure_for(result.text)
            return
        if not root.is_dir():
            raise QueueError(QueueExit.HOME_DIR, f"{root} is not a directory")
        ids = resolve_ids()
        uid = os.getuid()
        inject(root, prepared.message, envelope, how=how_invoked(uid, ids), uid=uid, pid=os.getpid(), ids=ids)
    except QueueError as exc:
        raise exc.failure() from exc


def dkim_sign(root: Path, prepared: Prepared) -> Prepared:
    """*prepared* with its DKIM-Signature lines in front, when control/dkimkeys signs its domain.

    Raises:
        TemporaryFailure: signing failed and control/dkimstrict asks to defer (exit 111).
    """
    result = DkimSigner(ControlDir(root)).sign(prepared.message, prepared.sender)
    if result.error is not None:
        if result.defer:
            raise TemporaryFailure(f"unable to sign the message: {result.error}")
        sys.stderr.write(f"{PROG}: warning: dkim: {result.error}; sent unsigned\n")
    return replace(prepared, message=result.header + prepared.message) if result.signed else prepared


def submit(opts: InjectOptions, environ: Mapping[str, str]) -> int:
    """Read stdin, complete it and queue it (or print it with ``-n``); the exit code.

    Raises:
        PermanentFailure, TemporaryFailure, ConfigError: reported by :func:`qldap.cli._run.run`.
    """
    root = find_root(environ.get("QLDAP_ROOT") or None)
    env = InjectEnv.from_environ(environ, read_followup(environ.get("QMAILMFTFILE")))
    controls = load_controls(root, environ)
    message = _read_stdin()
    prepared = prepare(message, opts, env, controls, time.time(), os.getpid())
    if not opts.queue:
        out = sys.stdout.buffer
        out.write(prepared.message)
        out.flush()
        return ExitCode.OK
    queue_message(root, dkim_sign(root, prepared), environ)
    return ExitCode.OK


def _inject(args: Sequence[str], environ: Mapping[str, str]) -> int:
    try:
        opts = parse_inject(args)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return ExitCode.PERMANENT
    return run(PROG, lambda _args: submit(opts, environ), args)


def inject_main(argv: Sequence[str] | None = None) -> int:
    """``qmail-inject [-nNaAhH] [-fsender] [recip…]``: exit 0, 100 or 111."""
    args = list(sys.argv[1:] if argv is None else argv)
    return _inject(args, os.environ)


def _optional(name: str) -> ModuleType | None:
    """Import module *name* if this installation has it (other parts are optional for sendmail)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _entry(module: str, function: str) -> Callable[[Sequence[str]], int] | None:
    found = _optional(module)
    if found is None:
        return None
    entry: Callable[[Sequence[str]], int] | None = getattr(found, function, None)
    return entry


def _mailq() -> int:
    qread = _entry(QREAD_MODULE, "main")
    if qread is None:
        fatal(SENDMAIL, "unable to run qmail-qread: it is not part of this installation")
        return ExitCode.TEMPORARY
    return qread([])


def _smtpd() -> int:
    serve = _entry(SMTPD_MODULE, "stdio_main")
    if serve is None:
        fatal(SENDMAIL, "unable to run qmail-smtpd: this installation has no stdin/stdout SMTP mode")
        return ExitCode.TEMPORARY
    os.environ.update(smtpd_environ(os.environ))
    return serve([])


def sendmail_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``sendmail`` (and ``mailq``/``newaliases``, told apart by *prog*, default ``argv[0]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    name = prog if prog is not None else os.path.basename(sys.argv[0])
    try:
        opts = parse_sendmail(name, args)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n{SENDMAIL}: usage: {SENDMAIL_USAGE}\n")
        return ExitCode.PERMANENT
    if opts.action is SendmailAction.MAILQ:
        return _mailq()
    if opts.action is SendmailAction.SMTPD:
        return _smtpd()
    if opts.action is SendmailAction.NEWALIASES:
        fatal(SENDMAIL, NEWALIASES_TEXT)
        return ExitCode.PERMANENT
    return _inject(inject_argv(opts), inject_environ(opts, os.environ))


def mailq_main(argv: Sequence[str] | None = None) -> int:
    """``mailq``: sendmail called by that name."""
    return sendmail_main(argv, "mailq")


def newaliases_main(argv: Sequence[str] | None = None) -> int:
    """``newaliases``: sendmail called by that name (always exit 100)."""
    return sendmail_main(argv, "newaliases")


if __name__ == "__main__":
    sys.exit(inject_main())

"""Console entry points of the login modules: auth_pop, auth_imap, auth_smtp and auth_checkpassword.

* ``auth_pop [-d pbstool] subprogram [args...]`` — qmail-popup's checkpassword (auth_pop(8)).
* ``auth_imap [-d pbstool] next [args...]`` — courier-imap's authentication chain (auth_imap(8)).
* ``auth_smtp`` — the SMTP AUTH checker: record on stdin, ``K``/``D``/``Z`` on stdout (auth_smtp(8)).
* ``auth_checkpassword [-d pbstool] reply-program`` — Dovecot's checkpassword passdb (docs/imap-dovecot.md).

Why a separate Dovecot wrapper: Dovecot's checkpassword record is ``LOGIN\\0PASSWORD\\0`` (the
auth_pop shape, not courier's), it wants exit 1 for a failed login (not 3), and since 2.2.7 it
refuses a checkpassword that setuid()s into the user; the wrapper therefore checks the login with
the same code, stays root, and hands uid, gid, HOME and the Maildir to Dovecot as ``userdb_*``
fields through its ``checkpassword-reply`` program.

The root comes from ``$QLDAP_ROOT`` (default ``/var/qmail``): the modules take no options of their
own because every argument after ``-d`` belongs to the chain.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping, Sequence

from qldap.auth.check import Credentials, Forward, Refused, cleartext_enabled, smtp_verdict
from qldap.auth.fd3 import (
    IMAP_LIMIT,
    POP_LIMIT,
    AuthExit,
    Fd3Rejected,
    SmtpAuthRejected,
    SmtpAuthVerdict,
    format_smtp_answer,
    parse_imap,
    parse_pop,
    parse_smtp,
)
from qldap.auth.modules import (
    FD3,
    MailboxSettings,
    ModuleArgs,
    Service,
    authenticate,
    exec_subprogram,
    parse_args,
    run_pbs_tool,
    start_forward,
    start_local,
)
from qldap.cli._run import run
from qldap.control.files import ControlDir, find_root
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.local.spawn import default_maildir
from qldap.logs import printable


def _logger(prog: str) -> Callable[[str], None]:
    def log(text: str) -> None:
        sys.stderr.write(f"{prog}: {text}\n")
        sys.stderr.flush()

    return log


def read_fd3(limit: int) -> bytes | None:
    """Read descriptor 3 to EOF (at most *limit* + 1 bytes are kept) and close it; None if unreadable."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            data = os.read(FD3, 4096)
            if not data:
                break
            if size <= limit:
                chunks.append(data)
            size += len(data)
    except OSError:
        return None
    finally:
        try:
            os.close(FD3)
        except OSError:
            pass
    return b"".join(chunks)[: limit + 1]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# -- auth_pop ---------------------------------------------------------------------------------------


def _auth_pop(argv: Sequence[str]) -> int:
    log = _logger("auth_pop")
    args = parse_args(argv)
    if args is None:
        log("usage: auth_pop [-d pbstool] subprogram [args...]")
        return AuthExit.CONFIG
    data = read_fd3(POP_LIMIT)
    if data is None:
        return AuthExit.TEMPORARY
    record = parse_pop(data)
    if isinstance(record, Fd3Rejected):
        return record.exit
    login, password = _text(record.login), _text(record.password)
    ctl = ControlDir(find_root())
    result = authenticate(ctl, login, password, _text(record.timestamp))
    return _serve(result, Service.POP, password, args, ctl, os.environ, log)


def _serve(
    result: Credentials | Forward | Refused,
    service: Service,
    password: str,
    args: ModuleArgs,
    ctl: ControlDir,
    environ: MutableMapping[str, str],
    log: Callable[[str], None],
) -> int:
    if isinstance(result, Refused):
        log(f"login refused ({int(result.exit)}): {printable(result.reason)}")
        return result.exit
    if isinstance(result, Forward):
        return start_forward(result, service, password, args, environ, log)
    try:
        settings = MailboxSettings.from_control(ctl)
    except ConfigError as exc:
        log(str(exc))
        return AuthExit.CONFIG
    return start_local(settings, result, args, environ, log)


def auth_pop_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``auth_pop``."""
    return run("auth_pop", _auth_pop, argv)


# -- auth_imap --------------------------------------------------------------------------------------


def _reap() -> None:
    """courier's login program may leave children behind; collect them before the check."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _courier_failure(environ: MutableMapping[str, str]) -> int:
    """Re-exec the courier login program named by ``AUTHARGC``/``AUTHARGV0…``; missing → 111."""
    try:
        count = int(environ.get("AUTHARGC", ""))
        argv = [environ[f"AUTHARGV{i}"] for i in range(count)]
    except (ValueError, KeyError):
        return AuthExit.TEMPORARY
    if not argv:
        return AuthExit.TEMPORARY
    exec_subprogram(argv, environ)
    return AuthExit.TEMPORARY


def _pass_on(data: bytes, args: ModuleArgs, environ: MutableMapping[str, str]) -> int:
    """Give the record to the next module: unset AUTHENTICATED, a fresh pipe on fd 3, exec."""
    environ.pop("AUTHENTICATED", None)
    rfd, wfd = os.pipe()
    os.write(wfd, data)
    os.close(wfd)
    if rfd != FD3:
        os.dup2(rfd, FD3)
        os.close(rfd)
    os.set_inheritable(FD3, True)
    sys.stdout.flush()
    try:
        os.execvpe(args.argv[0], list(args.argv), dict(environ))
    except OSError:
        return AuthExit.EXEC_FAILED


def _auth_imap(argv: Sequence[str]) -> int:
    log = _logger("auth_imap")
    environ = os.environ
    args = parse_args(argv)
    if args is None:
        log("usage: auth_imap [-d pbstool] subprogram [args...]")
        return AuthExit.CONFIG
    if environ.get("AUTHENTICATED"):
        return exec_subprogram(args.argv, environ)
    _reap()
    data = read_fd3(IMAP_LIMIT)
    if data is None:
        return _courier_failure(environ)
    record = parse_imap(data)
    if isinstance(record, Fd3Rejected):
        log("bad authentication record on descriptor 3")
        return _courier_failure(environ)
    if record.authtype != b"login":
        return _pass_on(data, args, environ)
    login, password = _text(record.login), _text(record.password)
    ctl = ControlDir(find_root())
    result = authenticate(ctl, login, password)
    if isinstance(result, Refused):
        if result.unknown_user:
            return _pass_on(data, args, environ)
        log(f"login refused ({int(result.exit)}): {printable(result.reason)}")
        return _courier_failure(environ)
    return _serve(result, Service.IMAP, password, args, ctl, environ, log)


def auth_imap_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``auth_imap``."""
    return run("auth_imap", _auth_imap, argv)


# -- auth_smtp --------------------------------------------------------------------------------------


def _auth_smtp(argv: Sequence[str]) -> int:
    if argv:
        return ExitCode.TEMPORARY
    data = sys.stdin.buffer.read(4096)
    parsed = parse_smtp(data)
    if isinstance(parsed, SmtpAuthRejected):
        verdict = parsed.verdict
        login = b""
    else:
        login = parsed.login
        try:
            ctl = ControlDir(find_root())
            directory = open_directory(ctl)
            cleartext = cleartext_enabled(ctl)
        except ConfigError as exc:
            _logger("auth_smtp")(str(exc))
            return ExitCode.TEMPORARY
        try:
            verdict = smtp_verdict(
                directory, _text(parsed.login), _text(parsed.password), cleartext=cleartext
            )
        finally:
            directory.close()
    out, status = format_smtp_answer(verdict, login if verdict is SmtpAuthVerdict.ACCEPT else b"")
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return status


def auth_smtp_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``auth_smtp``."""
    return run("auth_smtp", _auth_smtp, argv)


# -- Dovecot checkpassword --------------------------------------------------------------------------

DOVECOT_FAILED = 1  # checkpassword: the login is wrong
DOVECOT_BAD_INPUT = 2  # checkpassword: called incorrectly
DOVECOT_TEMPORARY = 111
DEFAULT_MAILBOX = "./Maildir/"  # Dovecot passes no aliasempty argument: control/defaultdelivery decides


def dovecot_environment(creds: Credentials, aliasempty: str) -> dict[str, str]:
    """The variables ``checkpassword-reply`` turns into Dovecot's user and ``userdb_*`` fields."""
    box = creds.maildir or aliasempty
    path = box if box.startswith("/") else os.path.join(creds.home, box)
    return {
        "USER": creds.login,
        "HOME": creds.home,
        "userdb_uid": str(creds.uid),
        "userdb_gid": str(creds.gid),
        "userdb_mail": "maildir:" + path.rstrip("/"),
        "EXTRA": "userdb_uid userdb_gid userdb_mail",
    }


def _checkpassword(argv: Sequence[str]) -> int:
    log = _logger("auth_checkpassword")
    args = parse_args(argv)
    if args is None:
        log("usage: auth_checkpassword [-d pbstool] reply-program [args...]")
        return DOVECOT_BAD_INPUT
    data = read_fd3(POP_LIMIT)
    record = None if data is None else parse_pop(data)
    if record is None or isinstance(record, Fd3Rejected):
        return DOVECOT_BAD_INPUT
    ctl = ControlDir(find_root())
    result = authenticate(ctl, _text(record.login), _text(record.password))
    if isinstance(result, Forward):
        where = f"{printable(result.login)} lives on {printable(result.mail_host)}"
        log(f"{where}: use a Dovecot proxy for cluster logins")
        return DOVECOT_TEMPORARY
    if isinstance(result, Refused):
        log(f"login refused ({int(result.exit)}): {printable(result.reason)}")
        return DOVECOT_FAILED if result.exit in (AuthExit.BAD_LOGIN, AuthExit.DISABLED) else DOVECOT_TEMPORARY
    environ = os.environ
    environ.update(dovecot_environment(result, default_maildir(ctl)))  # as delivery and pop3d
    run_pbs_tool(args.pbs_tool, environ, log)
    exec_subprogram(args.argv, environ)
    return DOVECOT_TEMPORARY


def checkpassword_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``auth_checkpassword`` (Dovecot's checkpassword passdb)."""
    return run("auth_checkpassword", _checkpassword, argv)

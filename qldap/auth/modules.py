"""The descriptor-3 login programs after the check: become the user, prepare HOME, exec the subprogram.

auth_pop and auth_imap (auth_pop(8)) share everything after :func:`qldap.auth.check`:
drop privileges to the mailbox owner, put the auth_pop(8) ENVIRONMENT variables into the environment, run the
``-d`` pbs tool (auth_pop(8)), enter HOME (creating it with ``control/dirmaker`` when missing), optionally
create the Maildir (``control/automaildirmake``, targets ending in ``/`` only), then exec the subprogram
with descriptors 0/1/2 unchanged and descriptor 3 closed.  A :class:`~qldap.auth.check.Forward`
result instead proxies the session to the user's mailHost (auth_pop(8)): log in there with the same
credentials and relay bytes both ways until the backend closes.

Why the order privilege drop → pbs tool → HOME: the dirmaker, the Maildir creation and the pbs tool
must run with the user's rights (a mailbox created by root is unusable for the user, and a pbs tool
never needs root); exactly as the original, nothing user-controlled runs as root.

Functions return an :class:`~qldap.auth.fd3.AuthExit` when they fail; the successful end of
:func:`start_local` is an exec and does not return.
"""

from __future__ import annotations

import enum
import os
import pwd
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qldap.auth.check import Credentials, Forward, LoginResult, Refused, check_login, cleartext_enabled
from qldap.auth.fd3 import AuthExit
from qldap.control.files import ControlDir
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.fsutil import write_all
from qldap.logs import printable

AUTOMAILDIR_CONTROL = "automaildirmake"
DAEMON_USERS = ("qmaild", "nofiles")
FD3 = 3
CONNECT_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0
REPLY_LIMIT = 512
IDLE_TIMEOUT = 1860.0

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ModuleArgs:
    """``[-d pbstool] subprogram [args...]``; the last argument is the default delivery (aliasempty)."""

    pbs_tool: str | None
    argv: tuple[str, ...]

    @property
    def aliasempty(self) -> str:
        """The default mailbox when the user has no MAILDIR: the last argument."""
        return self.argv[-1]


def parse_args(args: Sequence[str]) -> ModuleArgs | None:
    """Split the command line; None when no subprogram is given (exit 1)."""
    rest = list(args)
    tool = None
    if rest[:1] == ["-d"]:
        if len(rest) < 2:
            return None
        tool, rest = rest[1], rest[2:]
    elif rest[:1] and rest[0].startswith("-d") and len(rest[0]) > 2:
        tool, rest = rest[0][2:], rest[1:]
    if not rest:
        return None
    return ModuleArgs(tool, tuple(rest))


def authenticate(ctl: ControlDir, login: str, password: str, timestamp: str = "") -> LoginResult:
    """Read the controls, open the directory and run :func:`check_login`; bad controls → exit 1."""
    if not password:
        return Refused(AuthExit.BAD_LOGIN, "empty password")
    try:
        directory = open_directory(ctl)
        cleartext = cleartext_enabled(ctl)
    except ConfigError as exc:
        return Refused(AuthExit.CONFIG, str(exc))
    try:
        return check_login(directory, login, password, timestamp, cleartext=cleartext)
    finally:
        directory.close()


def apply_environment(environ: MutableMapping[str, str], creds: Credentials) -> None:
    """Set the auth_pop(8) ENVIRONMENT variables in *environ*, removing those that must be unset."""
    for name, value in creds.environment().items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


def drop_privileges(uid: int, gid: int) -> AuthExit | None:
    """auth_pop(8): as root become uid:gid (groups = {gid}); already uid → unchanged; anything else → 111."""
    if os.getuid() == 0:
        if uid == 0:
            return AuthExit.TEMPORARY
        try:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
        except OSError:
            return AuthExit.TEMPORARY
        return AuthExit.TEMPORARY if os.getuid() == 0 or os.geteuid() == 0 else None
    return None if os.getuid() == uid else AuthExit.TEMPORARY


def become_daemon_user() -> None:
    """For cluster forwarding: as root switch to ``qmaild`` (or ``nofiles``, else ``nobody``)."""
    if os.getuid() != 0:
        return
    for name in (*DAEMON_USERS, "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        os.setgroups([pw.pw_gid])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        return


def run_pbs_tool(tool: str | None, environ: MutableMapping[str, str], log: Log) -> None:
    """auth_pop(8): run *tool* with the login environment, stdin/stdout on /dev/null, fd 3 closed; never
    fatal."""
    if not tool or "NOPBS" in environ:
        return
    try:
        proc = subprocess.run(
            [tool], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=dict(environ), check=False
        )
    except OSError as exc:
        log(f"unable to run pbs tool {tool}: {exc.strerror}")
        return
    if proc.returncode != 0:
        log(f"pbs tool {tool} failed with status {proc.returncode}")


@dataclass(frozen=True, slots=True)
class MailboxSettings:
    """The control files consulted after the privilege drop, read before it (the control directory
    need not be readable by the mailbox owner)."""

    dirmaker: str | None = None
    automaildir: bool = False

    @classmethod
    def from_control(cls, ctl: ControlDir) -> MailboxSettings:
        """Read ``dirmaker`` and ``automaildirmake``.

        Raises:
            ConfigError: a file exists but cannot be read.
        """
        return cls(ctl.line("dirmaker") or None, ctl.boolean(AUTOMAILDIR_CONTROL, False))


def _run_dirmaker(program: str, home: str, target: str, environ: MutableMapping[str, str]) -> bool:
    try:
        proc = subprocess.run(
            [program, home, target], env=dict(environ), check=False, stdin=subprocess.DEVNULL
        )
    except OSError:
        return False
    return proc.returncode == 0


def enter_home(
    settings: MailboxSettings, home: str, target: str, environ: MutableMapping[str, str]
) -> AuthExit | None:
    """chdir(HOME); when that fails run the dirmaker (args HOME and the mailbox) and try again.

    No dirmaker → 62; the dirmaker fails or HOME is still missing → 61.
    """
    try:
        os.chdir(home)
        return None
    except OSError:
        pass
    if settings.dirmaker is None:
        return AuthExit.NO_MAILBOX
    if not _run_dirmaker(settings.dirmaker, home, target, environ):
        return AuthExit.MAILBOX_CREATE
    try:
        os.chdir(home)
    except OSError:
        return AuthExit.MAILBOX_CREATE
    return None


def make_maildir(target: str) -> AuthExit | None:
    """Create the Maildir *target* (relative to the cwd) with tmp/cur/new, mode 0700.

    Only targets ending in ``/`` are maildirs.  A non-directory in the way → 6; other errors → 61.
    """
    if not target.endswith("/"):
        return None
    base = Path(target)
    for path in (base, base / "tmp", base / "cur", base / "new"):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except OSError:
                return AuthExit.MAILBOX_CREATE
            continue
        except OSError:
            return AuthExit.MAILBOX_CREATE
        if not stat.S_ISDIR(st.st_mode):
            return AuthExit.MAILBOX_CORRUPT
    return None


def prepare_mailbox(
    settings: MailboxSettings, creds: Credentials, aliasempty: str, environ: MutableMapping[str, str]
) -> AuthExit | None:
    """Enter HOME (dirmaker when missing) and, when switched on, create the Maildir; as the user."""
    target = creds.maildir or aliasempty
    failure = enter_home(settings, creds.home, target, environ)
    if failure is not None:
        return failure
    return make_maildir(target) if settings.automaildir else None


def exec_subprogram(argv: Sequence[str], environ: MutableMapping[str, str]) -> AuthExit:
    """Close descriptor 3 and exec *argv*; returns only when the exec failed (exit 7)."""
    try:
        os.close(FD3)
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), dict(environ))
    except OSError:
        return AuthExit.EXEC_FAILED
    raise AssertionError("unreachable")  # pragma: no cover


def start_local(
    settings: MailboxSettings,
    creds: Credentials,
    args: ModuleArgs,
    environ: MutableMapping[str, str],
    log: Log,
) -> AuthExit:
    """auth_pop(8) after a successful local check: drop privileges, environment, pbs tool, HOME, exec.

    Returns the exit code when a step fails; on success the process is replaced.
    """
    failure = drop_privileges(creds.uid, creds.gid)
    if failure is not None:
        log(f"unable to switch to uid {creds.uid}")
        return failure
    apply_environment(environ, creds)
    run_pbs_tool(args.pbs_tool, environ, log)
    failure = prepare_mailbox(settings, creds, args.aliasempty, environ)
    if failure is not None:
        log(f"unable to prepare the mailbox of {printable(creds.login)} in {creds.home} ({int(failure)})")
        return failure
    failure = exec_subprogram(args.argv, environ)
    log(f"unable to run {args.argv[0]}")
    return failure


# -- cluster forwarding (auth_pop(8)) ------------------------------------------------------------


class Service(enum.Enum):
    """The protocol a module serves, with the backend port a forwarded session connects to."""

    POP = 110
    IMAP = 143


def is_local_address(ip: str) -> bool:
    """True when *ip* belongs to this host (binding to it succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True


def resolve_mail_host(host: str) -> str | None:
    """The first IPv4 address of *host*; None when it does not resolve or is one of our own."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    if not infos:
        return None
    ip = str(infos[0][4][0])
    return None if is_local_address(ip) else ip


_IMAP_ATOM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@+=")


def imap_quote(text: str) -> str:
    """*text* as an IMAP atom when it is one, else as a quoted string (``\\`` and ``\"`` escaped)."""
    if text and _IMAP_ATOM.issuperset(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reply(sock: socket.socket) -> bytes:
    sock.settimeout(REPLY_TIMEOUT)
    try:
        return sock.recv(REPLY_LIMIT)
    except OSError:
        return b""


def relay(sock: socket.socket, fd_in: int, fd_out: int, idle: float = IDLE_TIMEOUT) -> None:
    """Copy client ↔ backend until the backend closes or nothing moves for *idle* seconds.

    A client EOF half-closes the backend connection, so the backend still answers what was sent.
    """
    sock.setblocking(True)
    client_open = True
    backend = sock.fileno()
    while True:
        readable, _w, _x = select.select([backend, fd_in] if client_open else [backend], [], [], idle)
        if not readable:
            return
        if backend in readable:
            data = sock.recv(65536)
            if not data:
                return
            write_all(fd_out, data)
        if fd_in in readable:
            data = os.read(fd_in, 65536)
            if data:
                sock.sendall(data)
            else:
                client_open = False
                sock.shutdown(socket.SHUT_WR)


def backend_login(
    service: Service, sock: socket.socket, login: str, password: str, environ: MutableMapping[str, str]
) -> AuthExit | None:
    """Log in at the backend: POP ``user``/``pass`` after ``+OK`` replies, IMAP ``TAG login``.

    The answer to ``pass``/``login`` is left for the relay, so it reaches the client.
    """
    if service is Service.POP:
        if not _reply(sock).startswith(b"+OK"):
            return AuthExit.MAILHOST
        sock.sendall(f"user {login}\r\n".encode("utf-8", "surrogateescape"))
        if not _reply(sock).startswith(b"+OK"):
            return AuthExit.MAILHOST
        sock.sendall(f"pass {password}\r\n".encode("utf-8", "surrogateescape"))
        return None
    tag = environ.get("IMAPLOGINTAG")
    if not tag:
        return AuthExit.TEMPORARY
    if not _reply(sock).startswith(b"* OK"):
        return AuthExit.MAILHOST
    line = f"{tag} login {imap_quote(login)} {imap_quote(password)}\r\n"
    sock.sendall(line.encode("utf-8", "surrogateescape"))
    return None


def start_forward(
    forward: Forward,
    service: Service,
    password: str,
    args: ModuleArgs,
    environ: MutableMapping[str, str],
    log: Log,
    *,
    fd_in: int = 0,
    fd_out: int = 1,
) -> AuthExit:
    """auth_pop(8): as the daemon user run the pbs tool, connect to the mailHost, log in and relay; exit 0."""
    try:
        become_daemon_user()
    except OSError:
        return AuthExit.TEMPORARY
    environ["USER"] = environ["AUTHENTICATED"] = forward.login
    run_pbs_tool(args.pbs_tool, environ, log)
    ip = resolve_mail_host(forward.mail_host)
    if ip is None:
        log(f"mailhost {forward.mail_host} is unresolvable or this host")
        return AuthExit.MAILHOST
    try:
        sock = socket.create_connection((ip, service.value), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        log(f"unable to connect to {forward.mail_host}: {exc}")
        return AuthExit.MAILHOST
    with sock:
        failure = backend_login(service, sock, forward.login, password, environ)
        if failure is not None:
            return failure
        try:
            relay(sock, fd_in, fd_out)
        except OSError as exc:
            log(f"connection to {forward.mail_host} failed: {exc}")
    return AuthExit.OK

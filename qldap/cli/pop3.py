"""Console entry points ``qmail-popup`` and ``qmail-pop3d``: the classic POP3 pipeline over fds 0/1.

``qmail-popup HOST auth_pop qmail-pop3d Maildir`` runs under tcpserver/inetd with the client on
descriptors 0 and 1.  qmail-popup speaks the authorization state (:class:`qldap.pop3.popup.Popup`),
then runs the login module with the credentials on descriptor 3 and waits for it; the login module
execs qmail-pop3d as the mailbox owner, which serves the transaction state
(:func:`qldap.pop3.session.open_session`) on the same descriptors.

Why qmail-popup reads its input one byte at a time: the login chain after it reads the client
directly from descriptor 0, so qmail-popup must not consume a byte past the line that made it run
the chain (a pipelining client may already have sent ``STAT``).  The authorization state is a few
short lines, so the cost is a handful of system calls.  STLS is not offered here: a TLS session
cannot be handed to an exec'd program (the daemon, ``qldap pop3d``, offers it).
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qldap.cli._run import run
from qldap.pop3.popup import ERR_USAGE, Authenticate, Popup, StartTls
from qldap.pop3.reader import Close, Reply
from qldap.pop3.server import serve_blocking
from qldap.pop3.session import Refused, SessionInfo, open_session

TIMEOUT = 1200.0
STDIN, STDOUT = 0, 1
MAX_LINE = 1024


class _Gone(Exception):
    """The client went away or stayed silent too long: end without a reply."""


def write_all(fd: int, data: bytes, timeout: float = TIMEOUT) -> None:
    """Write *data* completely, waiting at most *timeout* seconds for the peer each time.

    Raises:
        _Gone: the peer does not accept data within *timeout*.
        OSError: the write failed (peer closed).
    """
    view = memoryview(data)
    while view:
        _r, writable, _x = select.select([], [fd], [], timeout)
        if not writable:
            raise _Gone()
        view = view[os.write(fd, view) :]


def read_line(fd: int, timeout: float = TIMEOUT) -> bytes:
    """One line up to and including LF (or MAX_LINE bytes), reading byte by byte.

    Raises:
        _Gone: EOF or no byte within *timeout*.
    """
    line = bytearray()
    while not line.endswith(b"\n") and len(line) < MAX_LINE:
        readable, _w, _x = select.select([fd], [], [], timeout)
        if not readable:
            raise _Gone()
        byte = os.read(fd, 1)
        if not byte:
            raise _Gone()
        line += byte
    return bytes(line)


def run_login_chain(argv: Sequence[str], record: bytes) -> int | None:
    """Run the login module *argv* with *record* on descriptor 3; its exit status, None if it crashed."""
    rfd, wfd = os.pipe()
    try:
        pid = os.posix_spawnp(
            argv[0], list(argv), dict(os.environ), file_actions=[(os.POSIX_SPAWN_DUP2, rfd, 3)]
        )
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return 111
    os.close(rfd)
    try:
        os.write(wfd, record)
    except OSError:
        pass
    os.close(wfd)
    _pid, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None
    return os.waitstatus_to_exitcode(status)


def _popup(argv: Sequence[str]) -> int:
    if len(argv) < 2 or not argv[0]:
        write_all(STDOUT, ERR_USAGE)
        return 1
    hostname, chain = argv[0], argv[1:]
    popup = Popup(hostname, pid=os.getpid(), now=int(time.time()))
    try:
        write_all(STDOUT, popup.greeting().data)
        while True:
            for effect in popup.receive(read_line(STDIN)):
                if isinstance(effect, Reply):
                    write_all(STDOUT, effect.data)
                elif isinstance(effect, Close):
                    return 0
                elif isinstance(effect, Authenticate):
                    status = run_login_chain(chain, effect.record)
                    for after in popup.auth_done(status):
                        if isinstance(after, Reply):
                            write_all(STDOUT, after.data)
                    return 0 if status == 0 else 1
                elif isinstance(effect, StartTls):  # pragma: no cover - never offered here
                    return 1
    except (_Gone, OSError):
        return 1


def popup_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qmail-popup``."""
    return run("qmail-popup", _popup, argv)


# -- qmail-pop3d --------------------------------------------------------------------------------------


def _log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _pop3d(argv: Sequence[str]) -> int:
    info = SessionInfo.from_env(os.environ, os.getpid())
    result = open_session(argv[0] if argv else None, os.environ, home=Path.cwd(), info=info, log=_log)
    if isinstance(result, Refused):
        try:
            write_all(STDOUT, result.reply)
        except (_Gone, OSError):
            pass
        return 1
    return serve_blocking(result, STDIN, STDOUT)


def pop3d_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qmail-pop3d``."""
    return run("qmail-pop3d", _pop3d, argv)

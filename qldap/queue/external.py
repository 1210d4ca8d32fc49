"""Run a ``QMAILQUEUE``-style queue program: message on fd 0, envelope on fd 1, its own text on fd 4.

Callers (smtpd, qmail-inject, bounces) use this when ``QMAILQUEUE`` names a program that replaces
``qmail-queue`` — typically a content filter that queues with the real injector afterwards.  The
result is the program's exit code (or the signal that killed it) turned into the caller text of
qmail-queue(8) EXIT STATUS by :mod:`qldap.queue.codes`; exit 82 lets the program say its own ``D…``/``Z…``
text.

Why ``posix_spawn``: the child needs descriptors renumbered (0, 1 and 4) and the caller is a threaded
daemon, where ``fork`` + ``preexec_fn`` is unsafe.  Python 3.11's ``posix_spawn`` cannot change
directory, so when a working directory other than ours is asked for (``cwd`` = the qmail home), a
``/bin/sh`` trampoline does the ``cd`` and then ``exec``s the program.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from qldap.fsutil import write_all
from qldap.queue.codes import READ_ERROR_TEXT, QueueExit, caller_text
from qldap.queue.envelope import Envelope, format_input

_TRAMPOLINE = 'cd "$1" || exit 61; shift; exec "$@"'
_HIGH_FD = 10
_FD4_MAX = 1024


@dataclass(frozen=True, slots=True)
class ExternalResult:
    """How the queue program ended: exit ``code`` (negative: killed by signal −code), fd-4 text, pid."""

    code: int
    fd4: bytes
    pid: int
    wrote_all: bool  # the message and the envelope were fully handed over

    @property
    def text(self) -> str:
        """The caller text: ``""`` when queued, else ``D…``/``Z…``."""
        if self.code == 0:
            return "" if self.wrote_all else READ_ERROR_TEXT
        return caller_text(self.code, self.fd4)

    @property
    def accepted(self) -> bool:
        """True when the message is queued (exit 0 after a complete hand-over)."""
        return self.code == 0 and self.wrote_all


def queue_program(environ: Mapping[str, str]) -> str | None:
    """The ``QMAILQUEUE`` program of a caller's environment, None when unset or empty."""
    value = environ.get("QMAILQUEUE", "")
    return value or None


def _high(fd: int) -> int:
    """Move *fd* above the descriptors the child uses, so the dup2 file actions cannot collide."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    os.close(fd)
    return high


def _write_all(fd: int, chunks: Iterable[bytes]) -> bool:
    try:
        for chunk in chunks:
            write_all(fd, chunk)
    except OSError:  # EPIPE: the program stopped reading; reported as an incomplete hand-over
        return False
    finally:
        os.close(fd)
    return True


def _read_fd4(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    try:
        while len(out) < _FD4_MAX:
            chunk = os.read(fd, _FD4_MAX - len(out))
            if not chunk:
                break
            out += chunk
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return out


def run_queue_program(
    program: str,
    message: bytes | Iterable[bytes],
    envelope: Envelope | bytes,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> ExternalResult:
    """Run *program* with the message on fd 0, the envelope on fd 1 and a pipe on fd 4; wait for it.

    Args:
        program: path of the queue program (``QMAILQUEUE``), run without arguments.
        message: the message (LF line ends) as bytes or chunks.
        envelope: an :class:`Envelope` or ready fd-1 bytes (``F…\\0T…\\0\\0``).
        env: the program's environment (default: ours).
        cwd: working directory for the program (the qmail home); None keeps ours.
        timeout: seconds after which the program is killed (reported as a crash); None waits.

    Never raises for the program's behaviour: an unstartable program is exit 120.
    """
    body: Iterable[bytes] = (message,) if isinstance(message, bytes) else message
    env_bytes = envelope if isinstance(envelope, bytes) else format_input(envelope)
    m_r, m_w = os.pipe()
    e_r, e_w = os.pipe()
    x_r, x_w = os.pipe()
    m_r, e_r, x_w = _high(m_r), _high(e_r), _high(x_w)
    actions = [(os.POSIX_SPAWN_DUP2, m_r, 0), (os.POSIX_SPAWN_DUP2, e_r, 1), (os.POSIX_SPAWN_DUP2, x_w, 4)]
    argv = [program]
    if cwd is not None and os.path.realpath(cwd) != os.getcwd():
        argv = ["/bin/sh", "-c", _TRAMPOLINE, "sh", os.fspath(cwd), program]
    try:
        pid = os.posix_spawn(argv[0], argv, dict(os.environ if env is None else env), file_actions=actions)
    except OSError:
        for fd in (m_w, e_w, x_r):
            os.close(fd)
        return ExternalResult(QueueExit.EXEC_FAILED, b"", 0, False)
    finally:
        for fd in (m_r, e_r, x_w):
            os.close(fd)
    timer = _killer(pid, timeout)
    try:
        wrote = _write_all(m_w, body)
        wrote = _write_all(e_w, (env_bytes,)) and wrote
        _, status = os.waitpid(pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
    code = os.waitstatus_to_exitcode(status)
    if len(argv) > 1 and code in (126, 127):  # the trampoline could not exec the program
        code = QueueExit.EXEC_FAILED
    return ExternalResult(code, _read_fd4(x_r), pid, wrote)


def _killer(pid: int, timeout: float | None) -> threading.Timer | None:
    if timeout is None:
        return None

    def kill() -> None:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    return timer

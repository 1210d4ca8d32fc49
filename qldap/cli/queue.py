"""``qmail-queue``: the injector program — message on fd 0, envelope on fd 1, the exit code is the answer.

It is the queue itself, so it ignores ``QMAILQUEUE`` (that variable tells *callers* what to run
instead of it).  No output: callers map the code to a text (qmail-queue(8), EXIT STATUS).  Like the C program
it arms a 24-hour alarm whose expiry exits 52 *without* cleaning up (the 36-hour cleanup relies on no
injector living longer than that), and dies by default on SIGINT/SIGTERM, leaving S2/S3 files for
that cleanup.  The generic ``_run`` wrapper is not used because this program's contract differs: an
unexpected exception must be exit 81 (``qq internal bug``), not 111, and nothing goes to stdout.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from functools import partial

from qldap.cli._run import parse_root_args
from qldap.control.files import ControlDir, find_root
from qldap.errors import ConfigError
from qldap.queue.codes import QueueError, QueueExit
from qldap.queue.envelope import Envelope, read_input
from qldap.queue.inject import how_invoked, inject
from qldap.queue.layout import QueueLayout, resolve_ids

PROG = "qmail-queue"
DEATH = 86400  # 24 hours; must stay below the cleanup's 36
UMASK = 0o033
_CHUNK = 65536


def _die_on_alarm(_signum: int, _frame: object) -> None:
    os._exit(QueueExit.TIMEOUT)  # thou shalt not clean up here: a live writer may still own the files


_parse_root = parse_root_args


def _stdin_chunks() -> Iterator[bytes]:
    return iter(partial(os.read, 0, _CHUNK), b"")


def _read_envelope() -> Envelope:
    return read_input(partial(os.read, 1))


def queue_from_fds(root_arg: str | None) -> int:
    """Inject fd 0 with the envelope on fd 1 into the queue under the root; the exit code."""
    root = find_root(root_arg)
    if not os.path.isdir(root):
        return QueueExit.HOME_DIR
    try:
        watch = ControlDir(root).mapping("bigbrother")
    except ConfigError:
        return QueueExit.CONFIG
    layout = QueueLayout.of(root)
    if not os.path.isdir(layout.queue):
        return QueueExit.QUEUE_DIR
    ids = resolve_ids()
    uid = os.getuid()
    try:
        inject(
            layout, _stdin_chunks(), _read_envelope,
            how=how_invoked(uid, ids), uid=uid, pid=os.getpid(), bigbrother=watch, ids=ids,
        )  # fmt: skip
    except QueueError as exc:
        return exc.code
    return QueueExit.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the qmail-queue exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        root_arg = _parse_root(args)
    except ValueError as exc:
        sys.stderr.write(f"{PROG}: usage: {PROG} [--root DIR]: {exc}\n")
        return QueueExit.BUG
    os.umask(UMASK)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _die_on_alarm)
    signal.alarm(DEATH)
    try:
        return queue_from_fds(root_arg)
    except Exception:  # the one catch-all: a bug is exit 81, never a success
        sys.stderr.write(f"{PROG}: internal error\n")
        traceback.print_exc(file=sys.stderr)
        return QueueExit.BUG
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())

"""Run the delivery agent as the mailbox's uid/gid in a child process (used when qldap runs as root).

Why a process: file deliveries must be made with the user's own credentials (ownership, quota, no
symlink games with root's rights), and credentials are per process.  The parent pickles the job to
stdin and reads the pickled outcome from stdout; nothing else crosses.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.agent import AgentConfig, Tally, deliver
from qldap.local.lines import Recipient
from qldap.local.resolve import Plan
from qldap.queue.message import MessageFile


@dataclass(frozen=True, slots=True)
class Job:
    """Everything one agent run needs."""

    plan: Plan
    recipient: Recipient
    config: AgentConfig
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The agent failed: report letter and text."""

    letter: str
    text: str


def run_child(job: Job, message: MessageFile, timeout: float = 86400) -> Tally:
    """Run *job* in ``python -m qldap.local.child`` and return its tally.

    The message descriptor is inherited under its own number, which travels in the pickled job.

    Raises:
        TemporaryFailure / PermanentFailure: the agent's failure, or ``qmail-local crashed.``.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "qldap.local.child"],
            input=pickle.dumps((job, message.fd)),
            capture_output=True,
            timeout=timeout,
            check=False,
            pass_fds=(message.fd,),
        )
    except subprocess.TimeoutExpired:
        raise TemporaryFailure("Timeout on maildir delivery. (#4.3.0)") from None
    except OSError:
        raise TemporaryFailure("Unable to run qmail-local.") from None
    if proc.returncode != 0:
        raise TemporaryFailure("qmail-local crashed.")
    try:
        result = pickle.loads(proc.stdout)
    except Exception:  # a garbled answer from our own child: defer, never lose the message
        raise TemporaryFailure("qmail-local crashed.") from None
    if isinstance(result, Failed):
        cls = PermanentFailure if result.letter == "D" else TemporaryFailure
        raise cls(result.text)
    if not isinstance(result, Tally):
        raise TemporaryFailure("qmail-local crashed.")
    return result


def _main() -> int:
    job, fd = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(job, Job) and isinstance(fd, int)
    out: object
    try:
        if job.uid == 0:
            raise TemporaryFailure("Not allowed to perform deliveries as root.")
        os.setgroups([])
        os.setgid(job.gid)
        os.setuid(job.uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise TemporaryFailure("Not allowed to perform deliveries as root.")
        out = deliver(job.plan, job.recipient, MessageFile(fd), job.config)
    except (TemporaryFailure, PermanentFailure) as exc:
        out = Failed(exc.letter, exc.text)
    except OSError as exc:
        out = Failed("Z", f"Temporary error in qmail-local: {exc.strerror}. (#4.3.0)")
    sys.stdout.buffer.write(pickle.dumps(out))
    return 0


if __name__ == "__main__":
    # run the importable module's _main so pickled classes are qldap.local.child's, not __main__'s
    from qldap.local.child import _main as child_main

    sys.exit(child_main())

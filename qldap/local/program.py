"""Run one program delivery (`|command`): /bin/sh -c in HOME, message on stdin, exit code → result.

Why a process here and nowhere else: a program is the user's code and must run as the mailbox's
uid/gid with its own environment; everything else in delivery runs in-process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.queue.message import MessageFile

PERMANENT_CODES = frozenset({100, 64, 65, 70, 76, 77, 78, 112})
REPORT_LIMIT = 3000
TOO_LONG = "Error report too long, sorry."


class Outcome(Enum):
    """What the program's exit means for the delivery."""

    OK = "ok"  # exit 0: continue
    STOP = "stop"  # exit 99: success, process no further instructions (forwards still sent)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """A successful run: how to continue and what the program printed."""

    outcome: Outcome
    output: str


def cut_report(text: str) -> str:
    """Reports over 3000 bytes are cut and end with ``Error report too long, sorry.``."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= REPORT_LIMIT:
        return text
    return data[: REPORT_LIMIT - len(TOO_LONG)].decode("utf-8", "replace") + TOO_LONG


def run_program(
    command: str,
    message: MessageFile,
    *,
    env: Mapping[str, str],
    cwd: str,
    uid: int | None = None,
    gid: int | None = None,
    timeout: float | None = 86400,
) -> ProgramResult:
    """Run *command* with the queued *message* (no added lines) on stdin.

    As root, *uid*/*gid* are required and the child drops to them (no supplementary groups).

    Raises:
        PermanentFailure: exit 100, 64, 65, 70, 76, 77, 78, 112 — text = the program's output.
        TemporaryFailure: any other exit, a crash (``Aack, child crashed. (#4.3.0)``) or a start failure.
    """
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:
        if uid is None or gid is None or uid == 0:
            raise TemporaryFailure("Not allowed to perform deliveries as root.")
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    try:
        proc = subprocess.run(  # the user's own .qmail/LDAP program, by design
            ["/bin/sh", "-c", command],
            stdin=message.rewound(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            timeout=timeout,
            check=False,
            umask=0o077,  # qmail-local(8) runs everything under umask 077: files a program makes are private
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired:
        raise TemporaryFailure("Timeout on program delivery. (#4.3.0)") from None
    except OSError as exc:
        raise TemporaryFailure(f"Unable to run /bin/sh: {exc.strerror}. (#4.3.0)") from None
    output = cut_report(proc.stdout.decode("utf-8", "replace"))
    code = proc.returncode
    if code < 0:  # killed by a signal
        raise TemporaryFailure(output + "Aack, child crashed. (#4.3.0)")
    if code == 0:
        return ProgramResult(Outcome.OK, output)
    if code == 99:
        return ProgramResult(Outcome.STOP, output)
    if code in PERMANENT_CODES:
        raise PermanentFailure(output)
    raise TemporaryFailure(output)

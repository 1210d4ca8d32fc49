"""``qmail-qstat``: how many messages the queue holds and how many are not yet preprocessed.

Counts regular files under ``queue/mess/*/`` and ``queue/todo/`` exactly as qmail's shell script
did with ``find … -type f | wc -l``: a message being injected (S2/S3) already counts, which is what
an operator watching a backlog wants to see.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from qldap.cli._run import run
from qldap.control.files import find_root
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.queue.layout import QueueLayout

PROG = "qmail-qstat"


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """The two numbers qmail-qstat prints."""

    messages: int
    unprocessed: int

    def render(self) -> str:
        """The two output lines, each ending in a newline."""
        return (f"messages in queue: {self.messages}\n"
                f"messages in queue but not yet preprocessed: {self.unprocessed}\n")


def _count_files(top: str) -> int:
    count = 0
    for _dirpath, _dirs, files in os.walk(top, onerror=_raise):
        count += len(files)
    return count


def _raise(exc: OSError) -> None:
    raise exc


def count_queue(layout: QueueLayout) -> QueueCounts:
    """Count ``mess`` and ``todo`` files of *layout*.

    Raises:
        ConfigError: a queue directory is missing or cannot be read.
    """
    try:
        return QueueCounts(_count_files(layout.dir("mess")), _count_files(layout.dir("todo")))
    except OSError as exc:
        raise ConfigError(f"unable to read {exc.filename or layout.queue}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``qmail-qstat [--root DIR]``."""

    def body(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="count the messages in the queue")
        parser.add_argument("--root", help="the qmail root (default: $QLDAP_ROOT or /var/qmail)")
        ns = parser.parse_args(list(args))
        counts = count_queue(QueueLayout.of(find_root(ns.root)))
        sys.stdout.write(counts.render())
        return ExitCode.OK

    return run(PROG, body, argv)


if __name__ == "__main__":
    sys.exit(main())

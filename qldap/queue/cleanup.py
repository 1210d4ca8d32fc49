"""Remove what crashed injections and interrupted eliminations left behind (qldap-queue(5), Crash behaviour).

A ``mess/S/N`` with neither ``info/S/N`` nor ``todo/N`` is either being injected (S2/S3) or left over
by a crash.  The two cannot be told apart by looking, only by age: an injector never lives longer
than 24 hours (its alarm), so such a file older than 36 hours (129600 s) is garbage; it is removed
with its ``intd/N`` (intd first, so an ``intd`` never outlives its ``mess``).  ``pid/`` scratch files
older than 36 hours go too.  Age is ``now − mtime`` (Decision: the original used atime, which
``noatime`` mounts freeze); the clock is a parameter so tests can jump 36 hours.

In-process injectors must therefore also bound their injections well below 36 hours (a stalled
network submitter is cut off by the daemon's own timeouts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from qldap.queue.layout import SPLIT, QueueLayout

OSSIFIED = 129600  # 36 hours
CLEANUP_INTERVAL = 76431  # how often the manager runs the mess/ walk


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What one cleanup pass did: message numbers and pid names removed, paths it failed to remove."""

    messages: tuple[int, ...] = ()
    pid_files: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def _age(path: str, now: float) -> float | None:
    try:
        return now - os.lstat(path).st_mtime
    except FileNotFoundError:
        return None


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _unlink(path: str, failed: list[str]) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        failed.append(path)
        return False
    return True


def clean_messages(
    root: str | os.PathLike[str] | QueueLayout, *, clock: Callable[[], float] = time.time
) -> CleanupReport:
    """Remove ``mess`` files (and their ``intd``) older than 36 h that have no ``info`` or ``todo``.

    Raises:
        OSError: a ``mess`` split directory cannot be listed.
    """
    layout = QueueLayout.of(root)
    now = clock()
    removed: list[int] = []
    failed: list[str] = []
    for i in range(SPLIT):
        split_dir = f"{layout.dir('mess')}/{i}"
        for name in sorted(os.listdir(split_dir)):
            if not name.isdigit():
                continue
            number = int(name)
            mess = f"{split_dir}/{name}"
            age = _age(mess, now)
            if age is None or age <= OSSIFIED:
                continue
            # todo before info: preprocessing creates info before it unlinks todo, so this order
            # cannot miss a message moving from S4 to S5 between the two looks.
            if _exists(layout.todo(number)) or _exists(layout.info(number)):
                continue
            if _unlink(layout.intd(number), failed) and _unlink(mess, failed):
                removed.append(number)
    return CleanupReport(messages=tuple(removed), failed=tuple(failed))


def clean_pid(
    root: str | os.PathLike[str] | QueueLayout, *, clock: Callable[[], float] = time.time
) -> CleanupReport:
    """Remove ``pid/`` scratch files older than 36 h; younger ones belong to live injectors.

    Raises:
        OSError: ``pid/`` cannot be listed.
    """
    layout = QueueLayout.of(root)
    now = clock()
    removed: list[str] = []
    failed: list[str] = []
    for name in sorted(os.listdir(layout.dir("pid"))):
        path = layout.pid(name)
        age = _age(path, now)
        if age is not None and age > OSSIFIED and _unlink(path, failed):
            removed.append(name)
    return CleanupReport(pid_files=tuple(removed), failed=tuple(failed))


def clean_all(
    root: str | os.PathLike[str] | QueueLayout, *, clock: Callable[[], float] = time.time
) -> CleanupReport:
    """:func:`clean_pid` and :func:`clean_messages` with one clock reading.

    Raises:
        OSError: a queue directory cannot be listed.
    """
    now = clock()
    pid = clean_pid(root, clock=lambda: now)
    mess = clean_messages(root, clock=lambda: now)
    return CleanupReport(mess.messages, pid.pid_files, pid.failed + mess.failed)

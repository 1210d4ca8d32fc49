"""Which state (S1–S5, qldap-queue(5), States) a message number is in, judged only by which of its files
exist.

The classification is a pure function over the set of present parts, so the whole table can be
walked by tests, and the same function serves the manager at restart and the crash tests.  Sets that
the table does not allow (``todo`` without ``mess``, ``info`` with ``intd`` …) are
:attr:`State.INCONSISTENT`: they can only come from outside interference, never from a crash of our
own programs, and need an operator's look rather than an automatic repair.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from enum import Enum

from qldap.queue.layout import FLAT_DIRS, SPLIT, SPLIT_DIRS, QueueLayout


class Part(Enum):
    """The files a message number can have."""

    MESS = "mess"
    INTD = "intd"
    TODO = "todo"
    INFO = "info"
    LOCAL = "local"
    REMOTE = "remote"
    BOUNCE = "bounce"


class State(Enum):
    """The queue states of a message number."""

    S1 = "no message"
    S2 = "being injected or being removed"
    S3 = "envelope being written"
    S4 = "queued (accepted, durable)"
    S5 = "preprocessed"
    INCONSISTENT = "not a state of the queue table"


def classify(parts: Iterable[Part]) -> State:
    """The state for the set of *parts* present (qldap-queue(5), States, ``?`` columns may be either)."""
    present = frozenset(parts)
    if not present:
        return State.S1
    if Part.MESS not in present:
        return State.INCONSISTENT
    rest = present - {Part.MESS}
    if not rest:
        return State.S2
    if rest == {Part.INTD}:
        return State.S3
    if Part.TODO in rest:
        return State.INCONSISTENT if Part.BOUNCE in rest else State.S4
    if Part.INFO in rest and Part.INTD not in rest:
        return State.S5
    return State.INCONSISTENT


def parts_of(layout: QueueLayout, number: int) -> frozenset[Part]:
    """The parts of message *number* that exist now (``lstat`` each path).

    Raises:
        OSError: a path could not be examined (other than not existing).
    """
    paths = {
        Part.MESS: layout.mess(number),
        Part.INTD: layout.intd(number),
        Part.TODO: layout.todo(number),
        Part.INFO: layout.info(number),
        Part.LOCAL: layout.local(number),
        Part.REMOTE: layout.remote(number),
        Part.BOUNCE: layout.bounce(number),
    }
    present = set()
    for part, path in paths.items():
        try:
            os.lstat(path)
        except FileNotFoundError:
            continue
        present.add(part)
    return frozenset(present)


def state_of(layout: QueueLayout, number: int) -> State:
    """:func:`classify` applied to the files of *number* on disk.

    Raises:
        OSError: a path could not be examined.
    """
    return classify(parts_of(layout, number))


def _numbers_in(path: str) -> Iterable[int]:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return ()
    return (int(name) for name in names if name.isdigit())


def scan(root: str | os.PathLike[str] | QueueLayout) -> dict[int, State]:
    """Every message number with any file in the queue, mapped to its state.

    Raises:
        OSError: a queue directory could not be listed (other than missing).
    """
    layout = QueueLayout.of(root)
    found: dict[int, set[Part]] = {}
    for name in SPLIT_DIRS:
        part = Part(name)
        for i in range(SPLIT):
            for number in _numbers_in(f"{layout.dir(name)}/{i}"):
                if number % SPLIT == i:
                    found.setdefault(number, set()).add(part)
    for name in FLAT_DIRS:
        if name == "pid":
            continue
        part = Part(name)
        for number in _numbers_in(layout.dir(name)):
            found.setdefault(number, set()).add(part)
    return {number: classify(parts) for number, parts in sorted(found.items())}

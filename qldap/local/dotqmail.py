"""`.qmail` files: parse lines into delivery instructions and compute which file applies.

Pure functions over text and a file-existence seam, so the rules (comment, program, maildir, mbox,
forward, ``+list``; the ``-default`` search chain; the ``-owner`` sender rewrite) test without a
mailbox on disk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from qldap.errors import TemporaryFailure


class Kind(Enum):
    """What one instruction does."""

    PROGRAM = "program"
    MAILDIR = "maildir"
    MBOX = "mbox"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Instruction:
    """One delivery instruction: a program command, a maildir/mbox path or a forward address."""

    kind: Kind
    target: str


@dataclass(frozen=True, slots=True)
class DotQmail:
    """A parsed `.qmail` file."""

    instructions: tuple[Instruction, ...]
    is_list: bool = False


BLANK_FIRST = "Uh-oh: first line of .qmail file is blank. (#4.2.1)"
FILE_WITH_X = "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"
PROG_WITH_X = "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)"


def parse_line(line: str) -> Instruction | None:
    """One line (trailing blanks already or not yet removed) → instruction, or None for comments/blank."""
    line = line.rstrip(" \t\r")
    if not line or line.startswith("#"):
        return None
    if line.startswith("|"):
        return Instruction(Kind.PROGRAM, line[1:])
    if line[0] in "./":
        return Instruction(Kind.MAILDIR if line.endswith("/") else Kind.MBOX, line)
    if line.startswith("&"):
        return Instruction(Kind.FORWARD, line[1:])
    return Instruction(Kind.FORWARD, line)


def parse(text: str, *, executable: bool = False) -> DotQmail:
    """Parse a whole `.qmail` file.

    *executable* is the owner-execute bit: with it (or with ``+list``) file and program lines are
    refused, as qmail-local does.

    Raises:
        TemporaryFailure: blank first line, or file/program delivery in an x-bit/list file.
    """
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if lines and not lines[0].rstrip(" \t\r"):
        raise TemporaryFailure(BLANK_FIRST)
    out: list[Instruction] = []
    is_list = False
    for raw in lines:
        if raw.rstrip(" \t\r") == "+list":
            is_list = True
            continue
        ins = parse_line(raw)
        if ins is not None:
            out.append(ins)
    restricted = executable or is_list
    if restricted:
        for ins in out:
            if ins.kind in (Kind.MAILDIR, Kind.MBOX):
                raise TemporaryFailure(FILE_WITH_X)
            if ins.kind is Kind.PROGRAM:
                raise TemporaryFailure(PROG_WITH_X)
    return DotQmail(tuple(out), is_list)


@functools.lru_cache(maxsize=256)
def parse_default_delivery(text: str) -> tuple[Instruction, ...]:
    """The default delivery (``defaultdelivery``/aliasempty) string, possibly several lines.

    Cached: every delivery parses it, and a server has a handful of distinct texts (the control file,
    the mailMessageStores used as default delivery are one per user, hence the bound).
    """
    return tuple(i for i in (parse_line(x) for x in text.split("\n")) if i is not None)


@dataclass(frozen=True, slots=True)
class Choice:
    """The `.qmail` file chosen for a dash/extension, and the ``DEFAULT`` part it covered."""

    name: str
    default: str | None  # None: an exact file; else the part of the extension covered by "default"


def candidates(dash: str, ext: str) -> list[Choice]:
    """The search order: ``.qmail<dash><ext>``, then ``-default`` from the right, then ``<dash>default``.

    The extension is lower-cased and ``.`` becomes ``:``.  With an empty dash only ``.qmail``.
    """
    e = ext.lower().replace(".", ":")
    if not dash:
        return [Choice(".qmail", None)]
    out = [Choice(f".qmail{dash}{e}", None)]
    if e:
        i = len(e)
        while True:
            i = e.rfind("-", 0, i)
            if i < 0:
                break
            out.append(Choice(f".qmail{dash}{e[: i + 1]}default", ext[i + 1 :]))
    out.append(Choice(f".qmail{dash}default", ext))
    return out


def choose(dash: str, ext: str, exists: Callable[[str], bool]) -> Choice | None:
    """The first existing candidate, or None."""
    for c in candidates(dash, ext):
        if exists(c.name):
            return c
    return None


def owner_sender(
    sender: str, local: str, host: str, dash: str, ext: str, exists: Callable[[str], bool]
) -> str:
    """``NEWSENDER`` in `.qmail` modes: ``L-owner@H`` (or the VERP form) when an ``-owner`` file exists."""
    if not sender or sender == "#@[]":
        return sender
    base = f".qmail{dash}{ext.lower().replace('.', ':')}"
    if not exists(base + "-owner"):
        return sender
    if exists(base + "-owner-default"):
        return f"{local}-owner-@{host}-@[]"
    return f"{local}-owner@{host}"

"""Maildir++ quota: the ``maildirsize`` file, recounting, the over-quota verdict and the 70 % warning.

Why recount rules matter: ``maildirsize`` is an append-only journal shared with POP3/IMAP servers
(they append negative lines on deletion), so its sum drifts; it is rebuilt from the directory when
absent, large (≥ 5120 bytes), written for other limits, or when a message seems not to fit — so a
stale journal never bounces mail that would fit.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qldap.errors import PermanentFailure, TemporaryFailure

OVER_QUOTA = "The users mailfolder is over the allowed quota (size). (#5.2.2)"
MBOX_OVER_QUOTA = "The users mailbox is over the allowed quota (size). (#5.2.2)"
RACE_CALC = "Temporary race condition while calculating quota. (#4.3.0)"
RACE_RECALC = "Temporary race condition while recalculating quota. (#4.3.0)"
RECURSIVE = "Unable to calc quota: recursive maildir++ (QUOTA #1.1.1)"

WARN_PERCENT = 70
RECOUNT_SIZE = 5120
FRESH_SECONDS = 900

_SIZE_IN_NAME = re.compile(r",S=(\d+)")


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits from ``MAILDIRQUOTA``; 0 means unlimited."""

    bytes: int = 0
    count: int = 0

    @property
    def active(self) -> bool:
        """True when at least one limit is set."""
        return self.bytes > 0 or self.count > 0

    def spec(self) -> str:
        """The first line of maildirsize / the MAILDIRQUOTA value (``10000S,100C``, ``10000S``)."""
        parts = []
        if self.bytes:
            parts.append(f"{self.bytes}S")
        if self.count:
            parts.append(f"{self.count}C")
        return ",".join(parts)


def parse_quota(text: str | None) -> Quota:
    """Parse ``MAILDIRQUOTA`` (``1000000S,1000C``); junk parts are ignored, missing = unlimited."""
    if not text:
        return Quota()
    size = count = 0
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)([SC])", part)
        if not m:
            continue
        if m.group(2) == "S":
            size = int(m.group(1))
        else:
            count = int(m.group(1))
    return Quota(size, count)


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes and messages currently stored."""

    bytes: int
    count: int


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """The outcome of checking one incoming message against the quota."""

    warn: bool  # usage incl. the message is ≥ 70 %: send a quota warning (delivery continues)
    usage: Usage


def quota_root(maildir: Path) -> Path:
    """The maildir holding ``maildirsize``: the maildir, or its parent for a ``maildirfolder``.

    Raises:
        TemporaryFailure: the parent is itself a folder (more than two levels).
    """
    if (maildir / "maildirfolder").exists():
        parent = maildir.parent
        if (parent / "maildirfolder").exists():
            raise TemporaryFailure(RECURSIVE)
        return parent
    return maildir


def _message_size(dirpath: Path, name: str) -> int | None:
    m = _SIZE_IN_NAME.search(name)
    if m:
        return int(m.group(1))
    try:
        return os.stat(dirpath / name).st_size
    except OSError:
        return None


def _trashed(name: str) -> bool:
    _base, sep, info = name.partition(":2,")
    return bool(sep) and "T" in info


def count_usage(root: Path) -> tuple[Usage, dict[Path, int]]:
    """Recount new/ and cur/ of *root* and its ``.Folder``s except ``.Trash``.

    Returns the usage and the mtimes (ns) of the directories read, to detect a race.
    """
    dirs = [root / "new", root / "cur"]
    try:
        for entry in os.scandir(root):
            if entry.name.startswith(".") and entry.name not in (".", "..", ".Trash") and entry.is_dir():
                dirs += [Path(entry.path) / "new", Path(entry.path) / "cur"]
    except OSError:
        pass
    total = count = 0
    stamps: dict[Path, int] = {}
    for d in dirs:
        try:
            stamps[d] = os.stat(d).st_mtime_ns
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") or _trashed(name):
                continue
            size = _message_size(d, name)
            if size is None:
                continue
            total += size
            count += 1
    return Usage(total, count), stamps


def _stamps_unchanged(stamps: dict[Path, int]) -> bool:
    for d, ns in stamps.items():
        try:
            if os.stat(d).st_mtime_ns != ns:
                return False
        except OSError:
            return False
    return True


def recalculate(
    root: Path, quota: Quota, *, race_text: str = RACE_CALC, sleep: Callable[[float], None] = time.sleep
) -> Usage:
    """Recount and rewrite ``maildirsize`` atomically; one retry after 3 s on a race.

    Raises:
        TemporaryFailure: the directories kept changing while counting.
    """
    for attempt in range(2):
        usage, stamps = count_usage(root)
        if _stamps_unchanged(stamps):
            tmp = root / "tmp" / f"maildirsize.{int(time.time())}.{os.getpid()}"
            try:
                # 0600 like every file qmail-local makes (it runs under umask 077)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{quota.spec()}\n{usage.bytes} {usage.count}\n")
                os.replace(tmp, root / "maildirsize")
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return usage
        if attempt == 0:
            sleep(3)
    raise TemporaryFailure(race_text)


def read_maildirsize(root: Path) -> tuple[str, Usage, int, float] | None:
    """(first line, summed usage, file size, mtime) of ``maildirsize``, or None if absent/unreadable."""
    path = root / "maildirsize"
    try:
        st = os.stat(path)
        text = path.read_text(errors="replace")
    except OSError:
        return None
    lines = text.split("\n")
    first = lines[0].strip()
    total = count = 0
    nlines = 0
    for line in lines[1:]:
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            total += int(parts[0])
            count += int(parts[1])
        except ValueError:
            continue
        nlines += 1
    return first, Usage(total, count), nlines + 1, st.st_mtime if st.st_size < RECOUNT_SIZE else -1.0


def _over(quota: Quota, usage: Usage, size: int) -> bool:
    if quota.bytes and usage.bytes + size > quota.bytes:
        return True
    return bool(quota.count and usage.count + 1 > quota.count)


def _percent(quota: Quota, usage: Usage, size: int) -> int:
    pct = 0
    if quota.bytes:
        pct = max(pct, (usage.bytes + size) * 100 // quota.bytes)
    if quota.count:
        pct = max(pct, (usage.count + 1) * 100 // quota.count)
    return pct


def check_quota(
    maildir: Path,
    quota: Quota,
    size: int,
    *,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> QuotaCheck:
    """Check an incoming message of *size* bytes against *quota* (Maildir++ rules of qmail-local(8), QUOTA).

    Raises:
        PermanentFailure: over quota even after a recount (the caller sends the warning first).
        TemporaryFailure: race while counting, recursive folder.
    """
    root = quota_root(maildir)
    current = read_maildirsize(root)
    if current is None or current[3] < 0 or current[0] != quota.spec():
        usage = recalculate(root, quota, sleep=sleep)
        fresh = True
    else:
        _first, usage, nlines, mtime = current
        fresh = nlines <= 2 and now() - mtime < FRESH_SECONDS
    if _over(quota, usage, size):
        if not fresh:
            usage = recalculate(root, quota, race_text=RACE_RECALC, sleep=sleep)
        if _over(quota, usage, size):
            raise OverQuota(OVER_QUOTA, usage)
    return QuotaCheck(_percent(quota, usage, size) >= WARN_PERCENT, usage)


class OverQuota(PermanentFailure):
    """Over quota; carries the usage so the caller can still send the warning."""

    def __init__(self, text: str, usage: Usage) -> None:
        super().__init__(text)
        self.usage = usage


def record_delivery(maildir: Path, size: int) -> None:
    """Append ``<size> 1`` to ``maildirsize`` after the message was linked into new/.

    Best effort by design: a failed append only makes the journal stale, which the next recount fixes.
    """
    root = quota_root(maildir)
    path = root / "maildirsize"
    if not path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, f"{size} 1\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)

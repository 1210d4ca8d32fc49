"""Where every accepted message ended up: delivered (how often), bounced, still queued, or lost.

Why reading ``X-Fault-Seq`` out of the files and not counting files: a count cannot tell one message
delivered twice from two messages delivered once, nor a bounce from a delivery.  The bounce mailbox
is the sender's (an LDAP user), so a bounce is a file there whose quoted original carries the seq;
a message still in ``queue/mess`` is neither delivered nor lost yet.  ``lost`` is exactly the
issue's definition: accepted (250 after the dot) but found in no Maildir, no bounce and no queue
file once the drain deadline passed.
"""

from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from faults_lib.world import BOUNCE_USER

_SEQ = re.compile(rb"^X-Fault-Seq: (\S+)\r?$", re.M)


def _seqs_in(path: Path, prefix: str) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return [s for s in (m.decode() for m in _SEQ.findall(data)) if s.startswith(prefix + "-")]


def _maildir_files(store: Path) -> Iterable[Path]:
    for sub in ("new", "cur"):
        d = store / "Maildir" / sub
        try:
            names = os.listdir(d)
        except OSError:
            continue
        yield from (d / n for n in names)


def scan_maildirs(mailroot: Path, prefix: str) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """(deliveries per seq in users' Maildirs, bounces per seq in the bounce Maildir) for *prefix*."""
    delivered: collections.Counter[str] = collections.Counter()
    bounced: collections.Counter[str] = collections.Counter()
    for store in mailroot.iterdir():
        target = bounced if store.name == BOUNCE_USER else delivered
        for f in _maildir_files(store):
            seqs = _seqs_in(f, prefix)
            # a bounce quotes the original once; count the file once per distinct seq
            target.update(set(seqs) if target is bounced else seqs[:1])
    return delivered, bounced


def queued_seqs(root: Path, prefix: str) -> set[str]:
    """Seqs of messages still waiting in ROOT's queue: a ``mess`` file with a ``todo`` or ``info``.

    A ``mess`` file without either is not waiting for anything (an injection that never finished,
    or an elimination cut short): the 36-hour cleanup removes it, so it does not count as queued.
    """
    out: set[str] = set()
    q = root / "queue"
    for dirpath, _dirs, files in os.walk(q / "mess"):
        for name in files:
            split = Path(dirpath).name
            if (q / "todo" / name).exists() or (q / "info" / split / name).exists():
                out.update(_seqs_in(Path(dirpath) / name, prefix))
    return out


def stranded_seqs(root: Path, prefix: str) -> set[str]:
    """Seqs in ``mess`` files that have neither ``todo`` nor ``info`` (garbage for the cleanup)."""
    out: set[str] = set()
    for dirpath, _dirs, files in os.walk(root / "queue" / "mess"):
        for name in files:
            out.update(_seqs_in(Path(dirpath) / name, prefix))
    return out - queued_seqs(root, prefix)


def queue_busy(root: Path) -> bool:
    """True while the queue holds work: files in todo/, info/, local/, remote/ or bounce/.

    ``intd/`` and bare ``mess/`` files are left by injections killed midway; nothing will deliver
    them, so they are not waited for.
    """
    for part in ("todo", "info", "local", "remote", "bounce"):
        for _dirpath, _dirs, files in os.walk(root / "queue" / part):
            if files:
                return True
    return False


@dataclass(frozen=True, slots=True)
class Tally:
    """The accounting of one scenario."""

    accepted: int
    delivered: int  # distinct accepted-or-unacked seqs found in a user's Maildir
    bounced: int  # distinct seqs found in a bounce
    queued: int  # accepted seqs still in the queue at the deadline
    lost: int
    stranded: int  # lost ones whose mess file is still there without todo/info
    duplicates: int  # extra copies beyond the first, summed
    unacked: int  # final dot sent, no reply: delivered or not, never lost
    unacked_delivered: int
    lost_seqs: tuple[str, ...]


Remote = Callable[[], "collections.Counter[str]"]


def _delivered(mailroot: Path, prefix: str, remote: Remote | None) -> tuple[
        collections.Counter[str], collections.Counter[str]]:  # fmt: skip
    delivered, bounced = scan_maildirs(mailroot, prefix)
    if remote is not None:
        delivered.update(remote())
    return delivered, bounced


def tally(accepted: Iterable[str], unacked: Iterable[str], mailroot: Path, root: Path, prefix: str,
          remote: Remote | None = None) -> Tally:  # fmt: skip
    """Account for *accepted* and *unacked* seqs of *prefix* from the Maildirs (plus the seqs a
    *remote* sink received) and ROOT's queue."""
    acc, una = set(accepted), set(unacked)
    delivered, bounced = _delivered(mailroot, prefix, remote)
    queued = queued_seqs(root, prefix) & acc
    stranded = stranded_seqs(root, prefix) & acc
    lost = sorted(s for s in acc if s not in delivered and s not in bounced and s not in queued)
    dups = sum(n - 1 for n in delivered.values() if n > 1) + sum(n - 1 for n in bounced.values() if n > 1)
    return Tally(
        accepted=len(acc), delivered=len(acc & set(delivered)), bounced=len(acc & set(bounced)),
        queued=len(queued), lost=len(lost), stranded=len(stranded), duplicates=dups, unacked=len(una),
        unacked_delivered=len(una & set(delivered)), lost_seqs=tuple(lost[:20]))  # fmt: skip


def drain(accepted: Callable[[], set[str]], mailroot: Path, root: Path, prefix: str, deadline: float,
          nudge: Callable[[], None] | None = None, remote: Remote | None = None) -> float:  # fmt: skip
    """Wait until every accepted seq is delivered or bounced and the queue is idle, or *deadline*.

    *nudge* (e.g. SIGALRM to send) is called every 5 s while waiting.  Returns the seconds waited.
    """
    t0 = time.monotonic()
    last_nudge = t0
    while time.monotonic() < deadline:
        delivered, bounced = _delivered(mailroot, prefix, remote)
        if accepted() <= set(delivered) | set(bounced) and not queue_busy(root):
            break
        if nudge is not None and time.monotonic() - last_nudge > 5:
            nudge()
            last_nudge = time.monotonic()
        time.sleep(0.5)
    return time.monotonic() - t0

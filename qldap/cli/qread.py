"""``qmail-qread``: list every preprocessed message with its sender and each recipient's state.

Format (qmail-qread(8)): per ``info`` entry ``D Mon YYYY HH:MM:SS GMT  #N  SIZE  <sender> `` (plus
`` bouncing`` when ``bounce/N`` exists; the date is the ``info`` mtime, i.e. the message's birth;
SIZE is the ``mess`` file's size), then ``\\tlocal\\tADDR`` / ``\\tremote\\tADDR`` per recipient,
prefixed by ``  done`` once delivered or bounced.  Bytes outside 32–126 in the first line and in
addresses print as ``_`` so a hostile address cannot forge lines on an operator's terminal.

Like the C tool it walks ``info/0`` … ``info/22``, and a message whose files vanish or cannot be
read while listing (it was just delivered) gets ``warning: trouble with #N: REASON`` on stdout and
the listing goes on.  Records are read leniently: letters other than ``T``/``D`` are skipped, as
qmail-qread did, rather than stopping the listing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from qldap.cli._run import run
from qldap.control.files import find_root
from qldap.dates import gmt_date
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.queue.layout import SPLIT, QueueLayout
from qldap.records import RecordError, iterate

PROG = "qmail-qread"
_SAFE = bytes(b if 32 <= b <= 126 else ord("_") for b in range(256))


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a channel file."""

    channel: str  # "local" | "remote"
    address: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """What qmail-qread shows of one message."""

    number: int
    birth: float
    size: int
    sender: bytes
    bouncing: bool
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True, slots=True)
class Trouble:
    """A message that could not be read while listing."""

    number: int
    reason: str


def safe(data: bytes) -> str:
    """*data* with every byte outside 32–126 replaced by ``_``."""
    return data.translate(_SAFE).decode("ascii")



def render(msg: QueuedMessage) -> str:
    """The lines of one message, each ending in a newline."""
    head = f"{gmt_date(msg.birth)} GMT  #{msg.number}  {msg.size}  <".encode() + msg.sender + b"> "
    if msg.bouncing:
        head += b" bouncing"
    lines = [safe(head)]
    for r in msg.recipients:
        lines.append(("  done" if r.done else "") + f"\t{r.channel}\t" + safe(r.address))
    return "".join(line + "\n" for line in lines)


def render_trouble(t: Trouble) -> str:
    """``warning: trouble with #N: REASON``."""
    return f"warning: trouble with #{t.number}: {t.reason}\n"


def _numbers(directory: str) -> list[int]:
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _channel(path: str, channel: str) -> list[Recipient]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    out = []
    for rec in iterate(data):
        if rec.code in ("T", "D"):
            out.append(Recipient(channel, rec.value, rec.code == "D"))
    return out


def read_message(layout: QueueLayout, number: int) -> QueuedMessage:
    """The listing record of message *number*.

    Raises:
        OSError: ``mess`` or ``info`` is gone or unreadable, a channel file is unreadable.
        RecordError: a file ends in a truncated record.
    """
    size = os.stat(layout.mess(number)).st_size
    bouncing = os.path.exists(layout.bounce(number))
    with open(layout.info(number), "rb") as fh:
        data = fh.read()
        birth = os.fstat(fh.fileno()).st_mtime
    sender = data.split(b"\0", 1)[0][1:]
    recipients = _channel(layout.local(number), "local") + _channel(layout.remote(number), "remote")
    return QueuedMessage(number, birth, size, sender, bouncing, tuple(recipients))


def scan_queue(layout: QueueLayout) -> Iterator[QueuedMessage | Trouble]:
    """Every message listed in ``info/``, in split-directory then numeric order.

    Raises:
        ConfigError: an ``info`` directory is missing or cannot be listed.
    """
    for split in range(SPLIT):
        directory = f"{layout.dir('info')}/{split}"
        try:
            numbers = _numbers(directory)
        except OSError as exc:
            raise ConfigError(f"unable to opendir {directory}: {exc.strerror or exc}") from None
        for number in numbers:
            if number % SPLIT != split:
                continue
            try:
                yield read_message(layout, number)
            except OSError as exc:
                yield Trouble(number, exc.strerror or str(exc))
            except RecordError as exc:
                yield Trouble(number, str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``qmail-qread [--root DIR]``."""

    def body(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="list the messages in the queue")
        parser.add_argument("--root", help="the qmail root (default: $QLDAP_ROOT or /var/qmail)")
        ns = parser.parse_args(list(args))
        out = sys.stdout
        for item in scan_queue(QueueLayout.of(find_root(ns.root))):
            out.write(render(item) if isinstance(item, QueuedMessage) else render_trouble(item))
        out.flush()
        return ExitCode.OK

    return run(PROG, body, argv)


if __name__ == "__main__":
    sys.exit(main())

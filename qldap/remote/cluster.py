"""Cluster forwarding (qmail-forward's role): relay one recipient's message to its ``mailHost`` over QMQP.

When ``ldapcluster`` is on and a recipient's ``mailHost`` is another cluster member, local delivery
hands the message here instead of storing it (qmail-local(8), QMAILUSER ATTRIBUTES, qmail-qmqpd(8)): the
envelope stays as it is, the line ``Delivered-To: CLUSTERHOST <me> <recipient>`` is put in front, and the
message is submitted with that single recipient to the member's QMQP server (port 628, from ``qmqpcip``).

Why the line: it is the cluster's loop breaker.  Two members that disagree about where a mailbox
lives would pass a message back and forth for ever; the second time a member sees its own line for
the same recipient in the header it gives up with a permanent failure instead of forwarding again.

Texts are qmail-forward's: ``qmail-forward: ok <time> qp <qp>.`` on success; ``Unable to
cluster-forward message: <caller text>.`` with the letter of the QMQP caller text; the helper's own
trouble (controls) is ``Temporary error while executing qmail-forward. (#4.4.4)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from qldap.control.files import ControlDir
from qldap.errors import ConfigError, DeliveryFailure, PermanentFailure, TemporaryFailure
from qldap.queue.codes import READ_ERROR_TEXT
from qldap.records import to_bytes
from qldap.remote.dns import Resolver
from qldap.remote.qmqp import QMQP_PORT, MessageParts, QmqpSettings, qmqp_send
from qldap.reports import Letter, Report

LOOPING = "This message is looping: it already has my Cluster-Delivered-To line. (#5.4.6)"
EXEC_TEMPORARY = "Temporary error while executing qmail-forward. (#4.4.4)"
EXEC_PERMANENT = "Permanent error while executing qmail-forward. (#5.4.4)"
_HEADER_READ = 65536


def clusterhost_line(me: str, recipient: str) -> bytes:
    """``Delivered-To: CLUSTERHOST <me> <recipient>`` + LF, newlines inside turned into ``_``."""
    text = f"Delivered-To: CLUSTERHOST {me} {recipient}".replace("\n", "_")
    return to_bytes(text) + b"\n"


def header_has_line(message_path: Path, line: bytes) -> bool:
    """True when a header line of the message (before the first empty line) equals *line* exactly.

    Raises:
        OSError: the message cannot be read.
    """
    wanted = line.rstrip(b"\n")
    with open(message_path, "rb") as fh:
        while True:
            got = fh.readline(_HEADER_READ)
            if not got or got in (b"\n", b"\r\n"):
                return False
            if got.rstrip(b"\n") == wanted:
                return True


def forward_failure(caller_text: str) -> DeliveryFailure:
    """``Unable to cluster-forward message: <text>.`` with the caller text's letter (D permanent)."""
    text = f"Unable to cluster-forward message: {caller_text[1:]}."
    return PermanentFailure(text) if caller_text.startswith("D") else TemporaryFailure(text)


async def cluster_forward(
    ctl: ControlDir,
    mail_host: str,
    sender: str,
    recipient: str,
    message_path: Path,
    *,
    resolver: Resolver | None = None,
    port: int = QMQP_PORT,
    clock: Callable[[], float] = time.time,
    pid: int | None = None,
) -> str:
    """Forward the message to *mail_host*; the success text ``qmail-forward: ok <time> qp <qp>.``.

    Args:
        ctl: ``me``, ``qmqpcip`` and ``timeoutconnect`` are read from it.
        mail_host: the recipient's ``mailHost`` (its first A record is used).
        resolver: DNS seam for the ``mailHost`` lookup.
        port: the QMQP port of cluster members.
        clock, pid: the time and ``qp`` of the success text (default: now, this process).

    Raises:
        PermanentFailure: the loop line is present, or the member refused the message for good.
        TemporaryFailure: the member refused for now or could not be reached, the message could not
            be read, or the controls could not be read (``#4.4.4``).
    """
    try:
        me = ctl.me()
        settings = QmqpSettings.from_control(ctl, port)
    except ConfigError:
        raise TemporaryFailure(EXEC_TEMPORARY)
    line = clusterhost_line(me, recipient)
    try:
        looping = header_has_line(message_path, line)
    except OSError:
        raise forward_failure(READ_ERROR_TEXT)
    if looping:
        raise PermanentFailure(LOOPING)
    parts = MessageParts((line, Path(message_path)))
    text = await qmqp_send(mail_host, parts, sender, (recipient,), settings=settings, resolver=resolver)
    if text:
        raise forward_failure(text)
    qp = os.getpid() if pid is None else pid
    return f"qmail-forward: ok {int(clock())} qp {qp}."


async def forward_to_mailhost(
    ctl: ControlDir,
    mail_host: str,
    sender: str,
    recipient: str,
    message_path: Path,
    *,
    resolver: Resolver | None = None,
    port: int = QMQP_PORT,
) -> Report:
    """:func:`cluster_forward` as a K/Z/D delivery report (texts newline-terminated); never raises."""
    try:
        text = await cluster_forward(
            ctl, mail_host, sender, recipient, message_path, resolver=resolver, port=port
        )
    except DeliveryFailure as exc:
        return Report.from_failure(exc)
    return Report(Letter.SUCCESS, text + "\n")

"""Retry times, the queue-lifetime rule and per-delivery VERP senders (qmail-send(8), SCHEDULING), as
arithmetic.

Why square roots: qmail spaces attempts quadratically from the message's birth B,
``next = B + (isqrt(t − B) + c)²`` with c = 10 (local) or 20 (remote), so attempt k falls near
``c²·(k−1)²`` seconds after birth however late the previous one ran, and a manager restart needs
nothing but B (the ``info`` file's mtime) to resume the schedule.
"""

from __future__ import annotations

from math import isqrt

from qldap.address import Address
from qldap.send.preprocess import Channel

RETRY_TROUBLE = 123
"""Seconds before the manager looks again at a message whose files it could not read, stat, unlink
or inject (qmail-send's fixed retry for local trouble, not the per-recipient backoff)."""

CHANNEL_SKIP = {Channel.LOCAL: 10, Channel.REMOTE: 20}
DEFAULT_LIFETIME = 604800
VERP_SUFFIX = "-@[]"


def next_retry(birth: int, now: int, channel: Channel) -> int:
    """The time of the next attempt for a pass starting at *now* (isqrt taken as 0 if now < birth)."""
    root = isqrt(now - birth) if now >= birth else 0
    step = root + CHANNEL_SKIP[channel]
    return birth + step * step


def is_last_pass(birth: int, pass_start: int, lifetime: int) -> bool:
    """True when a pass starting at *pass_start* is the message's last (``t > B + lifetime``)."""
    return pass_start > birth + lifetime


def attempt_offsets(channel: Channel, lifetime: int = DEFAULT_LIFETIME) -> tuple[int, ...]:
    """Seconds after birth of every attempt of an always-deferring recipient attempted on time."""
    offsets = []
    now = 0
    while True:
        offsets.append(now)
        if is_last_pass(0, now, lifetime):
            return tuple(offsets)
        now = next_retry(0, now, channel)


def format_offset(seconds: int) -> str:
    """``D-HH:MM:SS`` as in the schedule table of tests/test_send_schedule.py."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def is_verp(sender: str) -> bool:
    """True for a per-recipient VERP sender ``pre@host-@[]``."""
    return sender.endswith(VERP_SUFFIX)


def verp_sender(sender: str, recipient: str) -> str:
    """The envelope sender for one delivery (qmail-send(8), SCHEDULING).

    ``pre@host-@[]`` with recipient ``local@domain`` becomes ``prelocal=domain@host``; any other
    sender is used as is.
    """
    if not is_verp(sender):
        return sender
    base = sender[: -len(VERP_SUFFIX)]
    own, rcpt = Address.parse(base), Address.parse(recipient)
    encoded = f"{rcpt.local}={rcpt.domain}" if rcpt.has_at else recipient
    return f"{own.local}{encoded}@{own.domain}" if own.has_at else f"{own.local}{encoded}"


def unverp(sender: str) -> str:
    """``pre@host-@[]`` reduced to ``pre@host`` (where bounces of VERP mail go); others unchanged."""
    return sender[: -len(VERP_SUFFIX)] if is_verp(sender) else sender

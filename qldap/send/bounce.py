"""Bounce composition (qmail-send(8), BOUNCES): failure paragraphs and the QSBMF bounce message, byte for
byte.

Why a plan rather than finished bytes: the copy of the failed message can be large, so
:func:`plan_bounce` returns the envelope and every byte that precedes the copy, plus how much of
the ``mess`` file to copy and what follows it; the manager streams ``mess`` into the injector, and
:meth:`BouncePlan.render` builds the whole text in memory for small messages and for tests.
Dates are passed in (``qmail_date``), so the text is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

from qldap.address import quote_address, quote_local
from qldap.dates import qmail_date
from qldap.reports import to_bytes
from qldap.send.config import SendConfig
from qldap.send.schedule import unverp

DOUBLE_BOUNCE_SENDER = "#@[]"
STRIPPED_MARKER = b"\n\n--- End of message stripped.\n"

_INTRO_SINGLE = (
    "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\n"
)
_INTRO_DOUBLE = "I tried to deliver a bounce message to this address, but the bounce bounced!\n"
_SEPARATOR_SINGLE = "--- Below this line is a copy of the message.\n\n"
_SEPARATOR_DOUBLE = "--- Below this line is the original bounce.\n\n"



def bounce_paragraph(recipient: str, report_text: str) -> str:
    """One failure paragraph for ``bounce/N`` (qmail-send(8), BOUNCES).

    ``<recipient>:`` (newlines in the address → ``_``), the report (newline added if missing; a
    newline directly after another becomes ``/`` except at the very end), then an empty line.
    *recipient* is the display form (see ``preprocess.display_recipient``).
    """
    text = "<" + recipient.replace("\n", "_") + ">:\n" + report_text
    if report_text and not report_text.endswith("\n"):
        text += "\n"
    chars = list(text)
    for pos in range(len(chars) - 2, 0, -1):
        if chars[pos] == "\n" and chars[pos - 1] == "\n":
            chars[pos] = "/"
    return "".join(chars) + "\n"


@dataclass(frozen=True, slots=True)
class Discard:
    """No bounce is sent: the failed message was itself a double bounce (sender ``#@[]``)."""

    reason: str = "triple bounce"


@dataclass(frozen=True, slots=True)
class BouncePlan:
    """A bounce to inject: envelope, the text before the message copy, and the copy limit."""

    sender: str
    recipient: str
    head: bytes
    limit: int  # bytes of ``mess`` to copy; 0 = all

    def tail(self, message_size: int) -> bytes:
        """What follows the copy: the stripped marker when the message was longer than the limit."""
        return STRIPPED_MARKER if self.limit and message_size > self.limit else b""

    def copy_size(self, message_size: int) -> int:
        """How many bytes of the ``mess`` file go into the bounce."""
        return min(message_size, self.limit) if self.limit else message_size

    def render(self, message: bytes) -> bytes:
        """The whole bounce message for *message* (the ``mess`` file's bytes)."""
        return self.head + message[: self.copy_size(len(message))] + self.tail(len(message))


def plan_bounce(cfg: SendConfig, sender: str, paragraphs: str, now: float) -> BouncePlan | Discard:
    """The bounce for a message from *sender* whose ``bounce/N`` holds *paragraphs* (qmail-send(8), BOUNCES).

    Normal bounce: empty envelope sender, to the original sender (VERP reduced). Double bounce
    (empty sender): from ``#@[]`` to ``doublebounceto@doublebouncehost``. Triple (sender ``#@[]``):
    :class:`Discard`.
    """
    if sender == DOUBLE_BOUNCE_SENDER:
        return Discard()
    double = sender == ""
    original = unverp(sender)
    if double:
        envelope_sender, recipient = DOUBLE_BOUNCE_SENDER, cfg.doublebounce_recipient
    else:
        envelope_sender, recipient = "", original
    lines = [
        f"Date: {qmail_date(now)}\n",
        f"From: {quote_local(cfg.bouncefrom)}@{cfg.bouncehost}\n",
        f"To: {_header_safe(quote_address(recipient))}\n",
        "Subject: failure notice\n",
        "\n",
        f"Hi. This is the qmail-send program at {cfg.bouncehost}.\n",
        _INTRO_DOUBLE if double else _INTRO_SINGLE,
    ]
    if not double and cfg.custombouncetext:
        lines.append(cfg.custombouncetext)
    lines.append("\n")
    lines.append(paragraphs)
    lines.append(_SEPARATOR_DOUBLE if double else _SEPARATOR_SINGLE)
    lines.append(f"Return-Path: <{_header_safe(quote_address(original))}>\n")
    return BouncePlan(envelope_sender, recipient, to_bytes("".join(lines)), cfg.bouncemaxbytes)


def _header_safe(text: str) -> str:
    """*text* with CR, LF and NUL shown as ``?``: an address that came in through a door which does
    not refuse them (QMQP, a local injector) must not add header lines to the bounce."""
    return text.replace("\r", "?").replace("\n", "?").replace("\0", "?")

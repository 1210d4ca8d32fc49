"""The injector's exit codes and the ``D…``/``Z…`` text every caller turns them into (qmail-queue(8), EXIT
STATUS).

Why a separate module: the codes are a contract with *external* queue programs (``QMAILQUEUE``,
qmail-qmqpc, virus scanners) as much as with our own injector, and smtpd, qmail-inject, bounces and
cluster forwarding must all report them with the same byte-exact texts.  11–40 are permanent, all
others temporary; 82 lets the program supply its own text on descriptor 4.
"""

from __future__ import annotations

from enum import IntEnum

from qldap.errors import DeliveryFailure, PermanentFailure, QldapError, TemporaryFailure


class QueueExit(IntEnum):
    """Every documented exit status of ``qmail-queue`` and compatible programs."""

    OK = 0
    ADDRESS_TOO_LONG = 11
    REJECTED_PERMANENTLY = 31
    OUT_OF_MEMORY = 51
    TIMEOUT = 52
    WRITE_ERROR = 53
    READ_ERROR = 54
    CONFIG = 55
    NETWORK = 56
    HOME_DIR = 61
    QUEUE_DIR = 62
    PID_FILE = 63
    MESS_FILE = 64
    INTD_FILE = 65
    TODO_FILE = 66
    REJECTED_TEMPORARILY = 71
    CONNECT_TIMEOUT = 72
    CONNECT_REFUSED = 73
    DIALOGUE_FAILED = 74
    BUG = 81
    CUSTOM = 82
    ENVELOPE_FORMAT = 91
    ADDRESS_TOO_LONG_COMPAT = 115
    EXEC_FAILED = 120


_QQ_TROUBLE = "Zqq trouble creating files in queue (#4.3.0)"

_TEXTS: dict[int, str] = {
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: "Zqq read error (#4.3.0)",
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: _QQ_TROUBLE,
    63: _QQ_TROUBLE,
    64: _QQ_TROUBLE,
    65: _QQ_TROUBLE,
    66: _QQ_TROUBLE,
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
}

CRASHED = "Zqq crashed (#4.3.0)"
READ_ERROR_TEXT = "Zqq read error (#4.3.0)"
PERMANENT_OTHER = "Dqq permanent problem (#5.3.0)"
TEMPORARY_OTHER = "Zqq temporary problem (#4.3.0)"
CUSTOM_MAX = 255


def is_permanent(code: int) -> bool:
    """True for the permanent range 11–40 and 115 (old alias of 11); signals (negative) are temporary."""
    return 11 <= code <= 40 or code == QueueExit.ADDRESS_TOO_LONG_COMPAT


def custom_text(fd4: bytes | str) -> str | None:
    """The usable part of a program's descriptor-4 text, or None when it does not qualify.

    Only the first 255 bytes count and only up to the first line end (a text ends up in an SMTP
    reply line); it must start with ``D`` or ``Z`` and be longer than 2 bytes.
    """
    raw = fd4.encode("utf-8", "surrogateescape") if isinstance(fd4, str) else fd4
    raw = raw[:CUSTOM_MAX]
    for stop in (b"\n", b"\r", b"\0"):
        raw = raw.split(stop, 1)[0]
    if len(raw) <= 2 or raw[:1] not in (b"D", b"Z"):
        return None
    return raw.decode("utf-8", "replace")


def caller_text(code: int, fd4_text: bytes | str = b"") -> str:
    """The caller's report text for a queue program's exit *code* (negative: killed by signal −code).

    ``""`` for 0 (the caller adds ``Zqq read error (#4.3.0)`` itself if its own writing failed);
    82 uses *fd4_text* when it qualifies (see :func:`custom_text`), else falls to the generic texts.
    """
    if code == 0:
        return ""
    if code < 0:
        return CRASHED
    if code == QueueExit.CUSTOM:
        custom = custom_text(fd4_text)
        if custom is not None:
            return custom
    text = _TEXTS.get(code)
    if text is not None:
        return text
    return PERMANENT_OTHER if is_permanent(code) else TEMPORARY_OTHER


def failure_for(text: str) -> DeliveryFailure:
    """The exception for a non-empty caller text: ``D…`` permanent, ``Z…`` temporary, letter dropped."""
    if text.startswith("D"):
        return PermanentFailure(text[1:])
    return TemporaryFailure(text[1:] if text.startswith("Z") else text)


class QueueError(QldapError):
    """Injection failed with queue exit *code*; nothing the injector created is left behind.

    ``detail`` is for logs only (the cause, e.g. the OS error); callers report :attr:`text`.
    """

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        self.text = caller_text(code)
        super().__init__(f"{self.text[1:]}{': ' + detail if detail else ''}")

    @property
    def permanent(self) -> bool:
        """True when the submitter must not retry (11–40)."""
        return is_permanent(self.code)

    def failure(self) -> DeliveryFailure:
        """The :class:`~qldap.errors.DeliveryFailure` carrying this error's caller text."""
        return failure_for(self.text)

"""Delivery reports (K/Z/D), the spawners→manager contract, and the manager's log lines, as pure functions.

Why these live together: a report is born in a spawner (an agent's exit code, ``qmail-remote``'s
NUL-terminated output), is interpreted by the manager (mark, bounce, keep) and ends up in one log
line; keeping the three steps in one module keeps their byte rules (10000-byte cut, the log's
``/`` and ``_`` escaping) consistent.  Texts are ``str`` views of bytes decoded as UTF-8 with
``surrogateescape``, so every byte the network or an agent produced survives the round trip and the
log escaping works on the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qldap.errors import DeliveryFailure

REPORT_LIMIT = 10000  # the manager keeps at most this many bytes of a report (letter included)
DYING_LINE = "I'm not going to try again; this message has been in the queue too long.\n"

LOCAL_TEMPORARY_EXITS = frozenset({111, 71, 74, 75})

LOCAL_CRASHED = "Zqmail-local crashed.\n"
REMOTE_CRASHED = "Zqmail-remote crashed.\n"
REMOTE_NO_OUTPUT = "Zqmail-remote produced no output.\n"
REMOTE_UNRUNNABLE_TEMP = "ZUnable to run qmail-remote.\n"
REMOTE_UNRUNNABLE_PERM = "DUnable to run qmail-remote.\n"
NO_HOST_NAME = "DSorry, address must include host name. (#5.1.3)\n"


def to_bytes(text: str) -> bytes:
    """The original bytes behind a report or address string."""
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    """A lossless string view of arbitrary bytes (the inverse of :func:`to_bytes`)."""
    return data.decode("utf-8", "surrogateescape")


class Letter(Enum):
    """The three report letters shared by every spawner."""

    SUCCESS = "K"
    TEMPORARY = "Z"
    PERMANENT = "D"


class Action(Enum):
    """What the manager does with a recipient after a report (qmail-send(8), SCHEDULING)."""

    MARK_DONE = "mark"  # K
    BOUNCE = "bounce"  # D: paragraph to bounce/N, then mark
    KEEP = "keep"  # Z: retry at the next pass


_ACTIONS = {Letter.SUCCESS: Action.MARK_DONE, Letter.PERMANENT: Action.BOUNCE, Letter.TEMPORARY: Action.KEEP}


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery result: a letter and its free text (usually newline-terminated)."""

    letter: Letter
    text: str

    @property
    def action(self) -> Action:
        """Mark, bounce or keep."""
        return _ACTIONS[self.letter]

    def encode(self) -> bytes:
        """The wire form, letter then text, without terminator."""
        return to_bytes(self.letter.value + self.text)

    @classmethod
    def parse(cls, record: str) -> Report | None:
        """A report from ``LETTER + text``; None when the record is *mangled* (empty or unknown letter)."""
        if not record:
            return None
        try:
            letter = Letter(record[0])
        except ValueError:
            return None
        return cls(letter, record[1:])

    @classmethod
    def from_failure(cls, failure: DeliveryFailure) -> Report:
        """A Z or D report carrying a failure's exact text, newline-terminated."""
        letter = Letter.TEMPORARY if failure.temporary else Letter.PERMANENT
        text = failure.text if failure.text.endswith("\n") else failure.text + "\n"
        return cls(letter, text)


def _fixed(record: str) -> Report:
    report = Report.parse(record)
    assert report is not None  # module constants are well-formed
    return report


def truncate(report: Report) -> Report:
    """Cut a report so that letter + text fit in :data:`REPORT_LIMIT` bytes (manager rule, qmail-send(8),
    SCHEDULING)."""
    raw = to_bytes(report.text)
    if len(raw) + 1 <= REPORT_LIMIT:
        return report
    return Report(report.letter, from_bytes(raw[: REPORT_LIMIT - 1]))


def when_dying(report: Report, last_pass: bool) -> Report:
    """On the last pass (qmail-send(8), SCHEDULING) a ``Z`` becomes a ``D`` with the "too long" line
    appended."""
    if not last_pass or report.letter is not Letter.TEMPORARY:
        return report
    text = report.text if report.text == "" or report.text.endswith("\n") else report.text + "\n"
    return Report(Letter.PERMANENT, text + DYING_LINE)


# -- spawner side ----------------------------------------------------------------------------------


def local_report(exit_code: int | None, output: str) -> Report:
    """The local spawner's report from the agent's exit status and output (qmail-local(8), RESULTS).

    *exit_code* None means the agent was killed by a signal.
    """
    if exit_code is None:
        return _fixed(LOCAL_CRASHED)
    if exit_code == 0:
        return Report(Letter.SUCCESS, output)
    if exit_code in LOCAL_TEMPORARY_EXITS:
        return Report(Letter.TEMPORARY, output)
    return Report(Letter.PERMANENT, output)


_RCPT_RANK = {"s": 0, "h": -1}
_MSG_RANK = {"K": 1, "Z": 0, "D": -1}
_RANK_LETTER = {1: Letter.SUCCESS, 0: Letter.TEMPORARY, -1: Letter.PERMANENT}


def fold_remote_output(output: bytes) -> Report:
    """Fold ``qmail-remote``'s output for one recipient into one report (qmail-send(8), REMOTE DELIVERY).

    The output is NUL-terminated records: the recipient's ``r``/``h``/``s`` record, then the
    message's ``K``/``Z``/``D`` record (or only the message record when the dialogue ended early).
    ``h`` → ``D``, ``s`` → ``Z``, ``r`` → the message letter; the text is the recipient text followed
    by the message text when the message result is no better than the recipient's.
    """
    records = output.split(b"\0")
    if len(records) < 2:  # not a single complete record
        return _fixed(REMOTE_NO_OUTPUT)
    records = records[:-1]
    message_rank = -1  # no message record at all counts as permanent, as in qmail-rspawn
    for record in records:
        if record[:1] in (b"K", b"Z", b"D"):
            message_rank = _MSG_RANK[record[:1].decode()]
            break
    first = records[0]
    rank = _RCPT_RANK.get(first[:1].decode("latin-1"), message_rank)
    text = first[1:]
    if message_rank <= rank and len(records) > 1 and records[1][:1] in (b"K", b"Z", b"D"):
        text += records[1][1:]
    return Report(_RANK_LETTER[rank], from_bytes(text))


def remote_report(exit_code: int | None, output: bytes) -> Report:
    """The remote spawner's report from ``qmail-remote``'s exit status and output (qmail-send(8), SCHEDULING).

    *exit_code* None means it was killed by a signal.
    """
    if exit_code is None:
        return _fixed(REMOTE_CRASHED)
    if exit_code == 111:
        return _fixed(REMOTE_UNRUNNABLE_TEMP)
    if exit_code != 0:
        return _fixed(REMOTE_UNRUNNABLE_PERM)
    return fold_remote_output(output)


def no_host_name_report() -> Report:
    """Report for a remote recipient without ``@``."""
    return _fixed(NO_HOST_NAME)


# -- manager log lines (qmail-send(8), LOG) ------------------------------------------------------


def log_safe(text: str) -> str:
    """The manager's free-text escaping: newline → ``/``; bytes < 33, > 126 and ``%`` → ``_``."""
    out = []
    for byte in to_bytes(text):
        if byte == 10:
            out.append("/")
        elif byte < 33 or byte > 126 or byte == 37:
            out.append("_")
        else:
            out.append(chr(byte))
    return "".join(out)


def status_line(local: int, local_max: int, remote: int, remote_max: int, exitasap: bool = False) -> str:
    """``status: local L/CL remote R/CR`` [`` exitasap``]."""
    tail = " exitasap" if exitasap else ""
    return f"status: local {local}/{local_max} remote {remote}/{remote_max}{tail}"


def new_msg_line(msg: int) -> str:
    """``new msg N``."""
    return f"new msg {msg}"


def info_msg_line(msg: int, size: int, sender: str, qp: int, uid: int) -> str:
    """``info msg N: bytes B from <S> qp P uid U``."""
    return f"info msg {msg}: bytes {size} from <{log_safe(sender)}> qp {qp} uid {uid}"


def starting_delivery_line(delivery: int, msg: int, channel: str, address: str) -> str:
    """``starting delivery D: msg N to local ADDR`` (*channel* is ``local`` or ``remote``)."""
    return f"starting delivery {delivery}: msg {msg} to {channel} {log_safe(address)}"


_OUTCOME = {Letter.SUCCESS: "success", Letter.TEMPORARY: "deferral", Letter.PERMANENT: "failure"}


def delivery_line(delivery: int, report: Report | None) -> str:
    """``delivery D: success|deferral|failure: TEXT``, or the *mangled* line for None."""
    if report is None:
        return f"delivery {delivery}: report mangled, will defer"
    return f"delivery {delivery}: {_OUTCOME[report.letter]}: {log_safe(report.text)}"


def bounce_msg_line(msg: int, qp: int) -> str:
    """``bounce msg N qp Q``."""
    return f"bounce msg {msg} qp {qp}"


def triple_bounce_line(msg: int) -> str:
    """``triple bounce: discarding bounce/N``."""
    return f"triple bounce: discarding bounce/{msg}"


def end_msg_line(msg: int) -> str:
    """``end msg N``."""
    return f"end msg {msg}"


EXITING_LINE = "status: exiting"
LOST_CONNECTION_ALERT = "alert: oh no! lost {} connection! dying..."
BOUNCE_APPEND_ALERT = "alert: unable to append to bounce message; HELP! sleeping..."


def cannot_start_line(reason: str) -> str:
    """``alert: cannot start: REASON``."""
    return f"alert: cannot start: {reason}"


def marking_warning(path: str) -> str:
    """``warning: trouble marking FILE; message will be delivered twice!``."""
    return f"warning: trouble marking {path}; message will be delivered twice!"


def utime_warning(path: str) -> str:
    """``warning: unable to utime FILE; message will be retried too soon``."""
    return f"warning: unable to utime {path}; message will be retried too soon"


def clean_warning(path: str) -> str:
    """``warning: qmail-clean unable to clean up FILE``."""
    return f"warning: qmail-clean unable to clean up {path}"

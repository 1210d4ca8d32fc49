"""Exit code → caller text (qmail-queue(8), EXIT STATUS, qmail-smtpd(8), DATA): the whole table, 82 and
signals."""

from __future__ import annotations

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.queue.codes import QueueError, QueueExit, caller_text, custom_text, failure_for, is_permanent

TABLE = {
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
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
    # anything else: 11–40 permanent, the rest temporary
    12: "Dqq permanent problem (#5.3.0)",
    40: "Dqq permanent problem (#5.3.0)",
    41: "Zqq temporary problem (#4.3.0)",
    10: "Zqq temporary problem (#4.3.0)",
    1: "Zqq temporary problem (#4.3.0)",
    100: "Zqq temporary problem (#4.3.0)",
    111: "Zqq temporary problem (#4.3.0)",
    255: "Zqq temporary problem (#4.3.0)",
}


@pytest.mark.parametrize(("code", "text"), sorted(TABLE.items()))
def test_table(code: int, text: str) -> None:
    assert caller_text(code) == text
    assert is_permanent(code) == text.startswith("D")


def test_success_and_signals() -> None:
    assert caller_text(0) == ""
    assert caller_text(-9) == "Zqq crashed (#4.3.0)"
    assert caller_text(-15, b"Dignored") == "Zqq crashed (#4.3.0)"


def test_every_enum_member_has_its_documented_text() -> None:
    for member in QueueExit:
        if member is not QueueExit.OK and member is not QueueExit.CUSTOM:
            assert caller_text(member) == TABLE[int(member)]


@pytest.mark.parametrize(
    ("fd4", "text"),
    [
        (b"Dvirus found (#5.7.1)", "Dvirus found (#5.7.1)"),
        (b"Zscanner busy (#4.3.0)\n", "Zscanner busy (#4.3.0)"),
        (b"D" + b"x" * 300, "D" + "x" * 254),  # the first 255 bytes only
        (b"Dx", "Zqq temporary problem (#4.3.0)"),  # not over 2 bytes
        (b"virus found", "Zqq temporary problem (#4.3.0)"),  # must start with D or Z
        (b"", "Zqq temporary problem (#4.3.0)"),
    ],
)
def test_custom_82(fd4: bytes, text: str) -> None:
    assert caller_text(82, fd4) == text


def test_custom_text_ignored_for_other_codes() -> None:
    assert caller_text(31, b"Dvirus found (#5.7.1)") == "Dmail server permanently rejected message (#5.3.0)"
    assert custom_text("Zok then") == "Zok then"


def test_failure_for_drops_the_letter() -> None:
    perm = failure_for("Dvirus found (#5.7.1)")
    assert isinstance(perm, PermanentFailure)
    assert perm.text == "virus found (#5.7.1)" and perm.status == "5.7.1"
    temp = failure_for("Zqq read error (#4.3.0)")
    assert isinstance(temp, TemporaryFailure) and temp.text == "qq read error (#4.3.0)"


def test_queue_error() -> None:
    err = QueueError(QueueExit.ADDRESS_TOO_LONG, "address of 1003 bytes")
    assert err.code == 11 and err.permanent
    assert err.text == "Denvelope address too long for qq (#5.1.3)"
    assert isinstance(err.failure(), PermanentFailure)
    assert "1003" in str(err)
    assert not QueueError(53).permanent

"""K/Z/D reports and manager log lines (qmail-send(8), SCHEDULING and REMOTE DELIVERY and LOG; qmail-local(8),
RESULTS)."""

from __future__ import annotations

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.reports import (
    Action,
    Letter,
    Report,
    bounce_msg_line,
    delivery_line,
    end_msg_line,
    fold_remote_output,
    info_msg_line,
    local_report,
    log_safe,
    new_msg_line,
    no_host_name_report,
    remote_report,
    starting_delivery_line,
    status_line,
    triple_bounce_line,
    truncate,
    when_dying,
)


@pytest.mark.parametrize(
    ("code", "letter"),
    [
        (0, Letter.SUCCESS),
        (111, Letter.TEMPORARY),
        (71, Letter.TEMPORARY),
        (74, Letter.TEMPORARY),
        (75, Letter.TEMPORARY),
        (100, Letter.PERMANENT),
        (65, Letter.PERMANENT),
        (1, Letter.PERMANENT),
    ],
)
def test_local_exit_codes(code: int, letter: Letter) -> None:
    assert local_report(code, "agent says\n") == Report(letter, "agent says\n")


def test_local_agent_killed() -> None:
    assert local_report(None, "partial") == Report(Letter.TEMPORARY, "qmail-local crashed.\n")


def test_remote_exit_statuses() -> None:
    assert remote_report(None, b"") == Report(Letter.TEMPORARY, "qmail-remote crashed.\n")
    assert remote_report(111, b"") == Report(Letter.TEMPORARY, "Unable to run qmail-remote.\n")
    assert remote_report(2, b"") == Report(Letter.PERMANENT, "Unable to run qmail-remote.\n")
    assert remote_report(0, b"") == Report(Letter.TEMPORARY, "qmail-remote produced no output.\n")
    assert remote_report(0, b"K1.2.3.4 accepted message.\n\0") == Report(
        Letter.SUCCESS, "1.2.3.4 accepted message.\n"
    )


def test_remote_folding_rules() -> None:
    # s with a D message: Z, both texts
    assert fold_remote_output(b"sbusy\n\0Dgive up\n\0") == Report(Letter.TEMPORARY, "busy\ngive up\n")
    # h with a Z message (a later recipient deferred): D, only the recipient text
    assert fold_remote_output(b"hno\n\0Zlater\n\0") == Report(Letter.PERMANENT, "no\n")
    # r with a Z message: Z with the message text
    assert fold_remote_output(b"r\0Zdied\n\0") == Report(Letter.TEMPORARY, "died\n")
    # only a message record (early failure)
    assert fold_remote_output(b"Dgreeting failed\n\0") == Report(Letter.PERMANENT, "greeting failed\n")
    # incomplete record: no output
    assert fold_remote_output(b"Kpartial") == Report(Letter.TEMPORARY, "qmail-remote produced no output.\n")


def test_no_host_name() -> None:
    assert no_host_name_report() == Report(
        Letter.PERMANENT, "Sorry, address must include host name. (#5.1.3)\n"
    )


def test_actions_and_parsing() -> None:
    assert Report.parse("Kok") == Report(Letter.SUCCESS, "ok")
    assert Report.parse("Kok").action is Action.MARK_DONE  # type: ignore[union-attr]
    assert Report.parse("Dno").action is Action.BOUNCE  # type: ignore[union-attr]
    assert Report.parse("Zlater").action is Action.KEEP  # type: ignore[union-attr]
    assert Report.parse("Xjunk") is None
    assert Report.parse("") is None
    assert delivery_line(9, None) == "delivery 9: report mangled, will defer"


def test_from_failure_keeps_the_exact_text() -> None:
    assert Report.from_failure(TemporaryFailure("a (#4.4.1)")) == Report(Letter.TEMPORARY, "a (#4.4.1)\n")
    assert Report.from_failure(PermanentFailure("b\n")) == Report(Letter.PERMANENT, "b\n")


def test_truncation_at_10000_bytes() -> None:
    long = Report(Letter.PERMANENT, "é" * 6000)  # 12000 bytes
    cut = truncate(long)
    assert len(cut.encode()) == 10000
    assert cut.encode() == long.encode()[:10000]
    short = Report(Letter.PERMANENT, "x" * 9999)
    assert truncate(short) is short


def test_dying_adds_the_line_once() -> None:
    z = Report(Letter.TEMPORARY, "busy")
    dead = when_dying(z, last_pass=True)
    assert dead == Report(
        Letter.PERMANENT, "busy\nI'm not going to try again; this message has been in the queue too long.\n"
    )
    d = Report(Letter.PERMANENT, "no\n")
    assert when_dying(d, last_pass=True) is d


def test_log_safe_escaping() -> None:
    assert log_safe("a b\nc%d\te\x7f\0") == "a_b/c_d_e__"
    assert log_safe("ü") == "__"  # every byte of a multi-byte character
    raw = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert log_safe(raw) == "__"


def test_log_lines() -> None:
    assert status_line(1, 10, 2, 20) == "status: local 1/10 remote 2/20"
    assert status_line(0, 0, 0, 0, exitasap=True) == "status: local 0/0 remote 0/0 exitasap"
    assert new_msg_line(123) == "new msg 123"
    assert info_msg_line(123, 456, "a b@x", 77, 1000) == "info msg 123: bytes 456 from <a_b@x> qp 77 uid 1000"
    assert (
        starting_delivery_line(1, 123, "remote", "joe@x.net")
        == "starting delivery 1: msg 123 to remote joe@x.net"
    )
    report = Report(Letter.SUCCESS, "209.85.127.177 accepted message.\nRemote host said: 250 ok\n")
    assert delivery_line(2392, report) == (
        "delivery 2392: success: 209.85.127.177_accepted_message./Remote_host_said:_250_ok/"
    )
    assert delivery_line(5, Report(Letter.TEMPORARY, "x")) == "delivery 5: deferral: x"
    assert delivery_line(6, Report(Letter.PERMANENT, "y")) == "delivery 6: failure: y"
    assert bounce_msg_line(123, 99) == "bounce msg 123 qp 99"
    assert triple_bounce_line(123) == "triple bounce: discarding bounce/123"
    assert end_msg_line(123) == "end msg 123"

"""`qldap stats` on a sample manager log in the line shapes of qmail-send(8), LOG."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from qldap.cli.stats import render, stats_main, strip_stamp, summarize

SAMPLE = """\
@400000006553f0a01d0a4b3c status: local 0/10 remote 0/20
@400000006553f0a01d0a4b3d new msg 101
@400000006553f0a01d0a4b3e info msg 101: bytes 1200 from <joe@example.org> qp 4242 uid 0
@400000006553f0a01d0a4b3f starting delivery 1: msg 101 to local bob@example.org
@400000006553f0a01d0a4b40 starting delivery 2: msg 101 to remote x@far.example
@400000006553f0a01d0a4b41 delivery 1: success: did_1+0+0/
@400000006553f0a01d0a4b42 delivery 2: deferral: Connected_to_192.0.2.1_but_greeting_failed./
2023-11-14T22:13:25.000001Z new msg 102
2023-11-14T22:13:25.000002Z info msg 102: bytes 300 from <> qp 4243 uid 0
2023-11-14T22:13:25.000003Z starting delivery 3: msg 102 to remote y@far.example
2023-11-14T22:13:25.000004Z delivery 3: deferral: Connected_to_192.0.2.1_but_greeting_failed./
qldap send: starting delivery 4: msg 102 to remote z@gone.example
qldap send: delivery 4: failure: Sorry,_I_couldn't_find_any_host_named_gone.example._(#5.1.2)/
qldap send: bounce msg 102 qp 4244
qldap send: end msg 102
status: exiting
status: local 0/10 remote 0/20
starting delivery 1: msg 101 to remote x@far.example
delivery 1: deferral: Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/
delivery 9: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/
triple bounce: discarding bounce/77
qmail-smtpd 17.1: message queued: 1700000000 qp 4242 size 1200 bytes
"""


def test_summary_counts() -> None:
    s = summarize(SAMPLE.splitlines())
    assert (s.messages, s.bytes, s.completed, s.bounces, s.triple_bounces) == (2, 1500, 1, 1, 1)
    assert s.started == {"local": 1, "remote": 4}
    assert s.count("success") == 1 and s.count("success", "local") == 1
    assert s.count("deferral") == 3 and s.count("deferral", "remote") == 3
    assert s.count("failure", "remote") == 1
    assert s.count("failure", "unknown") == 1  # delivery 9 started before the log began
    assert s.reasons["deferral"].most_common(1) == [("Connected_to_192.0.2.1_but_greeting_failed./", 2)]
    assert s.unparsed == 6  # three status lines, two new msg lines, the smtpd line


def test_rendered_report() -> None:
    assert render(summarize(SAMPLE.splitlines()), top=5) == """\
Basic statistics
messages: 2
bytes: 1500
average message size: 750 bytes
completed messages: 1
bounces: 1 (triple bounces discarded: 1)
delivery attempts started: 5 (local 1, remote 4)
delivery results: 6
  success: 1 (local 1, remote 0)
  deferral: 3 (local 0, remote 3)
  failure: 2 (local 0, remote 1, unknown 1)

Top 5 deferral reasons
  2  Connected_to_192.0.2.1_but_greeting_failed./
  1  Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/

Top 5 failure reasons
  1  Sorry,_I_couldn't_find_any_host_named_gone.example._(#5.1.2)/
  1  Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/
"""


def test_top_limits_the_reason_lists() -> None:
    text = render(summarize(SAMPLE.splitlines()), top=1)
    assert "Top 1 failure reasons\n  1  Sorry,_I_couldn't_find" in text
    assert "no_mailbox" not in text


def test_empty_log() -> None:
    text = render(summarize([]))
    assert "messages: 0\n" in text and "average message size: 0 bytes" in text
    assert text.endswith("Top 10 failure reasons\n  (none)\n")


@pytest.mark.parametrize("stamp", ["@400000006553f0a01d0a4b3c ", "2023-11-14T22:13:20.5Z ",
                                   "2023-11-14 22:13:20 ", "2023-11-14T22:13:20+01:00 "])
def test_strip_stamp(stamp: str) -> None:
    assert strip_stamp(stamp + "end msg 5") == "end msg 5"


def test_the_same_delivery_number_after_a_restart_is_a_new_delivery() -> None:
    s = summarize(["starting delivery 1: msg 5 to local a@b", "status: exiting",
                   "starting delivery 1: msg 6 to remote c@d", "delivery 1: success: ok/"])
    assert s.count("success", "remote") == 1 and s.count("success", "local") == 0


def test_command_reads_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "current"
    log.write_bytes(SAMPLE.encode() + b"delivery 12: failure: bad_\xff_byte/\n")
    assert stats_main(["-n", "3", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Basic statistics\nmessages: 2\n")
    assert "failure: 3 (local 0, remote 1, unknown 2)" in out


def test_command_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class Stdin:
        buffer = io.BytesIO(SAMPLE.encode())

    monkeypatch.setattr("sys.stdin", Stdin)
    assert stats_main([]) == 0
    assert "delivery results: 6\n" in capsys.readouterr().out


def test_unreadable_file_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stats_main([str(tmp_path / "missing")]) == 111
    assert capsys.readouterr().err.startswith("qldap stats: fatal: unable to read ")

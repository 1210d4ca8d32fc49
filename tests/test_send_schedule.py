"""Retry schedule, lifetime rule and VERP (qmail-send(8), SCHEDULING) at the pure level."""

from __future__ import annotations

import pytest

from qldap.reports import Letter, Report, delivery_line, when_dying
from qldap.send.preprocess import Channel
from qldap.send.schedule import (
    attempt_offsets,
    format_offset,
    is_last_pass,
    next_retry,
    unverp,
    verp_sender,
)

# The remote retry schedule of qmail-send(8), SCHEDULING, attempts 1–40.
SPEC_REMOTE_TABLE = """
1 0-00:00:00 11 0-11:06:40 21 1-20:26:40 31 4-04:00:00
2 0-00:06:40 12 0-13:26:40 22 2-01:00:00 32 4-10:46:40
3 0-00:26:40 13 0-16:00:00 23 2-05:46:40 33 4-17:46:40
4 0-01:00:00 14 0-18:46:40 24 2-10:46:40 34 5-01:00:00
5 0-01:46:40 15 0-21:46:40 25 2-16:00:00 35 5-08:26:40
6 0-02:46:40 16 1-01:00:00 26 2-21:26:40 36 5-16:06:40
7 0-04:00:00 17 1-04:26:40 27 3-03:06:40 37 6-00:00:00
8 0-05:26:40 18 1-08:06:40 28 3-09:00:00 38 6-08:06:40
9 0-07:06:40 19 1-12:00:00 29 3-15:06:40 39 6-16:26:40
10 0-09:00:00 20 1-16:06:40 30 3-21:26:40 40 7-01:00:00
"""


def spec_table() -> dict[int, str]:
    words = SPEC_REMOTE_TABLE.split()
    return {int(words[i]): words[i + 1] for i in range(0, len(words), 2)}


def test_remote_schedule_reproduces_the_spec_table() -> None:
    offsets = attempt_offsets(Channel.REMOTE)
    table = spec_table()
    assert len(offsets) == 40 == len(table)
    assert {k + 1: format_offset(off) for k, off in enumerate(offsets)} == table


def test_local_gets_79_attempts() -> None:
    offsets = attempt_offsets(Channel.LOCAL)
    assert len(offsets) == 79
    assert offsets[77] == 592900  # the 78th
    assert offsets[78] == 608400  # the last, after the lifetime


def test_check_22_first_retries() -> None:
    assert attempt_offsets(Channel.REMOTE)[:4] == (0, 400, 1600, 3600)
    assert attempt_offsets(Channel.LOCAL)[:4] == (0, 100, 400, 900)


@pytest.mark.parametrize(
    ("channel", "elapsed", "expected"),
    [
        (Channel.REMOTE, 0, 400),
        (Channel.REMOTE, 399, 39**2),  # isqrt(399) = 19
        (Channel.LOCAL, 0, 100),
        (Channel.LOCAL, 100, 400),
        (Channel.LOCAL, 10**6, 1010**2),
    ],
)
def test_next_retry_values(channel: Channel, elapsed: int, expected: int) -> None:
    birth = 1_700_000_000
    assert next_retry(birth, birth + elapsed, channel) == birth + expected


def test_late_attempts_push_later_ones_back() -> None:
    birth = 0
    on_time = next_retry(birth, 400, Channel.REMOTE)
    late = next_retry(birth, 500, Channel.REMOTE)  # isqrt(500) = 22
    assert on_time == 1600
    assert late == (22 + 20) ** 2 == 1764


def test_clock_before_birth_counts_as_zero() -> None:
    assert next_retry(5000, 4000, Channel.LOCAL) == 5100


def test_last_pass_rule() -> None:
    assert not is_last_pass(0, 604800, 604800)
    assert is_last_pass(0, 604801, 604800)


def test_check_23_lifetime_1000_turns_the_1600s_deferral_into_a_failure() -> None:
    offsets = attempt_offsets(Channel.REMOTE, lifetime=1000)
    assert offsets == (0, 400, 1600)
    deferral = Report(Letter.TEMPORARY, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n")
    assert when_dying(deferral, is_last_pass(0, 400, 1000)) == deferral
    final = when_dying(deferral, is_last_pass(0, 1600, 1000))
    assert final.letter is Letter.PERMANENT
    line = delivery_line(3, final)
    assert line.startswith("delivery 3: failure: Sorry,_I_wasn't_able")
    assert line.endswith("too_long./")


def test_check_28_verp() -> None:
    assert verp_sender("owner-@list.example-@[]", "joe@x.net") == "owner-joe=x.net@list.example"
    assert unverp("owner-@list.example-@[]") == "owner-@list.example"
    assert verp_sender("plain@list.example", "joe@x.net") == "plain@list.example"
    assert unverp("plain@list.example") == "plain@list.example"
    assert verp_sender("", "joe@x.net") == ""

"""POP3 framing: lines, verbs, arguments, limits; never an exception on arbitrary bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qldap.pop3.reader import MAX_LINE, Command, CommandReader, TooLong, parse_line


def test_verb_is_case_insensitive_and_argument_follows_the_space_run() -> None:
    events = CommandReader().feed(b"UsEr   joe smith \r\n")
    assert len(events) == 1
    cmd = events[0]
    assert isinstance(cmd, Command)
    assert cmd.verb == "user"
    assert cmd.arg == b"joe smith "


def test_line_ends_at_lf_and_only_one_cr_is_removed() -> None:
    events = CommandReader().feed(b"pass a\r\r\nnoop\n")
    assert [(e.verb, e.arg) for e in events if isinstance(e, Command)] == [("pass", b"a\r"), ("noop", b"")]


def test_partial_lines_wait_for_their_lf() -> None:
    reader = CommandReader()
    assert reader.feed(b"ST") == []
    assert reader.feed(b"AT\r") == []
    events = reader.feed(b"\nLIS")
    assert [e.verb for e in events if isinstance(e, Command)] == ["stat"]
    assert reader.take_pending() == b"LIS"


def test_nul_ends_the_line_like_a_c_string() -> None:
    cmd = parse_line(b"pass sec\0ret")
    assert (cmd.verb, cmd.arg) == ("pass", b"sec")


def test_tab_is_not_a_separator() -> None:
    cmd = parse_line(b"user\tjoe")
    assert (cmd.verb, cmd.arg) == ("user\tjoe", b"")


def test_overlong_line_is_reported_once_and_skipped_to_its_end() -> None:
    reader = CommandReader()
    events = reader.feed(b"x" * (MAX_LINE + 10))
    assert events == [TooLong()]
    events = reader.feed(b"y" * 5000 + b"\r\nnoop\r\n")
    assert len(events) == 1
    assert isinstance(events[0], Command) and events[0].verb == "noop"


def test_line_just_under_the_limit_is_accepted_and_just_over_is_not() -> None:
    ok = b"pass " + b"a" * (MAX_LINE - 7) + b"\r\n"  # exactly MAX_LINE bytes with CRLF
    assert len(ok) == MAX_LINE
    events = CommandReader().feed(ok)
    assert isinstance(events[0], Command) and len(events[0].arg) == MAX_LINE - 7
    events = CommandReader().feed(b"a" + ok)
    assert events == [TooLong()]


def test_command_repr_hides_the_argument() -> None:
    assert "secret" not in repr(parse_line(b"PASS secret"))


@given(st.binary(max_size=3000))
def test_reader_never_raises_and_chunking_does_not_matter(data: bytes) -> None:
    whole = CommandReader().feed(data)
    split = CommandReader()
    pieces = []
    for i in range(0, len(data), 7):
        pieces += split.feed(data[i : i + 7])
    assert pieces == whole
    for event in whole:
        assert isinstance(event, TooLong | Command)

"""Envelope formats: injector fd-1 input (codes 91/11/54 in stream order), todo, info, channel files."""

from __future__ import annotations

import pytest

from qldap.queue.codes import QueueError
from qldap.queue.envelope import (
    ChannelEntry,
    Envelope,
    InputReader,
    TodoEntry,
    UnknownRecord,
    bigbrother_copies,
    check_address,
    format_channel,
    format_info,
    format_input,
    format_todo,
    parse_channel,
    parse_info,
    parse_todo,
    read_input,
)
from qldap.records import RecordError


def reader_over(data: bytes, step: int) -> Envelope:
    chunks = [data[i : i + step] for i in range(0, len(data), step)]

    def read(_n: int) -> bytes:
        return chunks.pop(0) if chunks else b""

    return read_input(read)


def code_of(data: bytes, step: int = 4096) -> int:
    with pytest.raises(QueueError) as info:
        reader_over(data, step)
    return info.value.code


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_read_input_in_any_chunking(step: int) -> None:
    env = reader_over(b"Fa@x\0Tb@y\0Tc@z\0\0trailing junk", step)
    assert env == Envelope("a@x", ("b@y", "c@z"))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"Tb@y\0\0", 91),  # must start with F
        (b"\0", 91),
        (b"Fa@x\0Xb@y\0\0", 91),  # each record must start with T
        (b"Fa@x\0X", 91),  # the letter is checked before EOF matters
        (b"Fa@x\0T" + b"r" * 1003 + b"\0\0", 11),
        (b"F" + b"s" * 1003 + b"\0\0", 11),
        (b"Fa@x\0X" + b"r" * 2000, 91),  # wrong letter beats too long, as qmail-queue reads it
        (b"", 54),
        (b"Fa@x", 54),
        (b"Fa@x\0", 54),
        (b"Fa@x\0Tb@y\0", 54),
    ],
)
@pytest.mark.parametrize("step", [1, 4096])
def test_input_errors(data: bytes, code: int, step: int) -> None:
    assert code_of(data, step) == code


def test_1002_byte_address_accepted() -> None:
    rcpt = "r" * 1000 + "@y"
    assert reader_over(format_input(Envelope("a@x", (rcpt,))), 7).recipients == (rcpt,)
    assert check_address(rcpt) == rcpt.encode()


def test_read_error_is_54() -> None:
    def read(_n: int) -> bytes:
        raise OSError(5, "I/O error")

    with pytest.raises(QueueError) as info:
        read_input(read)
    assert info.value.code == 54


def test_reader_ignores_data_after_the_end() -> None:
    r = InputReader()
    r.feed(b"F\0\0")
    r.feed(b"Xgarbage")
    assert r.done and r.finish() == Envelope("", ())


def test_format_input() -> None:
    assert format_input(Envelope("a@x", ("b@y",))) == b"Fa@x\0Tb@y\0\0"
    assert format_input(Envelope("", ())) == b"F\0\0"


def test_todo_round_trip_and_exact_bytes() -> None:
    entry = TodoEntry(1001, 4242, Envelope("a@x", ("b@y", "c@z")))
    data = format_todo(entry)
    assert data == b"u1001\0p4242\0Fa@x\0Tb@y\0Tc@z\0"  # no final extra NUL
    assert parse_todo(data) == entry
    assert parse_todo(format_todo(entry, ("bb@admin",))).envelope.recipients == ("b@y", "c@z", "bb@admin")


def test_todo_errors() -> None:
    with pytest.raises(UnknownRecord) as info:
        parse_todo(b"u1\0p2\0Fa@x\0Qweird\0")
    assert info.value.letter == "Q"
    with pytest.raises(RecordError):
        parse_todo(b"u1\0p2\0")  # no sender
    with pytest.raises(RecordError):
        parse_todo(b"uX\0Fa@x\0")
    with pytest.raises(RecordError):
        parse_todo(b"u1\0Fa@x\0Tb@")  # truncated


def test_info() -> None:
    assert format_info("a@x") == b"Fa@x\0"
    assert parse_info(b"Fa@x\0") == "a@x"
    assert parse_info(b"F\0") == ""
    with pytest.raises(UnknownRecord):
        parse_info(b"Ta@x\0")
    with pytest.raises(RecordError):
        parse_info(b"")


def test_channel_file_with_marks_in_place() -> None:
    data = bytearray(format_channel(["b@y", "c@z"]))
    assert bytes(data) == b"Tb@y\0Tc@z\0"
    entries = parse_channel(bytes(data))
    assert entries == (ChannelEntry("b@y", False, 0), ChannelEntry("c@z", False, 5))
    data[entries[1].offset] = ord("D")  # the manager's single-byte mark
    assert parse_channel(bytes(data))[1] == ChannelEntry("c@z", True, 5)
    with pytest.raises(UnknownRecord):
        parse_channel(b"Xb@y\0")


def test_bigbrother_copies() -> None:
    watch = {"bad@x.org": "bb@admin.org", "@x.org": "dom@admin.org", "quiet@y.net": ""}
    env = Envelope("bad@x.org", ("c@y.net",))
    assert bigbrother_copies(env, watch) == ("bb@admin.org",)  # whole address wins over @domain
    assert bigbrother_copies(Envelope("U@X.Org", ()), watch) == ("dom@admin.org",)
    assert bigbrother_copies(Envelope("quiet@y.net", ("c@y.net",)), watch) == ()
    assert bigbrother_copies(Envelope("", ("a@x.org", "b@x.org")), watch) == ("dom@admin.org",) * 2
    assert bigbrother_copies(env, {}) == ()

"""The NUL-terminated one-letter record codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qldap.records import (
    Record,
    RecordError,
    Splitter,
    decode,
    encode,
    encode_all,
    iterate,
    to_bytes,
    to_text,
)

values = st.binary().map(lambda b: b.replace(b"\0", b""))
letters = st.sampled_from("FTDupK")


def test_encode_shapes() -> None:
    assert encode("F", "a@x") == b"Fa@x\0"
    assert encode("T", b"b@y") == b"Tb@y\0"
    assert encode("F") == b"F\0"  # the null sender
    assert encode_all([("u", "0"), ("p", "12"), ("F", "")]) == b"u0\0p12\0F\0"


@pytest.mark.parametrize(("code", "value"), [("", "x"), ("FT", "x"), ("1", "x"), ("é", "x"), ("T", "a\0b")])
def test_encode_rejects(code: str, value: str) -> None:
    with pytest.raises(RecordError):
        encode(code, value)


def test_decode_with_offsets_and_end_marker() -> None:
    data = b"Fa@x\0Tb@y\0Dc@z\0\0"
    assert decode(data) == (
        Record("F", b"a@x", 0),
        Record("T", b"b@y", 5),
        Record("D", b"c@z", 10),
        Record("", b"", 15),
    )
    assert data[10:11] == b"D"  # offset points at the letter


def test_unterminated_tail_is_an_error() -> None:
    with pytest.raises(RecordError):
        decode(b"Fa@x\0Tb@")
    assert list(iterate(b"")) == []


def test_text_round_trips_any_byte() -> None:
    raw = bytes(range(1, 256))
    assert to_bytes(to_text(raw)) == raw
    assert Record("T", "ü@x".encode()).text == "ü@x"


@given(st.lists(st.tuples(letters, values)))
def test_round_trip(records: list[tuple[str, bytes]]) -> None:
    data = encode_all(records)
    assert [(r.code, r.value) for r in decode(data)] == records


@given(st.lists(st.tuples(letters, values), min_size=1), st.integers(min_value=1, max_value=7))
def test_splitter_is_chunking_independent(records: list[tuple[str, bytes]], step: int) -> None:
    data = encode_all(records)
    sp = Splitter(limit=10_000)
    out: list[bytes] = []
    for i in range(0, len(data), step):
        out += sp.feed(data[i : i + step])
    assert out == [code.encode() + value for code, value in records]
    assert sp.pending == b"" and sp.overflow is None


def test_splitter_overflow_keeps_earlier_records() -> None:
    sp = Splitter(limit=5)
    assert sp.feed(b"Tab\0Tabcde\0T") == [b"Tab"]
    assert sp.overflow == b"Tabcde"
    assert sp.feed(b"more\0") == []  # stopped


def overflow(sp: Splitter) -> bytes | None:
    return sp.overflow


def test_splitter_overflow_without_nul_is_detected_early() -> None:
    sp = Splitter(limit=5)
    assert sp.feed(b"Tabc") == []
    assert overflow(sp) is None
    assert sp.feed(b"def") == []
    assert (overflow(sp) or b"").startswith(b"Tabc")
    assert sp.pending == b""  # a hostile stream is not buffered


def test_splitter_exact_limit_is_fine() -> None:
    sp = Splitter(limit=5)
    assert sp.feed(b"Tabcd") == []
    assert sp.feed(b"\0") == [b"Tabcd"]
    assert sp.overflow is None

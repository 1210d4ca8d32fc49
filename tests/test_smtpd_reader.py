"""The sans-I/O SMTP reader: command lines, DATA transparency, limits, hop counting (qmail-smtpd(8), SESSION
START and DATA)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qldap.smtpd.reader import (
    MAX_COMMAND,
    BareLF,
    Command,
    DataChunk,
    DataEnd,
    Eof,
    Event,
    HeaderTooLong,
    SmtpReader,
    TooLong,
)


def drain(reader: SmtpReader) -> list[Event]:
    events: list[Event] = []
    while (event := reader.next_event()) is not None:
        events.append(event)
        if isinstance(event, Command) and event.verb == "DATA":
            reader.begin_data()
    return events


def message(data: bytes, *, pieces: int = 1, databytes: int = 0) -> tuple[bytes, list[Event]]:
    """Feed *data* in DATA mode, split into *pieces* parts; return the stored bytes and the other events."""
    reader = SmtpReader()
    reader.begin_data(databytes)
    stored = bytearray()
    others: list[Event] = []
    step = max(1, -(-len(data) // pieces))
    for i in range(0, len(data), step):
        reader.receive_data(data[i : i + step])
        while (event := reader.next_event()) is not None:
            if isinstance(event, DataChunk):
                stored += event.data
            else:
                others.append(event)
    return bytes(stored), others


def test_commands_crlf_lf_case_and_arguments() -> None:
    r = SmtpReader()
    r.receive_data(b"mail FROM:<a@b>\r\nRcPt   TO:<c@d>\nNOOP\r\nQUIT")
    events = drain(r)
    assert events == [
        Command("MAIL", "FROM:<a@b>", "mail FROM:<a@b>"),
        Command("RCPT", "TO:<c@d>", "RcPt   TO:<c@d>"),
        Command("NOOP", "", "NOOP"),
    ]
    r.receive_data(b"\r\n")
    assert drain(r) == [Command("QUIT", "", "QUIT")]
    r.receive_data(b"")
    assert r.next_event() == Eof()


def test_only_one_cr_is_dropped_and_the_line_ends_at_nul() -> None:
    r = SmtpReader()
    r.receive_data(b"NOOP x\r\r\nHELO a\0b\r\nMAIL FROM:<a\0\nforged\r\n")
    assert drain(r) == [Command("NOOP", "x\r", "NOOP x\r"), Command("HELO", "a", "HELO a"),
                        Command("MAIL", "FROM:<a", "MAIL FROM:<a"), Command("FORGED", "", "forged")]


def test_command_byte_by_byte() -> None:
    r = SmtpReader()
    out: list[Event] = []
    for b in b"EHLO client.test\r\n":
        r.receive_data(bytes([b]))
        out += drain(r)
    assert out == [Command("EHLO", "client.test", "EHLO client.test")]


def test_command_limit() -> None:
    r = SmtpReader()
    r.receive_data(b"NOOP " + b"x" * (MAX_COMMAND - 5) + b"\r\n")
    assert drain(r) == [Command("NOOP", "x" * (MAX_COMMAND - 5), "NOOP " + "x" * (MAX_COMMAND - 5))]
    r.receive_data(b"NOOP " + b"x" * (MAX_COMMAND - 4) + b"\r\n")
    assert drain(r) == [TooLong()]
    # once dead, nothing more comes out
    r.receive_data(b"QUIT\r\n")
    assert drain(r) == []


def test_command_limit_without_line_end() -> None:
    r = SmtpReader()
    r.receive_data(b"x" * MAX_COMMAND)
    assert drain(r) == []
    r.receive_data(b"x")
    assert drain(r) == [TooLong()]


def test_pipelined_transaction_in_one_packet() -> None:
    """MAIL, RCPT, RCPT, DATA in one packet give four commands in order, and the
    message behind DATA (sent after 354) is read in DATA mode."""
    r = SmtpReader()
    r.receive_data(
        b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    )
    events = drain(r)
    assert [e.verb for e in events if isinstance(e, Command)] == ["MAIL", "RCPT", "RCPT", "DATA"]
    assert r.in_data
    r.receive_data(b"Subject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert drain(r) == [
        DataChunk(b"Subject: s\n\nhi\n"),
        DataEnd(size=15, hops=0, too_big=False),
        Command("QUIT", "", "QUIT"),
    ]


def test_transparency() -> None:
    """'..dot' is stored as '.dot'; CRLF → LF; a lone CR is kept."""
    data = b"Subject: t\r\n\r\n..dot\r\n.\r\nx\rcr\r\n..\r\n.\r\n"
    stored, others = message(data)
    # the first '.\r\n' ends the data; what follows is read as commands again
    assert stored == b"Subject: t\n\n.dot\n"
    assert others[0] == DataEnd(size=len(stored), hops=0, too_big=False)
    assert [e.line for e in others[1:] if isinstance(e, Command)] == ["x\rcr", "..", "."]


def test_lone_cr_kept_and_header_dot() -> None:
    stored, _ = message(b"..X-Dot: 1\r\nA: b\rc\r\n\r\nbody\r\r\n..\r\n.\r\n")
    assert stored == b".X-Dot: 1\nA: b\rc\n\nbody\r\n.\n"


def test_empty_message() -> None:
    stored, others = message(b".\r\n")
    assert stored == b"" and others == [DataEnd(size=0, hops=0, too_big=False)]


def test_any_split_gives_the_same_result() -> None:
    data = b"Received: a\r\nSubject: s\r\n\r\n" + b"line\r\n..dot\r\nx\ry\r\n" * 50 + b".\r\n"
    whole = message(data)
    for pieces in (2, 3, 7, 64, len(data)):
        assert message(data, pieces=pieces) == whole


def test_bare_lf_in_header_and_body() -> None:
    """An LF without CR ends the session, also the '\\n.\\n' smuggling form."""
    assert message(b"Subject: x\n\r\n.\r\n")[1] == [BareLF()]
    assert message(b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil>\r\n.\r\n")[1] == [BareLF()]
    assert message(b"Subject: x\r\n\r\nbody\r\n\n.\r\n")[1] == [BareLF()]
    # split right between CR and LF is not a bare LF
    assert message(b"A: b\r\n\r\nbody\r\n.\r\n", pieces=19)[1] == [DataEnd(size=11, hops=0, too_big=False)]


def test_bare_lf_at_chunk_start() -> None:
    r = SmtpReader()
    r.begin_data()
    r.receive_data(b"A: b\r\n\r\nxx")
    assert drain(r) == [DataChunk(b"A: b\n\n")]
    r.receive_data(b"\n.\r\n")
    assert drain(r) == [BareLF()]


def test_header_line_limit() -> None:
    """A header line of 9999 chars + CRLF is too long; a 20000-char body line is fine."""
    assert message(b"X: " + b"a" * 9996 + b"\r\n\r\n.\r\n")[1] == [HeaderTooLong()]
    ok = b"X: " + b"a" * 9995 + b"\r\n"  # 10000 octets with CRLF
    stored, others = message(ok + b"\r\n" + b"b" * 20000 + b"\r\n.\r\n")
    assert others == [DataEnd(size=len(stored), hops=0, too_big=False)]
    assert stored.endswith(b"b" * 20000 + b"\n")
    # detected before the line end arrives
    r = SmtpReader()
    r.begin_data()
    r.receive_data(b"X: " + b"a" * 10000)
    assert drain(r) == [HeaderTooLong()]


def test_hops() -> None:
    """Received/Delivered header lines are counted (any case), only in the header."""
    head = b"Received: x\r\n" * 50 + b"DELIVERED-TO: y\r\n" * 49 + b"received-by: z\r\n" + b"Receivedx\r\n"
    _, others = message(head + b"\r\nReceived: body\r\n.\r\n")
    end = others[-1]
    assert isinstance(end, DataEnd) and end.hops == 101
    _, others = message(b"Received: x\r\n" * 99 + b" Received: folded\r\n\r\n.\r\n")
    end = others[-1]
    assert isinstance(end, DataEnd) and end.hops == 99


def test_databytes_counts_and_discards() -> None:
    """1001 stored bytes exceed databytes=1000, exactly 1000 do not."""
    exact = b"S: x\r\n\r\n" + b"a" * 993 + b"\r\n"  # stored: 5 + 1 + 993 + 1 = 1000
    stored, others = message(exact + b".\r\n", databytes=1000)
    assert len(stored) == 1000 and others == [DataEnd(size=1000, hops=0, too_big=False)]
    big = b"S: x\r\n\r\n" + b"a" * 994 + b"\r\n" + b"more\r\n" * 100
    stored, others = message(big + b".\r\n", pieces=9, databytes=1000)
    assert len(stored) == 1000
    assert others == [DataEnd(size=1001 + 500, hops=0, too_big=True)]


def test_long_body_line_is_streamed() -> None:
    """A body line with no LF for megabytes is passed on in chunks, not held until its end."""
    r = SmtpReader()
    r.begin_data()
    r.receive_data(b"A: b\r\n\r\n.")
    assert drain(r) == [DataChunk(b"A: b\n\n")]
    r.receive_data(b"x" * 100000 + b"\r")
    chunk = r.next_event()
    assert chunk == DataChunk(b"x" * 100000)  # leading dot removed, CR held back
    assert r.buffered == 1
    r.receive_data(b"\n.\r\n")
    assert drain(r) == [DataChunk(b"\n"), DataEnd(size=6 + 100001, hops=0, too_big=False)]


def test_eof_in_data() -> None:
    r = SmtpReader()
    r.begin_data()
    r.receive_data(b"A: b\r\n\r\npartial")
    r.receive_data(b"")
    assert drain(r) == [DataChunk(b"A: b\n\n"), Eof()]


def test_discard_buffered() -> None:
    """STARTTLS: a NOOP pipelined behind it is never seen."""
    r = SmtpReader()
    r.receive_data(b"STARTTLS\r\nNOOP\r\n")
    assert r.next_event() == Command("STARTTLS", "", "STARTTLS")
    r.discard_buffered()
    assert r.next_event() is None


def test_big_message_chunks_do_not_duplicate() -> None:
    body = b"0123456789" * 7 + b"\r\n"
    data = b"Subject: big\r\n\r\n" + body * 20000 + b".\r\n"
    stored, others = message(data, pieces=200)
    assert stored == b"Subject: big\n\n" + body.replace(b"\r\n", b"\n") * 20000
    assert others == [DataEnd(size=len(stored), hops=0, too_big=False)]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_reader_never_raises(pieces: list[bytes], data_mode: bool) -> None:
    r = SmtpReader()
    if data_mode:
        r.begin_data(100)
    for piece in [*pieces, b""]:
        r.receive_data(piece)
        for event in drain(r):
            assert isinstance(event, (Command, TooLong, Eof, DataChunk, DataEnd, BareLF, HeaderTooLong))


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\r\n", b"X: y\r\n", b"\r\n.\r\n", b".."]), max_size=30))
def test_data_split_invariance(parts: list[bytes]) -> None:
    data = b"".join(parts)
    whole = message(data)
    assert message(data, pieces=3) == whole
    assert message(data, pieces=max(1, len(data))) == whole

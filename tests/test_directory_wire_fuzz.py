"""Fuzzing the wire client's decoder: malformed, truncated and oversized server answers.

Two layers.  The sans-I/O decoder (ber.frame / decode_message / decode_result / decode_entry) gets
arbitrary and mutated bytes from hypothesis and may only return or raise BerError.  Then a real TCP
server answers the bind and then the search with hostile bytes (garbage, a truncated message, an
announced 4 GiB message, entries without end, an answer to another message id, non-LDAP text), and the
client must end with a clean DirectoryUnavailable — Directory.find_recipient returns Unavailable, so
the daemon defers — and must not hang: every case finishes within a generous liveness bound.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qldap.directory import ber
from qldap.directory.base import Unavailable
from qldap.directory.errors import DirectoryUnavailable, ServerUnreachable
from qldap.directory.lookup import Directory
from qldap.directory.wire import WireSearcher
from tests.test_directory_ldap_errors import _read_message, cfg_for

GOLDEN = json.loads((Path(__file__).parent / "data" / "ber_golden.json").read_text())
ENTRY = bytes.fromhex(GOLDEN["entry"])  # a SearchResultEntry, message id 77
DONE = bytes.fromhex("300c02014d65070a010004000400")  # SearchResultDone success, message id 77
BIND_OK = bytes.fromhex("300c02010161070a010004000400")
LIVENESS = 60.0  # seconds: far above any legitimate run (ldaptimeout is 1 s here); only catches a hang


def _decode_all(data: bytes) -> None:
    """Run the client's decoding steps over *data* as the receive loop would."""
    pos = 0
    while pos < len(data):
        end = ber.frame(data, pos)
        if end < 0:
            return
        msg = ber.decode_message(data, pos, end)
        if msg.op == ber.SEARCH_ENTRY:
            ber.decode_entry(msg)
        else:
            ber.decode_result(msg)
        pos = end


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_ber_error(data: bytes) -> None:
    try:
        _decode_all(data)
    except ber.BerError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid entry + done stream with some bytes replaced, inserted, or cut off."""
    data = bytearray(ENTRY + DONE)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["set", "insert", "delete"]))
        if kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif len(data) > 1:
            del data[i]
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=600)
@given(mutated())
def test_mutated_answers_decode_or_raise_ber_error(data: bytes) -> None:
    try:
        _decode_all(data)
    except ber.BerError:
        pass


def test_an_oversized_length_is_refused_before_buffering() -> None:
    with pytest.raises(ber.BerError, match="exceeds"):
        ber.frame(b"\x30\x84\xff\xff\xff\xff")
    with pytest.raises(ber.BerError):
        ber.frame(b"\x30\x85\x01\x00\x00\x00\x00")  # five length octets
    assert ber.frame(b"\x30\x84\x00\x00\x10") == -1  # a plausible length, not complete yet


# -- a hostile server on a real socket ----------------------------------------------------------------


Script = Callable[[socket.socket], None]


class HostileLdap:
    """Accepts connections; each gets *script*, which may misbehave at any point."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.script(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _after_bind(answer: Callable[[socket.socket, int], None]) -> Script:
    """Answer the bind with success, then the search with *answer(conn, msgid)*."""

    def script(conn: socket.socket) -> None:
        if _read_message(conn) is None:
            return
        conn.sendall(BIND_OK)
        body = _read_message(conn)
        if body is not None:
            answer(conn, body[2])  # message id (one octet while < 128)

    return script


def _lookup_in_thread(port: int) -> object:
    """find_recipient against *port* in a thread; its result, or 'hang' past LIVENESS."""
    cfg = cfg_for(port, timeout=1)
    box: list[object] = []

    def run() -> None:
        try:
            box.append(Directory(cfg, WireSearcher(cfg)).find_recipient("alice@example.com"))
        except BaseException as exc:  # a crash must show up in the assertion, not vanish in the thread
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(LIVENESS)
    return box[0] if box else "hang"


def _msg(msgid: int, op: bytes) -> bytes:
    body = ber.integer(msgid) + op
    return ber.tlv(0x30, body)


def _entries_forever(stop: threading.Event) -> Callable[[socket.socket, int], None]:
    def answer(conn: socket.socket, msgid: int) -> None:
        entry = _msg(msgid, ber.tlv(ber.SEARCH_ENTRY, ber.octets("uid=x,dc=example,dc=com") + b"\x30\x00"))
        block = entry * 200
        while not stop.is_set():
            conn.sendall(block)

    return answer


def _hold(stop: threading.Event, data: bytes) -> Callable[[socket.socket, int], None]:
    def answer(conn: socket.socket, msgid: int) -> None:
        conn.sendall(data)
        stop.wait(LIVENESS)

    return answer


HOSTILE: dict[str, Callable[[threading.Event], Callable[[socket.socket, int], None]]] = {
    "garbage then close": lambda stop: lambda c, m: c.sendall(b"\x04\x03abc" + b"\xff" * 50),
    "http text": lambda stop: lambda c, m: c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"),
    "truncated then close": lambda stop: lambda c, m: c.sendall(_msg(m, DONE[5:])[:-3]),
    "truncated then silence": lambda stop: _hold(stop, DONE[:8]),
    "4 GiB announced": lambda stop: _hold(stop, b"\x30\x84\xff\xff\xff\xf0\x02\x01\x02"),
    "1 MiB announced, 10 bytes sent": lambda stop: _hold(stop, b"\x30\x83\x10\x00\x00\x02\x01\x02\x65\x00"),
    "answer to another id": lambda stop: lambda c, m: c.sendall(_msg(m + 5, DONE[5:])),
    "entry without attributes list": lambda stop: lambda c, m: c.sendall(
        _msg(m, ber.tlv(ber.SEARCH_ENTRY, ber.octets("uid=x")))
    ),
    "result with a wrong tag": lambda stop: lambda c, m: c.sendall(_msg(m, ber.tlv(0x65, b"\x02\x01\x00"))),
    "entries without end": _entries_forever,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_answers_to_a_search_are_unavailable_never_a_hang(case: str) -> None:
    stop = threading.Event()
    server = HostileLdap(_after_bind(HOSTILE[case](stop)))
    try:
        result = _lookup_in_thread(server.port)
    finally:
        stop.set()
        server.close()
    assert isinstance(result, Unavailable), result
    assert isinstance(result.error, DirectoryUnavailable)
    assert "(#4." in result.error.text  # a temporary failure: 451 / defer


@pytest.mark.parametrize(
    "bind_answer",
    [b"", b"\x30\x03\x02\x01", b"\x30\x05\x02\x01\x01\x61\x00", b"\x30\x84\xff\xff\xff\xff", b"\x00" * 40],
    ids=["close", "truncated", "empty bind response", "4 GiB", "zeros"],
)
def test_hostile_answers_to_the_bind_fail_over_as_unreachable(bind_answer: bytes) -> None:
    def script(conn: socket.socket) -> None:
        if _read_message(conn) is not None:
            conn.sendall(bind_answer)

    server = HostileLdap(script)
    try:
        with pytest.raises(ServerUnreachable):
            WireSearcher(cfg_for(server.port, timeout=1)).search("(uid=a)", ["uid"])
    finally:
        server.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=200) | mutated())
def test_random_answers_on_a_real_socket_end_cleanly(answer: bytes) -> None:
    """The server sends *answer* to the search and closes: the client never crashes or hangs."""
    server = HostileLdap(_after_bind(lambda c, m: c.sendall(answer)))
    try:
        result = _lookup_in_thread(server.port)
    finally:
        server.close()
    assert result != "hang"
    assert not isinstance(result, BaseException), repr(result)

"""POP-before-SMTP datagrams: the exact bytes of pbsdbd(8), PACKETS, robustness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qldap.pbs.cache import PbsCache, handle_datagram
from qldap.pbs.env import add_entries, parse_rules
from qldap.pbs.packets import (
    MAX_PACKET,
    Add,
    PacketTooLarge,
    Query,
    Rejected,
    Response,
    add_budget,
    address_text,
    decode,
    encode,
    pack_address,
    parse,
)

SECRET = b"mekmitasdigoat"
ADDR = bytes([192, 0, 2, 10])
ADD_BYTES = bytes.fromhex(
    "41 04 c0 00 02 0a 0e 6d 65 6b 6d 69 74 61 73 64 69 67 6f 61 74 01 08 55 53 45 52 3d 6a 6f 65"
)
QUERY_BYTES = bytes.fromhex("51 04 c0 00 02 0a 00")
HIT_BYTES = bytes.fromhex("52 04 c0 00 02 0a 52 01 08 55 53 45 52 3d 6a 6f 65")
MISS_BYTES = bytes.fromhex("52 04 c0 00 02 0a 4e")


def test_addresses() -> None:
    assert pack_address("192.0.2.10") == ADDR
    assert pack_address("::ffff:192.0.2.10") == ADDR
    assert pack_address("2001:db8::1") == bytes.fromhex("20010db8000000000000000000000001")
    assert pack_address("nonsense") is None
    assert pack_address("") is None
    assert address_text(ADDR) == "192.0.2.10"


def test_add_of_check_37_is_31_bytes_built_from_pbsenv() -> None:
    rules = parse_rules(["USER=TCPREMOTEINFO=[pbs]"])
    env = add_entries(rules, {"USER": "joe", "TCPREMOTEIP": "192.0.2.10"}, add_budget(4, len(SECRET)))
    address = pack_address("192.0.2.10")
    assert address is not None
    data = encode(Add(address, SECRET, env.entries))
    assert data == ADD_BYTES
    assert len(data) == 31
    assert decode(data) == Add(ADDR, SECRET, (b"USER=joe",))
    assert "mekmitas" not in repr(decode(data))


def test_query_and_responses() -> None:
    assert encode(Query(ADDR)) == QUERY_BYTES
    assert decode(QUERY_BYTES) == Query(ADDR)
    assert encode(Response(ADDR, True, (b"USER=joe",))) == HIT_BYTES
    assert encode(Response(ADDR, False)) == MISS_BYTES
    assert decode(HIT_BYTES) == Response(ADDR, True, (b"USER=joe",))
    assert decode(MISS_BYTES) == Response(ADDR, False)
    assert decode(bytes.fromhex("52 04 c0 00 02 0a 52")) == Response(ADDR, True)


def test_daemon_answers_the_query_of_check_38() -> None:
    cache = PbsCache(clock=lambda: 1000.0)
    assert handle_datagram(cache, ADD_BYTES, SECRET).reply is None
    outcome = handle_datagram(cache, QUERY_BYTES, SECRET)
    assert outcome.reply == HIT_BYTES
    assert outcome.reply.hex(" ") == "52 04 c0 00 02 0a 52 01 08 55 53 45 52 3d 6a 6f 65"


@pytest.mark.parametrize(
    ("datagram", "warning"),
    [
        (ADD_BYTES.replace(b"mekmitasdigoat", b"mekmitasdigoaX"), "no authorized add packet"),
        (ADD_BYTES[:-1], "environment would exceed package size, dropped"),
        (ADD_BYTES + b"\0", "trailing garbadge at end of packet, dropped"),
        (ADD_BYTES[:15], "bad packet"),  # ends inside the secret
        (bytes([0x41, 4]) + ADDR[:3], "bad packet"),
        (bytes([0x41, 4]) + ADDR, "bad packet"),  # length ≤ L+2
    ],
)
def test_bad_adds_are_ignored_check_39(datagram: bytes, warning: str) -> None:
    cache = PbsCache(clock=lambda: 1000.0)
    outcome = handle_datagram(cache, datagram, SECRET)
    assert outcome == type(outcome)(reply=None, warning=warning)
    assert handle_datagram(cache, QUERY_BYTES, SECRET).reply == MISS_BYTES


def test_truncated_secret_is_not_authorized() -> None:
    """A secret that is a prefix of the real one (S shortened, datagram still consistent)."""
    short = encode(Add(ADDR, SECRET[:-1], (b"USER=joe",)))
    cache = PbsCache(clock=lambda: 1000.0)
    assert handle_datagram(cache, short, SECRET).warning == "no authorized add packet"
    assert handle_datagram(cache, QUERY_BYTES, SECRET).reply == MISS_BYTES


def test_add_ending_after_the_secret_has_no_entries() -> None:
    data = bytes([0x41, 4]) + ADDR + bytes([len(SECRET)]) + SECRET
    assert decode(data) == Add(ADDR, SECRET, ())
    cache = PbsCache(clock=lambda: 1000.0)
    handle_datagram(cache, data, SECRET)
    assert handle_datagram(cache, QUERY_BYTES, SECRET).reply == bytes.fromhex("52 04 c0 00 02 0a 52 00")


def test_other_packets() -> None:
    cache = PbsCache(clock=lambda: 1000.0)
    assert handle_datagram(cache, HIT_BYTES, SECRET).warning == "response recived"
    assert handle_datagram(cache, b"X\x04" + ADDR + b"\0", SECRET).warning == "bad packet"
    assert handle_datagram(cache, b"", SECRET).warning == "bad packet"
    assert parse(b"Q\x05" + bytes(5) + b"\0") is Rejected.BAD_PACKET  # L must be 4 or 16
    assert parse(b"Q\x04" + ADDR + b"\0trailing") == Query(ADDR)  # the status byte is not checked
    assert parse(bytes.fromhex("52 04 c0 00 02 0a 4e 00")) is Rejected.TRAILING_GARBAGE
    assert parse(bytes.fromhex("52 04 c0 00 02 0a 41")) is Rejected.BAD_PACKET


def test_ipv6_everywhere() -> None:
    address = pack_address("2001:db8::25")
    assert address is not None
    cache = PbsCache(clock=lambda: 5.0)
    handle_datagram(cache, encode(Add(address, b"", (b"USER=ann",))), b"")
    reply = handle_datagram(cache, encode(Query(address)), b"").reply
    assert reply is not None
    assert decode(reply) == Response(address, True, (b"USER=ann",))
    assert reply[:2] == b"R\x10"


def test_size_limits() -> None:
    with pytest.raises(PacketTooLarge):
        encode(Add(ADDR, b"s" * 256))
    with pytest.raises(PacketTooLarge):
        encode(Add(ADDR, b"", (b"x" * 256,)))
    big = tuple(b"N=" + b"v" * 250 for _ in range(4))
    with pytest.raises(PacketTooLarge):
        encode(Add(ADDR, SECRET, big))
    with pytest.raises(ValueError):
        encode(Query(b"\1\2\3"))
    assert add_budget(4, 0) == 1016
    fits = (b"N=" + b"v" * 253,) * 3 + (b"N=" + b"v" * 245,)  # 3 × 256 + 248 = 1016
    assert len(encode(Add(ADDR, b"", fits))) == MAX_PACKET
    assert decode(encode(Add(ADDR, b"", fits))) == Add(ADDR, b"", fits)
    with pytest.raises(PacketTooLarge):
        encode(Add(ADDR, b"", (*fits, b"")))
    assert decode(bytes(MAX_PACKET + 1)) is None


@given(st.binary(max_size=1100))
def test_decoder_never_raises(data: bytes) -> None:
    result = parse(data)
    assert isinstance(result, Add | Query | Response | Rejected)
    cache = PbsCache(cachesize=4096, clock=lambda: 0.0)
    outcome = handle_datagram(cache, data, b"")
    assert outcome.reply is None or len(outcome.reply) <= MAX_PACKET


@given(
    st.sampled_from([ADDR, bytes(range(16))]),
    st.binary(max_size=40),
    st.lists(st.binary(max_size=60), max_size=8).map(tuple),
)
def test_round_trip(address: bytes, secret: bytes, env: tuple[bytes, ...]) -> None:
    packets = (Add(address, secret, env), Query(address), Response(address, True, env))
    packets += (Response(address, False),)
    for packet in packets:
        assert decode(encode(packet)) == packet

"""The POP-before-SMTP UDP datagrams (pbsdbd(8), PACKETS): pure encode and decode, nothing else.

Layouts (all lengths one byte, the whole datagram at most 1024 bytes):

* Add:      ``A`` L ADDRESS S SECRET N (M ENTRY){N}   ENTRY = ``NAME=VALUE``, M ≤ 255
* Query:    ``Q`` L ADDRESS 0x00
* Response: ``R`` L ADDRESS (``R`` N (M ENTRY){N} | ``N``)

L is 4 (IPv4) or, by decision, 16 (IPv6); the address is in network order.  The part from N on is
the *env block*; the daemon stores it verbatim and returns it in a hit.  :func:`parse` says why a
datagram is unusable (the daemon logs it); :func:`decode` is the same with None for any rejection.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

MAX_PACKET = 1024
MAX_ENTRY = 255
ADDRESS_LENGTHS = (4, 16)

ADD = 0x41
QUERY = 0x51
RESPONSE = 0x52
MAY_RELAY = 0x52
NO_RELAY = 0x4E


class Rejected(Enum):
    """Why a datagram is dropped; the value is pbsdbd's warning text."""

    BAD_PACKET = "bad packet"
    ENV_OVERFLOW = "environment would exceed package size, dropped"
    TRAILING_GARBAGE = "trailing garbadge at end of packet, dropped"


@dataclass(frozen=True, slots=True)
class Add:
    """Register *address* (packed) for relaying, carrying *env* entries for pbscheck."""

    address: bytes
    secret: bytes
    env: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # keep the shared secret out of logs
        return f"Add(address={self.address!r}, env={self.env!r})"


@dataclass(frozen=True, slots=True)
class Query:
    """Ask whether *address* may relay."""

    address: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """The daemon's answer; *env* only with *may_relay*."""

    address: bytes
    may_relay: bool
    env: tuple[bytes, ...] = ()


Packet = Add | Query | Response


class PacketTooLarge(ValueError):
    """A datagram would exceed :data:`MAX_PACKET` bytes or a field its one-byte length."""


# -- addresses --------------------------------------------------------------------------------------


def pack_address(text: str) -> bytes | None:
    """``192.0.2.10`` → 4 bytes, an IPv6 address → 16 bytes; IPv4-mapped IPv6 becomes 4 bytes.

    Why the mapping: a dual-stack listener reports IPv4 clients as ``::ffff:a.b.c.d``; pbsadd (POP
    side) and pbscheck (SMTP side) must derive the same key whatever socket family each one saw.
    Returns None when *text* is not an address.
    """
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed


def address_text(packed: bytes) -> str:
    """The printable form of a packed 4- or 16-byte address.

    Raises:
        ValueError: *packed* has another length.
    """
    return str(ipaddress.ip_address(packed))


# -- env block ---------------------------------------------------------------------------------------


def encode_env(entries: tuple[bytes, ...]) -> bytes:
    """``N (M ENTRY)*``.

    Raises:
        PacketTooLarge: more than 255 entries or an entry over 255 bytes.
    """
    if len(entries) > 255 or any(len(e) > MAX_ENTRY for e in entries):
        raise PacketTooLarge("env block field over 255")
    return bytes([len(entries)]) + b"".join(bytes([len(e)]) + e for e in entries)


def parse_env(block: bytes) -> tuple[bytes, ...] | Rejected:
    """Entries of an env block that must end exactly at the end of *block*; empty block → no entries."""
    if not block:
        return ()
    count, pos, entries = block[0], 1, []
    for _ in range(count):
        if pos >= len(block):
            return Rejected.ENV_OVERFLOW
        size = block[pos]
        if pos + 1 + size > len(block):
            return Rejected.ENV_OVERFLOW
        entries.append(bytes(block[pos + 1 : pos + 1 + size]))
        pos += 1 + size
    if pos != len(block):
        return Rejected.TRAILING_GARBAGE
    return tuple(entries)


def add_budget(address_length: int, secret_length: int) -> int:
    """Bytes left for the entries (each 1 + M) in an Add with this address and secret."""
    return MAX_PACKET - (2 + address_length + 1 + secret_length + 1)


# -- whole datagrams ----------------------------------------------------------------------------------


def _header(kind: int, address: bytes) -> bytes:
    if len(address) not in ADDRESS_LENGTHS:
        raise ValueError(f"address must be 4 or 16 bytes, not {len(address)}")
    return bytes([kind, len(address)]) + address


def encode(packet: Packet) -> bytes:
    """The datagram for *packet*.

    Raises:
        PacketTooLarge: it would exceed 1024 bytes, or a secret/entry exceeds 255 bytes.
        ValueError: the address is not 4 or 16 bytes.
    """
    if isinstance(packet, Add):
        if len(packet.secret) > 255:
            raise PacketTooLarge("secret over 255 bytes")
        data = _header(ADD, packet.address) + bytes([len(packet.secret)]) + packet.secret
        data += encode_env(packet.env)
    elif isinstance(packet, Query):
        data = _header(QUERY, packet.address) + b"\0"
    elif packet.may_relay:
        data = _header(RESPONSE, packet.address) + bytes([MAY_RELAY]) + encode_env(packet.env)
    else:
        data = _header(RESPONSE, packet.address) + bytes([NO_RELAY])
    if len(data) > MAX_PACKET:
        raise PacketTooLarge(f"datagram of {len(data)} bytes")
    return data


def parse(data: bytes) -> Packet | Rejected:
    """Decode one datagram, or say why it is unusable (the daemon's warning text).

    Follows pbsdbd: a datagram not longer than L+2 is bad; a Query's status byte and anything after
    it are ignored; an Add's secret must fit, its env block must fit and end at the datagram's end
    (**Decision:** an Add ending right after the secret has no entries).  A Response needs status
    ``R`` (with a well-formed env block, possibly absent) or exactly ``N``.
    """
    if len(data) > MAX_PACKET or len(data) < 3:
        return Rejected.BAD_PACKET
    kind, length = data[0], data[1]
    if length not in ADDRESS_LENGTHS or len(data) <= length + 2:
        return Rejected.BAD_PACKET
    address, rest = bytes(data[2 : 2 + length]), data[2 + length :]
    if kind == QUERY:
        return Query(address)
    if kind == ADD:
        secret_length = rest[0]
        if 1 + secret_length > len(rest):
            return Rejected.BAD_PACKET
        env = parse_env(rest[1 + secret_length :])
        if isinstance(env, Rejected):
            return env
        return Add(address, bytes(rest[1 : 1 + secret_length]), env)
    if kind == RESPONSE:
        if rest[0] == NO_RELAY:
            return Response(address, False) if len(rest) == 1 else Rejected.TRAILING_GARBAGE
        if rest[0] != MAY_RELAY:
            return Rejected.BAD_PACKET
        env = parse_env(rest[1:])
        return env if isinstance(env, Rejected) else Response(address, True, env)
    return Rejected.BAD_PACKET


def decode(data: bytes) -> Packet | None:
    """:func:`parse` with None for every rejection."""
    result = parse(data)
    return None if isinstance(result, Rejected) else result

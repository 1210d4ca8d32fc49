"""The LDAPv3 BER codec of the wire client: encode bind/search/unbind requests, decode their answers.

Why hand-written: a generic client (ldap3 was used before) builds every request as an object tree and
decodes every answer into dicts of dicts, which costs more Python time per lookup than slapd spends
answering it.  qldap sends few PDUs (RFC 4511 sections 4.2 bind, 4.3 unbind, 4.5 search, 4.14 StartTLS)
and reads few (BindResponse, SearchResultEntry, SearchResultDone, ExtendedResponse; references are
skipped), so a few byte-string concatenations do the job.  Filters are parsed by
:mod:`qldap.directory.rfc4515` (the parser the embedded backend evaluates, too) and the tree is
encoded here.  The constant part of a search (base, scope, limits, the attribute list) is encoded once
per distinct tuple and cached; only the filter and the message id change per lookup; encoded filters
are cached too.

Sans-I/O: bytes in, values out.  Malformed input raises :class:`BerError`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from qldap.directory import rfc4515
from qldap.directory.entry import Entry

# protocolOp tags (RFC 4511 section 4.2–4.5, APPLICATION class)
BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
UNBIND_REQUEST = 0x42
SEARCH_REQUEST = 0x63
SEARCH_ENTRY = 0x64
SEARCH_DONE = 0x65
SEARCH_REFERENCE = 0x73
EXTENDED_RESPONSE = 0x78

SCOPE_BASE = 0
SCOPE_SUBTREE = 2
DEREF_ALWAYS = 3  # derefAliases always, as OpenLDAP's tools and the former ldap3 client sent


class BerError(ValueError):
    """The bytes are not the BER the decoder expects."""


# -- encoding --------------------------------------------------------------------------------------


def length(n: int) -> bytes:
    """The BER definite length of *n* octets (short form below 128, else the shortest long form)."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One tag-length-value element."""
    n = len(value)
    if n < 0x80:  # the short form, inline: most elements of a request are short
        return bytes((tag, n)) + value
    return bytes((tag,)) + length(n) + value


def integer(value: int, tag: int = 0x02) -> bytes:
    """A (non-negative or negative) INTEGER/ENUMERATED in minimal two's complement."""
    size = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(text: str | bytes, tag: int = 0x04) -> bytes:
    """An OCTET STRING (text as UTF-8; lone surrogates from surrogateescape become their bytes)."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return tlv(tag, raw)


def message(msgid: int, op: bytes) -> bytes:
    """An LDAPMessage envelope around an encoded protocolOp."""
    return tlv(0x30, integer(msgid) + op)


def bind_request(msgid: int, name: str, password: str, version: int = 3) -> bytes:
    """A simple BindRequest (empty name and password = anonymous)."""
    body = integer(version) + octets(name) + octets(password, 0x80)
    return message(msgid, tlv(BIND_REQUEST, body))


START_TLS_OID = "1.3.6.1.4.1.1466.20037"
EXTENDED_REQUEST = 0x77


def start_tls_request(msgid: int) -> bytes:
    """The StartTLS ExtendedRequest (RFC 4511 section 4.14): requestName only, no value."""
    return message(msgid, tlv(EXTENDED_REQUEST, octets(START_TLS_OID, 0x80)))


def unbind_request(msgid: int) -> bytes:
    """An UnbindRequest (a NULL with an APPLICATION 2 tag)."""
    return message(msgid, bytes((UNBIND_REQUEST, 0)))


@functools.lru_cache(maxsize=256)
def search_parts(
    base: str, scope: int, attributes: tuple[str, ...], time_limit: int, size_limit: int = 0
) -> tuple[bytes, bytes]:
    """The constant (before-filter, after-filter) parts of a SearchRequest body, cached."""
    head = (
        octets(base)
        + integer(scope, 0x0A)
        + integer(DEREF_ALWAYS, 0x0A)
        + integer(size_limit)
        + integer(time_limit)
        + b"\x01\x01\x00"  # typesOnly FALSE
    )
    tail = tlv(0x30, b"".join(octets(a) for a in attributes))
    return head, tail


def search_request(msgid: int, parts: tuple[bytes, bytes], encoded_filter: bytes) -> bytes:
    """A SearchRequest from cached constant *parts* and an encoded filter."""
    head, tail = parts
    return message(msgid, tlv(SEARCH_REQUEST, head + encoded_filter + tail))


_OPS = {"=": 0xA3, ">=": 0xA5, "<=": 0xA6, "~=": 0xA8}


def _raw(value: str) -> bytes:
    """An assertion value back to the octets the filter text meant (escapes were resolved by the parser)."""
    return value.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=256)
def _description(desc: str) -> bytes:
    """An attribute description as an OCTET STRING (the few names qldap sends, encoded once)."""
    return octets(desc)


def encode_node(node: rfc4515.Node) -> bytes:
    """The BER Filter (RFC 4511 section 4.5.1.7) of a parsed filter tree, attribute names as written."""
    if isinstance(node, rfc4515.Compare):
        return tlv(_OPS[node.op], _description(node.desc) + tlv(0x04, _raw(node.value)))
    if isinstance(node, rfc4515.And | rfc4515.Or):
        tag = 0xA0 if isinstance(node, rfc4515.And) else 0xA1
        return tlv(tag, b"".join([encode_node(n) for n in node.items]))
    if isinstance(node, rfc4515.Not):
        return tlv(0xA2, encode_node(node.item))
    if isinstance(node, rfc4515.Present):
        return tlv(0x87, node.desc.encode("ascii"))
    parts = tlv(0x80, _raw(node.initial)) if node.initial else b""
    parts += b"".join(tlv(0x81, _raw(m)) for m in node.middle)
    if node.final:
        parts += tlv(0x82, _raw(node.final))
    return tlv(0xA4, octets(node.desc) + tlv(0x30, parts))


@functools.lru_cache(maxsize=4096)
def encode_filter(text: str) -> bytes:
    """The BER Filter of RFC 4515 *text*, parsed by :func:`qldap.directory.rfc4515.parse` (cached).

    The one parser is shared with the embedded backend, so both refuse the same texts.

    Raises:
        InvalidFilter: *text* is not a filter qldap can send (extensible matches are refused).
    """
    return encode_node(rfc4515.parse(text))


def encode_query(filter: str) -> bytes:
    """The BER Filter of *filter*: from the tree a :class:`~qldap.directory.rfc4515.ParsedFilter`
    carries (no text parsed), else as :func:`encode_filter`.

    Raises:
        InvalidFilter: *filter* is plain text qldap cannot send.
    """
    if isinstance(filter, rfc4515.ParsedFilter):
        return encode_node(filter.node)
    return encode_filter(filter)


# -- decoding --------------------------------------------------------------------------------------


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, position after it) of the length octets at *pos*; raises IndexError when incomplete."""
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4:
        raise BerError("indefinite or oversized length")
    end = pos + 1 + count
    if end > len(data):
        raise IndexError("incomplete length")
    return int.from_bytes(data[pos + 1 : end], "big"), end


MAX_MESSAGE = 16 * 1024 * 1024
"""The largest LDAPMessage accepted: qldap's entries are a few KiB; a bigger announced length is a
broken or hostile server, refused at once instead of buffering up to 4 GiB while waiting for it."""


def frame(data: bytes, pos: int = 0) -> int:
    """The end offset of the LDAPMessage starting at *pos*, or -1 when *data* does not hold it all yet.

    Raises:
        BerError: the bytes do not start an LDAPMessage SEQUENCE, or announce more than MAX_MESSAGE.
    """
    if len(data) - pos < 2:
        return -1
    if data[pos] != 0x30:
        raise BerError(f"expected an LDAPMessage, got tag {data[pos]:#x}")
    try:
        size, start = read_length(data, pos + 1)
    except IndexError:
        return -1
    if size > MAX_MESSAGE:
        raise BerError(f"an LDAPMessage of {size} octets exceeds the limit of {MAX_MESSAGE}")
    end = start + size
    return end if end <= len(data) else -1


@dataclass(frozen=True, slots=True)
class Result:
    """An LDAPResult: the code, the matched DN and the server's diagnostic text."""

    code: int
    matched: str
    message: str


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded LDAPMessage: id, protocolOp tag, and the op's body span inside ``data``."""

    msgid: int
    op: int
    data: bytes
    start: int
    end: int


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    if pos + 2 > end:
        raise BerError("truncated element")
    tag = data[pos]
    try:
        size, start = read_length(data, pos + 1)
    except IndexError:
        raise BerError("truncated length")
    if start + size > end:
        raise BerError("element overruns its container")
    return tag, start, start + size


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8", "surrogateescape")


def decode_message(data: bytes, start: int, end: int) -> Message:
    """The LDAPMessage in ``data[start:end]`` (as delimited by :func:`frame`).

    Raises:
        BerError: malformed envelope.
    """
    tag, pos, stop = _header(data, start, end)
    if tag != 0x30:
        raise BerError("not an LDAPMessage")
    tag, s, e = _header(data, pos, stop)
    if tag != 0x02 or e == s:
        raise BerError("bad messageID")
    msgid = int.from_bytes(data[s:e], "big", signed=True)
    op, s2, e2 = _header(data, e, stop)
    return Message(msgid, op, data, s2, e2)  # controls after the op are ignored


def decode_result(msg: Message) -> Result:
    """The LDAPResult of a BindResponse, SearchResultDone or ExtendedResponse.

    Raises:
        BerError: malformed result.
    """
    data, end = msg.data, msg.end
    tag, s, e = _header(data, msg.start, end)
    if tag != 0x0A:
        raise BerError("bad resultCode")
    code = int.from_bytes(data[s:e], "big")
    tag, s, e2 = _header(data, e, end)
    matched = _text(data, s, e2)
    tag, s, e3 = _header(data, e2, end)
    return Result(code, matched, _text(data, s, e3))


def decode_entry(msg: Message) -> Entry:
    """The Entry of a SearchResultEntry (names folded to lower case, values decoded as UTF-8).

    Every element's header is read inline when its length has the short form (under 128 octets:
    nearly all of them), with exactly :func:`_header`'s checks; the long form goes through it.  This
    loop runs for every value of every entry of every lookup.

    Raises:
        BerError: malformed entry.
    """
    data, end = msg.data, msg.end
    tag, s, e = _header(data, msg.start, end)
    if tag != 0x04:
        raise BerError("bad objectName")
    dn = _text(data, s, e)
    tag, pos, stop = _header(data, e, end)
    if tag != 0x30:
        raise BerError("bad attribute list")
    attrs: dict[str, tuple[str, ...]] = {}
    while pos < stop:
        # PartialAttribute SEQUENCE
        if pos + 2 > stop:
            raise BerError("truncated element")
        size = data[pos + 1]
        if size < 0x80:
            a, a_end = pos + 2, pos + 2 + size
            if a_end > stop:
                raise BerError("element overruns its container")
        else:
            _, a, a_end = _header(data, pos, stop)
        # type
        if a + 2 > a_end:
            raise BerError("truncated element")
        size = data[a + 1]
        if size < 0x80:
            n, n_end = a + 2, a + 2 + size
            if n_end > a_end:
                raise BerError("element overruns its container")
        else:
            _, n, n_end = _header(data, a, a_end)
        name = data[n:n_end].decode("ascii", "replace").lower()
        # vals SET
        if n_end + 2 > a_end:
            raise BerError("truncated element")
        size = data[n_end + 1]
        if size < 0x80:
            v, v_end = n_end + 2, n_end + 2 + size
            if v_end > a_end:
                raise BerError("element overruns its container")
        else:
            _, v, v_end = _header(data, n_end, a_end)
        values: list[str] = []
        while v < v_end:
            if v + 2 > v_end:
                raise BerError("truncated element")
            size = data[v + 1]
            if size < 0x80:
                vs, ve = v + 2, v + 2 + size
                if ve > v_end:
                    raise BerError("element overruns its container")
            else:
                _, vs, ve = _header(data, v, v_end)
            values.append(data[vs:ve].decode("utf-8", "surrogateescape"))
            v = ve
        if values:
            attrs[name] = attrs[name] + tuple(values) if name in attrs else tuple(values)
        pos = a_end
    return Entry(dn, MappingProxyType(attrs))


def attribute_list(attributes: Sequence[str]) -> tuple[str, ...]:
    """The attribute selection to send: the given names, or ``*`` (all user attributes) when empty."""
    return tuple(attributes) or ("*",)

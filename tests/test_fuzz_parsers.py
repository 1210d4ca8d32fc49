"""Property tests of the three parsers a remote client feeds directly: SMTP commands, POP3 commands, paths.

What the existing hypothesis tests (test_smtpd_reader, test_pop3_reader, test_address) leave open and
is covered here: SMTP *command* lines built from arbitrary octets round-trip to their verb/argument and
do not depend on how TCP split them; the 16384-octet limit holds for every length around it; POP3
lines round-trip to verb/argument and NUL cuts them; the path parser takes *any* text (every code
point, NUL, CR, LF) and fails only with :class:`AddressSyntaxError`; quoting any address and parsing it
back gives the same address and domain; ``[ip]`` literals map to ``localiphost`` exactly when they name
an own address.
"""

from __future__ import annotations

import ipaddress

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qldap.address import (
    MAX_ADDRESS,
    AddressSyntaxError,
    canonical_ipv4,
    has_line_break,
    parse_path,
    quote_address,
    split_address,
)
from qldap.pop3.reader import Command as PopCommand
from qldap.pop3.reader import CommandReader, parse_line
from qldap.pop3.reader import TooLong as PopTooLong
from qldap.smtpd.reader import MAX_COMMAND, Command, Eof, SmtpReader, TooLong

# octets of a command line: anything but LF (the terminator) and NUL (mapped to LF by the reader)
_LINE_BYTES = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").replace(b"\0", b""))
_VERB = st.binary(min_size=1, max_size=12).map(lambda b: bytes(c for c in b if c not in b" \r\n\0"))


def smtp_events(data: bytes, cuts: list[int]) -> list[object]:
    r = SmtpReader()
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        r.receive_data(data[last:cut])
        last = cut
    r.receive_data(data[last:])
    r.receive_data(b"")
    out: list[object] = []
    while (event := r.next_event()) is not None:
        out.append(event)
    return out


@settings(max_examples=300)
@given(st.lists(st.tuples(_VERB, _LINE_BYTES), max_size=6), st.lists(st.integers(0, 2000), max_size=10))
def test_smtp_command_lines_round_trip_under_any_split(
    lines: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    lines = [(v, a) for v, a in lines if v]
    data = b"".join(v + b" " + a + b"\r\n" for v, a in lines)
    events = smtp_events(data, cuts)
    assert events == smtp_events(data, [])  # the split does not matter
    assert events[-1] == Eof()
    commands = events[:-1]
    assert len(commands) == len(lines)
    for (verb, arg), cmd in zip(lines, commands, strict=True):
        assert isinstance(cmd, Command)
        raw_line = verb + b" " + arg  # only the CR of the CRLF is dropped; one more CR stays
        assert cmd.line.encode("utf-8", "surrogateescape") == raw_line
        assert cmd.verb == verb.decode("utf-8", "surrogateescape").upper()
        assert cmd.arg == cmd.line[cmd.line.find(" ") + 1 :].lstrip(" ")


@given(st.integers(MAX_COMMAND - 3, MAX_COMMAND + 3), st.booleans(), st.sampled_from([b"\n", b"\r\n"]))
def test_smtp_command_limit_is_exact(length: int, complete: bool, end: bytes) -> None:
    data = b"NOOP " + b"x" * (length - 5) + (end if complete else b"")
    r = SmtpReader()
    r.receive_data(data)
    event = r.next_event()
    if length > MAX_COMMAND:
        assert event == TooLong()
        assert r.next_event() is None  # dead: nothing after the fatal event
    elif complete:
        assert isinstance(event, Command) and len(event.line) == length
    else:
        assert event is None  # waits for the rest of the line


@given(st.binary(max_size=400))
def test_smtp_nul_never_survives_into_a_command(data: bytes) -> None:
    for event in smtp_events(data + b"\r\n", []):
        if isinstance(event, Command):
            assert "\0" not in event.line and "\0" not in event.arg


@given(_VERB, _LINE_BYTES)
def test_pop3_line_round_trip(verb: bytes, arg: bytes) -> None:
    line = verb + b" " + arg
    (event,) = CommandReader().feed(line + b"\r\n")
    assert isinstance(event, PopCommand)
    stripped = line  # the CRLF's CR is dropped, a CR before it stays
    assert event == parse_line(stripped)
    assert event.verb == verb.lower().decode("latin-1")  # ASCII case folding only
    assert event.arg == stripped[len(verb) + 1 :].lstrip(b" ")


@given(_VERB, _LINE_BYTES, st.binary(max_size=40))
def test_pop3_nul_cuts_the_line(verb: bytes, before: bytes, after: bytes) -> None:
    (event,) = CommandReader().feed(verb + b" " + before + b"\0" + after.replace(b"\n", b"") + b"\n")
    assert isinstance(event, PopCommand)
    assert b"\0" not in event.line
    assert event.line == verb + b" " + before


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=6))
def test_pop3_long_lines_are_reported_and_the_next_line_still_parses(lengths: list[int]) -> None:
    data = b"".join(b"x" * n + b"\n" for n in lengths) + b"QUIT\r\n"
    events = CommandReader().feed(data)
    assert events[-1] == parse_line(b"QUIT")
    assert sum(isinstance(e, PopTooLong) for e in events) == sum(n + 1 > 1024 for n in lengths)


@settings(max_examples=400)
@given(st.text(max_size=120), st.booleans())
def test_path_parser_takes_any_text(text: str, rcpt: bool) -> None:
    """Every code point, NUL, CR and LF included: either the syntax error or a bounded address."""
    prefix = "TO:" if rcpt else "FROM:"
    try:
        parsed = parse_path(prefix + text, own_ips={"192.0.2.1"}, localiphost="mx.test", allow_empty=not rcpt)
    except AddressSyntaxError:
        return
    assert len(parsed.address) <= MAX_ADDRESS
    assert not rcpt or parsed.address
    assert all(" " not in p for p in parsed.params)


_ANY_LOCAL = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
_ANY_DOMAIN = st.text(st.characters(codec="utf-8", exclude_characters='@"\\<> \t\r\n'),
                      min_size=1, max_size=20)


@settings(max_examples=300)
@given(_ANY_LOCAL, _ANY_DOMAIN)
def test_quoting_any_address_round_trips(local: str, domain: str) -> None:
    """Whatever the local part holds (quotes, backslashes, '@', '>', blanks, control characters), the
    quoted form parses back to the same address, so the relay check sees the domain our client sends."""
    assume(not domain.startswith("[") and not (local.startswith("@") and domain))
    address = f"{local}@{domain}"
    assume(not has_line_break(address))  # refused outright (qmail-smtpd(8)): see test_security_log_forging
    parsed = parse_path(f"TO:<{quote_address(address)}>", allow_empty=False).address
    assert parsed == address
    assert split_address(parsed) == (local, domain)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.text(alphabet="abc.", max_size=8))
def test_ip_literals_map_only_own_addresses(ip: ipaddress.IPv4Address, own: ipaddress.IPv4Address,
                                            local: str) -> None:
    local = local or "u"
    parsed = parse_path(f"TO:<{local}@[{ip}]>", own_ips={str(own)}, localiphost="mx.test").address
    assert parsed == (f"{local}@mx.test" if ip == own else f"{local}@[{ip}]")
    assert canonical_ipv4(str(ip)) == str(ip)

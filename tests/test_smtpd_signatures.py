"""REJECTEXEC signature scan (qmail-smtpd(8), RBL AND SIGNATURES): first body lines of the message and of
every MIME part."""

from __future__ import annotations

from qldap.smtpd.signatures import SignatureScanner, pattern_matches

EXE = b"TVqQAAMAAAAEAAAA//8AALgAAAAA"
PATTERNS = (b"TVqQAAMAAAAEAAAA//8AALgAAAAA", b"UEsDBB*AAAA")


def scan(message: bytes, *, pieces: int = 1, patterns: tuple[bytes, ...] = PATTERNS) -> bool:
    s = SignatureScanner(patterns)
    step = max(1, -(-len(message) // pieces))
    for i in range(0, len(message), step):
        s.feed(message[i : i + step])
    return s.finish()


def test_pattern() -> None:
    assert pattern_matches(b"UEsDBB*AAAA", b"UEsDBBxAAAArest")
    assert not pattern_matches(b"UEsDBB*AAAA", b"UEsDBBxAAAB")
    assert not pattern_matches(b"TVq", b"TV")
    assert pattern_matches(b"***", b"abc")


def test_first_body_line_of_plain_message() -> None:
    assert scan(b"Subject: x\n\n" + EXE + b"AAAA\nmore\n")
    assert not scan(b"Subject: x\n\nhello\n" + EXE + b"\n")  # only the first body line counts
    assert not scan(b"Subject: x\n" + EXE + b"\n\nhello\n")  # header lines are not body lines


MULTI = (
    b"Subject: x\n"
    b"Content-Type: multipart/mixed;\n"
    b'\tboundary="=_outer"\n'
    b"\n"
    b"This is a multi-part message in MIME format.\n"
    b"--=_outer\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"hello\n"
    b"--=_outer\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + EXE + b"AAAA\n"
    b"QUJD\n"
    b"--=_outer--\n"
)


def test_mime_parts_and_folded_boundary() -> None:
    assert scan(MULTI)
    for pieces in (3, 17, len(MULTI)):
        assert scan(MULTI, pieces=pieces)
    assert not scan(MULTI.replace(EXE, b"SGVsbG8"))


def test_nested_multipart_and_message_rfc822() -> None:
    inner = (
        b"Content-Type: message/rfc822\n"
        b"\n"
        b"Subject: forwarded\n"
        b"Content-Type: multipart/alternative; boundary=inner\n"
        b"\n"
        b"--inner\n"
        b"Content-Type: application/zip\n"
        b"\n"
        b"UEsDBBQAAAAIAA\n"
        b"--inner--\n"
    )
    message = (
        b"Content-Type: multipart/mixed; boundary=outer\n\npreamble\n--outer\n"
        + inner
        + b"--outer\nContent-Type: text/plain\n\nbye\n--outer--\n"
    )
    assert scan(message)
    assert not scan(message.replace(b"UEsDBBQAAAAIAA", b"notzip"))


def test_crlf_boundaries_and_no_patterns() -> None:
    message = MULTI.replace(b"--=_outer\n", b"--=_outer\r\n")
    assert scan(message)
    assert not scan(MULTI, patterns=())
    assert not scan(b"")


def test_epilogue_after_close_is_not_a_part() -> None:
    message = (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b--\n"
        + EXE
        + b"\n"
    )
    assert not scan(message)


def test_final_line_without_lf() -> None:
    assert scan(b"Subject: x\n\n" + EXE)

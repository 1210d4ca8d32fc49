"""REJECTEXEC: find signature patterns at the first body line of a message and of each MIME part.

Why only first body lines: executables sent as mail attachments are recognised by the start of their
base64 encoding (``TVqQAAMAAAAEAAAA//8AALgAAAAA`` for a Windows PE file), which is the first line of
the part's body; comparing only those lines keeps the scan cheap.  The scanner is streaming (fed the
converted DATA chunks) so a large message is not held in memory a second time.  MIME structure is
followed through multipart boundaries and into ``message/rfc822`` parts (qmail-smtpd(8), RBL AND SIGNATURES);
a pattern matches when it is a prefix of the line, each ``*`` standing for any one character.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_MAX_LINE = 16384  # only the start of a line can matter; longer lines are cut
_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)


def pattern_matches(pattern: bytes, line: bytes) -> bool:
    """True when *pattern* is a prefix of *line*, ``*`` matching any single character."""
    if len(line) < len(pattern):
        return False
    return all(p == 42 or p == c for p, c in zip(pattern, line, strict=False))


class SignatureScanner:
    """Feed message bytes (LF line ends); :attr:`hit` turns True when a first body line matches."""

    def __init__(self, patterns: Iterable[bytes]) -> None:
        self._patterns = tuple(p for p in patterns if p)
        self.hit = False
        self._partial = b""
        self._boundaries: list[bytes] = []  # open multipart boundaries, innermost last
        self._in_header = True
        self._header: list[bytes] = []  # unfolded header fields of the current entity
        self._first_body = False  # the next line is an entity's first body line
        self._done = not self._patterns

    def feed(self, data: bytes) -> None:
        """Scan *data*, continuing any line left unfinished by the previous call."""
        if self._done or not data:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[:_MAX_LINE]
        for line in lines:
            self._line(line[:_MAX_LINE])
            if self.finished:
                break

    @property
    def finished(self) -> bool:
        """True when nothing later in the message can change :attr:`hit`."""
        return self._done

    def finish(self) -> bool:
        """Scan a final line without LF; return :attr:`hit`."""
        if not self._done and self._partial:
            self._line(self._partial)
        self._partial = b""
        return self.hit

    def _line(self, line: bytes) -> None:
        if self._in_header:
            self._header_line(line)
            return
        if self._boundaries and line.startswith(b"--") and self._boundary(line):
            return
        if self._first_body:
            self._first_body = False
            if any(pattern_matches(p, line) for p in self._patterns):
                self.hit = self._done = True
                return
        if not self._boundaries:
            self._done = True  # no further part can start: nothing left to look at

    def _header_line(self, line: bytes) -> None:
        stripped = line.rstrip(b"\r")
        if stripped:
            if stripped[:1] in (b" ", b"\t") and self._header:
                self._header[-1] += b" " + stripped.strip()
            else:
                self._header.append(stripped)
            return
        ctype = b""
        for field in self._header:
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"content-type":
                ctype = value.strip()
        self._header = []
        kind = ctype.split(b";", 1)[0].strip().lower()
        if kind == b"message/rfc822":
            return  # the embedded message's header follows: stay in header mode
        self._in_header = False
        self._first_body = True
        if kind.startswith(b"multipart/"):
            m = _PARAM.search(ctype)
            if m:
                self._boundaries.append(m.group(1) if m.group(1) is not None else m.group(2))

    def _boundary(self, line: bytes) -> bool:
        """Handle ``--b`` / ``--b--`` of an open boundary; False when *line* is an ordinary line."""
        text = line.rstrip(b"\r \t")
        for depth in range(len(self._boundaries) - 1, -1, -1):
            b = self._boundaries[depth]
            if text == b"--" + b + b"--":
                del self._boundaries[depth:]
                self._first_body = False
                return True
            if text == b"--" + b:
                del self._boundaries[depth + 1 :]
                self._in_header = True
                self._header = []
                self._first_body = False
                return True
        return False

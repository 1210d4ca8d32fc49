"""The one log writer every daemon uses: ``prog: text`` lines on stderr, levelled, timestamped, redacted.

Why a shared helper instead of :mod:`logging`: the line shapes are a contract (qmail-send(8), LOG,
qmail-smtpd(8) LOG — qmailanalog-style tools parse them), so nothing may add level names, module paths or
multi-line tracebacks; a line is written whole with one ``write`` so lines of concurrent tasks never
interleave; and the two rules that keep logs safe live here once: free text is escaped the way
qmail-send escapes it (:func:`escape`), and :func:`redact` removes passwords, AUTH data and
registered secret values before anything reaches the stream.

Levels follow qmail-ldap's ``LOGLEVEL``: 0 nothing but fatal errors, 1 errors and the accounting
lines, 2 connections and transactions (the usual production level), 3 details, 4 debug.
Timestamps: ``none`` (a supervisor such as multilog adds its own), ``iso`` (UTC, microseconds) or
``tai64n`` (``@`` + 24 hex digits, what daemontools' ``tai64n`` prefixes).
"""

from __future__ import annotations

import enum
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TextIO

TAI64_EPOCH = 2**62 + 10  # TAI64 label of 1970-01-01 00:00:00 UTC (+10 s TAI-UTC, as tai64n)
REDACTED = "***"


class Level(enum.IntEnum):
    """How much a line matters; a line is written when its level ≤ the logger's level."""

    FATAL = 0
    ERROR = 1
    INFO = 2
    DETAIL = 3
    DEBUG = 4


DEFAULT_LEVEL = Level.INFO


class Timestamps(enum.Enum):
    """The optional prefix of every line."""

    NONE = "none"
    ISO = "iso"
    TAI64N = "tai64n"


def parse_level(text: str | None, default: int = DEFAULT_LEVEL) -> int:
    """``LOGLEVEL`` → level: its leading digits, capped at :attr:`Level.DEBUG`; *default* without digits."""
    digits = ""
    for ch in (text or "").strip():
        if not ch.isascii() or not ch.isdigit():
            break
        digits += ch
    return min(int(digits), Level.DEBUG) if digits else default


def parse_timestamps(text: str | None) -> Timestamps:
    """``LOGTIMESTAMPS`` → :class:`Timestamps`; unknown or empty values mean ``none``."""
    try:
        return Timestamps((text or "none").strip().lower())
    except ValueError:
        return Timestamps.NONE


def stamper(environ: Mapping[str, str]) -> Callable[[], str]:
    """A function giving the ``LOGTIMESTAMPS`` prefix (with its blank) for a line written now."""
    mode = parse_timestamps(environ.get("LOGTIMESTAMPS"))
    if mode is Timestamps.ISO:
        return lambda: iso(time.time()) + " "
    if mode is Timestamps.TAI64N:
        return lambda: tai64n(time.time()) + " "
    return lambda: ""


def tai64n(now: float) -> str:
    """The TAI64N label of Unix time *now*: ``@4000000065f1a2b3`` + 8 hex digits of nanoseconds."""
    secs = int(now)
    nanos = min(int((now - secs) * 1_000_000_000), 999_999_999)
    return f"@{TAI64_EPOCH + secs:016x}{nanos:08x}"


def iso(now: float) -> str:
    """Unix time *now* as ``2024-05-01T12:00:00.123456Z``."""
    secs = int(now)
    micros = min(int((now - secs) * 1_000_000), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


def escape(text: str | bytes) -> str:
    """qmail-send's free-text rule: newline → ``/``; bytes below 33, above 126 and ``%`` → ``_``.

    Works on the UTF-8 bytes, so one non-ASCII character becomes as many ``_`` as it has bytes,
    exactly as the C manager printed it.
    """
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return raw.translate(_ESCAPE_TABLE).decode("ascii")


def printable(text: str) -> str:
    """A client-supplied string (address, login, command line) made safe for one log line.

    Why not :func:`escape`: that rule also hides blanks and every non-ASCII octet, which turns an
    SMTPUTF8 address into underscores.  Here only what could end or disguise a line is rewritten —
    C0 controls (LF, CR, NUL …), DEL, the C1 range, U+2028/U+2029, and octets that were not UTF-8
    (surrogate escapes) — as ``\\n``, ``\\r``, ``\\xNN`` or ``\\uNNNN``; a backslash is doubled so
    the escaped form cannot be typed by the client.  A line can then never be split or forged.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_PRINTABLE_TABLE)


_PRINTABLE_TABLE: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    0x0A: "\\n",
    0x0D: "\\r",
    0x5C: "\\\\",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    **{c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)},  # undecodable octets
}


_ESCAPE_TABLE = bytes(
    ord("/") if b == 10 else ord("_") if b < 33 or b > 126 or b == ord("%") else b for b in range(256)
)

# A protocol line carrying a credential: POP3 PASS, SMTP/IMAP AUTH with an initial response,
# and the bare base64 answers of an AUTH dialogue are never handed to the logger by the daemons.
_PASS = re.compile(r"(?i)(?<![\w-])(pass\s+)\S.*$")
_MECHS = r"(?:PLAIN|LOGIN|CRAM-MD5|DIGEST-MD5|XOAUTH2|OAUTHBEARER|SCRAM-\S+)"
_AUTH = re.compile(rf"(?i)(?<![\w-])(auth\s+{_MECHS}\s+)\S.*$")
_KEYVAL = re.compile(r"(?i)((?:password|passwd|secret|pbssecret|ldappassword)\s*[=:]\s*)\S+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """*text* with credentials replaced by ``***``.

    Removes the argument of ``PASS`` and the initial response of ``AUTH MECH …``, the value of
    ``password=``/``secret:``-style pairs, and every occurrence of each non-empty string in *secrets*
    (the service account password, the pbs secret …) wherever it appears.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PASS.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTH.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEYVAL.sub(lambda m: m.group(1) + REDACTED, text)


class Logger:
    """Writes ``prog: text`` lines to a stream (stderr by default), one ``write`` per line.

    Thread-safe; *clock* is a seam for tests.  Nothing is escaped implicitly — callers escape free
    text from outside with :func:`escape` where the line shape asks for it — but every line passes
    through :func:`redact` with the secrets registered by :meth:`add_secret`.
    """

    def __init__(
        self,
        prog: str,
        level: int = DEFAULT_LEVEL,
        timestamps: Timestamps | str = Timestamps.NONE,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prog = prog
        self.level = level
        self.timestamps = timestamps if isinstance(timestamps, Timestamps) else parse_timestamps(timestamps)
        self._stream = stream
        self._clock = clock
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, prog: str, environ: Mapping[str, str], stream: TextIO | None = None) -> Logger:
        """A logger configured by ``LOGLEVEL`` and ``LOGTIMESTAMPS`` (none|iso|tai64n) in *environ*."""
        return cls(prog, parse_level(environ.get("LOGLEVEL")), parse_timestamps(environ.get("LOGTIMESTAMPS")),
                   stream)

    def add_secret(self, value: str) -> None:
        """Never write *value* (a password, a shared secret): it is replaced by ``***`` in every line."""
        if value:
            self._secrets.add(value)

    def enabled(self, level: int) -> bool:
        """True when lines of *level* are written (to skip building expensive ones)."""
        return level <= self.level

    def prefix(self) -> str:
        """The timestamp prefix (with its separating blank), empty for :attr:`Timestamps.NONE`."""
        if self.timestamps is Timestamps.ISO:
            return iso(self._clock()) + " "
        if self.timestamps is Timestamps.TAI64N:
            return tai64n(self._clock()) + " "
        return ""

    def log(self, text: str, level: int = Level.INFO) -> None:
        """Write ``[timestamp ]prog: text`` when *level* is enabled; embedded newlines become ``/``."""
        if level > self.level:
            return
        body = redact(text, self._secrets).replace("\n", "/")
        self._write(f"{self.prefix()}{self.prog}: {body}\n")

    def error(self, text: str) -> None:
        """An error line (level 1)."""
        self.log(text, Level.ERROR)

    def warning(self, text: str) -> None:
        """``warning: text`` (level 1)."""
        self.log(f"warning: {text}", Level.ERROR)

    def fatal(self, text: str) -> None:
        """``fatal: text``; written at every level."""
        self.log(f"fatal: {text}", Level.FATAL)

    def info(self, text: str) -> None:
        """A level-2 line."""
        self.log(text, Level.INFO)

    def debug(self, text: str) -> None:
        """A level-4 line."""
        self.log(text, Level.DEBUG)

    def relay(self, line: str) -> None:
        """Pass a line another program already formatted (a child's stderr) through unchanged but redacted."""
        self._write(redact(line.rstrip("\n"), self._secrets) + "\n")

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the log reader went away; a daemon must not die of it

"""Validation of directory values (qmail-local(8), QMAILUSER ATTRIBUTES): user, path, program and forward
checks, ids, numbers.

Why pure functions apart from the records: the directory is not trusted (qmail-local(8) QMAILUSER ATTRIBUTES —
a value may carry shell metacharacters, ``..`` components or header-injecting newlines), and each consumer
runs the checks it needs in its own order (local delivery checks accountStatus first, auth checks the
password first).  Every failure raises the exact qmail-ldap permanent failure; ``detail`` names the
attribute for the log.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from qldap.directory.errors import IllegalValue, MissingAttribute
from qldap.directory.schema import DeliveryModeWord, DotMode

_ALNUM = string.ascii_letters + string.digits
_USER_CHARS = frozenset(_ALNUM + "._@-")
_PATH_CHARS = frozenset(_ALNUM + "._@-/:=#")
_PROGRAM_CHARS = frozenset(_ALNUM + " \t\"'+,-./:=@\\_#")
_FORWARD_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))

ID_MIN = 100
ID_MAX = 65535


def check_user(value: str, attribute: str = "uid") -> str:
    """The user check: ``A-Za-z0-9._@-``, not empty, not starting with ``-``.

    Raises:
        IllegalValue: the value fails the check.
    """
    if not value or value[0] == "-" or not _USER_CHARS.issuperset(value):
        raise IllegalValue(f"{attribute}: {value!r}")
    return value


def check_path(value: str, attribute: str = "mailMessageStore") -> str:
    """The path check: ``A-Za-z0-9._@-/:=#``, not starting with ``-``, no ``..`` component anywhere.

    Raises:
        IllegalValue: the value fails the check (``/x/..`` included).
    """
    if not value or value[0] == "-" or not _PATH_CHARS.issuperset(value) or ".." in value.split("/"):
        raise IllegalValue(f"{attribute}: {value!r}")
    return value


def check_program(value: str, attribute: str = "deliveryProgramPath") -> str:
    """The program check: letters, digits, blank, tab and ``"'+,-./:=@\\_#``; not starting with ``-``.

    Shell metacharacters (``! $ % & ( ) * ; < > ? [ ] ^ { } ~`` backtick ``|``), LF and CR are refused.

    Raises:
        IllegalValue: the value fails the check.
    """
    if not value or value[0] == "-" or not _PROGRAM_CHARS.issuperset(value):
        raise IllegalValue(f"{attribute}: {value!r}")
    return value


def check_forward(value: str, attribute: str = "mailForwardingAddress") -> str:
    """The forward check: printable ASCII only, no blank, no control bytes, not empty.

    Raises:
        IllegalValue: the value fails the check.
    """
    if not value or not _FORWARD_CHARS.issuperset(value):
        raise IllegalValue(f"{attribute}: {value!r}")
    return value


def parse_number(value: str, attribute: str = "mailQuotaSize") -> int:
    """An all-digits value (mailSizeMax, mailQuotaSize, mailQuotaCount) as an int.

    Raises:
        IllegalValue: empty or any non-digit (``10k``, ``-1``, `` 5``).
    """
    if not value or not value.isascii() or not value.isdigit():
        raise IllegalValue(f"{attribute}: {value!r}")
    return int(value)


def parse_id(value: str, attribute: str = "qmailUID") -> int:
    """A qmailUID/qmailGID: digits only, 100–65535.

    Raises:
        IllegalValue: not all digits, or out of range (0, 99, 65536).
    """
    number = parse_number(value, attribute)
    if not ID_MIN <= number <= ID_MAX:
        raise IllegalValue(f"{attribute}: {value!r}")
    return number


def resolve_id(value: str | None, default: int | None, attribute: str = "qmailUID") -> int:
    """The entry's id, else the configured default (``ldapuid``/``ldapgid``).

    Raises:
        IllegalValue: the entry's value is not a valid id.
        MissingAttribute: absent and no default configured.
    """
    if value is not None:
        return parse_id(value, attribute)
    if default is None:
        raise MissingAttribute(attribute)
    return default


def require(value: str | None, attribute: str) -> str:
    """*value* itself.

    Raises:
        MissingAttribute: *value* is None (the attribute is absent).
    """
    if value is None:
        raise MissingAttribute(attribute)
    return value


def parse_dot_mode(value: str, attribute: str = "qmailDotMode") -> DotMode:
    """qmailDotMode (case-insensitive): ldaponly, ldapwithprog, dotonly, both, none.

    Raises:
        IllegalValue: any other value.
    """
    try:
        return DotMode(value.lower())
    except ValueError:
        raise IllegalValue(f"{attribute}: {value!r}")


@dataclass(frozen=True, slots=True)
class DeliveryModes:
    """The deliveryMode values as switches (qmail-local(8), QMAILUSER ATTRIBUTES); ``words`` is QMAILMODE's
    content."""

    words: tuple[str, ...] = ()
    nolocal: bool = False
    noforward: bool = False
    noprogram: bool = False
    reply: bool = False
    unknown: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        """True when the entry had any deliveryMode value (QMAILREPLYTEXT needs one)."""
        return bool(self.words)


def parse_delivery_modes(values: Iterable[str]) -> DeliveryModes:
    """Switches from deliveryMode values: lower-cased, comma-separated legacy values split and trimmed.

    Unknown words are collected in ``unknown`` (the caller warns and ignores them); never raises.
    """
    words: list[str] = []
    for value in values:
        for part in value.split(","):
            word = part.strip().lower()
            if word:
                words.append(word)
    if not words:
        return _NO_MODES  # most entries: no deliveryMode at all
    known = _MODE_WORDS
    flags = {known[w] for w in words if w in known}
    W = DeliveryModeWord
    return DeliveryModes(
        words=tuple(words),
        nolocal=bool(flags & {W.NOLOCAL, W.NOMBOX, W.FORWARDONLY}),
        noforward=W.NOFORWARD in flags,
        noprogram=bool(flags & {W.NOPROGRAM, W.FORWARDONLY}),
        reply=W.REPLY in flags,
        unknown=tuple(w for w in words if w not in known),
    )


_NO_MODES: Final = DeliveryModes()
_MODE_WORDS: Final = {w.value: w for w in DeliveryModeWord}

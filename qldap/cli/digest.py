"""``digest``: make userPassword values for an admin, or check a password against one (digest(1)).

Two modes. Making (the default, also selected by ``-c``): print ``{SCHEME}value`` for every scheme of
the original tool in its fixed order, or only for ``-t type``; a scheme the salt or crypt template
cannot satisfy prints ``NAME failed.`` and the tool still exits 0, so scripts can parse all eight
lines. Checking (``-v``): print whether the password matches; a value that cannot be decoded is an
error (exit 1) with the original's text, which lacks a trailing newline. Options are parsed like
POSIX getopt (the first non-option ends them); the last of ``-c``/``-v`` and of the crypt template
options wins.
"""

from __future__ import annotations

import base64
import binascii
import getopt
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from qldap.cli._run import run
from qldap.exitcodes import ExitCode
from qldap.passwords.schemes import (
    DEFAULT_SALT_BYTES,
    DIGEST_SCHEMES,
    SCHEME_NAMES,
    MalformedHash,
    Scheme,
    check_password,
    make_hash,
)

PROG = "digest"
USAGE = (
    "usage: digest [-c] [-b | -5 | -C | -f cryptformat] [-s base64salt] [-S hexsalt] [-t type] password\n"
    "       digest -v password hashedpassword\n"
)
OPTIONS = "5bCcf:s:S:t:v"

TEMPLATE_DES = "XX"
TEMPLATE_MD5 = "$1$XXXXXXXX$"
TEMPLATE_BLOWFISH = "$2a$07$" + "X" * 24

EQUAL = "passwords are equal.\n"
NOT_EQUAL = "passwords are NOT equal.\n"
CMP_FAILED = "digest: cmp_password: failed."  # no newline: the original printed it that way
BAD_TYPE = "digest: bad digest type, use one of:\n"
BAD_BASE64 = "digest: bad base64 string.\n"
BAD_HEX = "digest: bad hex string.\n"

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")


class UsageError(Exception):
    """Bad command line: the message (possibly empty) is written to stderr before the usage text."""


@dataclass(frozen=True, slots=True)
class Request:
    """What the command line asks for."""

    verify: bool
    args: tuple[str, ...]
    crypt_format: str = TEMPLATE_DES
    salt: bytes | None = None
    scheme: Scheme | None = None


def _parse_type(value: str) -> Scheme:
    for scheme in DIGEST_SCHEMES:
        if scheme.value == value.lower():
            return scheme
    raise UsageError(BAD_TYPE + "".join(f"\t{name}\n" for name in SCHEME_NAMES))


def _parse_base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(BAD_BASE64 + USAGE)


def _parse_hex(value: str) -> bytes:
    if not _HEX.fullmatch(value):
        raise UsageError(BAD_HEX + USAGE)
    return bytes.fromhex(value)


def parse_args(argv: Sequence[str]) -> Request:
    """Turn the command line into a :class:`Request`.

    Raises:
        UsageError: unknown option, bad salt or type, or the wrong number of arguments.
    """
    try:
        opts, args = getopt.getopt(list(argv), OPTIONS)
    except getopt.GetoptError:
        raise UsageError(USAGE)
    verify = False
    crypt_format = TEMPLATE_DES
    salt: bytes | None = None
    scheme: Scheme | None = None
    for opt, value in opts:
        if opt == "-5":
            crypt_format = TEMPLATE_MD5
        elif opt == "-b":
            crypt_format = TEMPLATE_BLOWFISH
        elif opt == "-C":
            crypt_format = TEMPLATE_DES
        elif opt == "-f":
            crypt_format = value
        elif opt == "-c":
            verify = False
        elif opt == "-v":
            verify = True
        elif opt == "-s":
            salt = _parse_base64(value)
        elif opt == "-S":
            salt = _parse_hex(value)
        elif opt == "-t":
            scheme = _parse_type(value)
    if len(args) != (2 if verify else 1):
        raise UsageError(USAGE)
    return Request(verify, tuple(args), crypt_format, salt, scheme)


def make_lines(request: Request) -> str:
    """The output of making mode: one ``{SCHEME}value`` or ``name failed.`` line per scheme."""
    salt = secrets.token_bytes(DEFAULT_SALT_BYTES) if request.salt is None else request.salt
    schemes = DIGEST_SCHEMES if request.scheme is None else (request.scheme,)
    lines = []
    for scheme in schemes:
        try:
            lines.append(make_hash(scheme, request.args[0], salt, crypt_format=request.crypt_format))
        except ValueError:
            lines.append(f"{scheme.value} failed.")
    return "".join(line + "\n" for line in lines)


def verify_text(request: Request) -> tuple[str, ExitCode]:
    """The output and exit code of checking mode."""
    password, hashed = request.args
    try:
        equal = check_password(hashed, password)
    except MalformedHash:
        return CMP_FAILED, ExitCode.USAGE
    return (EQUAL if equal else NOT_EQUAL), ExitCode.OK


def _body(argv: Sequence[str]) -> int:
    try:
        request = parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(str(exc))
        return ExitCode.USAGE
    if request.verify:
        text, code = verify_text(request)
    else:
        text, code = make_lines(request), ExitCode.OK
    sys.stdout.write(text)
    sys.stdout.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``digest``."""
    return run(PROG, _body, argv)

"""Check and make userPassword values in every scheme qmail-ldap and OpenLDAP use (auth_pop(8), THE CHECK).

Stored forms: ``{SCHEME}REST`` with the scheme name case-insensitive, or a bare crypt(3) string, or
(only when the operator enables it) cleartext. Salted digests keep the salt as every decoded byte after
the digest. Unknown ``{X}`` schemes never match, and data that cannot even be decoded raises
:class:`MalformedHash` so that the auth modules can report a broken record (exit 25) instead of a
wrong password.

crypt(3) backends, why two: Python's ``crypt`` module is deprecated (gone in 3.13), so the classic
formats (DES, ``$1$``, ``$5$``, ``$6$``) use passlib's pure implementations, which behave the same on
every platform. Formats passlib cannot do without extra packages (bcrypt ``$2?$``, yescrypt ``$y$``,
anything else libxcrypt knows) go to the system's libxcrypt through ``crypt_rn``, which is thread-safe
and returns NULL instead of a failure token. Without a backend a format simply never matches.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import enum
import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from passlib.hash import argon2, bcrypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from qldap.passwords._md4 import md4
from qldap.passwords._rmd160 import ripemd160


class MalformedHash(ValueError):
    """A stored password value that cannot be decoded (bad base64, too short, wrong length)."""


class Scheme(enum.StrEnum):
    """Schemes :func:`make_hash` can produce; the value is the lowercase name ``digest -t`` takes."""

    CRYPT = "crypt"
    MD4 = "md4"
    MD5 = "md5"
    NS_MTA_MD5 = "ns-mta-md5"
    SMD5 = "smd5"
    SHA = "sha"
    SSHA = "ssha"
    RMD160 = "rmd160"
    SHA256 = "sha256"
    SHA512 = "sha512"
    SSHA256 = "ssha256"
    SSHA512 = "ssha512"
    SHA512_CRYPT = "sha512-crypt"

    @property
    def prefix(self) -> str:
        """The ``{NAME}`` written in front of the value (``sha512-crypt`` is stored as ``{CRYPT}``)."""
        return "{CRYPT}" if self is Scheme.SHA512_CRYPT else "{" + self.value.upper() + "}"


#: The schemes of the original ``digest`` tool, in its output order.
DIGEST_SCHEMES: tuple[Scheme, ...] = (
    Scheme.CRYPT,
    Scheme.MD4,
    Scheme.MD5,
    Scheme.NS_MTA_MD5,
    Scheme.SMD5,
    Scheme.SHA,
    Scheme.SSHA,
    Scheme.RMD160,
)
#: Their names, as listed by ``digest: bad digest type, use one of:``.
SCHEME_NAMES: tuple[str, ...] = tuple(s.value for s in DIGEST_SCHEMES)

DEFAULT_SALT_BYTES = 18  # digest's default: 128 bits plus room for base64 rounding
MIN_SALT_BYTES = 4  # salted digests need at least this much salt
NS_MTA_SALT_BYTES = 16  # NS-MTA-MD5 uses the hex of exactly 16 salt bytes
NS_MTA_LENGTH = 64  # 32 hex digest characters + 32 salt characters

_PREFIX = re.compile(r"\{([A-Za-z0-9._-]+)\}")
_DES_CHARS = frozenset(string.ascii_letters + string.digits + "./")
_DES_HASH = re.compile(r"[./0-9A-Za-z]{13}")
_B64_BODY = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(r"\s+")
_CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt


def _md4(data: bytes) -> bytes:
    try:
        return hashlib.new("md4", data).digest()
    except ValueError:  # OpenSSL 3 without the legacy provider
        return md4(data)


def _rmd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:
        return ripemd160(data)


@dataclass(frozen=True, slots=True)
class _Digest:
    """One ``{NAME}`` digest scheme: b64(H(P‖salt)‖salt), the salt being empty when unsalted."""

    size: int
    salted: bool
    func: Callable[[bytes], bytes]


def _hashlib(name: str) -> Callable[[bytes], bytes]:
    return lambda data: hashlib.new(name, data).digest()


_DIGESTS: dict[str, _Digest] = {
    "sha": _Digest(20, False, _hashlib("sha1")),
    "ssha": _Digest(20, True, _hashlib("sha1")),
    "md5": _Digest(16, False, _hashlib("md5")),
    "smd5": _Digest(16, True, _hashlib("md5")),
    "md4": _Digest(16, False, _md4),
    "rmd160": _Digest(20, False, _rmd160),
    "sha256": _Digest(32, False, _hashlib("sha256")),
    "ssha256": _Digest(32, True, _hashlib("sha256")),
    "sha512": _Digest(64, False, _hashlib("sha512")),
    "ssha512": _Digest(64, True, _hashlib("sha512")),
}


def _encode(text: str) -> bytes:
    # surrogateescape: callers that decoded raw fd 3 bytes with it get their exact bytes back.
    return text.encode("utf-8", "surrogateescape")


def _b64decode(text: str) -> bytes:
    """Decode standard base64, tolerating whitespace and missing padding; raise MalformedHash."""
    body = _WHITESPACE.sub("", text)
    if not _B64_BODY.fullmatch(body) or len(body.rstrip("=")) % 4 == 1:
        raise MalformedHash("undecodable base64")
    body = body.rstrip("=")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedHash("undecodable base64")


def _check_digest(digest: _Digest, rest: str, password: bytes) -> bool:
    data = _b64decode(rest)
    if len(data) < digest.size or (not digest.salted and len(data) != digest.size):
        raise MalformedHash("hash too short" if len(data) < digest.size else "hash has wrong length")
    stored, salt = data[: digest.size], data[digest.size :]
    return hmac.compare_digest(digest.func(password + salt), stored)


def _ns_mta_md5(salt_text: bytes, password: bytes) -> bytes:
    return hashlib.md5(salt_text + b"\x59" + password + b"\xf7" + salt_text).digest()


def _check_ns_mta_md5(rest: str, password: bytes) -> bool:
    raw = _encode(rest)
    if len(raw) != NS_MTA_LENGTH:
        raise MalformedHash("NS-MTA-MD5 value is not 64 characters")
    try:
        stored = bytes.fromhex(raw[:32].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedHash("NS-MTA-MD5 digest is not hex")
    return hmac.compare_digest(_ns_mta_md5(raw[32:], password), stored)


def _crypt_rn_caller(func: Callable[..., bytes | None]) -> Callable[[bytes, bytes], bytes | None]:
    def call(phrase: bytes, setting: bytes) -> bytes | None:
        data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)  # per call: no shared state
        return func(phrase, setting, data, _CRYPT_DATA_SIZE)

    return call


@functools.cache
def _libcrypt() -> Callable[[bytes, bytes], bytes | None] | None:
    """The system's ``crypt_rn`` (libxcrypt), or None where there is none."""
    for name in ("libcrypt.so.1", "libcrypt.so.2", ctypes.util.find_library("crypt")):
        if name is None:
            continue
        try:
            func = ctypes.CDLL(name).crypt_rn
        except (OSError, AttributeError):
            continue
        func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        func.restype = ctypes.c_char_p
        return _crypt_rn_caller(func)
    return None


def _system_crypt(password: bytes, setting: str) -> str | None:
    call = _libcrypt()
    if call is None or b"\x00" in password or "\x00" in setting:
        return None
    result = call(password, _encode(setting))
    if result is None or result.startswith(b"*"):
        return None
    return result.decode("utf-8", "surrogateescape")


def _passlib_verify(stored: str) -> Callable[[bytes, str], bool] | None:
    """The passlib verifier for *stored*'s crypt format, if passlib can do it here."""
    if stored.startswith("$1$"):
        return md5_crypt.verify  # type: ignore[no-any-return]
    if stored.startswith("$5$"):
        return sha256_crypt.verify  # type: ignore[no-any-return]
    if stored.startswith("$6$"):
        return sha512_crypt.verify  # type: ignore[no-any-return]
    if _DES_HASH.fullmatch(stored):
        return des_crypt.verify  # type: ignore[no-any-return]
    if stored.startswith(("$2a$", "$2b$", "$2y$")) and bcrypt.has_backend():
        return bcrypt.verify  # type: ignore[no-any-return]
    if stored.startswith("$argon2") and argon2.has_backend():
        return argon2.verify  # type: ignore[no-any-return]
    return None


def _check_crypt(stored: str, password: bytes) -> bool:
    """crypt(3)(P, stored) == stored; any failure of the backend is a mismatch."""
    if not stored:
        return False
    verify = _passlib_verify(stored)
    if verify is not None:
        try:
            return verify(password, stored)
        except (ValueError, TypeError):
            pass  # passlib refuses the format's details: let crypt(3) judge it below
    result = _system_crypt(password, stored)
    return result is not None and hmac.compare_digest(_encode(result), _encode(stored))


def _check_argon2(rest: str, password: bytes) -> bool:
    """``{ARGON2}`` + PHC string; fails closed (False) without an argon2 backend."""
    if not rest.startswith("$argon2") or not argon2.has_backend():
        return False
    try:
        return bool(argon2.verify(password, rest))
    except (ValueError, TypeError):
        return False


def check_password(stored: str, password: str, *, cleartext: bool = False) -> bool:
    """Whether *password* matches the userPassword value *stored*.

    An empty password never matches. *cleartext* allows a plain ``stored == password`` comparison,
    tried after bare crypt(3); it is off by default because it means storing cleartext.

    Raises:
        MalformedHash: *stored* names a known digest scheme but its data cannot be decoded.
    """
    if not password:
        return False
    secret = _encode(password)
    m = _PREFIX.match(stored)
    if m is not None:
        name, rest = m.group(1).lower(), stored[m.end() :]
        digest = _DIGESTS.get(name)
        if digest is not None:
            return _check_digest(digest, rest, secret)
        if name == "ns-mta-md5":
            return _check_ns_mta_md5(rest, secret)
        if name == "crypt":
            return _check_crypt(rest, secret)
        if name == "argon2":
            return _check_argon2(rest, secret)
        return False  # unknown scheme: never a match, never cleartext
    if _check_crypt(stored, secret):
        return True
    return cleartext and hmac.compare_digest(_encode(stored), secret)


def cram_md5_secret(stored: str, cleartext_enabled: bool) -> bytes | None:
    """The shared secret for CRAM-MD5 if *stored* is usable cleartext, else None.

    Only cleartext can answer a CRAM-MD5 challenge, so this is None unless cleartext support is on
    and *stored* carries no ``{SCHEME}`` and does not look like a crypt(3) hash (``$id$…`` or the
    13-character DES form); such users are simply not offered CRAM-MD5.
    """
    if not cleartext_enabled or not stored or _PREFIX.match(stored):
        return None
    if stored.startswith("$") or _DES_HASH.fullmatch(stored):
        return None
    return _encode(stored)


def crypt_setting(template: str, salt: bytes) -> str:
    """Build a crypt(3) setting from a digest template such as ``XX`` or ``$1$XXXXXXXX$``.

    The result is the text before the first ``X`` followed by as many characters of base64(salt)
    as the first run of ``X`` is long (``+`` written as ``.``); text after that run is dropped.

    Raises:
        ValueError: the template has no ``X``, or needs more salt than 4/3 of len(salt) characters.
    """
    start = template.find("X")
    if start < 0:
        raise ValueError("crypt template has no X")
    end = start
    while end < len(template) and template[end] == "X":
        end += 1
    count = end - start
    if 3 * count > 4 * len(salt):
        raise ValueError("salt too short for crypt template")
    chars = base64.b64encode(salt).decode("ascii")[:count].replace("+", ".")
    return template[:start] + chars


def _crypt_salt(setting: str, prefix: str, limit: int) -> str | None:
    """The salt of a ``$N$salt[$…]`` setting truncated to *limit*, or None if it has parameters."""
    body = setting[len(prefix) :]
    if body.startswith("rounds="):
        return None
    return body.split("$", 1)[0][:limit]


def make_crypt(password: str, setting: str) -> str:
    """crypt(3)(password, setting) through passlib where it can, else libxcrypt.

    Raises:
        ValueError: no backend can hash with this setting ("crypt failed").
    """
    secret = _encode(password)
    result: str | None = None
    try:
        if setting.startswith("$1$") and (salt := _crypt_salt(setting, "$1$", 8)) is not None:
            result = md5_crypt.using(salt=salt).hash(secret)
        elif setting.startswith("$5$") and (salt := _crypt_salt(setting, "$5$", 16)) is not None:
            result = sha256_crypt.using(salt=salt, rounds=5000).hash(secret)
        elif setting.startswith("$6$") and (salt := _crypt_salt(setting, "$6$", 16)) is not None:
            result = sha512_crypt.using(salt=salt, rounds=5000).hash(secret)
        elif len(setting) >= 2 and setting[0] in _DES_CHARS and setting[1] in _DES_CHARS:
            result = des_crypt.using(salt=setting[:2]).hash(secret)
    except (ValueError, TypeError):
        result = None
    if result is None:
        result = _system_crypt(secret, setting)
    if result is None:
        raise ValueError("crypt failed")
    return result


def make_hash(scheme: str, password: str, salt: bytes | None = None, *, crypt_format: str = "XX") -> str:
    """Return a complete userPassword value (``{SCHEME}…``) for *password*.

    *scheme* is a :class:`Scheme` value (case-insensitive). *salt* defaults to 18 random bytes;
    salted digests use all of it (at least 4 bytes), NS-MTA-MD5 the hex of its first 16 bytes, crypt
    the characters *crypt_format* asks for (see :func:`crypt_setting`); ``sha512-crypt`` uses the
    template ``$6$`` + 16 ``X``.

    Raises:
        ValueError: unknown scheme, or the salt / template cannot produce this scheme.
    """
    try:
        kind = Scheme(scheme.lower())
    except ValueError:
        raise ValueError(f"unknown password scheme: {scheme}")
    salt = secrets.token_bytes(DEFAULT_SALT_BYTES) if salt is None else salt
    secret = _encode(password)
    if kind in (Scheme.CRYPT, Scheme.SHA512_CRYPT):
        template = "$6$" + "X" * 16 if kind is Scheme.SHA512_CRYPT else crypt_format
        return kind.prefix + make_crypt(password, crypt_setting(template, salt))
    if kind is Scheme.NS_MTA_MD5:
        if len(salt) < NS_MTA_SALT_BYTES:
            raise ValueError("NS-MTA-MD5 needs 16 bytes of salt")
        salt_text = salt[:NS_MTA_SALT_BYTES].hex().encode("ascii")
        return kind.prefix + _ns_mta_md5(salt_text, secret).hex() + salt_text.decode("ascii")
    digest = _DIGESTS[kind.value]
    if not digest.salted:
        return kind.prefix + base64.b64encode(digest.func(secret)).decode("ascii")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"{kind.value} needs at least {MIN_SALT_BYTES} bytes of salt")
    return kind.prefix + base64.b64encode(digest.func(secret + salt) + salt).decode("ascii")

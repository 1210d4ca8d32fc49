"""Password schemes of auth_pop(8), THE CHECK: the classic schemes, modern schemes, malformed data,
backends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import warnings
from collections.abc import Callable

import pytest
from passlib.hash import argon2

from qldap.passwords import schemes as passwords
from qldap.passwords._md4 import md4
from qldap.passwords._rmd160 import ripemd160
from qldap.passwords.schemes import (
    SCHEME_NAMES,
    MalformedHash,
    Scheme,
    check_password,
    cram_md5_secret,
    crypt_setting,
    make_crypt,
    make_hash,
)

SSHA_JOE = "{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk"
NS_MTA = "{NS-MTA-MD5}0453ca77e815e11331df903fdad8a65d000102030405060708090a0b0c0d0e0f"
SALT16 = bytes(range(16))
# Genuine argon2i hash of "secret", made by OpenLDAP's slappasswd with its argon2 module (libargon2).
ARGON2_SECRET = (
    "{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$Bfa+vqAvCVshvWRX+1nuXg$uPaWT4qghp+nBDYc7cMqQsZGL3nNFUD/by94M/4UaPA"
)
# Test vectors of the SHA-crypt specification (U. Drepper) and of the crypt_blowfish test suite.
SHA256_CRYPT_HELLO = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
SHA512_CRYPT_HELLO = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
)
BCRYPT_UU = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"

needs_libcrypt = pytest.mark.skipif(passwords._libcrypt() is None, reason="no libxcrypt crypt_rn here")


# --- the classic schemes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored",
    [
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{sha}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        SSHA_JOE,
        "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
        "{SMD5}QtY1rL5sRAq49uXKCFn0XGFiY2Q=",
        "{MD4}Z9Pa/vY/8AYDru83ac+/DQ==",
        "{RMD160}zZi/AgLvB+OOh/a9lEXl5zMeLHg=",
        NS_MTA,
        "abNANd1rDfiNc",
        "{crypt}abNANd1rDfiNc",
        "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
    ],
)
def test_acceptance_values_match_secret_only(stored: str) -> None:
    assert check_password(stored, "secret") is True
    assert check_password(stored, "Secret") is False
    assert check_password(stored, "secret ") is False


@pytest.mark.parametrize("rest", [NS_MTA[len("{NS-MTA-MD5}") : -1], NS_MTA[len("{NS-MTA-MD5}") :] + "0"])
def test_ns_mta_md5_needs_exactly_64_chars(rest: str) -> None:
    with pytest.raises(MalformedHash):
        check_password("{NS-MTA-MD5}" + rest, "secret")


def test_ns_mta_md5_non_hex_digest_is_malformed() -> None:
    with pytest.raises(MalformedHash):
        check_password("{NS-MTA-MD5}" + "zz" * 16 + "0" * 32, "secret")


def test_cleartext_only_when_enabled_and_after_crypt() -> None:
    assert check_password("secret", "secret") is False
    assert check_password("secret", "secret", cleartext=True) is True
    assert check_password("secret", "Secret", cleartext=True) is False
    # a real crypt hash still matches its password with cleartext on
    assert check_password("abNANd1rDfiNc", "secret", cleartext=True) is True


def test_unknown_scheme_never_matches_even_as_cleartext() -> None:
    assert check_password("{FOO}secret", "secret", cleartext=True) is False
    assert check_password("{CLEARTEXT}secret", "secret", cleartext=True) is False


def test_empty_password_never_matches() -> None:
    empty_sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"").digest()).decode()
    assert check_password(empty_sha, "") is False
    assert check_password("", "", cleartext=True) is False
    assert check_password(make_hash("crypt", "", b"abcd"), "") is False


# --- digests: salts, base64 leniency, malformed data ----------------------------------------------


def test_salt_is_every_byte_after_the_digest() -> None:
    salt = os.urandom(37)
    stored = "{SSHA}" + base64.b64encode(hashlib.sha1(b"pw" + salt).digest() + salt).decode()
    assert check_password(stored, "pw") is True
    shorter = "{SSHA}" + base64.b64encode(hashlib.sha1(b"pw" + salt[:-1]).digest() + salt).decode()
    assert check_password(shorter, "pw") is False


def test_base64_whitespace_and_missing_padding_tolerated() -> None:
    assert check_password("{SSHA}+RFhsab2Af zZ0VfEd\n\tyknXtUT06RhYmNk", "secret") is True
    assert check_password("{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ", "secret") is True


@pytest.mark.parametrize(
    "stored",
    [
        "{SSHA}!!",  # not base64
        "{SSHA}",  # nothing at all
        "{SSHA}" + base64.b64encode(b"x" * 19).decode(),  # shorter than a SHA-1 digest
        "{SMD5}" + base64.b64encode(b"x" * 15).decode(),
        "{SHA}" + base64.b64encode(b"x" * 19).decode(),
        "{SHA}" + base64.b64encode(b"x" * 21).decode(),  # unsalted scheme with extra bytes
        "{MD5}abcde",  # impossible base64 length
        "{SSHA512}" + base64.b64encode(b"x" * 63).decode(),
        "{SHA}5en6G6MezRroT3XK=qkdPOmY/BfQ=",  # padding inside
    ],
)
def test_malformed_digest_data_raises(stored: str) -> None:
    with pytest.raises(MalformedHash):
        check_password(stored, "secret")


def test_malformed_hash_is_a_value_error() -> None:
    assert issubclass(MalformedHash, ValueError)


@pytest.mark.parametrize(
    ("prefix", "algo", "salt"),
    [
        ("{SHA256}", "sha256", b""),
        ("{SHA512}", "sha512", b""),
        ("{SSHA256}", "sha256", b"saltsalt"),
        ("{SSHA512}", "sha512", b"some longer salt!"),
    ],
)
def test_modern_digests_against_hashlib(prefix: str, algo: str, salt: bytes) -> None:
    value = base64.b64encode(hashlib.new(algo, b"secret" + salt).digest() + salt).decode()
    assert check_password(prefix + value, "secret") is True
    assert check_password(prefix.lower() + value, "secret") is True
    assert check_password(prefix + value, "secreT") is False


@pytest.mark.parametrize("scheme", list(Scheme))
def test_every_scheme_round_trips(scheme: Scheme) -> None:
    stored = make_hash(scheme, "pässwörd")
    assert stored.startswith(scheme.prefix)
    assert check_password(stored, "pässwörd") is True
    assert check_password(stored, "passwort") is False


def test_constant_time_comparison_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert check_password(SSHA_JOE, "secret") is True
    assert calls == [(base64.b64decode(SSHA_JOE[6:])[:20],) * 2]
    calls.clear()
    assert check_password("plain", "plain", cleartext=True) is True
    assert (b"plain", b"plain") in calls
    calls.clear()
    assert check_password(NS_MTA, "wrong") is False
    assert len(calls) == 1 and calls[0][1] == bytes.fromhex(NS_MTA[12:44])


# --- MD4 / RIPEMD-160 pure fallbacks ---------------------------------------------------------------

MD4_RFC1320 = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "043f8582f241db351ce627e153e7f0e4",
    ),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]
RMD160_PAPER = [
    (b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
    (b"a", "0bdc9d2d256b3ee9daae347be6f4dc835a467ffe"),
    (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
    (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
    (b"abcdefghijklmnopqrstuvwxyz", "f71c27109c692c1b56bbdceb5b9d2865b3708dbc"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "12a053384a9c0c88e405a06c27dcf49ada62eb2b",
    ),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "b0e20b6e3116640286ed3a87a5713079b21f5189",
    ),
    (b"1234567890" * 8, "9b752e45573d4b39f4dbd3323cab82bf63326bfb"),
]


@pytest.mark.parametrize(("data", "hexdigest"), MD4_RFC1320)
def test_pure_md4_rfc1320_vectors(data: bytes, hexdigest: str) -> None:
    assert md4(data).hex() == hexdigest


@pytest.mark.parametrize(("data", "hexdigest"), RMD160_PAPER)
def test_pure_ripemd160_paper_vectors(data: bytes, hexdigest: str) -> None:
    assert ripemd160(data).hex() == hexdigest


def test_pure_ripemd160_million_a() -> None:
    assert ripemd160(b"a" * 1_000_000).hex() == "52783243c1697bdbe16d37f97f68f08325dc1528"


def _hashlib_has(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("name", "pure"), [("md4", md4), ("ripemd160", ripemd160)])
def test_pure_digests_agree_with_hashlib_across_block_boundaries(
    name: str, pure: Callable[[bytes], bytes]
) -> None:
    if not _hashlib_has(name):
        pytest.skip(f"hashlib has no {name} here; the RFC vectors above cover it")
    for length in [*range(0, 140), 1000, 4097]:
        data = os.urandom(length)
        assert pure(data) == hashlib.new(name, data).digest(), length


def test_md4_and_rmd160_schemes_work_without_hashlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real_new = hashlib.new
    refused: list[str] = []

    def no_legacy(name: str, data: bytes = b"") -> hashlib._Hash:
        if name in ("md4", "ripemd160"):
            refused.append(name)
            raise ValueError(f"unsupported hash type {name}")
        return real_new(name, data)

    monkeypatch.setattr(hashlib, "new", no_legacy)
    assert check_password("{MD4}Z9Pa/vY/8AYDru83ac+/DQ==", "secret") is True
    assert check_password("{RMD160}zZi/AgLvB+OOh/a9lEXl5zMeLHg=", "secret") is True
    assert make_hash("rmd160", "secret") == "{RMD160}zZi/AgLvB+OOh/a9lEXl5zMeLHg="
    assert sorted(set(refused)) == ["md4", "ripemd160"]


# --- crypt(3) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "password"),
    [
        (SHA256_CRYPT_HELLO, "Hello world!"),
        (SHA512_CRYPT_HELLO, "Hello world!"),
        ("{CRYPT}" + SHA512_CRYPT_HELLO, "Hello world!"),
        ("{Crypt}" + SHA256_CRYPT_HELLO, "Hello world!"),
    ],
)
def test_sha_crypt_specification_vectors(stored: str, password: str) -> None:
    assert check_password(stored, password) is True
    assert check_password(stored, "Hello world") is False


@needs_libcrypt
def test_bcrypt_vector_via_available_backend() -> None:
    for variant in ("$2a$", "$2b$", "$2y$"):
        stored = variant + BCRYPT_UU[4:]
        assert check_password(stored, "U*U") is True, variant
        assert check_password("{CRYPT}" + stored, "U*V") is False, variant


@needs_libcrypt
def test_yescrypt_made_by_the_stdlib_binding_verifies() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # an independent binding of the same libcrypt

    stored = crypt.crypt("secret", "$y$j9T$YWJjZGFiY2RhYmNk$")
    assert stored is not None and stored.startswith("$y$")
    assert check_password(stored, "secret") is True
    assert check_password("{crypt}" + stored, "secret") is True
    assert check_password(stored, "secreT") is False


@pytest.mark.parametrize("stored", ["{CRYPT}", "{CRYPT}*0", "{crypt}$9$nonsense$", "$1$", "*", "!locked"])
def test_crypt_failure_is_a_mismatch(stored: str) -> None:
    assert check_password(stored, "secret") is False


def test_nul_in_password_is_a_crypt_mismatch() -> None:
    assert check_password("abNANd1rDfiNc", "secret\x00") is False


@pytest.mark.skipif(argon2.has_backend(), reason="an argon2 backend is installed")
def test_argon2_fails_closed_without_backend() -> None:
    assert check_password(ARGON2_SECRET, "secret") is False  # genuine hash, but nothing can check it
    assert check_password(ARGON2_SECRET, "wrong") is False


@pytest.mark.skipif(not argon2.has_backend(), reason="argon2-cffi not installed")
def test_argon2_verifies_with_backend() -> None:
    assert check_password(ARGON2_SECRET, "secret") is True
    assert check_password(ARGON2_SECRET.lower().replace("{argon2}", "{ARGON2}"), "secret") is False
    assert check_password(ARGON2_SECRET, "wrong") is False


@needs_libcrypt
@pytest.mark.parametrize(
    "setting", ["YW", "ab", "$1$saltsalt", "$1$abc$junk", "$1$", "$5$saltstring", "$6$0123456789abcdefXYZ"]
)
def test_passlib_generation_equals_libcrypt(setting: str) -> None:
    expected = passwords._system_crypt(b"secret", setting)
    assert expected is not None
    assert make_crypt("secret", setting) == expected


@needs_libcrypt
def test_settings_passlib_refuses_are_judged_by_libcrypt() -> None:
    for setting in ("$6$sa-lt", "$1$sa-lt$"):  # passlib refuses '-' in salts, crypt(3) accepts it
        stored = passwords._system_crypt(b"secret", setting)
        assert stored is not None and stored.startswith(setting.rstrip("$") + "$")
        assert check_password(stored, "secret") is True
        assert check_password(stored, "secrets") is False


# --- make_hash and crypt templates ------------------------------------------------------------------


def test_make_hash_acceptance_values() -> None:
    assert make_hash("crypt", "secret", b"abcd") == "{CRYPT}YWBOajvyaTDbo"
    assert make_hash("SSHA", "secret", b"abcd") == SSHA_JOE
    assert make_hash("smd5", "secret", b"abcd") == "{SMD5}QtY1rL5sRAq49uXKCFn0XGFiY2Q="
    assert make_hash("ns-mta-md5", "secret", SALT16) == NS_MTA
    assert make_hash("ssha", "secret", SALT16) == "{SSHA}o8knsqoeF6dfrPOYBJ37h3y7MHYAAQIDBAUGBwgJCgsMDQ4P"


def test_make_hash_default_salt_is_18_random_bytes() -> None:
    first, second = make_hash("ssha", "secret"), make_hash("ssha", "secret")
    assert len(base64.b64decode(first[6:])) == 38
    assert first != second


@pytest.mark.parametrize(
    ("scheme", "salt", "fmt"),
    [
        ("nope", b"abcd", "XX"),
        ("ssha", b"abc", "XX"),
        ("smd5", b"", "XX"),
        ("ns-mta-md5", bytes(15), "XX"),
        ("crypt", b"abcd", "$1$XXXXXXXX$"),  # 24 > 16
        ("crypt", b"abcd", "no template"),
        ("crypt", b"a", "XX"),
        ("sha512-crypt", b"abcd", "XX"),
        ("crypt", b"abcd", "%%XX"),  # not a salt crypt(3) accepts
    ],
)
def test_make_hash_impossible_combinations(scheme: str, salt: bytes, fmt: str) -> None:
    with pytest.raises(ValueError):
        make_hash(scheme, "secret", salt, crypt_format=fmt)


def test_crypt_setting_template_rules() -> None:
    assert crypt_setting("XX", b"abcd") == "YW"
    assert crypt_setting("$1$XXXXXXXX$", bytes(range(18))) == "$1$AAECAwQF"
    assert crypt_setting("pre.XXXpost", b"abcd") == "pre.YWJ"  # text after the X run is dropped
    assert crypt_setting("XXXX", b"\xfb\xef\xbe") == "..++".replace("+", ".")  # '+' becomes '.'
    assert crypt_setting("X" * 24, bytes(18)) == "A" * 24  # 3*24 == 4*18 still fits
    with pytest.raises(ValueError):
        crypt_setting("X" * 25, bytes(18))


def test_md5_and_blowfish_templates_produce_verifiable_hashes() -> None:
    md5 = make_hash("crypt", "secret", bytes(range(18)), crypt_format="$1$XXXXXXXX$")
    assert md5.startswith("{CRYPT}$1$AAECAwQF$")
    assert check_password(md5, "secret") is True
    if passwords._libcrypt() is not None:
        blowfish = make_hash("crypt", "secret", bytes(range(18)), crypt_format="$2a$07$" + "X" * 24)
        assert blowfish.startswith("{CRYPT}$2a$07$")
        assert check_password(blowfish, "secret") is True
        assert check_password(blowfish, "secreT") is False


def test_scheme_names_and_prefixes() -> None:
    assert SCHEME_NAMES == ("crypt", "md4", "md5", "ns-mta-md5", "smd5", "sha", "ssha", "rmd160")
    assert Scheme.NS_MTA_MD5.prefix == "{NS-MTA-MD5}"
    assert Scheme.SHA512_CRYPT.prefix == "{CRYPT}"
    assert make_hash("sha512-crypt", "x", b"abcdefghijklm").startswith("{CRYPT}$6$YWJjZGVmZ2hpamts$")


# --- CRAM-MD5 ---------------------------------------------------------------------------------------


def test_cram_md5_secret_only_for_cleartext() -> None:
    assert cram_md5_secret("secret", True) == b"secret"
    assert cram_md5_secret("secret", False) is None
    for stored in (SSHA_JOE, "{crypt}abNANd1rDfiNc", "abNANd1rDfiNc", SHA512_CRYPT_HELLO, "{FOO}x", ""):
        assert cram_md5_secret(stored, True) is None, stored

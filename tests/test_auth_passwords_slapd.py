"""Cross-check our password schemes with OpenLDAP itself, both ways.

1. A userPassword made by our ``digest`` is stored in the real slapd, and a simple bind
   (``ldapwhoami``) with the right password succeeds while a wrong one fails: slapd and we agree on
   the format.
2. Values made by ``slappasswd`` (OpenLDAP's own generator, including its sha2 and argon2 modules)
   are accepted by ``digest -v`` with the right password and rejected with a wrong one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from passlib.hash import argon2
from qldap_slapd import MODULE_DIR, find_program

from qldap.passwords import schemes as passwords
from tests.fixtures_slapd import LdapBase, require_slapd

DIGEST = Path(sys.executable).parent / "digest"
SALT18 = "-S", "a1b2c3d4e5f60718293a4b5c6d7e8f901122"
INVALID_CREDENTIALS = 49  # LDAP resultCode, used by ldapwhoami as exit status

has_libcrypt = passwords._libcrypt() is not None


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def digest_value(*args: str) -> str:
    res = run([str(DIGEST), *args, "secret"])
    assert res.returncode == 0, res.stderr
    value = res.stdout.strip()
    assert "failed" not in value, value
    return value


def whoami(base: LdapBase, dn: str, password: str) -> int:
    res = run(["ldapwhoami", "-x", "-H", base.slapd.url, "-D", dn, "-w", password])
    if res.returncode == 0:
        assert res.stdout.strip().lower() == f"dn:{dn}".lower()
    return res.returncode


OUR_VALUES: list[tuple[str, tuple[str, ...]]] = [
    ("ssha", ("-t", "ssha", *SALT18)),
    ("sha", ("-t", "sha")),
    ("smd5", ("-t", "smd5", *SALT18)),
    ("md5", ("-t", "md5")),
    ("crypt-des", ("-t", "crypt", *SALT18)),
    ("crypt-md5", ("-5", "-t", "crypt", *SALT18)),
    ("crypt-sha256", ("-f", "$5$XXXXXXXXXXXXXXXX$", "-t", "crypt", *SALT18)),
    ("crypt-sha512", ("-f", "$6$XXXXXXXXXXXXXXXX$", "-t", "crypt", *SALT18)),
    ("crypt-random-salt", ("-f", "$6$XXXXXXXXXXXXXXXX$", "-t", "crypt")),
]
# slapd's {CRYPT} is the system crypt(3), so libxcrypt formats work there too where we have them.
LIBCRYPT_VALUES: list[tuple[str, tuple[str, ...]]] = [
    ("crypt-bcrypt", ("-b", "-t", "crypt", *SALT18)),
    ("crypt-yescrypt", ("-f", "$y$j9T$XXXXXXXXXXXXXXXX$", "-t", "crypt", *SALT18)),
]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        *OUR_VALUES,
        *(
            pytest.param(n, a, marks=pytest.mark.skipif(not has_libcrypt, reason="no libxcrypt"))
            for n, a in LIBCRYPT_VALUES
        ),
    ],
)
def test_slapd_binds_with_our_digest_values(ldap_base: LdapBase, name: str, args: tuple[str, ...]) -> None:
    value = digest_value(*args)
    dn = f"cn={name},{ldap_base.dn}"
    ldap_base.load(
        f"dn: cn={name},{{base}}\nobjectClass: person\ncn: {name}\nsn: test\nuserPassword: {value}\n"
    )
    assert whoami(ldap_base, dn, "secret") == 0
    assert whoami(ldap_base, dn, "Secret") == INVALID_CREDENTIALS
    assert whoami(ldap_base, dn, "secret2") == INVALID_CREDENTIALS


def test_slapd_binds_with_acceptance_check_values(ldap_base: LdapBase) -> None:
    """The fixed password values of the scheme tests, as slapd reads them."""
    values = [
        "{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk",
        "{sha}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SMD5}QtY1rL5sRAq49uXKCFn0XGFiY2Q=",
        "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
        "{crypt}abNANd1rDfiNc",
        "{CRYPT}$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
    ]
    for i, value in enumerate(values):
        ldap_base.load(f"dn: cn=v{i},{{base}}\nobjectClass: person\ncn: v{i}\nsn: t\nuserPassword: {value}\n")
        dn = f"cn=v{i},{ldap_base.dn}"
        assert whoami(ldap_base, dn, "secret") == 0, value
        assert whoami(ldap_base, dn, "x") == INVALID_CREDENTIALS, value


# --- slappasswd → digest -v ---------------------------------------------------------------------------


def slappasswd(*args: str) -> str:
    require_slapd()
    program = find_program("slappasswd")
    if program is None:
        pytest.skip("slappasswd not installed")
    res = run([program, *args, "-s", "secret"])
    if res.returncode != 0 or not res.stdout.startswith("{"):
        pytest.skip(f"slappasswd cannot make this: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip()


def digest_verify(password: str, value: str) -> str:
    res = run([str(DIGEST), "-v", password, value])
    assert res.returncode == 0, (res.stdout, res.stderr)
    return res.stdout


SHA2 = ("-o", f"module-path={MODULE_DIR}", "-o", "module-load=pw-sha2.la")
SLAPPASSWD_FORMS: list[tuple[str, ...]] = [
    ("-h", "{SSHA}"),
    ("-h", "{SHA}"),
    ("-h", "{MD5}"),
    ("-h", "{SMD5}"),
    ("-h", "{CRYPT}"),  # DES with a random salt
    ("-h", "{CRYPT}", "-c", "$1$%.8s"),
    ("-h", "{CRYPT}", "-c", "$5$%.16s"),
    ("-h", "{CRYPT}", "-c", "$6$%.16s"),
    ("-h", "{CRYPT}", "-c", "$6$rounds=7000$%.16s"),
    (*SHA2, "-h", "{SHA256}"),
    (*SHA2, "-h", "{SSHA256}"),
    (*SHA2, "-h", "{SHA512}"),
    (*SHA2, "-h", "{SSHA512}"),
]


@pytest.mark.parametrize("args", SLAPPASSWD_FORMS, ids=lambda a: " ".join(a[-3:]))
def test_digest_accepts_slappasswd_values(args: tuple[str, ...]) -> None:
    value = slappasswd(*args)
    assert digest_verify("secret", value) == "passwords are equal.\n"
    assert digest_verify("secreT", value) == "passwords are NOT equal.\n"


@pytest.mark.skipif(not has_libcrypt, reason="no libxcrypt")
@pytest.mark.parametrize("fmt", ["$y$j9T$%.16s", "$2b$05$%.22s"])
def test_digest_accepts_slappasswd_libxcrypt_values(fmt: str) -> None:
    value = slappasswd("-h", "{CRYPT}", "-c", fmt)
    assert digest_verify("secret", value) == "passwords are equal.\n"
    assert digest_verify("secreT", value) == "passwords are NOT equal.\n"


def test_digest_on_slappasswd_argon2_follows_backend_availability() -> None:
    value = slappasswd("-o", f"module-path={MODULE_DIR}", "-o", "module-load=argon2.la", "-h", "{ARGON2}")
    assert value.startswith("{ARGON2}$argon2")
    expected = "passwords are equal.\n" if argon2.has_backend() else "passwords are NOT equal.\n"
    assert digest_verify("secret", value) == expected  # without argon2-cffi: fails closed
    assert digest_verify("secreT", value) == "passwords are NOT equal.\n"

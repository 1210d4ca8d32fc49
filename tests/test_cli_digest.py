"""The ``digest`` console script (digest(1)), run as a real subprocess."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.cli import digest
from qldap.passwords.schemes import SCHEME_NAMES, check_password

DIGEST = Path(sys.executable).parent / "digest"
NS_MTA = "{NS-MTA-MD5}0453ca77e815e11331df903fdad8a65d000102030405060708090a0b0c0d0e0f"
HEX16 = "000102030405060708090a0b0c0d0e0f"


def run_digest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DIGEST), *args], capture_output=True, text=True, timeout=60, check=False)


def test_console_script_is_installed() -> None:
    assert DIGEST.is_file(), "pip install -e . should have created .venv/bin/digest"


def test_check7_eight_lines_in_order() -> None:
    res = run_digest("-s", "YWJjZA==", "secret")
    assert res.returncode == 0
    assert res.stderr == ""
    assert res.stdout.splitlines() == [
        "{CRYPT}YWBOajvyaTDbo",
        "{MD4}Z9Pa/vY/8AYDru83ac+/DQ==",
        "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
        "ns-mta-md5 failed.",
        "{SMD5}QtY1rL5sRAq49uXKCFn0XGFiY2Q=",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk",
        "{RMD160}zZi/AgLvB+OOh/a9lEXl5zMeLHg=",
    ]
    assert res.stdout.endswith("\n")


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("ns-mta-md5", NS_MTA),
        ("SSHA", "{SSHA}o8knsqoeF6dfrPOYBJ37h3y7MHYAAQIDBAUGBwgJCgsMDQ4P"),
        ("smd5", "{SMD5}Vg7JRJCS02fKXvtwbNTnBwABAgMEBQYHCAkKCwwNDg8="),
    ],
)
def test_check8_hex_salt_single_type(type_: str, expected: str) -> None:
    res = run_digest("-S", HEX16, "-t", type_, "secret")
    assert (res.returncode, res.stdout) == (0, expected + "\n")


def test_check9_md5_template_needs_more_salt() -> None:
    res = run_digest("-5", "-t", "crypt", "-s", "YWJjZA==", "secret")
    assert (res.returncode, res.stdout) == (0, "crypt failed.\n")


def test_check9_default_salt_is_18_bytes() -> None:
    res = run_digest("secret")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert len(lines) == 8
    ssha = next(line for line in lines if line.startswith("{SSHA}"))
    assert len(base64.b64decode(ssha[6:])) == 38
    # with 18 random bytes every scheme succeeds, and each value checks out
    for line in lines:
        assert check_password(line, "secret") is True, line
    assert run_digest("secret").stdout != res.stdout


def test_check10_verify() -> None:
    ok = run_digest("-v", "secret", "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==")
    assert (ok.returncode, ok.stdout) == (0, "passwords are equal.\n")
    bad = run_digest("-v", "x", "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==")
    assert (bad.returncode, bad.stdout) == (0, "passwords are NOT equal.\n")
    broken = run_digest("-v", "secret", "{SSHA}!!")
    assert (broken.returncode, broken.stdout) == (1, "digest: cmp_password: failed.")


def test_check10_verify_malformed_ns_mta() -> None:
    res = run_digest("-v", "secret", NS_MTA[:-1])
    assert (res.returncode, res.stdout) == (1, "digest: cmp_password: failed.")


def test_check11_bad_type() -> None:
    res = run_digest("-t", "foo", "x")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == "digest: bad digest type, use one of:\n" + "".join(f"\t{n}\n" for n in SCHEME_NAMES)


def test_check11_bad_base64_salt() -> None:
    res = run_digest("-s", "!!", "x")
    assert res.returncode == 1
    assert res.stderr.startswith("digest: bad base64 string.\nusage:")


@pytest.mark.parametrize("salt", ["0", "zz", "00 11"])
def test_bad_hex_salt(salt: str) -> None:
    res = run_digest("-S", salt, "x")
    assert res.returncode == 1
    assert res.stderr.startswith("digest: bad hex string.\nusage:")


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("a", "b"),
        ("-v", "only-one"),
        ("-v", "a", "b", "c"),
        ("-x", "pw"),
        ("-f",),
        ("-v", "-c", "a", "b"),
    ],
)
def test_wrong_usage_exits_1_with_usage_on_stderr(args: tuple[str, ...]) -> None:
    res = run_digest(*args)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith("usage:")


def test_c_selects_making_mode_over_an_earlier_v() -> None:
    res = run_digest("-v", "-c", "-S", HEX16, "-t", "sha", "secret")
    assert (res.returncode, res.stdout) == (0, "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")


def test_crypt_template_options() -> None:
    salt = ["-S", "00" * 18]
    md5 = run_digest("-5", *salt, "-t", "crypt", "secret").stdout.strip()
    assert md5.startswith("{CRYPT}$1$AAAAAAAA$")
    assert check_password(md5, "secret")
    des = run_digest("-5", "-C", *salt, "-t", "crypt", "secret").stdout.strip()  # last template wins
    assert des.startswith("{CRYPT}AA") and len(des) == len("{CRYPT}") + 13
    custom = run_digest("-f", "$6$XXXXXXXXXXXXXXXX$ignored", *salt, "-t", "CRYPT", "secret").stdout.strip()
    assert custom.startswith("{CRYPT}$6$AAAAAAAAAAAAAAAA$")
    assert check_password(custom, "secret") and not check_password(custom, "secreT")
    none = run_digest("-f", "$6$", *salt, "-t", "crypt", "secret")
    assert (none.returncode, none.stdout) == (0, "crypt failed.\n")


def test_blowfish_template_makes_a_bcrypt_hash() -> None:
    res = run_digest("-b", "-t", "crypt", "secret")
    value = res.stdout.strip()
    if value == "crypt failed.":
        pytest.skip("no bcrypt backend (neither passlib bcrypt nor libxcrypt) on this system")
    assert value.startswith("{CRYPT}$2a$07$")
    assert check_password(value, "secret") and not check_password(value, "secreT")


def test_plus_in_salt_becomes_dot() -> None:
    res = run_digest("-s", "++++", "-t", "crypt", "secret")  # base64 of b"\xfb\xef\xbe" is "++++"
    assert res.stdout.startswith("{CRYPT}..")
    assert check_password(res.stdout.strip(), "secret")


def test_main_in_process_returns_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert digest.main(["-S", HEX16, "-t", "md4", "secret"]) == 0
    assert capsys.readouterr().out == "{MD4}Z9Pa/vY/8AYDru83ac+/DQ==\n"
    assert digest.main(["-t", "ssha512", "x"]) == 1  # only the eight original names are digest types

"""DKIM keys: control/dkimkeys parsing and lookup, key files, `qldap dkim keygen` and its DNS record."""

from __future__ import annotations

import base64
import stat
import subprocess
from pathlib import Path

import pytest

from qldap.cli.dkim import dkim_main
from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.mailauth.keys import (
    Algorithm,
    KeyCache,
    KeyEntry,
    KeyFileError,
    KeyTable,
    dns_record,
    ed25519_seed,
    generate_key,
    key_material,
    load_key,
    parse_dkimkeys,
    public_key,
    txt_strings,
)
from tests.conftest import QRoot
from tests.peers import configure_keys, mail_dkim


def test_dkimkeys_lines_parse_with_relative_and_absolute_paths(tmp_path: Path) -> None:
    entries = parse_dkimkeys(
        ["Example.COM:s1:rsa:dkim/example.com.s1.key", ".example.org : e1 : ED25519 : /etc/k"], tmp_path
    )
    assert entries == (
        KeyEntry("example.com", "s1", Algorithm.RSA, tmp_path / "dkim/example.com.s1.key"),
        KeyEntry(".example.org", "e1", Algorithm.ED25519, Path("/etc/k")),
    )
    assert entries[1].signing_domain == "example.org"


@pytest.mark.parametrize(
    "line",
    ["example.com:s1:rsa", "example.com:s1:dsa:/k", "exa mple.com:s1:rsa:/k", "example.com::rsa:/k",
     "example.com:s1:rsa: "],
)  # fmt: skip
def test_bad_dkimkeys_lines_are_config_errors(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        parse_dkimkeys([line], tmp_path)


def test_domain_lookup_prefers_exact_lines_then_the_nearest_parent(tmp_path: Path) -> None:
    table = KeyTable(parse_dkimkeys([
        "example.com:r:rsa:/a", "example.com:e:ed25519:/b", ".example.com:sub:rsa:/c",
        ".dept.example.com:dept:rsa:/d",
    ], tmp_path))  # fmt: skip
    assert [e.selector for e in table.for_domain("EXAMPLE.com")] == ["r", "e"]
    assert [e.selector for e in table.for_domain("lists.example.com")] == ["sub"]
    assert [e.selector for e in table.for_domain("a.dept.example.com")] == ["dept"]
    assert table.for_domain("example.org") == ()
    assert table.for_domain("notexample.com") == ()


def test_the_table_reads_the_control_files(qroot: QRoot) -> None:
    ctl = ControlDir(qroot.path)
    assert KeyTable.from_control(ctl) == KeyTable((), False)
    qroot.control("dkimkeys", "# comment\nexample.com:s:rsa:dkim/k\n")
    qroot.control("dkimstrict", "1")
    table = KeyTable.from_control(ctl)
    assert table.strict and table.entries[0].path == qroot.control_dir / "dkim" / "k"


def test_keygen_writes_a_0600_key_prints_the_record_and_refuses_to_overwrite(
    qroot: QRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = dkim_main(["--root", str(qroot.path), "keygen", "Example.COM", "s2026", "--algorithm", "rsa"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    key = qroot.control_dir / "dkim" / "example.com.s2026.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "example.com:s2026:rsa:dkim/example.com.s2026.key" in err
    record = out.strip()
    assert record.startswith('s2026._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=')
    strings = record.split(" IN TXT ", 1)[1]
    parts = [s.strip('"') for s in strings.split('" "')]
    assert len(parts) == 2 and len(parts[0]) == 255  # an RSA-2048 record needs two strings
    # openssl agrees that the printed p= is the public half of the key written
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout  # fmt: skip
    assert "".join(parts) == "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    size = subprocess.run(["openssl", "pkey", "-in", str(key), "-text", "-noout"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "2048 bit" in size

    before = key.read_bytes()
    rc = dkim_main(["--root", str(qroot.path), "keygen", "example.com", "s2026", "--algorithm", "ed25519"])
    _, err = capsys.readouterr()
    assert rc == 111 and "exists already" in err
    assert key.read_bytes() == before


def test_keygen_ed25519_key_is_pkcs8_that_openssl_reads(qroot: QRoot, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = dkim_main(["--root", str(qroot.path), "keygen", "example.org", "ed", "--algorithm", "ed25519",
                    "--dir", str(tmp_path / "keys")])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    key = tmp_path / "keys" / "example.org.ed.key"
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout  # fmt: skip
    assert out.strip() == (
        f'ed._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p={base64.b64encode(der[-32:]).decode()}"'
    )
    assert f"example.org:ed:ed25519:{key}" in err


def test_keygen_usage_errors(qroot: QRoot, capsys: pytest.CaptureFixture[str]) -> None:
    assert dkim_main(["--root", str(qroot.path), "keygen", "bad/domain", "s"]) == 111
    assert dkim_main(["--root", str(qroot.path), "keygen", "example.com", "s", "--bits", "512"]) == 111
    assert dkim_main(["--root", str(qroot.path), "keygen", "example.com"]) == 100
    assert dkim_main(["--root", str(qroot.path), "frobnicate"]) == 100
    capsys.readouterr()


def test_records_prints_every_configured_key(qroot: QRoot, capsys: pytest.CaptureFixture[str]) -> None:
    keys = [("example.com", "r", "rsa"), ("example.com", "e", "ed25519")]
    records = configure_keys(qroot.control_dir, keys)
    assert dkim_main(["--root", str(qroot.path), "records"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    for line, (name, value) in zip(out, records.items(), strict=True):
        head, strings = line.split(" IN TXT ", 1)
        assert head == name + "."
        assert "".join(s.strip('"') for s in strings.split('" "')) == value


def test_txt_strings_split_at_255_bytes() -> None:
    assert txt_strings("a" * 600) == ["a" * 255, "a" * 255, "a" * 90]
    assert txt_strings("") == [""]
    line = dns_record("example.com", "s", Algorithm.ED25519, b"\x01" * 32)
    assert line.count('"') == 2


def test_key_files_are_checked_when_loaded(tmp_path: Path) -> None:
    rsa, ed = generate_key(Algorithm.RSA), generate_key(Algorithm.ED25519)
    assert key_material(Algorithm.RSA, rsa.private_pem) == rsa.private_pem
    seed = ed25519_seed(ed.private_pem)
    assert seed is not None
    assert key_material(Algorithm.ED25519, base64.b64encode(seed)) == base64.b64encode(seed)
    assert public_key(Algorithm.ED25519, ed.private_pem) == ed.public
    with pytest.raises(ValueError):
        key_material(Algorithm.ED25519, rsa.private_pem)
    with pytest.raises(ValueError):
        key_material(Algorithm.RSA, ed.private_pem)
    small = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
                           capture_output=True, check=True).stdout  # fmt: skip
    with pytest.raises(ValueError, match="1024"):
        key_material(Algorithm.RSA, small)
    entry = KeyEntry("example.com", "s", Algorithm.RSA, tmp_path / "missing")
    with pytest.raises(KeyFileError, match="unable to read"):
        load_key(entry)
    (tmp_path / "garbage").write_bytes(b"not a key\n")
    with pytest.raises(KeyFileError, match="bad DKIM key"):
        load_key(KeyEntry("example.com", "s", Algorithm.RSA, tmp_path / "garbage"))


def test_the_cache_rereads_a_replaced_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first, second = generate_key(Algorithm.ED25519), generate_key(Algorithm.ED25519)
    path.write_bytes(first.private_pem)
    cache, entry = KeyCache(), KeyEntry("example.com", "s", Algorithm.ED25519, path)
    one = cache.load(entry)
    assert cache.load(entry) is one
    tmp = tmp_path / "k.new"
    tmp.write_bytes(second.private_pem)
    tmp.replace(path)
    assert cache.load(entry).data != one.data


def test_a_generated_rsa_key_signs_what_mail_dkim_verifies(tmp_path: Path) -> None:
    """The keygen → record path end to end, through an independent verifier."""
    from qldap.mailauth.dkimsign import sign_message

    records = configure_keys(tmp_path, [("example.net", "k1", "rsa")])
    key = load_key(parse_dkimkeys((tmp_path / "dkimkeys").read_text().splitlines(), tmp_path)[0])
    msg = b"From: a@example.net\nTo: b@example.org\nSubject: keygen\n\nbody\n"
    sigs, overall = mail_dkim(sign_message(msg, [key]) + msg, records)
    assert overall == "pass" and [s.result for s in sigs] == ["pass"]


def test_showctl_lists_the_keys_and_warns_about_unusable_or_exposed_ones(tmp_path: Path) -> None:
    from qldap.cli import showctl
    from qldap.setup.init import InitOptions, init_root

    root = tmp_path / "qmail"
    init_root(InitOptions(root=root, me="mx1.example.com", ldap_uris=("ldap://127.0.0.1:3389",),
                          basedn="o=t"))  # fmt: skip
    control = root / "control"
    configure_keys(control, [("example.com", "r", "rsa"), ("example.com", "e", "ed25519")])
    shown = showctl.show(root)
    text = shown.render()
    assert "dkimkeys:\n  example.com:r:rsa:dkim/example.com.r.key\n" in text
    assert "dkim: directory of DKIM keys made by qldap dkim keygen (see dkimkeys)." in text
    assert "no idea" not in text and list(shown.warnings) == []
    (control / "dkim" / "example.com.r.key").chmod(0o644)
    (control / "dkim" / "example.com.e.key").write_text("garbage\n")
    warnings = list(showctl.show(root).warnings)
    assert len(warnings) == 2
    assert warnings[0].startswith("control/dkimkeys: key r of example.com: ")
    assert warnings[0].endswith("is readable by every local user (mode 0644); make it mode 0640 or 0600")
    assert warnings[1].startswith("control/dkimkeys: key e of example.com: bad DKIM key ")
    assert warnings[1].endswith(": its mail is sent unsigned")
    (control / "dkimkeys").write_text("example.com:e:dsa:/k\n")
    assert [w for w in showctl.show(root).warnings if "dkimkeys" in w] == [
        "unknown algorithm 'dsa' in control/dkimkeys: no mail is signed until it is fixed"
    ]

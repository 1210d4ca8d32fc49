"""qmail-showctl on roots made by `qldap init`: values, defaults, phrases, unknown/obsolete files,
and the warnings about dangerous settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.cli import showctl
from qldap.control.known import ENTRIES
from qldap.setup.init import InitOptions, init_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "qmail"
    init_root(InitOptions(root=r, me="mx1.example.com", ldap_uris=("ldap://127.0.0.1:3389",),
                          basedn="o=t"))
    return r


def put(root: Path, name: str, text: str, mode: int = 0o644) -> Path:
    p = root / "control" / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def output(root: Path) -> str:
    return showctl.show(root).render()


def block(out: str, name: str) -> list[str]:
    """The lines of *name*'s block (its first line up to the blank line)."""
    lines = out.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    end = lines.index("", start)
    return lines[start:end]


def warnings(root: Path) -> list[str]:
    return list(showctl.show(root).warnings)


def test_fresh_root_lists_every_known_file_and_warns_about_nothing(root: Path) -> None:
    out = output(root)
    assert out.startswith(f"qmail home directory: {root}.\nuser-ext delimiter: -.\nsubdirectory split: 23.\n")
    for entry in ENTRIES:
        if not entry.obsolete:
            assert f"\n{entry.name}: " in out or f"\n{entry.name}:\n" in out, entry.name
    assert showctl.show(root).warnings == ()
    assert "\nwarning:" not in out


def test_values_defaults_and_meanings(root: Path) -> None:
    out = output(root)
    assert block(out, "me") == ["me: mx1.example.com",
                                "  # fully qualified name of this host; default of the other host names"]
    assert block(out, "bouncehost")[0] == "bouncehost: (Default.) mx1.example.com (the value of me)"
    assert block(out, "concurrencyremote") == ["concurrencyremote: (Default.) 20",
                                               "  # simultaneous remote deliveries, 0 = hold"]
    assert block(out, "locals") == ["locals:", "  mx1.example.com",
                                    "  # domains delivered locally (exact match)"]
    assert block(out, "ldapserver")[:2] == ["ldapserver:", "  127.0.0.1:3389"]
    assert block(out, "ldapbasedn")[0] == "ldapbasedn: o=t"
    assert block(out, "ldaplocaldelivery")[0] == "ldaplocaldelivery: (Default.) 1 (on)"
    assert block(out, "qmail-smtpd.rules")[:3] == ["qmail-smtpd.rules:", '  127.:allow,RELAYCLIENT=""',
                                                   "  :allow"]  # comment lines left out


def test_present_numbers_and_booleans(root: Path) -> None:
    put(root, "concurrencylocal", "5\n")
    put(root, "ldapcluster", "1\n")
    put(root, "databytes", "12abc\n")
    out = output(root)
    assert block(out, "concurrencylocal")[0] == "concurrencylocal: 5"
    assert block(out, "ldapcluster")[0] == "ldapcluster: 1 (on)"
    assert block(out, "databytes")[0] == "databytes: 12"


def test_integer_without_digits_shows_the_default_and_warns(root: Path) -> None:
    put(root, "timeoutsmtpd", "soon\n")
    out = output(root)
    assert block(out, "timeoutsmtpd")[0] == "timeoutsmtpd: (Default.) 120"
    assert "warning: control/timeoutsmtpd does not start with a number; the default applies" in out


def test_qmail_ldap_section_and_pbs_phrases(root: Path) -> None:
    put(root, "pbsservers", "192.0.2.1\n192.0.2.2\n")
    put(root, "pbsenv", "USER=TCPREMOTEINFO=[pbs]\n")
    put(root, "pbstimeout", "300\n")
    out = output(root)
    ldap_part = out.split("\nNow the qmail-ldap specific files:\n", 1)[1]
    assert "\nldaptimeout: " in ldap_part and "\nconcurrencylocal: " not in ldap_part
    assert "\nconcurrencylocal: " in out.split("Now the qmail-ldap specific files:")[0]
    assert block(out, "pbsservers")[:3] == ["pbsservers:", "  PBS server 192.0.2.1.",
                                            "  PBS server 192.0.2.2."]
    assert block(out, "pbsenv")[1] == "  Environment Variable: USER=TCPREMOTEINFO=[pbs]"
    assert block(out, "pbstimeout")[0] == "pbstimeout: PBS entries will be valid for 300 seconds."
    assert block(out, "pbscachesize")[0] == "pbscachesize: (Default.) PBS cachesize is 1048576 bytes."
    assert block(out, "pbsip")[0] == "pbsip: (Default.) Bind PBS daemon to 0.0.0.0."
    assert block(out, "pbsport")[0] == "pbsport: (Default.) PBS deamon listens on port 2821."


def test_unknown_and_obsolete_files(root: Path) -> None:
    put(root, "ldapusername", "x\n")
    put(root, "tarpitcount", "5\n")
    put(root, "rcpthost", "typo.example\n")
    out = output(root)
    tail = out.split("\n\n")
    listing = [line for chunk in tail for line in chunk.split("\n")]
    assert "ldapusername: No longer used, please remove." in listing
    assert "tarpitcount: No longer used, please remove." in listing
    assert "rcpthost: I have no idea what this file does." in listing
    assert not any(line.startswith("tarpitcount: (Default.)") for line in listing)


def test_trouble_reading_a_file(root: Path) -> None:
    os.unlink(root / "control" / "locals")
    (root / "control" / "locals").mkdir()
    assert block(output(root), "locals")[0] == "locals: Oops! Trouble reading this file."


def test_secrets_are_never_shown(root: Path) -> None:
    put(root, "ldappassword", "Sup3rS3cret\n", 0o600)
    put(root, "pbssecret", "mekmitasdigoat\n", 0o600)
    put(root, "smtpcert", "-----BEGIN PRIVATE KEY-----\nabc\n", 0o600)
    out = output(root)
    assert "Sup3rS3cret" not in out and "mekmitasdigoat" not in out and "PRIVATE" not in out
    assert block(out, "ldappassword")[0] == "ldappassword: set (not shown)"
    assert block(out, "pbssecret")[0] == "pbssecret: set (not shown)"
    assert block(out, "smtpcert")[0] == "smtpcert: present, 32 bytes (not shown)"
    assert warnings(root) == []


def test_password_readable_by_others_is_a_warning(root: Path) -> None:
    put(root, "ldappassword", "Sup3rS3cret\n", 0o644)
    assert warnings(root) == [
        "control/ldappassword is readable by every local user (mode 0644); make it mode 0640 or 0600"
    ]
    os.chmod(root / "control" / "ldappassword", 0o640)
    assert warnings(root) == []


def test_world_writable_control_dir_and_file(root: Path) -> None:
    os.chmod(root / "control", 0o777)
    put(root, "smtproutes", ":relay.example\n", 0o666)
    assert warnings(root) == [
        f"control directory {root / 'control'} is world-writable (mode 0777): "
        "any local user can change this server's configuration",
        "control/smtproutes is world-writable (mode 0666)",
    ]


def test_relay_for_everyone_in_the_rules_file(root: Path) -> None:
    rules = put(root, "qmail-smtpd.rules", '127.:allow,RELAYCLIENT=""\n# oops\n:allow,RELAYCLIENT=""\n')
    assert warnings(root) == [
        f'{rules} line 3: every client may relay (":allow,RELAYCLIENT"): this server is an open relay'
    ]


def test_empty_rcpthosts_with_relay_for_everyone(root: Path) -> None:
    rules = put(root, "qmail-smtpd.rules", ':allow,RELAYCLIENT=""\n')
    put(root, "rcpthosts", "")
    assert warnings(root) == [
        f'{rules} line 1: every client may relay (":allow,RELAYCLIENT"): this server is an open relay',
        f"rcpthosts is empty and every client may relay ({rules} line 1): "
        "anyone can send mail to any domain through this server",
    ]
    os.unlink(root / "control" / "rcpthosts")
    assert warnings(root)[1].startswith("rcpthosts is missing and every client may relay")


def test_missing_rcpthosts_alone_is_not_a_warning(root: Path) -> None:
    os.unlink(root / "control" / "rcpthosts")
    assert warnings(root) == []
    assert block(output(root), "rcpthosts")[0] == "rcpthosts: (Default.) none"


def test_cidr_zero_relay_and_relayclient_in_services_env(root: Path) -> None:
    rules = put(root, "tcp.smtp", '0.0.0.0/0:allow,RELAYCLIENT=""\n')
    (root / "services.yaml").write_text(
        'smtpd:\n  listen: ["127.0.0.1:2525"]\n  rules: control/tcp.smtp\n  env: {RELAYCLIENT: ""}\n'
    )
    found = warnings(root)
    open_relay = "this server is an open relay"
    assert f'{rules} line 1: every client may relay (":allow,RELAYCLIENT"): {open_relay}' in found
    assert f"services.yaml: smtpd: env sets RELAYCLIENT for every client: {open_relay}" in found


def test_rules_file_named_in_services_yaml_is_not_unknown(root: Path) -> None:
    put(root, "smtp.rules", ":allow\n")
    (root / "services.yaml").write_text('smtpd:\n  listen: ["127.0.0.1:2525"]\n  rules: control/smtp.rules\n')
    out = output(root)
    assert "smtp.rules: rules file of smtpd in services.yaml." in out
    assert "smtp.rules: I have no idea" not in out


def test_unparsable_rules_and_invalid_services_yaml(root: Path) -> None:
    put(root, "qmail-smtpd.rules", "127.0.0.1:maybe\n")
    found = warnings(root)
    assert len(found) == 1
    assert found[0].startswith(f"rules file {root / 'control' / 'qmail-smtpd.rules'}:1: ")
    assert found[0].endswith("the SMTP server refuses every connection until it is fixed")
    (root / "services.yaml").write_text("smtpd:\n  lisen: []\n")
    assert ("services.yaml: smtpd: unknown key 'lisen'; allowed: listen, rules, env, metrics, limits, "
            "processes (line 2) (qldap up refuses to start)") in warnings(root)


def test_stale_cdb_and_missing_me(root: Path) -> None:
    cdb = put(root, "locals.cdb", "x")
    os.utime(cdb, (1000, 1000))
    os.unlink(root / "control" / "me")
    found = warnings(root)
    assert "control/me is missing or empty: every program will refuse to run" in found
    assert "control/locals.cdb is older than control/locals: run qmail-cdb, the edits are not in effect" \
        in found
    out = output(root)
    assert block(out, "me")[0] == "me: (Default.) undefined! Uh-oh"
    assert block(out, "defaulthost")[0] == "defaulthost: (Default.) the value of me, which is not set!"


def test_no_directory_at_all_is_a_warning(root: Path) -> None:
    os.unlink(root / "control" / "ldapserver")
    assert warnings(root) == [f"no control/ldapserver and no {root / 'directory.ldif'}: no user can be found"]


def test_as_a_program(root: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), QLDAP_ROOT=str(root))
    done = subprocess.run([sys.executable, "-m", "qldap.cli.showctl"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith(f"qmail home directory: {root}.\n")
    missing = subprocess.run([sys.executable, "-m", "qldap.cli.showctl", "--root", str(tmp_path / "nope")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 111
    assert missing.stderr == f"qmail-showctl: fatal: unable to chdir to {tmp_path / 'nope'}\n"

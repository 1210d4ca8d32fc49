"""`qldap init` and `qldap demo`: a fresh root, the sample directory, the zero-setup run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.directory.base import Found, NotFound
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from qldap.setup.init import InitOptions, init_root, ldap_server_line


def test_init_writes_a_safe_root(tmp_path: Path) -> None:
    root = tmp_path / "q"
    init_root(InitOptions(root=root, me="mx.example.org", ldap_uris=("ldap://ldap1:3389/", "ldap2"),
                          basedn="o=isp"))
    ctl = ControlDir(root)
    assert ctl.me() == "mx.example.org"
    assert ctl.lines("ldapserver") == ["ldap1:3389", "ldap2"]
    assert ctl.line("ldapbasedn") == "o=isp"
    assert ctl.lines("rcpthosts") == ["mx.example.org"]  # never an open relay
    rules = ctl.lines("qmail-smtpd.rules")
    assert rules == ['127.:allow,RELAYCLIENT=""', ":allow"]  # only loopback may relay
    assert (root / "alias" / ".qmail-postmaster").read_text() == "./Maildir/\n"
    assert (root / "queue" / "todo").is_dir() and (root / "queue" / "lock" / "trigger").exists()
    assert not (root / "directory.ldif").exists()
    with pytest.raises(ConfigError):
        init_root(InitOptions(root=root, me="again"))


def test_ldap_uri_forms() -> None:
    assert ldap_server_line("ldap://[::1]:389") == "[::1]:389"
    assert ldap_server_line("host:1389") == "host:1389"
    with pytest.raises(ConfigError):
        ldap_server_line("ldaps://secure/")


def test_demo_directory_answers_through_the_embedded_backend(tmp_path: Path) -> None:
    root = tmp_path / "q"
    init_root(InitOptions(root=root, me="mail.example.com", demo=True))
    d = open_directory(ControlDir(root))
    alice = d.find_recipient("a.smith@example.com")
    assert isinstance(alice, Found) and alice.user().uid == "alice"
    assert isinstance(d.find_recipient("nobody@example.com"), NotFound)
    team = d.find_recipient("team@example.com")
    assert isinstance(team, Found) and team.user().is_group


def test_demo_ldif_is_valid_for_slapd(tmp_path: Path, slapd_factory) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "q"
    init_root(InitOptions(root=root, me="mail.example.com", demo=True))
    server = slapd_factory(ldif=[root / "directory.ldif"])
    out = server.search("dc=example,dc=com", "(mail=*)", "mail")
    for user in ("alice", "bob", "carol", "dave", "erin", "frank", "team"):
        assert f"mail: {user}@example.com" in out


def test_qldap_demo_end_to_end_without_slapd(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("QLDAP_ROOT",)}
    env["HOME"] = str(tmp_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])  # no /usr/sbin
    proc = subprocess.run([sys.executable, "-m", "qldap.cli.qldap", "demo"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    landed = [x for x in lines if x.startswith("qldap demo: delivered to ")]
    assert len(landed) == 1
    path = landed[0].removeprefix("qldap demo: delivered to ")
    assert "/mail/alice/Maildir/new/" in path and path.endswith(",S=" + path.rsplit(",S=", 1)[1])
    assert "Delivered-To: alice@example.com" in lines
    assert "Return-Path: <bob@remote.example>" in lines
    assert not Path(path).exists()  # the temporary root is removed after a clean stop


def test_init_warns_about_a_closed_parent(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    argv = [sys.executable, "-m", "qldap.cli.qldap", "init", str(closed / "root"), "--me", "m.x"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert f"qldap: warning: {closed} is not searchable" in proc.stderr

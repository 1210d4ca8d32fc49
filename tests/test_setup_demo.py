"""`qldap init` and `qldap demo`: a fresh root, the sample directory, the zero-setup run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    assert ldap_server_line("ldaps://secure/") == "ldaps://secure"
    assert ldap_server_line("LDAPS://secure:1636") == "ldaps://secure:1636"
    assert ldap_server_line("ldapi://%2Frun%2Fslapd%2Fldapi/") == "ldapi://%2Frun%2Fslapd%2Fldapi"
    with pytest.raises(ConfigError):
        ldap_server_line("http://secure/")


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


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is not: deliveries run as nobody as root)."""
    path = Path(tempfile.mkdtemp(prefix="qldap-demo-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _demo(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QLDAP_ROOT",)}
    env["HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path)  # the demo root is created (and kept) here
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])  # no /usr/sbin
    proc = subprocess.run([sys.executable, "-m", "qldap.cli.qldap", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines(), proc.stdout


def _after(lines: list[str], prefix: str) -> str:
    found = [x.removeprefix(prefix) for x in lines if x.startswith(prefix)]
    assert len(found) == 1, f"one line starting {prefix!r} expected"
    return found[0]


def test_qldap_demo_end_to_end_without_slapd(open_tmp: Path) -> None:
    """The demo keeps what it shows and says how to remove it; the removal command works."""
    lines, _ = _demo(open_tmp)
    path = _after(lines, "qldap demo: delivered to ")
    assert "/mail/alice/Maildir/new/" in path and path.endswith(",S=" + path.rsplit(",S=", 1)[1])
    assert "Delivered-To: alice@example.com" in lines
    assert "Return-Path: <bob@remote.example>" in lines
    assert any(x.startswith("qldap demo: POP3 login as alice works") for x in lines)
    landed = Path(path)
    assert landed.is_file()  # kept after the demo returned
    assert f"  cat {landed}" in lines
    remove = _after(lines, "qldap demo: remove everything with: ")
    base = Path(remove.removeprefix("rm -rf "))
    assert base.parent == open_tmp and landed.is_relative_to(base)
    subprocess.run(["sh", "-c", remove], check=True, timeout=60)
    assert not base.exists()


def _tried(lines: list[str], start: str) -> str:
    """The one "Try:" line of the --keep output that starts with *start* (indented by two blanks)."""
    found = [x.strip() for x in lines if x.startswith("  " + start)]
    assert len(found) == 1, f"one line starting {start!r} expected"
    return found[0]


def _live_members(pgid: int) -> list[str]:
    """Members of process group `pgid` that have not exited, as "PID STATE" strings, from /proc.

    Why not kill(-pgid, 0): a killed daemon stays a zombie (state Z) until its parent waits for it, and
    after the demo exits that parent is whatever adopted it (a subreaper, or a PID 1 that may never
    reap); a zombie runs no code and holds no socket, so it counts as stopped.
    """
    live = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # state ppid pgrp ...; comm may hold blanks
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            live.append(f"{name} {fields[0].decode()}")
    return live


def test_qldap_demo_keep_prints_working_commands(open_tmp: Path) -> None:
    """--keep: the daemons keep running, the printed lines work as pasted, the stop command stops them."""
    lines, _ = _demo(open_tmp, "--keep")
    stop = _after(lines, "qldap demo: stop the daemons with: ")
    groups = [int(g) for g in stop.removeprefix("kill -TERM -- ").split()]
    assert len(groups) == 3 and all(g < 0 for g in groups)
    remove = _after(lines, "qldap demo: remove everything with: ")
    try:
        for pgid in groups:
            assert _live_members(-pgid), f"the daemon group {-pgid} is not running"
        # the "Try:" lines, pasted as printed, with the venv's programs on PATH as the README says
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]))
        curl = _tried(lines, "curl -s pop3://127.0.0.1:")
        assert curl.endswith(" -u alice:demo")
        got = subprocess.run(["sh", "-c", curl], env=env, capture_output=True, text=True, timeout=60)
        assert got.returncode == 0 and "Subject: Hello from qldap demo" in got.stdout, got.stderr
        swaks = _tried(lines, "swaks --server 127.0.0.1:")
        sent = subprocess.run(["sh", "-c", swaks], env=env, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0 and "<-  250 ok " in sent.stdout, sent.stdout + sent.stderr  # queued
        lookup = _tried(lines, "QLDAP_ROOT=")
        found = subprocess.run(["sh", "-c", lookup], env=env, capture_output=True, text=True, timeout=60)
        assert found.returncode == 0 and "alice" in found.stdout, found.stdout + found.stderr
    finally:
        subprocess.run(["bash", "-c", stop], check=False, timeout=60)
    for pgid in groups:
        deadline = time.monotonic() + 60  # a hang guard: daemons stop slowly on a loaded machine
        while time.monotonic() < deadline:
            if not _live_members(-pgid):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process group {-pgid} still alive after the printed stop command: "
                        f"{_live_members(-pgid)}")  # fmt: skip
    subprocess.run(["sh", "-c", remove], check=True, timeout=60)

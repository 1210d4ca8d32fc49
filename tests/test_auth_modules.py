"""auth_pop as a real process against the real slapd (auth_pop(8)): logins, states, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import (
    GID,
    IS_ROOT,
    UID,
    entry_point,
    free_port,
    homes,
    joe_ldif,
    ldap_root,
    make_home,
    module_env,
    parse_report,
    run_fd3,
)

__all__ = ["homes"]  # the fixture is used by name

AUTH_POP = entry_point("auth", "auth_pop_main")
JOE = b"joe\0secret\0<1.2@h>\0"


def auth_pop(qroot: QRoot, homes: Path, record: bytes = JOE, *pre: str, **env: str):  # type: ignore[no-untyped-def]
    return run_fd3([*AUTH_POP, *pre, str(homes / "probe"), "./Maildir/"], record, module_env(qroot, **env))


@pytest.fixture
def root(qroot: QRoot, ldap_base, slapd) -> QRoot:  # type: ignore[no-untyped-def]
    return ldap_root(qroot, ldap_base, slapd)


def test_check12_subprogram_runs_as_the_user_in_home(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = make_home(homes)
    ldap_base.load(joe_ldif(home))
    proc = auth_pop(root, homes, MAILDIRQUOTA="stale", DATASIZE="1")
    assert proc.returncode == 0, proc.stderr
    r = parse_report(proc.stdout)
    assert (r["uid"], r["gid"], r["cwd"]) == (str(UID), str(GID), str(home))
    if IS_ROOT:
        assert r["groups"] == str(GID)
    assert r["env:USER"] == "joe" and r["env:AUTHENTICATED"] == "joe"
    assert r["env:HOME"] == str(home) and r["env:MAILDIR"] == "./Maildir/"
    assert "env:MAILDIRQUOTA" not in r and "env:DATASIZE" not in r
    assert r["fd3"] == "closed" and r["args"] == "./Maildir/"


def test_check13_wrong_and_empty_password(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes)))
    assert auth_pop(root, homes, b"joe\0Secret\0x\0").returncode == 3
    root.control("ldapserver", f"127.0.0.1:{free_port()}")  # nobody there: an LDAP attempt would be 2
    assert auth_pop(root, homes, b"joe\0\0x\0").returncode == 3
    assert auth_pop(root, homes, b"joe\0secret\0x\0").returncode == 2


def test_bad_fd3_records(root: QRoot, homes: Path) -> None:
    assert auth_pop(root, homes, b"joe\0secret").returncode == 25
    assert auth_pop(root, homes, b"joe\0" + b"x" * 600 + b"\0\0").returncode == 111
    assert run_fd3([*AUTH_POP], JOE, module_env(root)).returncode == 1


@pytest.mark.parametrize("status,code", [("DISABLED", 4), ("noaccess", 4), ("deleted", 4),
                                         ("active", 0), (None, 0), ("nopop", 0)])
def test_check14_account_status(root: QRoot, ldap_base, homes: Path, status: str | None, code: int) -> None:  # type: ignore[no-untyped-def]
    extra = f"accountStatus: {status}" if status else ""
    ldap_base.load(joe_ldif(make_home(homes), extra=extra))
    assert auth_pop(root, homes).returncode == code
    # the password is checked first: a wrong one never reveals the account state
    assert auth_pop(root, homes, b"joe\0wrong\0x\0").returncode == 3


def test_check15_quota_environment(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = make_home(homes)
    ldap_base.load(joe_ldif(home, extra="mailQuotaSize: 1000000\nmailQuotaCount: 1000\nmailSizeMax: 5000"))
    ldap_base.load(joe_ldif(home, uid="cnt", extra="mailQuotaCount: 1000"))
    r = parse_report(auth_pop(root, homes).stdout)
    assert r["env:MAILDIRQUOTA"] == "1000000S,1000C" and r["env:DATASIZE"] == "5000"
    r = parse_report(auth_pop(root, homes, b"cnt\0secret\0\0").stdout)
    assert r["env:MAILDIRQUOTA"] == "1000C" and "env:DATASIZE" not in r


def test_check16_relative_store_under_ldapmessagestore(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(None, store="joe/Maildir/"))
    store = homes / "h"
    (store / "joe" / "Maildir").mkdir(parents=True)
    if IS_ROOT:
        os.chown(store / "joe" / "Maildir", UID, GID)
    root.control("ldapmessagestore", str(store))
    proc = auth_pop(root, homes)
    assert proc.returncode == 0, proc.stderr
    r = parse_report(proc.stdout)
    assert r["env:HOME"] == f"{store}/joe/Maildir/" and "env:MAILDIR" not in r
    root.control("ldapmessagestore", None)
    assert auth_pop(root, homes).returncode == 25


@pytest.mark.parametrize("ldif_args", [
    {"home": None, "store": None},
    {"extra": "qmailUID: 99", "replace_uid": True},
    {"home": "/a/../b"},
])
def test_check17_bad_records(root: QRoot, ldap_base, homes: Path, ldif_args: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    home = ldif_args.get("home", str(make_home(homes)))
    text = joe_ldif(home, store=ldif_args.get("store", "./Maildir/"))  # type: ignore[arg-type]
    if ldif_args.get("replace_uid"):
        text = text.replace(f"qmailUID: {UID}", "qmailUID: 99")
    ldap_base.load(text)
    assert auth_pop(root, homes).returncode == 25


def test_check18_duplicates_and_ldap_down(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = make_home(homes)
    ldap_base.load("dn: ou=a,{base}\nobjectClass: organizationalUnit\nou: a\n\n"
                   "dn: ou=b,{base}\nobjectClass: organizationalUnit\nou: b\n")
    ldap_base.load(joe_ldif(home, rdn_parent="ou=a,{base}"))
    ldap_base.load(joe_ldif(home, rdn_parent="ou=b,{base}"))
    assert auth_pop(root, homes).returncode == 111
    root.control("ldapserver", f"127.0.0.1:{free_port()}")
    assert auth_pop(root, homes).returncode == 2


def test_check19_objectclass_filter_and_escaping(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = make_home(homes)
    ldap_base.load(joe_ldif(home, uid="aXb"))
    # "a*b" must be escaped: unescaped it would match aXb and log in
    assert auth_pop(root, homes, b"a*b\0secret\0\0").returncode == 3
    assert auth_pop(root, homes, b"aXb\0secret\0\0").returncode == 0
    ldap_base.load("dn: uid=plain,{base}\nobjectClass: inetOrgPerson\nuid: plain\ncn: p\nsn: p\n"
                   "userPassword: secret\n")
    root.control("cleartextpasswd", "1")
    assert auth_pop(root, homes, b"plain\0secret\0\0").returncode == 25  # found, but no mailbox
    root.control("ldapobjectclass", "qmailUser")
    assert auth_pop(root, homes, b"plain\0secret\0\0").returncode == 3  # not a qmailUser: not found
    assert auth_pop(root, homes, b"aXb\0secret\0\0").returncode == 0


def test_check20_rebind(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    # slapd accepts binds against a cleartext userPassword; our own comparison does not (cleartext off)
    ldap_base.load(joe_ldif(make_home(homes), password="secret"))
    assert auth_pop(root, homes).returncode == 3
    root.control("ldaprebind", "1")
    assert auth_pop(root, homes).returncode == 0
    assert auth_pop(root, homes, b"joe\0wrong\0\0").returncode == 3


def test_cleartext_switch(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes), password="secret"))
    assert auth_pop(root, homes).returncode == 3
    root.control("cleartextpasswd", "1")
    assert auth_pop(root, homes).returncode == 0


def test_check22_dirmaker(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = homes / "h" / "joe"
    ldap_base.load(joe_ldif(home))
    assert auth_pop(root, homes).returncode == 62
    maker = homes / "dirmaker"
    log = homes / "h" / "maker.log"
    maker.write_text(f'#!/bin/sh\necho "$(id -u) $1 $2" >> {log}\nmkdir "$1"\nexit 0\n')
    maker.chmod(0o755)
    root.control("dirmaker", str(maker))
    proc = auth_pop(root, homes)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == f"{UID} {home} ./Maildir/\n"
    assert parse_report(proc.stdout)["cwd"] == str(home)
    home.rmdir()
    maker.write_text("#!/bin/sh\nexit 100\n")
    assert auth_pop(root, homes).returncode == 61


def test_check23_maildir_autocreation(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    home = make_home(homes)
    ldap_base.load(joe_ldif(home))
    assert auth_pop(root, homes).returncode == 0
    assert not (home / "Maildir").exists()  # off by default
    root.control("automaildirmake", "1")
    assert auth_pop(root, homes).returncode == 0
    for sub in ("", "tmp", "cur", "new"):
        st = (home / "Maildir" / sub).stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == UID
    for sub in ("tmp", "cur", "new"):
        (home / "Maildir" / sub).rmdir()
    (home / "Maildir").rmdir()
    (home / "Maildir").write_text("in the way")
    assert auth_pop(root, homes).returncode == 6


def test_check45_pbs_tool_runs_once_per_login(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes)))
    log = homes / "h" / "pbs.log"
    tool = homes / "pbstool"
    tool.write_text("#!/bin/sh\nif [ -e /proc/$$/fd/3 ]; then f=fd3; else f=nofd3; fi\n"
                    f'echo "$USER $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $f" >> {log}\nexit 1\n')
    tool.chmod(0o755)
    proc = auth_pop(root, homes, JOE, "-d", str(tool))
    assert proc.returncode == 0, proc.stderr  # the tool failed; the session still starts
    assert log.read_text() == "joe /dev/null /dev/null nofd3\n"
    assert parse_report(proc.stdout)["env:USER"] == "joe"
    auth_pop(root, homes, JOE, "-d", str(tool), NOPBS="1")
    assert log.read_text().count("\n") == 1  # NOPBS: skipped
    auth_pop(root, homes, b"joe\0bad\0\0", "-d", str(tool))
    assert log.read_text().count("\n") == 1  # only after a successful login


def test_exec_failure_is_7(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes)))
    proc = run_fd3([*AUTH_POP, str(homes / "missing-program"), "./Maildir/"], JOE, module_env(root))
    assert proc.returncode == 7

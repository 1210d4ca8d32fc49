"""qmail-users: qmail-newu's cdb format and the users/cdb step of local delivery (qmail-local(8), NO
ENTRY)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.cdb import open_cdb
from qldap.errors import ConfigError
from qldap.local.spawn import LocalSpawner
from qldap.local.users import Assignment, compile_assign, lookup
from qldap.queue.layout import create_queue
from tests.conftest import QRoot

UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()
NEWU = [sys.executable, "-c", "import sys; from qldap.cli.newu import main; sys.exit(main())"]


def newu(qroot: QRoot, assign: str) -> subprocess.CompletedProcess[str]:
    (qroot.path / "users" / "assign").write_text(assign)
    return subprocess.run([*NEWU, "--root", str(qroot.path)], capture_output=True, text=True, check=False)


def test_newu_writes_qmail_newu_keys_readable_by_tinycdb(qroot: QRoot) -> None:
    proc = newu(qroot, "=info:joe:507:100:/home/joe:::\n+joe-:joe:507:100:/home/joe:-::\n.\n")
    assert proc.returncode == 0, proc.stderr
    cdb_file = qroot.path / "users" / "cdb"
    dump = subprocess.run(["cdb", "-d", str(cdb_file)], capture_output=True, check=True).stdout
    assert b"+6,24:!info\0->joe\x00507\x00100\x00/home/joe\x00\x00\x00\n" in dump  # exact key with NUL
    assert b"+5,25:!joe-->joe\x00507\x00100\x00/home/joe\x00-\x00\x00\n" in dump  # wildcard prefix
    assert b"+0,1:->-\n" in dump  # the wildcard characters under the empty key
    cdb = open_cdb(cdb_file)
    assert lookup(cdb, "INFO") == Assignment("joe", 507, 100, "/home/joe", "", "")
    assert lookup(cdb, "joe-list") == Assignment("joe", 507, 100, "/home/joe", "-", "list")
    assert lookup(cdb, "nobody") is None


def test_truncated_or_bad_assign_keeps_the_old_cdb(qroot: QRoot) -> None:
    assert newu(qroot, "=a:b:1:2:/h:::\n.\n").returncode == 0
    before = (qroot.path / "users" / "cdb").read_bytes()
    bad = newu(qroot, "=a:b:1:2:/h:::\n")
    assert bad.returncode == 111 and "missing the final line" in bad.stderr
    assert newu(qroot, "=a:b:x:2:/h:::\n.\n").returncode == 111
    assert (qroot.path / "users" / "cdb").read_bytes() == before


def test_first_duplicate_wins_and_catch_all_prefix() -> None:
    items = list(compile_assign("=a:first:1:1:/h:::\n=a:second:2:2:/h:::\n+:all:3:3:/x:-:pre-:\n.\n"))
    assert sum(1 for k, _ in items if k == b"!a\0") == 1
    with pytest.raises(ConfigError):
        list(compile_assign("?bad\n.\n"))


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-users-"))
    d.chmod(0o755)
    h = d / "joe"
    h.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(h, UID, GID)
    yield h
    shutil.rmtree(d)


def _spawner(qroot: QRoot, ldap_base, slapd) -> LocalSpawner:  # type: ignore[no-untyped-def]
    qroot.control("ldapserver", f"127.0.0.1:{slapd.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    create_queue(qroot.path)
    return LocalSpawner(qroot.path, lambda d, s, r: 1)


def _msg(tmp_path: Path) -> Path:
    p = tmp_path / "m"
    p.write_bytes(b"Subject: x\n\nhi\n")
    return p


def test_check62_simple_assignment(qroot: QRoot, ldap_base, slapd, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = _spawner(qroot, ldap_base, slapd)
    assert newu(qroot, f"=info:joe:{UID}:{GID}:{home}:::\n.\n").returncode == 0
    rep = sp.deliver("info@example.com", "b@r.example", _msg(tmp_path))
    assert (rep.letter, rep.text) == ("K", "did 1+0+0")
    files = list((home / "Maildir" / "new").iterdir())
    assert len(files) == 1 and os.stat(files[0]).st_uid == UID
    (home / ".qmail").write_text("|env\n")
    (home / ".qmail").chmod(0o600)
    if os.geteuid() == 0:
        os.chown(home / ".qmail", UID, GID)
    env = sp.deliver("info@example.com", "b@r.example", _msg(tmp_path)).text
    assert "USER=joe" in env and "QMAILDOTMODE" not in env and "MAILDIRQUOTA" not in env


def test_check63_wildcard_with_default(qroot: QRoot, ldap_base, slapd, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = _spawner(qroot, ldap_base, slapd)
    assert newu(qroot, f"+joe-:joe:{UID}:{GID}:{home}:-::\n.\n").returncode == 0
    for name, line in ((".qmail-default", "./Default/\n"), (".qmail-list", "./List/\n")):
        (home / name).write_text(line)
        (home / name).chmod(0o600)
        if os.geteuid() == 0:
            os.chown(home / name, UID, GID)
    assert sp.deliver("joe-list@example.com", "b@r.example", _msg(tmp_path)).letter == "K"
    assert len(list((home / "List" / "new").iterdir())) == 1
    assert sp.deliver("joe-other@example.com", "b@r.example", _msg(tmp_path)).letter == "K"
    assert len(list((home / "Default" / "new").iterdir())) == 1


def test_corrupt_users_cdb_defers(qroot: QRoot, ldap_base, slapd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = _spawner(qroot, ldap_base, slapd)
    (qroot.path / "users" / "cdb").write_bytes(b"garbage")
    rep = sp.deliver("who@example.com", "b@r.example", _msg(tmp_path))
    assert (rep.letter, rep.text) == ("Z", "Trouble reading users/cdb in qmail-lspawn.")

"""qmail-cdb end to end: the installed console script run as a subprocess (qmail-cdb(8))."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.cli import cdb as qmail_cdb_cli
from qldap.control.cdb import open_cdb, write_cdb

SCRIPT = Path(sys.executable).parent / "qmail-cdb"
CDB = shutil.which("cdb")
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="qmail-cdb console script is not installed")


def run(cwd: Path, *args: str, stdin: bytes | None = b"", umask: int | None = None,
        stdin_fd: int | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    def pre() -> None:
        if umask is not None:
            os.umask(umask)

    if stdin_fd is not None:
        return subprocess.run([str(SCRIPT), *args], stdin=stdin_fd, cwd=cwd, capture_output=True,
                              preexec_fn=pre, check=False)  # fmt: skip
    return subprocess.run([str(SCRIPT), *args], input=stdin, cwd=cwd, capture_output=True,
                          preexec_fn=pre, check=False)  # fmt: skip


def test_acceptance_56(tmp_path: Path) -> None:
    res = run(tmp_path, "x.cdb", "x.tmp", stdin=b"Example.COM  \n#c\n\nfoo.org\n", umask=0o077)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    cdb_path = tmp_path / "x.cdb"
    assert cdb_path.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "x.tmp").exists()
    assert list(open_cdb(cdb_path)) == [(b"example.com", b""), (b"foo.org", b"")]
    if CDB is not None:
        dump = subprocess.run([CDB, "-d", str(cdb_path)], capture_output=True, check=True).stdout
        assert dump == b"+11,0:example.com->\n+7,0:foo.org->\n\n"
        assert subprocess.run([CDB, "-q", str(cdb_path), "foo.org"], check=False).returncode == 0
        assert subprocess.run([CDB, "-q", str(cdb_path), "Foo.org"], check=False).returncode == 100


def test_line_rules(tmp_path: Path) -> None:
    lines = b"  #not a comment\nA\tb \t \nwith-cr\r\n\xc3\x89T\xc3\x89\nlast-without-newline"
    res = run(tmp_path, "y.cdb", "y.tmp", stdin=lines)
    assert res.returncode == 0, res.stderr
    assert [k for k, _v in open_cdb(tmp_path / "y.cdb")] == [
        b"  #not a comment",
        b"a\tb",
        b"with-cr\r",  # only spaces, tabs and LF are stripped
        b"\xc3\x89t\xc3\x89",  # ASCII-only lowercasing
        b"last-without-newline",
    ]


def test_duplicates_and_empty_input(tmp_path: Path) -> None:
    assert run(tmp_path, "d.cdb", "d.tmp", stdin=b"a\nA\n").returncode == 0
    assert open_cdb(tmp_path / "d.cdb").get_all(b"a") == [b"", b""]
    assert run(tmp_path, "e.cdb", "e.tmp", stdin=b"").returncode == 0
    assert list(open_cdb(tmp_path / "e.cdb")) == []


def test_replaces_an_existing_database(tmp_path: Path) -> None:
    write_cdb(tmp_path / "r.cdb", [(b"old.test", b"")])
    assert run(tmp_path, "r.cdb", "r.tmp", stdin=b"new.test\n").returncode == 0
    db = open_cdb(tmp_path / "r.cdb")
    assert b"new.test" in db and b"old.test" not in db


@pytest.mark.parametrize("args", [(), ("only.cdb",), ("a.cdb", "a.tmp", "extra")])
def test_wrong_argument_count(tmp_path: Path, args: tuple[str, ...]) -> None:
    res = run(tmp_path, *args, stdin=b"x\n")
    assert res.returncode == 111
    assert res.stderr == b"qmail-cdb: usage: qmail-cdb file.cdb file.tmp\n"
    assert os.listdir(tmp_path) == []


def test_unwritable_tmp(tmp_path: Path) -> None:
    res = run(tmp_path, "x.cdb", "missing/x.tmp", stdin=b"a\n")
    assert res.returncode == 111
    assert res.stderr == b"qmail-cdb: fatal: unable to write to missing/x.tmp: No such file or directory\n"
    assert not (tmp_path / "x.cdb").exists()


def test_rename_failure(tmp_path: Path) -> None:
    (tmp_path / "x.cdb").mkdir()
    res = run(tmp_path, "x.cdb", "x.tmp", stdin=b"a\n")
    assert res.returncode == 111
    assert res.stderr.startswith(b"qmail-cdb: fatal: unable to move x.tmp to x.cdb: ")
    assert (tmp_path / "x.cdb").is_dir()


def test_stdin_read_error_keeps_old_database(tmp_path: Path) -> None:
    write_cdb(tmp_path / "x.cdb", [(b"old.test", b"")])
    fd = os.open(tmp_path / "write-only", os.O_WRONLY | os.O_CREAT, 0o600)  # reading it fails: EBADF
    try:
        res = run(tmp_path, "x.cdb", "x.tmp", stdin=None, stdin_fd=fd)
    finally:
        os.close(fd)
    assert res.returncode == 111
    assert res.stderr == b"qmail-cdb: fatal: unable to read from stdin: Bad file descriptor\n"
    assert list(open_cdb(tmp_path / "x.cdb")) == [(b"old.test", b"")]
    assert not (tmp_path / "x.tmp").exists()


def test_main_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"One.Test\n")))
    assert qmail_cdb_cli.main([str(tmp_path / "m.cdb"), str(tmp_path / "m.tmp")]) == 0
    assert open_cdb(tmp_path / "m.cdb").get(b"one.test") == b""
    assert qmail_cdb_cli.main([]) == 111
    assert "usage: qmail-cdb file.cdb file.tmp" in capsys.readouterr().err
    assert qmail_cdb_cli.key_of(b"  \t\n") is None
    assert qmail_cdb_cli.key_of(b"#x\n") is None
    assert qmail_cdb_cli.key_of(b"X.Y \n") == b"x.y"

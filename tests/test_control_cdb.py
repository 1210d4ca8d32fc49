"""cdb reader and writer, cross-checked with tinycdb's ``cdb`` tool in both directions."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.cdb import Cdb, CdbError, CdbReader, cdb_hash, open_cdb, write_cdb
from qldap.errors import ConfigError

CDB = shutil.which("cdb")
needs_tinycdb = pytest.mark.skipif(CDB is None, reason="tinycdb's cdb tool is not installed")


def tinycdb(*args: str | bytes | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert CDB is not None
    argv = [CDB, *(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, input=stdin, capture_output=True, check=False)


def parse_dump(dump: bytes) -> list[tuple[bytes, bytes]]:
    """Parse tinycdb's ``+klen,dlen:key->data\\n`` records (binary-safe, by the lengths)."""
    out = []
    pos = 0
    while dump[pos : pos + 1] == b"+":
        comma = dump.index(b",", pos)
        colon = dump.index(b":", comma)
        klen, dlen = int(dump[pos + 1 : comma]), int(dump[comma + 1 : colon])
        key = dump[colon + 1 : colon + 1 + klen]
        arrow = colon + 1 + klen
        assert dump[arrow : arrow + 2] == b"->"
        data = dump[arrow + 2 : arrow + 2 + dlen]
        assert dump[arrow + 2 + dlen : arrow + 3 + dlen] == b"\n"
        out.append((key, data))
        pos = arrow + 3 + dlen
    assert dump[pos:] in (b"", b"\n")
    return out


def make_input(items: list[tuple[bytes, bytes]]) -> bytes:
    """tinycdb ``cdb -c`` input for *items*."""
    return b"".join(b"+%d,%d:%s->%s\n" % (len(k), len(d), k, d) for k, d in items) + b"\n"


def test_hash_function() -> None:
    assert cdb_hash(b"") == 5381
    assert cdb_hash(b"a") == ((5381 << 5) + 5381) ^ ord("a")
    h = 5381
    for c in b"example.com":
        h = ((h * 33) ^ c) % 2**32
    assert cdb_hash(b"example.com") == h
    assert cdb_hash(b"\xff" * 1000) < 2**32


@needs_tinycdb
def test_many_keys_round_trip_and_tinycdb_reads_them(tmp_path: Path) -> None:
    items = [(b"key%05d" % i, b"value-%d" % (i * 7)) for i in range(5000)]
    target = tmp_path / "big.cdb"
    assert write_cdb(target, items) == 5000
    db = open_cdb(target)
    for key, data in items:
        assert db.get(key) == data
    assert db.get(b"key99999") is None
    assert list(db) == items
    assert len(db) == 5000
    for key, data in items[::997]:
        res = tinycdb("-q", target, key)
        assert (res.returncode, res.stdout) == (0, data)
    assert tinycdb("-q", target, "missing").returncode == 100
    assert parse_dump(tinycdb("-d", target).stdout) == items


@needs_tinycdb
def test_duplicate_keys_kept_in_order(tmp_path: Path) -> None:
    target = tmp_path / "dup.cdb"
    write_cdb(target, [(b"a", b"1"), (b"b", b"x"), (b"a", b"2"), (b"a", b"3")])
    db = open_cdb(target)
    assert db.get(b"a") == b"1"
    assert db.get_all(b"a") == [b"1", b"2", b"3"]
    assert db.get_all(b"zz") == []
    assert tinycdb("-q", "-n", "2", target, "a").stdout == b"2"
    assert tinycdb("-q", "-n", "3", target, "a").stdout == b"3"
    assert tinycdb("-q", "-n", "4", target, "a").returncode == 100


@needs_tinycdb
def test_binary_keys_and_data(tmp_path: Path) -> None:
    items = [
        (b"\x00", b"nul key"),
        (b"", b"empty key"),
        (b"k\n->\r", b"\x00\xff\n" * 100),
        (bytes(range(256)), b""),
        (b"big", os.urandom(200_000)),
    ]
    target = tmp_path / "bin.cdb"
    write_cdb(target, items)
    db = open_cdb(target)
    for key, data in items:
        assert db.get(key) == data
        assert key in db
    assert b"\x01" not in db
    assert "big" not in db  # str keys are never found
    assert parse_dump(tinycdb("-d", target).stdout) == items
    assert tinycdb("-q", target, "big").stdout == items[-1][1]


@needs_tinycdb
def test_empty_database(tmp_path: Path) -> None:
    target = tmp_path / "empty.cdb"
    assert write_cdb(target, []) == 0
    assert target.stat().st_size == 2048
    db = open_cdb(target)
    assert db.get(b"x") is None
    assert list(db) == []
    assert len(db) == 0
    assert tinycdb("-q", target, "x").returncode == 100
    assert tinycdb("-d", target).stdout.strip() == b""


@needs_tinycdb
def test_reads_what_tinycdb_wrote(tmp_path: Path) -> None:
    items = [(b"example.com", b""), (b"Foo", b"bar"), (b"foo", b"x\x00y"), (b"Foo", b"second")]
    items += [(b"k%d" % i, b"%d" % i) for i in range(3000)]
    target = tmp_path / "tiny.cdb"
    res = tinycdb("-c", target, stdin=make_input(items))
    assert res.returncode == 0, res.stderr
    db = open_cdb(target)
    assert db.get(b"example.com") == b""
    assert db.get_all(b"Foo") == [b"bar", b"second"]
    assert db.get(b"foo") == b"x\x00y"
    assert db.get(b"k2999") == b"2999"
    assert db.get(b"FOO") is None
    assert list(db) == items


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "e.cdb"
    p.write_bytes(b"")
    with pytest.raises(CdbError, match="not a cdb file"):
        open_cdb(p)
    assert issubclass(CdbError, ConfigError)


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "t.cdb"
    write_cdb(p, [(b"k%d" % i, b"v") for i in range(100)])
    whole = p.read_bytes()
    p.write_bytes(whole[:1000])
    with pytest.raises(CdbError):
        open_cdb(p)
    p.write_bytes(whole[:-8])  # last hash table slot cut off
    with pytest.raises(CdbError, match="corrupt"):
        open_cdb(p)


def test_record_pointing_outside_the_file_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "c.cdb"
    write_cdb(p, [(b"key", b"value")])
    raw = bytearray(p.read_bytes())
    h = cdb_hash(b"key")
    tpos, slots = struct.unpack_from("<II", raw, (h & 0xFF) * 8)
    for n in range(slots):  # point the key's slot at a record far beyond the end
        spos = tpos + n * 8
        shash, _rpos = struct.unpack_from("<II", raw, spos)
        if shash == h:
            struct.pack_into("<II", raw, spos, h, len(raw) + 100)
    db = Cdb(bytes(raw), "c.cdb")
    with pytest.raises(CdbError, match="corrupt"):
        db.get(b"key")
    raw2 = bytearray(p.read_bytes())
    struct.pack_into("<II", raw2, 2048, 1000, 5)  # record longer than the record area
    with pytest.raises(CdbError, match="corrupt"):
        list(Cdb(bytes(raw2), "c2.cdb"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CdbError, match="does not exist"):
        open_cdb(tmp_path / "none.cdb")
    reader = CdbReader(tmp_path / "none.cdb")
    assert reader.current() is None
    assert not reader.exists
    with pytest.raises(CdbError):
        reader.get(b"x")


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.cdb").mkdir()
    with pytest.raises(CdbError, match="unable to read"):
        CdbReader(tmp_path / "dir.cdb").current()


def test_reader_reopens_only_after_a_change(tmp_path: Path) -> None:
    target = tmp_path / "r.cdb"
    reader = CdbReader(target)
    assert reader.current() is None
    write_cdb(target, [(b"a", b"1")])
    first = reader.current()
    assert first is not None and reader.get(b"a") == b"1"
    assert reader.current() is first  # unchanged file: the same in-memory database
    write_cdb(target, [(b"a", b"2"), (b"b", b"")])
    assert reader.get(b"a") == b"2"
    assert b"b" in reader
    assert dict(reader) == {b"a": b"2", b"b": b""}
    assert first.get(b"a") == b"1"  # an old snapshot stays consistent
    target.unlink()
    assert reader.current() is None


def test_write_is_atomic_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "x.cdb"
    old_umask = os.umask(0o077)
    try:
        write_cdb(target, [(b"a", b"")])
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["x.cdb"]
    write_cdb(target, [(b"b", b"")], tmp=tmp_path / "explicit.tmp", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["x.cdb"]
    assert open_cdb(target).get(b"b") == b""


def test_failed_write_keeps_old_database(tmp_path: Path) -> None:
    target = tmp_path / "x.cdb"
    write_cdb(target, [(b"old", b"1")])

    def broken() -> Iterator[tuple[bytes, bytes]]:
        yield b"new", b"2"
        raise RuntimeError("input failed")

    with pytest.raises(RuntimeError, match="input failed"):
        write_cdb(target, broken(), tmp=tmp_path / "x.tmp")
    assert open_cdb(target).get(b"old") == b"1"
    assert sorted(os.listdir(tmp_path)) == ["x.cdb"]
    with pytest.raises(CdbError, match=r"unable to write to .*/nodir/x\.tmp"):
        write_cdb(target, [], tmp=tmp_path / "nodir" / "x.tmp")
    (tmp_path / "isdir.cdb").mkdir()
    with pytest.raises(CdbError, match=r"unable to move .*y\.tmp to .*isdir\.cdb"):
        write_cdb(tmp_path / "isdir.cdb", [], tmp=tmp_path / "y.tmp")
    assert not (tmp_path / "y.tmp").exists()


def test_readers_never_see_a_half_written_database(tmp_path: Path) -> None:
    """A reader polling while versions are replaced sees each version whole.

    Bounded by count, not by time or luck: the reader makes exactly READS reads and the writer
    writes at most WRITES versions (it stops early once the reader is done), so the test does a
    fixed amount of work however loaded the machine is; the two still overlap for as long as both
    run, which is what the check needs.
    """
    reads, writes = 150, 150
    target = tmp_path / "v.cdb"
    keys = [b"k%d" % i for i in range(500)]
    write_cdb(target, [(k, b"0") for k in keys])
    reader = CdbReader(target)
    reader_done = threading.Event()
    problems: list[str] = []
    seen: list[bytes] = []

    def poll() -> None:
        try:
            for _ in range(reads):
                db = reader.current()
                if db is None:
                    problems.append("file vanished")
                    return
                values = {v for _k, v in db}
                if len(values) != 1 or len(list(db)) != len(keys):
                    problems.append(f"mixed or partial database: {sorted(values)[:3]}")
                    return
                seen.extend(values)
        finally:
            reader_done.set()

    thread = threading.Thread(target=poll)
    thread.start()
    last = 0
    try:
        for version in range(1, writes + 1):
            write_cdb(target, [(k, b"%d" % version) for k in keys])
            last = version
            if reader_done.is_set():
                break
    finally:
        thread.join()
    assert problems == []
    assert len(seen) == reads
    assert [int(v) for v in seen] == sorted(int(v) for v in seen)  # versions only ever move forward
    assert reader.get(b"k0") == b"%d" % last

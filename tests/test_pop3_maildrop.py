"""qmail-pop3d's Maildir handling on real files: listing, sizes, UIDs, transfer form, commit at QUIT."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qldap.pop3.maildrop import (
    TMP_MAX_AGE,
    Maildrop,
    NoMaildir,
    ScanFailed,
    TransferEncoder,
    name_size,
    name_time,
    transcode,
)


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def put(maildir: Path, rel: str, data: bytes = b"x\n") -> Path:
    p = maildir / rel
    p.write_bytes(data)
    return p


@pytest.fixture
def md(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


def test_name_rules() -> None:
    assert name_size("1000.1.h,S=10") == 10
    assert name_size("1000.1.h,S=20:2,S") == 20
    assert name_size("1000.1.h,S=:2,") == 0
    assert name_size("1000.1.h,W=30,S=7,S=9") == 7
    assert name_size("1000.1.h") is None
    assert name_time("1000.1.h") == 1000
    assert name_time("0.1.h") is None
    assert name_time("1000") is None
    assert name_time("abc.1") is None


def test_listing_order_sizes_and_uids(md: Path) -> None:
    put(md, "new/1000.1.h,S=10")
    put(md, "cur/2000.2.h,S=20:2,S")
    put(md, "cur/.hidden", b"no")
    put(md, "new/.tmpfile", b"no")
    drop = Maildrop.open(md)
    assert [m.path for m in drop.messages] == ["new/1000.1.h,S=10", "cur/2000.2.h,S=20:2,S"]
    assert [m.size for m in drop.messages] == [10, 20]
    assert [m.uid for m in drop.messages] == ["1000.1.h,S=10", "2000.2.h,S=20"]
    assert drop.stat() == (2, 30)


def test_size_and_time_from_the_file_when_the_name_lacks_them(md: Path) -> None:
    p = put(md, "cur/msgA:2,", b"12345")
    os.utime(p, (500, 500))
    q = put(md, "new/msgB", b"1234567")
    os.utime(q, (400, 400))
    drop = Maildrop.open(md)
    assert [(m.path, m.size) for m in drop.messages] == [("new/msgB", 7), ("cur/msgA:2,", 5)]


def test_future_dated_and_now_dated_messages_are_not_listed(md: Path) -> None:
    now = 1_700_000_000.0
    put(md, "new/1699999999.1.h")
    put(md, "new/1700000000.1.h")
    put(md, "new/1800000000.1.h")
    f = put(md, "new/nodigits")
    os.utime(f, (now + 100, now + 100))
    drop = Maildrop.open(md, now=now)
    assert [m.path for m in drop.messages] == ["new/1699999999.1.h"]


def test_equal_times_are_ordered_by_path(md: Path) -> None:
    put(md, "new/1000.2.h")
    put(md, "cur/1000.9.h:2,")
    put(md, "new/1000.1.h")
    assert [m.path for m in Maildrop.open(md).messages] == ["cur/1000.9.h:2,", "new/1000.1.h", "new/1000.2.h"]


def test_old_tmp_files_are_removed_recent_and_dot_files_kept(md: Path) -> None:
    now = time.time()
    old = put(md, "tmp/old")
    os.utime(old, (now - TMP_MAX_AGE - 10, now - TMP_MAX_AGE - 10))
    old_dot = put(md, "tmp/.old")
    os.utime(old_dot, (now - TMP_MAX_AGE - 10, now - TMP_MAX_AGE - 10))
    young = put(md, "tmp/young")
    Maildrop.open(md, now=now)
    assert not old.exists()
    assert old_dot.exists() and young.exists()


def test_missing_maildir_and_unscannable_maildir(tmp_path: Path) -> None:
    with pytest.raises(NoMaildir):
        Maildrop.open(tmp_path / "absent")
    (tmp_path / "half" / "new").mkdir(parents=True)
    with pytest.raises(ScanFailed):
        Maildrop.open(tmp_path / "half")


def test_transfer_form_of_check_30() -> None:
    stored = b"Subject: x\n\n.b\nlast"
    assert transcode(stored) == b"Subject: x\r\n\r\n..b\r\nlast\r\n\r\n.\r\n"
    assert transcode(stored, 0) == b"Subject: x\r\n\r\n\r\n.\r\n"
    assert transcode(stored, 1) == b"Subject: x\r\n\r\n..b\r\n\r\n.\r\n"
    assert transcode(stored, 5) == transcode(stored)


def test_transfer_edge_cases() -> None:
    assert transcode(b"") == b"\r\n.\r\n"
    assert transcode(b"a\n") == b"a\r\n\r\n.\r\n"
    assert transcode(b"a\r\nb\r\n") == b"a\r\nb\r\n\r\n.\r\n"  # stored CR not doubled
    assert transcode(b"H: 1\r\n\r\nbody\r\n", 0) == b"H: 1\r\n\r\n\r\n.\r\n"
    assert transcode(b".\n..\n") == b"..\r\n...\r\n\r\n.\r\n"
    assert transcode(b"H: v\nno body") == b"H: v\r\nno body\r\n\r\n.\r\n"


def test_streamed_retrieval_of_a_large_message(md: Path) -> None:
    line = b"." + b"y" * 99 + b"\n"
    body = b"Subject: big\n\n" + line * 5000 + b"z" * 20000  # ~520 kB, long unterminated end
    put(md, "new/1000.1.h", body)
    drop = Maildrop.open(md)
    stream = drop.open_message(0)
    chunks = list(stream)
    assert len(chunks) > 2
    assert b"".join(chunks) == transcode(body)
    assert stream.line_bytes == (12 + 2) + 2 + 5000 * (100 + 2) + (20000 + 2)  # stuffing dots not counted


@settings(max_examples=200)
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=40), st.none() | st.integers(0, 4))
def test_chunking_never_changes_the_transfer(data: bytes, cuts: list[int], limit: int | None) -> None:
    codec = TransferEncoder(limit)
    out, pos = b"", 0
    for size in cuts:
        out += codec.feed(data[pos : pos + size])
        pos += size
    out += codec.feed(data[pos:]) + codec.finish()
    assert out == transcode(data, limit)
    assert out.endswith(b"\r\n.\r\n")
    for line in out[:-5].split(b"\r\n"):
        assert b"\n" not in line


def test_long_unterminated_lines_are_streamed_not_buffered() -> None:
    codec = TransferEncoder(None)
    first = codec.feed(b"." + b"a" * 100_000)
    assert first == b".." + b"a" * 100_000
    assert codec.feed(b"\r") == b""
    assert codec.feed(b"\nend") == b"\r\n"
    assert codec.finish() == b"end\r\n\r\n.\r\n"


def test_commit_deletes_records_quota_and_moves_new_to_cur(md: Path) -> None:
    put(md, "new/1000.1.h,S=10", b"0123456789")
    put(md, "new/1001.1.h,S=3", b"abc")
    put(md, "cur/900.1.h,S=4:2,S", b"abcd")
    (md / "maildirsize").write_text("100000S\n17 3\n")
    drop = Maildrop.open(md)
    assert [m.path for m in drop.messages][1] == "new/1000.1.h,S=10"
    drop.delete(1)
    assert drop.commit(None) is True
    assert not (md / "new/1000.1.h,S=10").exists()
    assert (md / "cur/1001.1.h,S=3:2,").read_bytes() == b"abc"
    assert not (md / "new/1001.1.h,S=3").exists()
    assert (md / "cur/900.1.h,S=4:2,S").exists()
    assert (md / "maildirsize").read_text() == "100000S\n17 3\n-10 -1\n"


def test_without_quota_and_without_maildirsize_nothing_is_recorded(md: Path) -> None:
    put(md, "new/1000.1.h,S=10")
    drop = Maildrop.open(md)
    drop.delete(0)
    assert drop.commit(None)
    assert not (md / "maildirsize").exists()
    assert not (md / "new/1000.1.h,S=10").exists()


def test_quota_set_and_maildirsize_missing_is_recounted_before_deleting(md: Path) -> None:
    put(md, "new/1000.1.h,S=10")
    put(md, "cur/1001.1.h,S=5:2,")
    drop = Maildrop.open(md)
    drop.delete(0)
    assert drop.commit("1000S,10C", sleep=lambda _s: None)
    assert (md / "maildirsize").read_text() == "1000S,10C\n15 2\n-10 -1\n"


def test_changed_quota_definition_rebuilds_the_journal(md: Path) -> None:
    put(md, "cur/1001.1.h,S=5:2,")
    put(md, "new/1002.1.h,S=7")
    (md / "maildirsize").write_text("50S\n999 99\n")
    drop = Maildrop.open(md)
    drop.delete(1)
    assert drop.commit("2000S", sleep=lambda _s: None)
    assert (md / "maildirsize").read_text() == "2000S\n12 2\n-7 -1\n"


def test_reset_and_no_commit_change_nothing(md: Path) -> None:
    put(md, "new/1000.1.h,S=10")
    before = sorted(str(p.relative_to(md)) for p in md.rglob("*"))
    drop = Maildrop.open(md)
    drop.delete(0)
    assert drop.stat() == (0, 0)
    drop.reset()
    assert drop.stat() == (1, 10)
    del drop
    assert sorted(str(p.relative_to(md)) for p in md.rglob("*")) == before


def test_unlink_failure_is_reported_when_the_entry_is_not_a_file(md: Path) -> None:
    (md / "cur" / "1000.1.h,S=1:2,").mkdir()  # unlink of a directory fails even for root
    (md / "maildirsize").write_text("\n1 1\n")
    drop = Maildrop.open(md)
    drop.delete(0)
    assert drop.commit(None) is False
    assert (md / "maildirsize").read_text() == "\n1 1\n"  # nothing recorded for a failed unlink


def test_message_removed_by_someone_else_is_not_a_failure(md: Path) -> None:
    p = put(md, "cur/1000.1.h,S=1:2,")
    (md / "maildirsize").write_text("\n1 1\n")
    drop = Maildrop.open(md)
    drop.delete(0)
    p.unlink()
    assert drop.commit(None) is True
    assert (md / "maildirsize").read_text() == "\n1 1\n"


def test_symlinked_message_and_journal_are_never_followed(md: Path, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:x:0\n")
    (md / "cur" / "1000.1.h:2,").symlink_to(secret)
    (md / "maildirsize").symlink_to(secret)
    put(md, "new/1001.1.h,S=2", b"ok")
    drop = Maildrop.open(md)
    assert [m.path for m in drop.messages] == ["cur/1000.1.h:2,", "new/1001.1.h,S=2"]
    with pytest.raises(OSError):
        drop.open_message(0)
    drop.delete(1)
    assert drop.commit(None)
    assert secret.read_bytes() == b"root:x:0\n"


def test_a_directory_in_cur_cannot_be_retrieved(md: Path) -> None:
    (md / "cur" / "1000.1.h:2,").mkdir()
    drop = Maildrop.open(md)
    with pytest.raises(OSError):
        drop.open_message(0)

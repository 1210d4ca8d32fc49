"""Maildir++ quota: maildirsize format, recount rules, over-quota text, warning threshold."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.fsutil import ensure_maildir
from qldap.local.maildir import deliver_maildir
from qldap.local.quota import (
    OVER_QUOTA,
    Quota,
    check_quota,
    count_usage,
    parse_quota,
    quota_root,
    record_delivery,
)


def _msg(md: Path, sub: str, name: str, size: int) -> None:
    (md / sub / name).write_bytes(b"x" * size)


def test_parse_quota_forms() -> None:
    assert parse_quota("1000000S,1000C") == Quota(1000000, 1000)
    assert parse_quota("1000000S") == Quota(1000000, 0)
    assert parse_quota("1000C") == Quota(0, 1000)
    assert parse_quota("") == Quota()
    assert not parse_quota(None).active
    assert Quota(1000000, 1000).spec() == "1000000S,1000C"
    assert Quota(0, 100).spec() == "100C"


def test_recount_uses_size_in_name_skips_trash_and_dotfiles(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    _msg(md, "new", "1.a.h,S=100", 3)  # size from the name wins
    _msg(md, "cur", "2.b.h:2,S", 50)  # stat size
    _msg(md, "cur", "3.c.h:2,ST", 999)  # flagged T: not counted
    _msg(md, "new", ".hidden", 999)
    ensure_maildir(md / ".Sent")
    _msg(md / ".Sent", "cur", "4.d.h,S=7:2,S", 1)
    ensure_maildir(md / ".Trash")
    _msg(md / ".Trash", "cur", "5.e.h,S=1000:2,S", 1)
    usage, _ = count_usage(md)
    assert (usage.bytes, usage.count) == (157, 3)


def test_over_quota_bounces_with_exact_text_and_no_file(tmp_path: Path) -> None:
    # limit 10000S, recounted usage 9500, 1000-byte message
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    _msg(md, "cur", "1.a.h,S=9500:2,S", 1)
    with pytest.raises(PermanentFailure) as exc:
        check_quota(md, Quota(10000, 0), 1000)
    assert exc.value.text == OVER_QUOTA
    assert exc.value.letter == "D"
    assert os.listdir(md / "new") == []


def test_count_limit_also_bounces(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    _msg(md, "cur", "1.a.h,S=1:2,S", 1)
    _msg(md, "cur", "2.a.h,S=1:2,S", 1)
    with pytest.raises(PermanentFailure):
        check_quota(md, Quota(0, 2), 10)
    assert check_quota(md, Quota(0, 3), 10).usage.count == 2


def test_warning_threshold_at_seventy_percent(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    _msg(md, "cur", "1.a.h,S=600:2,S", 1)
    assert check_quota(md, Quota(1000, 0), 99).warn is False  # 69 %
    assert check_quota(md, Quota(1000, 0), 100).warn is True  # 70 %


def test_maildirsize_written_updated_and_rewritten_for_new_limits(tmp_path: Path) -> None:
    # after a delivery maildirsize ends "<size> 1"; a 5000S file under 10000S is rewritten
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    (md / "maildirsize").write_text("5000S\n0 0\n")
    check_quota(md, Quota(10000, 0), 10)
    assert (md / "maildirsize").read_text().split("\n")[0] == "10000S"
    assert (md / "maildirsize").stat().st_mode & 0o777 == 0o600  # as qmail-local (umask 077) makes it
    d = deliver_maildir(md, [b"hello\n"])
    record_delivery(md, d.size)
    assert (md / "maildirsize").read_text().splitlines()[-1] == f"{d.size} 1"


def test_stale_journal_is_recounted_before_bouncing(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    # journal claims 9900 bytes, but the mailbox is empty and the journal is old with several lines
    (md / "maildirsize").write_text("10000S\n9000 1\n900 1\n")
    old = time.time() - 3600
    os.utime(md / "maildirsize", (old, old))
    result = check_quota(md, Quota(10000, 0), 1000)
    assert result.usage.bytes == 0
    assert (md / "maildirsize").read_text() == "10000S\n0 0\n"


def test_folder_quota_lives_in_parent_and_recursion_is_refused(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    folder = md / ".Lists"
    ensure_maildir(folder)
    (folder / "maildirfolder").write_text("")
    assert quota_root(folder) == md
    nested = folder / ".Deeper"
    ensure_maildir(nested)
    (nested / "maildirfolder").write_text("")
    with pytest.raises(TemporaryFailure) as exc:
        quota_root(nested)
    assert exc.value.text == "Unable to calc quota: recursive maildir++ (QUOTA #1.1.1)"

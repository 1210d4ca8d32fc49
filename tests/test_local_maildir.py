"""Maildir delivery: unique names, tmp→new, ,S=<size>, creation, corruption, concurrency."""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qldap.errors import TemporaryFailure
from qldap.fsutil import ensure_maildir
from qldap.local.maildir import deliver_maildir, maildir_host, unique_name


def test_delivery_lands_in_new_with_size_and_empty_tmp(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    prefix = b"Return-Path: <bob@remote.example>\nDelivered-To: alice@example.com\n"
    body = b"Subject: hi\n\nhello\n"
    d = deliver_maildir(md, [body], prefix=prefix)
    files = os.listdir(md / "new")
    assert len(files) == 1
    assert files[0].endswith(f",S={len(prefix) + len(body)}")
    assert (md / "new" / files[0]).read_bytes() == prefix + body
    assert d.path == md / "new" / files[0]
    assert d.size == len(prefix) + len(body)
    assert os.listdir(md / "tmp") == []
    assert os.listdir(md / "cur") == []


def test_missing_maildir_is_created_0700(tmp_path: Path) -> None:
    md = tmp_path / "deep" / "Maildir"
    (tmp_path / "deep").mkdir()
    deliver_maildir(md, [b"x\n"])
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(md / sub).st_mode) == 0o700


def test_non_directory_in_the_way_is_corruption(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    md.mkdir()
    (md / "new").write_text("not a dir")
    with pytest.raises(TemporaryFailure) as exc:
        ensure_maildir(md)
    assert exc.value.text == f"The maildir '{md}' seems to be corrupted. (#4.2.1)"
    assert exc.value.letter == "Z"


def test_uncreatable_maildir_is_temporary(tmp_path: Path) -> None:
    md = tmp_path / "missing-parent" / "x" / "Maildir"
    with pytest.raises(TemporaryFailure) as exc:
        deliver_maildir(md, [b"x\n"])
    assert exc.value.text == f"Unable to create maildir '{md}' (#4.3.0)"


def test_unreadable_message_removes_tmp(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"

    def chunks():  # type: ignore[no-untyped-def]
        yield b"part\n"
        raise OSError(5 + 1000, "read failed")

    with pytest.raises(TemporaryFailure) as exc:
        deliver_maildir(md, chunks())
    assert exc.value.text == "Unable to read message. (#4.3.0)"
    assert os.listdir(md / "tmp") == []
    assert os.listdir(md / "new") == []


def test_names_are_unique_under_concurrency(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: deliver_maildir(md, [b"m%d\n" % i]), range(200)))
    assert len({r.path for r in results}) == 200
    assert len(os.listdir(md / "new")) == 200


def test_unique_name_shape_and_host_escaping() -> None:
    name = unique_name(now=1700000000.25, pid=42, host="a/b:c")
    assert re.fullmatch(r"1700000000\.M250000P42Q\d+\.a\\057b\\072c", name)
    assert maildir_host("x:y/z") == "x\\072y\\057z"


@pytest.mark.parametrize("missing", ["tmp", "new", "cur"])
def test_a_lost_subdirectory_is_recreated_by_the_delivery(tmp_path: Path, missing: str) -> None:
    # the writer checks cur/ with one stat and proves tmp/ and new/ by using them; each repair path
    # must still end with the message in new/ and every subdirectory back at 0700
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    os.rmdir(md / missing)
    d = deliver_maildir(str(md) + "/", [b"x\n"])
    assert d.path.parent == md / "new" and d.path.read_bytes() == b"x\n"
    for sub in ("tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(md / sub).st_mode) == 0o700
    assert os.listdir(md / "tmp") == []


@pytest.mark.parametrize("broken", ["tmp", "new", "cur"])
def test_a_file_in_place_of_a_subdirectory_is_corruption(tmp_path: Path, broken: str) -> None:
    md = tmp_path / "Maildir"
    ensure_maildir(md)
    os.rmdir(md / broken)
    (md / broken).write_text("not a dir")
    with pytest.raises(TemporaryFailure) as exc:
        deliver_maildir(os.path.join(tmp_path, ".", "Maildir/"), [b"x\n"])
    assert exc.value.text == f"The maildir '{md}' seems to be corrupted. (#4.2.1)"
    if broken != "tmp":
        assert os.listdir(md / "tmp") == []

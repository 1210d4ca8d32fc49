"""The per-delivery shortcuts of local delivery: the alias-user cache and the chunked header read.

Why tests of their own: both replace a per-delivery system lookup or a large read with something
cheaper, and must still see every change (an edited ``ROOT/alias`` owner, a header spanning chunks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qldap.local import spawn
from qldap.local.spawn import AliasCache, alias_account
from qldap.queue.message import CHUNK, MessageFile


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _has_alias_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("alias")
    except KeyError:
        return False
    return True


@pytest.mark.skipif(_has_alias_user(), reason="a system 'alias' account wins over ROOT/alias")
def test_alias_cache_sees_a_changed_owner_of_root_alias(tmp_path: Path) -> None:
    (tmp_path / "alias").mkdir()
    os.chown(tmp_path / "alias", 4001, 4001)
    cache = AliasCache(tmp_path, clock=FakeClock())
    first = cache.get()
    assert first == alias_account(tmp_path)
    assert first is not None and first.uid == 4001
    assert cache.get() is first  # unchanged files: the answer is reused
    os.rmdir(tmp_path / "alias")
    (tmp_path / "alias").mkdir()  # a new directory: new inode, new owner
    os.chown(tmp_path / "alias", 4002, 4002)
    again = cache.get()
    assert again is not None and again.uid == 4002


@pytest.mark.skipif(_has_alias_user(), reason="a system 'alias' account wins over ROOT/alias")
def test_alias_cache_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "alias").mkdir()
    os.chown(tmp_path / "alias", 4001, 4001)
    clock = FakeClock()
    cache = AliasCache(tmp_path, clock=clock)
    calls: list[Path] = []
    real = spawn.alias_account

    def counting(root: Path) -> spawn.Account | None:
        calls.append(root)
        return real(root)

    monkeypatch.setattr(spawn, "alias_account", counting)
    cache.get()
    cache.get()
    assert len(calls) == 1
    clock.now += spawn.ALIAS_MAX_AGE + 1
    cache.get()
    assert len(calls) == 2


def test_alias_cache_follows_a_missing_alias_directory(tmp_path: Path) -> None:
    cache = AliasCache(tmp_path, clock=FakeClock())
    assert cache.get() == alias_account(tmp_path)


@pytest.mark.parametrize("header_len", [10, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_message_head_across_chunk_boundaries(tmp_path: Path, header_len: int) -> None:
    header = b"X-Long: " + b"a" * (header_len - 9) + b"\n"
    path = tmp_path / "m"
    path.write_bytes(header + b"\nbody\n\nmore\n")
    with MessageFile.open(path) as mf:
        assert mf.head() == header
        assert mf.head(limit=5) == header[:5]


def test_message_head_without_body(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(b"Subject: x\n")
    with MessageFile.open(path) as mf:
        assert mf.head() == b"Subject: x\n"

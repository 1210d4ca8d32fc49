"""Per-thread file-system identity: files made as the user, other threads unaffected, no root escape."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.errors import TemporaryFailure
from qldap.local.creds import available, current_fsids, fs_identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not available(), reason="needs root on Linux")


@pytest.fixture
def shared() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-creds-"))
    d.chmod(0o755)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    d.rmdir()


def test_files_are_created_as_the_user(shared: Path) -> None:
    home = shared / "u"
    home.mkdir(mode=0o700)
    os.chown(home, 2000, 2000)
    with fs_identity(2000, 2000):
        (home / "f").write_text("x")
    st = os.stat(home / "f")
    assert (st.st_uid, st.st_gid) == (2000, 2000)
    assert current_fsids() == (0, 0)


def test_user_rights_apply_no_dac_override(shared: Path) -> None:
    root_only = shared / "r"
    root_only.mkdir(mode=0o700)
    with fs_identity(2000, 2000), pytest.raises(PermissionError):
        (root_only / "f").write_text("x")
    assert not (root_only / "f").exists()


def test_symlink_to_root_file_is_not_writable(shared: Path) -> None:
    target = shared / "secret"
    target.write_text("root data")
    target.chmod(0o600)
    home = shared / "u"
    home.mkdir(mode=0o700)
    os.chown(home, 2000, 2000)
    (home / "link").symlink_to(target)
    with fs_identity(2000, 2000), pytest.raises(PermissionError):
        (home / "link").write_text("overwritten")
    assert target.read_text() == "root data"


def test_other_threads_stay_root(shared: Path) -> None:
    """While one thread works as a user, another still has root's file-system identity."""
    seen: list[tuple[int, int]] = []
    inside = threading.Event()
    done = threading.Event()

    def user_thread() -> None:
        with fs_identity(2000, 2000):
            seen.append(current_fsids())
            inside.set()
            done.wait(60)  # released by the main thread; the bound only keeps a failed test from hanging

    t = threading.Thread(target=user_thread)
    t.start()
    try:
        assert inside.wait(60), "the user thread never took the user's identity"
        seen.append(current_fsids())
        (shared / "by-root").write_text("x")
        assert t.is_alive()  # the user thread was still inside fs_identity all along
    finally:
        done.set()
        t.join()
    assert seen == [(2000, 2000), (0, 0)]
    assert os.stat(shared / "by-root").st_uid == 0


def test_root_is_refused() -> None:
    with pytest.raises(TemporaryFailure) as exc, fs_identity(0, 0):
        pass
    assert exc.value.text == "Not allowed to perform deliveries as root."

"""Queue layout: paths, split dirs, owners/modes, the FIFO and tcpto, idempotent creation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qldap.errors import ConfigError
from qldap.queue.layout import (
    DIR_SPECS,
    SPLIT,
    QueueLayout,
    create_queue,
    current_user_ids,
    resolve_ids,
    split_of,
)


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_paths() -> None:
    q = QueueLayout("/var/qmail")
    assert SPLIT == 23 and split_of(47) == 1
    assert q.mess(47) == "/var/qmail/queue/mess/1/47"
    assert q.info(47) == "/var/qmail/queue/info/1/47"
    assert q.local(22) == "/var/qmail/queue/local/22/22"
    assert q.remote(23) == "/var/qmail/queue/remote/0/23"
    assert q.todo(47) == "/var/qmail/queue/todo/47"
    assert q.intd(47) == "/var/qmail/queue/intd/47"
    assert q.bounce(47) == "/var/qmail/queue/bounce/47"
    assert q.trigger == "/var/qmail/queue/lock/trigger"
    assert QueueLayout.of(Path("/r")) == QueueLayout("/r") and QueueLayout.of(q) is q


def test_create_queue_tree(tmp_path: Path) -> None:
    q = create_queue(tmp_path / "root", current_user_ids())
    assert mode(q.queue) == 0o750
    for name, spec in DIR_SPECS.items():
        if name:
            assert mode(q.dir(name)) == spec.mode, name
    assert mode(q.dir("pid")) == 0o700 and mode(q.dir("todo")) == 0o750 and mode(q.dir("mess")) == 0o750
    for name in ("mess", "info", "local", "remote"):
        assert sorted(os.listdir(q.dir(name)), key=int) == [str(i) for i in range(SPLIT)]
        assert mode(f"{q.dir(name)}/22") == DIR_SPECS[name].mode
    for name in ("pid", "intd", "todo", "bounce"):
        assert os.listdir(q.dir(name)) == []
    assert stat.S_ISFIFO(os.lstat(q.trigger).st_mode) and mode(q.trigger) == 0o622
    assert Path(q.tcpto).read_bytes() == b"\0" * 1024 and mode(q.tcpto) == 0o644
    assert Path(q.sendmutex).read_bytes() == b"" and mode(q.sendmutex) == 0o600
    st = os.stat(q.dir("mess"))
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_create_queue_is_idempotent_and_keeps_content(tmp_path: Path) -> None:
    q = create_queue(tmp_path, current_user_ids())
    Path(q.mess(5)).write_bytes(b"kept")
    Path(q.tcpto).write_bytes(b"\1" * 1024)
    os.chmod(q.dir("todo"), 0o777)
    create_queue(tmp_path, current_user_ids())
    assert Path(q.mess(5)).read_bytes() == b"kept"
    assert Path(q.tcpto).read_bytes() == b"\1" * 1024
    assert mode(q.dir("todo")) == 0o750  # modes repaired


def test_wrong_kinds_are_config_errors(tmp_path: Path) -> None:
    q = create_queue(tmp_path, current_user_ids())
    os.unlink(q.trigger)
    Path(q.trigger).write_bytes(b"")
    with pytest.raises(ConfigError, match="FIFO"):
        create_queue(tmp_path, current_user_ids())
    os.unlink(q.trigger)
    os.rmdir(q.dir("todo"))
    Path(q.dir("todo")).write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        create_queue(tmp_path, current_user_ids())


def test_owner_policy_without_qmail_users() -> None:
    import pwd

    try:
        pwd.getpwnam("qmailq")
        pytest.skip("the qmail users exist here")
    except KeyError:
        pass
    ids = resolve_ids()
    assert not ids.multiuser and not ids.chown
    assert ids.qmailq == ids.qmails == ids.qmailr == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_multiuser_owners_and_injected_files(tmp_path: Path) -> None:
    from qldap.queue.envelope import Envelope
    from qldap.queue.inject import inject
    from qldap.queue.layout import QmailIds

    ids = QmailIds(
        alias=60001, qmaild=60002, qmailq=60003, qmails=60004, qmailr=60005, gid=60100, multiuser=True
    )
    q = create_queue(tmp_path, ids)

    def owner(path: str) -> tuple[int, int]:
        st = os.lstat(path)
        return st.st_uid, st.st_gid

    assert owner(q.queue) == (60003, 60100)
    for name in ("pid", "intd", "todo", "mess", "lock"):
        assert owner(q.dir(name)) == (60003, 60100), name
    for name in ("info", "local", "remote", "bounce"):
        assert owner(q.dir(name)) == (60004, 60100), name
    assert owner(f"{q.dir('mess')}/7") == (60003, 60100)
    assert owner(f"{q.dir('info')}/7") == (60004, 60100)
    assert owner(q.trigger) == (60004, 60100) and owner(q.sendmutex) == (60004, 60100)
    assert owner(q.tcpto) == (60005, 60100)
    msg = inject(q, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1, bigbrother={}, ids=ids)
    assert owner(q.mess(msg.number)) == (60003, 60100)
    assert owner(q.todo(msg.number)) == (60003, 60100)

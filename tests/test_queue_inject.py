"""The in-process injector (qmail-queue(8)): files and modes, cleanup on every failure, concurrency."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import threading
from pathlib import Path

import pytest

from qldap.dates import qmail_date
from qldap.queue.codes import QueueError, QueueExit
from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.inject import DirSyncer, Injector, Step, how_invoked, inject, received_line
from qldap.queue.layout import SPLIT, QueueLayout, create_queue, current_user_ids
from qldap.queue.states import State, scan
from tests.conftest import QRoot

WHEN = 812090814.0  # 26 Sep 1995 04:46:54 UTC


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def queue_files(layout: QueueLayout) -> list[str]:
    """Every file under pid, mess, intd, todo (what an injection may create)."""
    out = []
    for top in ("pid", "mess", "intd", "todo"):
        for dirpath, _dirs, files in os.walk(layout.dir(top)):
            out += [os.path.join(dirpath, f) for f in files]
    return sorted(out)


def test_check1_todo_and_mess_exact(layout: QueueLayout) -> None:
    uid = os.getuid()
    how = how_invoked(uid, current_user_ids())
    assert how == f"by uid {uid}"
    q = inject(layout, b"hello\n", Envelope("a@x", ("b@y",)), how=how, uid=uid, pid=4242, clock=lambda: WHEN)
    assert q.qp == 4242
    todo = Path(layout.todo(q.number)).read_bytes()
    assert todo == f"u{uid}\0p4242\0Fa@x\0Tb@y\0".encode()
    mess = Path(layout.queue) / "mess" / str(q.number % SPLIT) / str(q.number)
    assert mess.read_bytes() == (
        f"Received: (qmail 4242 invoked by uid {uid}); 26 Sep 1995 04:46:54 -0000\nhello\n".encode()
    )
    assert mess.stat().st_ino == q.number
    assert mess.stat().st_mode & 0o777 == 0o644
    assert os.listdir(layout.dir("pid")) == []
    assert scan(layout) == {q.number: State.S4}


def test_received_date_has_no_leading_zero() -> None:
    assert qmail_date(WHEN) == "26 Sep 1995 04:46:54 -0000"
    assert qmail_date(1709600645.0) == "5 Mar 2024 01:04:05 -0000"
    assert (
        received_line(7, "from network", 0.0)
        == b"Received: (qmail 7 invoked from network); 1 Jan 1970 00:00:00 -0000\n"
    )


def test_how_words_only_for_real_qmail_users() -> None:
    from qldap.queue.layout import QmailIds

    ids = QmailIds(alias=70, qmaild=71, qmailq=72, qmails=73, qmailr=74, gid=80, multiuser=True)
    assert [how_invoked(u, ids) for u in (70, 71, 73, 1000)] == [
        "by alias", "from network", "for bounce", "by uid 1000",
    ]  # fmt: skip
    single = QmailIds(5, 5, 5, 5, 5, 5, multiuser=False)
    assert how_invoked(5, single) == "by uid 5"


@pytest.mark.parametrize(("length", "code"), [(1002, 0), (1003, QueueExit.ADDRESS_TOO_LONG)])
def test_check3_address_length(layout: QueueLayout, length: int, code: int) -> None:
    rcpt = "r" * (length - len("@y")) + "@y"
    assert len(rcpt) == length
    env = Envelope("a@x", (rcpt,))
    if code == 0:
        q = inject(layout, b"x\n", env, how="by uid 0", uid=0, pid=1)
        assert parse_todo(Path(layout.todo(q.number)).read_bytes()).envelope == env
    else:
        with pytest.raises(QueueError) as info:
            inject(layout, b"x\n", env, how="by uid 0", uid=0, pid=1)
        assert info.value.code == code
        assert info.value.text == "Denvelope address too long for qq (#5.1.3)"
        assert queue_files(layout) == []


def test_long_sender_is_11_too(layout: QueueLayout) -> None:
    with pytest.raises(QueueError) as info:
        inject(layout, b"x\n", Envelope("s" * 1003, ("b@y",)), how="by uid 0", uid=0, pid=1)
    assert info.value.code == 11
    assert queue_files(layout) == []


def test_nul_in_address_is_envelope_format_error(layout: QueueLayout) -> None:
    with pytest.raises(QueueError) as info:
        inject(layout, b"x\n", Envelope("a@x", ("b\0c@y",)), how="by uid 0", uid=0, pid=1)
    assert info.value.code == QueueExit.ENVELOPE_FORMAT
    assert queue_files(layout) == []


def test_stream_and_chunk_sources(layout: QueueLayout) -> None:
    big = b"".join(b"line %d\n" % i for i in range(50000))  # several copy buffers
    env = Envelope("", ("b@y",))
    q1 = inject(layout, io.BytesIO(big), env, how="by uid 0", uid=0, pid=1)
    q2 = inject(layout, iter([big[:10], b"", big[10:]]), env, how="by uid 0", uid=0, pid=2)
    for q in (q1, q2):
        data = Path(layout.mess(q.number)).read_bytes()
        assert data.split(b"\n", 1)[1] == big
    assert parse_todo(Path(layout.todo(q1.number)).read_bytes()).envelope.sender == ""


class FailingStream(io.RawIOBase):
    """Gives some bytes, then an I/O error: a submitter's read failure."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == 1:
            return b"Subject: partial\n"
        raise OSError(errno.EIO, "simulated read error")


def test_read_error_is_54_and_leaves_nothing(layout: QueueLayout) -> None:
    with pytest.raises(QueueError) as info:
        inject(layout, FailingStream(), Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1)
    assert info.value.code == QueueExit.READ_ERROR
    assert queue_files(layout) == []


def test_envelope_error_after_message_leaves_nothing(layout: QueueLayout) -> None:
    def bad_envelope() -> Envelope:
        raise QueueError(QueueExit.ENVELOPE_FORMAT, "T first")

    with pytest.raises(QueueError) as info:
        inject(layout, b"hello\n", bad_envelope, how="by uid 0", uid=0, pid=1)
    assert info.value.code == 91
    assert queue_files(layout) == []


# Each step's failure: (exit code, whether the files stay).  After the todo link the message is
# accepted as far as the queue goes: a failed todo-directory sync is reported but nothing removed.
STEP_FAILURES = {
    Step.PID_CREATED: 63,
    Step.MESS_LINKED: 64,
    Step.PID_UNLINKED: 63,
    Step.MESS_WRITTEN: 53,
    Step.MESS_SYNCED: 53,
    Step.MESS_DIR_SYNCED: 64,
    Step.INTD_CREATED: 65,
    Step.INTD_WRITTEN: 53,
    Step.INTD_SYNCED: 53,
    Step.TODO_LINKED: 66,
    Step.TODO_SYNCED: 66,
}


def test_every_step_is_covered() -> None:
    assert set(STEP_FAILURES) == set(Step)


@pytest.mark.parametrize("step", list(Step), ids=lambda s: s.name)
def test_failure_at_each_step_removes_what_was_created(layout: QueueLayout, step: Step) -> None:
    seen: list[Step] = []

    def hook(at: Step) -> None:
        seen.append(at)
        if at is step:
            raise OSError(errno.EIO, f"simulated failure at {at.value}")

    with pytest.raises(QueueError) as info:
        inject(layout, b"hello\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=9, hook=hook)
    assert info.value.code == STEP_FAILURES[step]
    assert seen[-1] is step
    if step in (Step.TODO_LINKED, Step.TODO_SYNCED):
        # linked: possibly already being preprocessed, so kept (a duplicate at worst, never a loss)
        assert list(scan(layout).values()) == [State.S4]
    else:
        assert queue_files(layout) == []


def test_steps_run_in_documented_order(layout: QueueLayout) -> None:
    seen: list[Step] = []
    inject(layout, b"x\n", Envelope("a@x", ()), how="by uid 0", uid=0, pid=9, hook=seen.append)
    assert seen == list(Step)


def test_pid_names_exhausted_is_63(layout: QueueLayout) -> None:
    for seq in range(1, 10):
        Path(layout.pid(f"77.{int(WHEN)}.{seq}")).touch()
    with pytest.raises(QueueError) as info:
        inject(layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=77, clock=lambda: WHEN)
    assert info.value.code == QueueExit.PID_FILE
    assert len(os.listdir(layout.dir("pid"))) == 9


def test_pid_name_taken_uses_next_seq(layout: QueueLayout) -> None:
    Path(layout.pid(f"77.{int(WHEN)}.1")).touch()
    q = inject(layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=77, clock=lambda: WHEN)
    assert Path(layout.todo(q.number)).exists()
    assert os.listdir(layout.dir("pid")) == [f"77.{int(WHEN)}.1"]


def test_missing_queue_is_62(tmp_path: Path) -> None:
    with pytest.raises(QueueError) as info:
        inject(tmp_path, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1, bigbrother={})
    assert info.value.code == QueueExit.QUEUE_DIR


def test_unreadable_bigbrother_is_55(qroot: QRoot, layout: QueueLayout) -> None:
    (qroot.control_dir / "bigbrother").mkdir()  # exists but cannot be read as a file
    with pytest.raises(QueueError) as info:
        inject(layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1)
    assert info.value.code == QueueExit.CONFIG
    assert queue_files(layout) == []


def test_check13_bigbrother(qroot: QRoot, layout: QueueLayout) -> None:
    qroot.control("bigbrother", "bad@x.org:bb@admin.org\n@X.org:dom@admin.org\nquiet@y.net:\n")
    q = inject(layout, b"x\n", Envelope("bad@x.org", ("c@y.net",)), how="by uid 0", uid=0, pid=1)
    recs = Path(layout.todo(q.number)).read_bytes().split(b"\0")
    assert recs[2:] == [b"Fbad@x.org", b"Tc@y.net", b"Tbb@admin.org", b""]
    # the @domain key catches any address of the domain, sender or recipient, case-insensitively
    q = inject(layout, b"x\n", Envelope("u@x.org", ("V@X.ORG", "quiet@y.net")), how="by uid 0", uid=0, pid=2)
    entry = parse_todo(Path(layout.todo(q.number)).read_bytes())
    assert entry.envelope.recipients == ("V@X.ORG", "quiet@y.net", "dom@admin.org", "dom@admin.org")


# -- concurrency ---------------------------------------------------------------------------------


def test_check5_concurrent_threads_never_share_a_number(layout: QueueLayout) -> None:
    syncer = DirSyncer()
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(t: int) -> None:
        start.wait()
        for i in range(20):
            body = f"thread {t} message {i}\n".encode()
            q = inject(layout, body, Envelope(f"t{t}@x", (f"m{i}@y",)), how="by uid 0", uid=0, pid=1000 + t,
                       syncer=syncer, bigbrother={})  # fmt: skip
            with lock:
                results.append((q.number, t * 100 + i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    numbers = [n for n, _ in results]
    assert len(numbers) == 320 and len(set(numbers)) == 320
    for number, tag in results:
        t, i = divmod(tag, 100)
        assert Path(layout.mess(number)).read_bytes().endswith(f"thread {t} message {i}\n".encode())
        assert parse_todo(Path(layout.todo(number)).read_bytes()).envelope == Envelope(
            f"t{t}@x", (f"m{i}@y",)
        )
    assert set(scan(layout).values()) == {State.S4}


def test_injector_async_from_one_event_loop(layout: QueueLayout) -> None:
    injector = Injector(layout.root, workers=6, ids=current_user_ids())

    async def many() -> list[int]:
        jobs = [
            injector.inject_async(
                f"n{i}\n".encode(), Envelope("a@x", (f"r{i}@y",)), how="from network", uid=0
            )
            for i in range(60)
        ]
        return [q.number for q in await asyncio.gather(*jobs)]

    try:
        numbers = asyncio.run(many())
    finally:
        injector.close()
    assert len(set(numbers)) == 60
    qps = {parse_todo(Path(layout.todo(n)).read_bytes()).pid for n in numbers}
    assert len(qps) == 60  # every injection got its own qp


def test_dirsyncer_coalesces_and_covers_every_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qldap.queue.inject as inj

    events: list[tuple[str, int]] = []
    counter = iter(range(1_000_000))
    lock = threading.Lock()
    entered = threading.Semaphore(0)
    release = threading.Event()
    real = inj.fsync_dir

    def slow_fsync(path: str) -> None:
        with lock:
            events.append(("fsync-start", next(counter)))
        if not release.is_set():
            for _ in range(20):  # first fsync waits until every caller has entered sync()
                entered.acquire()
            release.set()
        real(path)

    monkeypatch.setattr(inj, "fsync_dir", slow_fsync)
    syncer = DirSyncer()
    entries: dict[int, int] = {}

    def caller(k: int) -> None:
        with lock:
            entries[k] = next(counter)
        entered.release()
        syncer.sync(str(tmp_path))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    starts = [seq for _, seq in events]
    assert len(starts) < 20  # callers shared fsyncs
    for entry in entries.values():
        assert any(s > entry for s in starts)  # each caller was covered by an fsync begun after it


def test_dirsyncer_reports_failure_to_waiters(tmp_path: Path) -> None:
    syncer = DirSyncer()
    with pytest.raises(FileNotFoundError):
        syncer.sync(str(tmp_path / "missing"))
    syncer.sync(str(tmp_path))  # a later call on a good directory is unaffected


def test_message_mode_ignores_restrictive_umask(layout: QueueLayout) -> None:
    old = os.umask(0o077)
    try:
        q = inject(layout, b"x\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=3, bigbrother={})
    finally:
        os.umask(old)
    assert os.stat(layout.mess(q.number)).st_mode & 0o777 == 0o644
    assert os.stat(layout.todo(q.number)).st_mode & 0o777 == 0o644

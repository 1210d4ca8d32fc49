"""Crash semantics (qldap-queue(5), Crash behaviour): an injector killed after each step, then state
and cleanup.

The kill is real: a forked child runs the injector and ``_exit``s from the step hook, so no cleanup
code of the injector runs — exactly what ``kill -9`` at that point leaves behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qldap.queue.cleanup import OSSIFIED, clean_all, clean_messages, clean_pid
from qldap.queue.envelope import Envelope
from qldap.queue.inject import Step, inject
from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from qldap.queue.states import Part, State, parts_of, scan
from tests.conftest import QRoot

NOW = 1_700_000_000.0

EXPECTED = {
    Step.PID_CREATED: State.S1,  # only the pid scratch file exists
    Step.MESS_LINKED: State.S2,
    Step.PID_UNLINKED: State.S2,
    Step.MESS_WRITTEN: State.S2,
    Step.MESS_SYNCED: State.S2,
    Step.MESS_DIR_SYNCED: State.S2,
    Step.INTD_CREATED: State.S3,
    Step.INTD_WRITTEN: State.S3,
    Step.INTD_SYNCED: State.S3,
    Step.TODO_LINKED: State.S4,
    Step.TODO_SYNCED: State.S4,
}


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def crash_at(layout: QueueLayout, step: Step) -> None:
    """Fork an injector that dies (``_exit(137)``) right after *step*."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1

        def die(at: Step) -> None:
            if at is step:
                os._exit(137)

        try:
            inject(layout, b"hello\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=os.getpid(),
                   hook=die, bigbrother={}, clock=lambda: NOW)  # fmt: skip
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137


def age_everything(layout: QueueLayout, mtime: float) -> None:
    for dirpath, _dirs, files in os.walk(layout.queue):
        for f in files:
            path = os.path.join(dirpath, f)
            if not path.startswith(layout.lock):
                os.utime(path, (mtime, mtime))


def test_expected_covers_every_step() -> None:
    assert set(EXPECTED) == set(Step)


@pytest.mark.parametrize("step", list(Step), ids=lambda s: s.name)
def test_kill_after_each_step(layout: QueueLayout, step: Step) -> None:
    crash_at(layout, step)
    states = scan(layout)
    expected = EXPECTED[step]
    if expected is State.S1:
        assert states == {}
        assert len(os.listdir(layout.dir("pid"))) == 1
    else:
        assert list(states.values()) == [expected]
    accepted = expected is State.S4
    assert bool(os.listdir(layout.dir("todo"))) == accepted  # only an accepted message can be delivered

    age_everything(layout, NOW)
    # younger than 36 hours: a live injector might own the files, nothing is removed
    report = clean_all(layout, clock=lambda: NOW + OSSIFIED)
    assert report.messages == () and report.pid_files == ()
    assert scan(layout) == states

    report = clean_all(layout, clock=lambda: NOW + OSSIFIED + 1)
    if accepted:
        assert scan(layout) == states  # queued mail is never cleaned up
        assert report.messages == ()
    else:
        assert scan(layout) == {}  # mess and intd gone
        assert os.listdir(layout.dir("pid")) == []
        assert report.messages == tuple(states)


def test_check7_cleanup_keeps_s2_s3_until_36_hours(layout: QueueLayout) -> None:
    crash_at(layout, Step.INTD_WRITTEN)
    (number,) = scan(layout)
    assert parts_of(layout, number) == {Part.MESS, Part.INTD}
    age_everything(layout, NOW)
    assert clean_messages(layout, clock=lambda: NOW + 35 * 3600).messages == ()
    assert Path(layout.mess(number)).exists() and Path(layout.intd(number)).exists()
    assert clean_messages(layout, clock=lambda: NOW + 37 * 3600).messages == (number,)
    assert not Path(layout.mess(number)).exists() and not Path(layout.intd(number)).exists()


def test_cleanup_never_touches_preprocessed_or_queued(layout: QueueLayout) -> None:
    q1 = inject(layout, b"a\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=1, bigbrother={})
    q2 = inject(layout, b"b\n", Envelope("a@x", ("b@y",)), how="by uid 0", uid=0, pid=2, bigbrother={})
    # q2 preprocessed by hand: info written, then intd and todo removed (S5)
    Path(layout.info(q2.number)).write_bytes(b"Fa@x\0")
    os.unlink(layout.intd(q2.number))
    os.unlink(layout.todo(q2.number))
    age_everything(layout, NOW)
    assert scan(layout) == {q1.number: State.S4, q2.number: State.S5}
    assert clean_messages(layout, clock=lambda: NOW + 10 * OSSIFIED).messages == ()
    assert scan(layout) == {q1.number: State.S4, q2.number: State.S5}


def test_check8_pid_files_by_age(layout: QueueLayout) -> None:
    old = Path(layout.pid("100.1.1"))
    young = Path(layout.pid("200.2.1"))
    old.touch()
    young.touch()
    os.utime(old, (NOW - OSSIFIED - 1, NOW - OSSIFIED - 1))
    os.utime(young, (NOW - OSSIFIED + 60, NOW - OSSIFIED + 60))
    report = clean_pid(layout, clock=lambda: NOW)
    assert report.pid_files == ("100.1.1",)
    assert not old.exists() and young.exists()


def test_age_is_mtime_not_atime(layout: QueueLayout) -> None:
    crash_at(layout, Step.MESS_SYNCED)
    (number,) = scan(layout)
    mess = layout.mess(number)
    os.utime(mess, (NOW - 10 * OSSIFIED, NOW))  # ancient atime, fresh mtime
    assert clean_messages(layout, clock=lambda: NOW + 60).messages == ()
    os.utime(mess, (NOW, NOW - 10 * OSSIFIED))  # fresh atime, ancient mtime
    assert clean_messages(layout, clock=lambda: NOW + 60).messages == (number,)

"""``qmail-queue`` as a real program: message on fd 0, envelope on fd 1 through pipes (qmail-send(8) checks
1–5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qldap.queue.layout import SPLIT, QueueLayout, create_queue, current_user_ids
from qldap.queue.states import State, scan
from qldap.queue.trigger import TriggerReader
from tests.conftest import QRoot

QMAIL_QUEUE = [sys.executable, "-m", "qldap.cli.queue"]
DATE = r"\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d -0000"


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def start(root: str | Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start qmail-queue with fd 0 a pipe from us and fd 1 the read end of an envelope pipe."""
    env_r, env_w = os.pipe()
    env = dict(os.environ, **(extra_env or {}))
    env.pop("QLDAP_ROOT", None)
    proc = subprocess.Popen([*QMAIL_QUEUE, "--root", str(root)], stdin=subprocess.PIPE, stdout=env_r, env=env)
    os.close(env_r)
    return proc, env_w


def run_queue(root: str | Path, message: bytes, envelope: bytes) -> tuple[int, int]:
    """Feed message then envelope like a caller does; (exit code, injector pid)."""
    proc, env_w = start(root)
    assert proc.stdin is not None
    proc.stdin.write(message)
    proc.stdin.close()
    os.write(env_w, envelope)
    os.close(env_w)
    return proc.wait(timeout=60), proc.pid


def leftovers(layout: QueueLayout) -> list[str]:
    out = []
    for top in ("pid", "mess", "intd", "todo"):
        for dirpath, _d, files in os.walk(layout.dir(top)):
            out += [os.path.join(dirpath, f) for f in files]
    return out


def test_check1_accepted_message_on_disk(layout: QueueLayout) -> None:
    code, pid = run_queue(layout.root, b"hello\n", b"Fa@x\0Tb@y\0\0")
    assert code == 0
    states = scan(layout)
    assert list(states.values()) == [State.S4]
    (number,) = states
    uid = os.getuid()
    assert Path(layout.todo(number)).read_bytes() == f"u{uid}\0p{pid}\0Fa@x\0Tb@y\0".encode()
    mess = Path(layout.queue, "mess", str(number % SPLIT), str(number)).read_bytes()
    head, body = mess.split(b"\n", 1)
    assert re.fullmatch(rf"Received: \(qmail {pid} invoked by uid {uid}\); {DATE}", head.decode())
    assert body == b"hello\n"
    assert os.listdir(layout.dir("pid")) == []


def test_root_from_environment(layout: QueueLayout) -> None:
    env = dict(os.environ, QLDAP_ROOT=layout.root)
    env_r, env_w = os.pipe()
    os.write(env_w, b"Fa@x\0Tb@y\0\0")
    os.close(env_w)
    proc = subprocess.run(QMAIL_QUEUE, input=b"x\n", stdout=env_r, env=env, timeout=60)
    os.close(env_r)
    assert proc.returncode == 0
    assert list(scan(layout).values()) == [State.S4]


def test_check2_envelope_starting_with_t_is_91(layout: QueueLayout) -> None:
    assert run_queue(layout.root, b"hello\n", b"Tb@y\0\0")[0] == 91
    assert leftovers(layout) == []


def test_recipient_record_with_wrong_letter_is_91(layout: QueueLayout) -> None:
    assert run_queue(layout.root, b"hello\n", b"Fa@x\0Xb@y\0\0")[0] == 91
    assert leftovers(layout) == []


@pytest.mark.parametrize(("length", "code"), [(1002, 0), (1003, 11)])
def test_check3_recipient_length(layout: QueueLayout, length: int, code: int) -> None:
    rcpt = b"r" * (length - 2) + b"@y"
    assert run_queue(layout.root, b"hello\n", b"Fa@x\0T" + rcpt + b"\0\0")[0] == code
    if code:
        assert leftovers(layout) == []
    else:
        (number,) = scan(layout)
        assert Path(layout.todo(number)).read_bytes().endswith(b"T" + rcpt + b"\0")


@pytest.mark.parametrize("envelope", [b"", b"Fa@x", b"Fa@x\0", b"Fa@x\0Tb@y\0", b"Fa@x\0Tb@"])
def test_check4_eof_before_final_nul_is_54(layout: QueueLayout, envelope: bytes) -> None:
    assert run_queue(layout.root, b"hello\n", envelope)[0] == 54
    assert leftovers(layout) == []


def test_no_recipients_is_accepted(layout: QueueLayout) -> None:
    assert run_queue(layout.root, b"hello\n", b"F\0\0")[0] == 0
    (number,) = scan(layout)
    assert Path(layout.todo(number)).read_bytes().endswith(b"\0F\0")


def test_missing_root_is_61(tmp_path: Path) -> None:
    assert run_queue(tmp_path / "nowhere", b"x\n", b"Fa@x\0\0")[0] == 61


def test_missing_queue_is_62(qroot: QRoot) -> None:
    assert run_queue(qroot.path, b"x\n", b"Fa@x\0\0")[0] == 62


def test_unreadable_bigbrother_is_55(qroot: QRoot, layout: QueueLayout) -> None:
    (qroot.control_dir / "bigbrother").mkdir()
    assert run_queue(layout.root, b"x\n", b"Fa@x\0\0")[0] == 55
    assert leftovers(layout) == []


def test_bigbrother_through_the_program(qroot: QRoot, layout: QueueLayout) -> None:
    qroot.control("bigbrother", "bad@x.org:bb@admin.org")
    assert run_queue(layout.root, b"x\n", b"Fbad@x.org\0Tc@y.net\0\0")[0] == 0
    (number,) = scan(layout)
    assert Path(layout.todo(number)).read_bytes().endswith(b"Fbad@x.org\0Tc@y.net\0Tbb@admin.org\0")


def test_check5_concurrent_programs_get_distinct_numbers(layout: QueueLayout) -> None:
    procs = []
    for i in range(8):
        proc, env_w = start(layout.root)
        procs.append((proc, env_w, i))
    for proc, env_w, i in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"message {i}\n".encode())
        proc.stdin.close()
        os.write(env_w, f"Fs{i}@x\0Tr@y\0\0".encode())
        os.close(env_w)
    assert [proc.wait(timeout=60) for proc, _, _ in procs] == [0] * 8
    states = scan(layout)
    assert len(states) == 8 and set(states.values()) == {State.S4}
    bodies = sorted(Path(layout.mess(n)).read_bytes().split(b"\n", 1)[1] for n in states)
    assert bodies == sorted(f"message {i}\n".encode() for i in range(8))


def test_success_pulls_the_trigger(layout: QueueLayout) -> None:
    with TriggerReader(layout.trigger) as reader:
        assert not reader.wait_blocking(0)
        assert run_queue(layout.root, b"x\n", b"Fa@x\0Tb@y\0\0")[0] == 0
        assert reader.wait_blocking(30)


def test_failure_does_not_pull_the_trigger(layout: QueueLayout) -> None:
    with TriggerReader(layout.trigger) as reader:
        assert run_queue(layout.root, b"x\n", b"Tb@y\0\0")[0] == 91
        assert reader.drain() == 0


def test_kill_9_mid_message_leaves_nothing_in_todo(layout: QueueLayout) -> None:
    """A real crash: the injector is blocked reading the message when it is killed."""
    proc, env_w = start(layout.root)
    assert proc.stdin is not None
    proc.stdin.write(b"Subject: half\n\nfirst half of the body\n")
    proc.stdin.flush()
    # wait until the partial message is in mess/ (the injector is now blocked reading fd 0)
    for _ in range(3000):
        found = [f for f in leftovers(layout) if "/mess/" in f and os.path.getsize(f) > 60]
        if found or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert found, "the injector never wrote the message file"
    proc.kill()
    assert proc.wait(timeout=60) == -9
    os.close(env_w)
    proc.stdin.close()
    assert os.listdir(layout.dir("todo")) == []
    assert list(scan(layout).values()) == [State.S2]  # never delivered; left to the 36-hour cleanup


def test_bad_usage_is_not_success(layout: QueueLayout) -> None:
    proc = subprocess.run([*QMAIL_QUEUE, "--bogus"], input=b"", capture_output=True, timeout=60)
    assert proc.returncode == 81
    assert b"usage" in proc.stderr

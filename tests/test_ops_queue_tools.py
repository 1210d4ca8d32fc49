"""qmail-qstat and qmail-qread on real queues: injected with the real injector, preprocessed by hand
per the formats of qldap-queue(5), Records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.cli import qread, qstat
from qldap.queue.envelope import Envelope
from qldap.queue.inject import inject
from qldap.queue.layout import QueueLayout, create_queue

BIRTH = 1700000000  # Tue 14 Nov 2023 22:13:20 UTC
EARLY = 1704164645  # Tue  2 Jan 2024 03:04:05 UTC: a one-digit day


@pytest.fixture
def layout(tmp_path: Path) -> QueueLayout:
    root = tmp_path / "qmail"
    (root / "control").mkdir(parents=True)
    return create_queue(root)


def queue_message(layout: QueueLayout, sender: str, rcpts: tuple[str, ...], body: bytes = b"hi\n") -> int:
    msg = inject(layout, body, Envelope(sender, rcpts), how="by uid 0", uid=0, pid=4242, trigger=False)
    return msg.number


def preprocess(layout: QueueLayout, number: int, sender: bytes, local: bytes = b"", remote: bytes = b"",
               birth: int = BIRTH, bounce: bool = False) -> None:
    """What the manager's preprocessing leaves (S5): info, channel files, no intd/todo."""
    Path(layout.info(number)).write_bytes(b"F" + sender + b"\0")
    os.utime(layout.info(number), (birth, birth))
    if local:
        Path(layout.local(number)).write_bytes(local)
    if remote:
        Path(layout.remote(number)).write_bytes(remote)
    if bounce:
        Path(layout.bounce(number)).write_bytes(b"<x@y>:\nfailed\n\n")
    os.unlink(layout.intd(number))
    os.unlink(layout.todo(number))


def run_tool(module: str, root: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.run([sys.executable, "-m", module, "--root", root], capture_output=True, text=True,
                          env=env, timeout=60)


def test_qstat_counts_queued_and_unpreprocessed(layout: QueueLayout,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert qstat.main(["--root", layout.root]) == 0
    assert capsys.readouterr().out == "messages in queue: 0\nmessages in queue but not yet preprocessed: 0\n"
    a = queue_message(layout, "a@x.example", ("b@y.example",))
    queue_message(layout, "c@x.example", ("d@y.example",))
    queue_message(layout, "e@x.example", ("f@y.example",))
    preprocess(layout, a, b"a@x.example", remote=b"Tb@y.example\0")
    assert qstat.main(["--root", layout.root]) == 0
    assert capsys.readouterr().out == "messages in queue: 3\nmessages in queue but not yet preprocessed: 2\n"


def test_qstat_as_a_program_and_on_a_missing_queue(tmp_path: Path, layout: QueueLayout) -> None:
    queue_message(layout, "a@x.example", ("b@y.example",))
    done = run_tool("qldap.cli.qstat", layout.root)
    assert done.returncode == 0
    assert done.stdout == "messages in queue: 1\nmessages in queue but not yet preprocessed: 1\n"
    missing = run_tool("qldap.cli.qstat", str(tmp_path / "nowhere"))
    assert missing.returncode == 111
    assert missing.stderr.startswith("qmail-qstat: fatal: unable to read ")


def test_qread_lists_messages_recipients_and_done_marks(layout: QueueLayout,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    a = queue_message(layout, "joe@example.org", ("bob@example.org", "ann@example.org", "x@far.example"),
                      body=b"Subject: t\n\nhello\n")
    b = queue_message(layout, "", ("postmaster@example.org",))
    preprocess(layout, a, b"joe@example.org", local=b"Dbob@example.org\0Tann@example.org\0",
               remote=b"Tx@far.example\0")
    preprocess(layout, b, b"", local=b"Tpostmaster@example.org\0", birth=EARLY, bounce=True)
    size_a = os.stat(layout.mess(a)).st_size
    size_b = os.stat(layout.mess(b)).st_size
    assert qread.main(["--root", layout.root]) == 0
    out = capsys.readouterr().out
    block_a = (f"14 Nov 2023 22:13:20 GMT  #{a}  {size_a}  <joe@example.org> \n"
               "  done\tlocal\tbob@example.org\n"
               "\tlocal\tann@example.org\n"
               "\tremote\tx@far.example\n")
    block_b = (f"2 Jan 2024 03:04:05 GMT  #{b}  {size_b}  <>  bouncing\n"
               "\tlocal\tpostmaster@example.org\n")
    in_scan_order = sorted([(a % 23, a, block_a), (b % 23, b, block_b)])  # info/0 … info/22
    assert out == "".join(block for _split, _n, block in in_scan_order)


def test_qread_skips_unpreprocessed_and_masks_control_bytes(layout: QueueLayout,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    queue_message(layout, "todo@x.example", ("y@z.example",))  # still in todo: not listed
    n = queue_message(layout, "evil@x.example", ("v@z.example",))
    preprocess(layout, n, b"ev\x1bil\x7f@x", remote=b"Tv\n@z.\xc3\xa9xample\0Qjunk\0")
    assert qread.main(["--root", layout.root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("<ev_il_@x> ")
    assert lines[1] == "\tremote\tv_@z.__xample"


def test_qread_warns_about_a_message_that_vanished(layout: QueueLayout,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    n = queue_message(layout, "a@x.example", ("b@y.example",))
    preprocess(layout, n, b"a@x.example", remote=b"Tb@y.example\0")
    os.unlink(layout.mess(n))
    assert qread.main(["--root", layout.root]) == 0
    assert capsys.readouterr().out == f"warning: trouble with #{n}: No such file or directory\n"


def test_qread_as_a_program_and_on_a_missing_queue(tmp_path: Path, layout: QueueLayout) -> None:
    n = queue_message(layout, "a@x.example", ("b@y.example",))
    preprocess(layout, n, b"a@x.example", remote=b"Tb@y.example\0")
    done = run_tool("qldap.cli.qread", layout.root)
    assert done.returncode == 0
    assert done.stdout.endswith("  <a@x.example> \n\tremote\tb@y.example\n")
    missing = run_tool("qldap.cli.qread", str(tmp_path / "nowhere"))
    assert missing.returncode == 111
    assert missing.stderr.startswith("qmail-qread: fatal: unable to opendir ")


def test_gmt_date_has_an_unpadded_day() -> None:
    assert qread.gmt_date(EARLY) == "2 Jan 2024 03:04:05"
    assert qread.gmt_date(BIRTH) == "14 Nov 2023 22:13:20"

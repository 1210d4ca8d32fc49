"""DATA over real sockets into the real queue: Received line, transparency, limits, QMAILQUEUE programs.

The DATA rules of qmail-smtpd(8), a 20 MB message (spooled to disk, queued intact) and a
message over databytes.  Queued messages are read back from ``queue/todo/N`` (parse_todo) and
``queue/mess/S/N``; the in-process injector writes its own ``Received: (qmail …)`` line first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qldap.queue.envelope import Envelope
from qldap.queue.layout import create_queue
from qldap.queue.writer import FileSegment
from qldap.smtpd.dns import StaticResolver
from qldap.smtpd.queueing import MessageSpool
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, ServerThread, mess_files, options, queued

CLIENT = "127.0.0.2"
Start = Callable[..., ServerThread]
DATE = r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000"


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org\n.example.net\nbackup.test")
    create_queue(qroot.path)
    return qroot


@pytest.fixture
def start(root: QRoot) -> Iterator[Start]:
    running: list[ServerThread] = []

    def make(env: dict[str, str] | None = None) -> ServerThread:
        st = ServerThread(options(root.path, env), StaticResolver(ptr={CLIENT: "client.test"})).start()
        running.append(st)
        return st

    yield make
    for st in running:
        st.stop()


def session(st: ServerThread, helo: str | None = "a") -> Client:
    c = Client(st.addr, CLIENT)
    assert c.reply().startswith("220 ")
    if helo is not None:
        c.cmd(f"HELO {helo}")
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("DATA") == "354 go ahead punk, make my day\r\n"
    return c


def test_queued_message_received_line_and_envelope(root: QRoot, start: Start) -> None:
    """The 250 reply, the exact trace lines, dot-unstuffing, the envelope."""
    c = session(start())
    reply = c.cmd("Subject: t\r\n\r\nline one\r\n..dot\r\n.")
    assert re.fullmatch(r"250 ok [0-9]+ qp [0-9]+ by mx\.example\.org\r\n", reply)
    (msg,) = queued(root.path)
    qp = int(reply.split()[4])
    assert msg.todo.pid == qp
    assert msg.todo.envelope == Envelope("x@remote.test", ("alice@example.org",))
    text = msg.message.decode()
    assert re.fullmatch(
        rf"Received: \(qmail {qp} invoked by uid \d+\); {DATE}\n"
        r"Received: from client\.test \(HELO a\) \(\[127\.0\.0\.2\]\)\n"
        r"          \(envelope-sender <x@remote\.test>\)\n"
        r"          by mx\.example\.org \(qmail-ldap-1\.03\) with SMTP\n"
        rf"          for <alice@example\.org>; {DATE}\n"
        r"Subject: t\n\nline one\n\.dot\n",
        text,
    ), text


def test_empty_body_and_second_message(root: QRoot, start: Start) -> None:
    """DATA then immediately ``.`` queues an empty body; the session goes on."""
    c = session(start(), helo="client.test")
    assert c.cmd(".").startswith("250 ok")
    c.cmd("MAIL FROM:<y@remote.test>")
    c.cmd("RCPT TO:<u@a.example.net>")
    c.cmd("DATA")
    assert c.cmd("second\r\n.").startswith("250 ok")
    first, second = sorted(queued(root.path), key=lambda m: m.todo.pid)
    assert first.message.split(b"\n")[1] == b"Received: from client.test ([127.0.0.2])"  # HELO = host: hidden
    assert first.message.endswith(b" -0000\n")
    assert second.todo.envelope == Envelope("y@remote.test", ("u@a.example.net",))


def test_bare_lf_refused_nothing_queued(root: QRoot, start: Start) -> None:
    """Bare LF refused nothing queued."""
    c = session(start())
    c.send(b"Subject: x\r\n\r\nbody\n.\n.\r\n")
    assert c.rest() == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
    assert queued(root.path) == [] and mess_files(root.path) == []


def test_header_line_limit(root: QRoot, start: Start) -> None:
    """Header line limit."""
    c = session(start())
    assert c.cmd("Subject: x\r\n\r\n" + "b" * 20000 + "\r\n.").startswith("250 ok")
    c.cmd("MAIL FROM:<x@remote.test>")
    c.cmd("RCPT TO:<alice@example.org>")
    c.cmd("DATA")
    c.send(b"X-Long: " + b"h" * 9991 + b"\r\n")  # 9999 octets + CRLF
    assert c.rest() == b"500 Text line too long.\r\n"
    (msg,) = queued(root.path)
    assert msg.message.endswith(b"b" * 20000 + b"\n")


def test_hop_count(root: QRoot, start: Start) -> None:
    """100 Received/Delivered-To headers → 554 after the dot, 99 → queued."""
    st = start()
    c = session(st)
    loop = "".join("Received: x\r\n" for _ in range(50)) + "".join("Delivered-To: y\r\n" for _ in range(50))
    assert c.cmd(loop + "\r\nbody\r\n.") == "554 too many hops, this message is looping (#5.4.6)\r\n"
    c = session(st)
    assert c.cmd("".join("Received: x\r\n" for _ in range(99)) + "\r\nbody\r\n.").startswith("250 ok")
    assert len(queued(root.path)) == 1


def test_databytes(root: QRoot, start: Start) -> None:
    """databytes=1000 counts stored bytes after conversion; 1001 → 552, nothing queued."""
    root.control("databytes", "1000")
    st = start()
    c = session(st)
    assert (
        c.cmd("a" * 1000 + "\r\n.") == "552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    )
    assert queued(root.path) == []
    assert c.cmd("NOOP") == "250 ok\r\n"
    c = session(st)
    assert c.cmd("a" * 999 + "\r\n.").startswith("250 ok")
    (msg,) = queued(root.path)
    assert msg.message.endswith(b"\n" + b"a" * 999 + b"\n")


@pytest.mark.slow
def test_big_messages(root: QRoot, start: Start) -> None:
    """A 20 MB message is queued byte for byte (spooled to disk on the way); one over DATABYTES is
    refused after the dot with nothing queued and the connection still usable."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))
    st = start({"DATABYTES": "30000000"})
    c = session(st)
    c.send(body)
    assert c.cmd(".").startswith("250 ok")
    (msg,) = queued(root.path)
    stored = msg.message.split(b"\n", 5)[5]  # after the two Received headers
    assert len(stored) == len(body.replace(b"\r\n", b"\n")) > 20_000_000
    assert hashlib.sha256(stored).digest() == hashlib.sha256(body.replace(b"\r\n", b"\n")).digest()
    small = start({"DATABYTES": "5000000"})
    c = session(small)
    c.send(body)
    assert c.cmd(".") == "552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    assert c.cmd("NOOP") == "250 ok\r\n"
    assert len(queued(root.path)) == 1


def test_spool_spills_to_a_named_file_that_close_removes(tmp_path: Path) -> None:
    """Past its threshold the spool moves to a mode 0600 ``spool.*`` file of the spill directory, which
    a queue writer reads by name (segments) and which is gone once the spool is closed."""
    spool = MessageSpool(b"head\n", spill_at=10, spill_dir=str(tmp_path))
    spool.write(b"12345")
    in_memory = spool.spilled
    assert not in_memory
    assert spool.segments() == (b"head\n12345",)
    spool.write(b"678901\n")
    spool.write(b"tail\n")
    (spilled,) = tmp_path.iterdir()
    assert spool.spilled and spilled.name.startswith("spool.")
    assert spilled.stat().st_mode & 0o777 == 0o600
    source = spool.source()
    assert not isinstance(source, bytes)
    assert b"".join(source) == b"head\n12345678901\ntail\n"
    assert spool.segments() == (FileSegment(str(spilled), 0),)
    spool.amend(b"A: 1\n", 2, b"X")  # a prefix, and the client's first two bytes replaced
    first, rest = spool.segments()
    assert first == b"A: 1\nhead\nX" and rest == FileSegment(str(spilled), 7)
    assert first + spilled.read_bytes()[7:] == b"A: 1\nhead\nX345678901\ntail\n"
    spool.close()
    assert list(tmp_path.iterdir()) == []


QUEUE_PROGRAM = """#!/bin/sh
cat >/dev/null
cat <&1 >/dev/null
printf '%s' "$QQ_TEXT" >&4
exit "$QQ_EXIT"
"""


@pytest.mark.parametrize(
    ("code", "fd4", "expected"),
    [
        (0, "", None),
        (31, "", "554 mail server permanently rejected message (#5.3.0)\r\n"),
        (53, "", "451 qq write error or disk full (#4.3.0)\r\n"),
        (82, "Dvirus found", "554 virus found\r\n"),
        (82, "Zscanner busy", "451 scanner busy\r\n"),
        (82, "x", "451 qq temporary problem (#4.3.0)\r\n"),
    ],
)
def test_qmailqueue_program(root: QRoot, start: Start, code: int, fd4: str, expected: str | None) -> None:
    """The external program's exit code (and fd-4 text for 82) decides the reply;
    exit 0 answers 250 with the program's pid as qp."""
    program = root.path / "qq.sh"
    program.write_text(QUEUE_PROGRAM)
    program.chmod(0o755)
    c = session(start({"QMAILQUEUE": str(program), "QQ_EXIT": str(code), "QQ_TEXT": fd4}))
    reply = c.cmd("x\r\n.")
    if expected is None:
        assert re.fullmatch(r"250 ok \d+ qp \d+ by mx\.example\.org\r\n", reply)
    else:
        assert reply == expected
    assert queued(root.path) == []
    assert c.cmd("RSET") == "250 flushed\r\n"


def test_missing_queue_program(root: QRoot, start: Start) -> None:
    """A QMAILQUEUE that cannot be run → ``451 unable to exec qq (#4.3.0)``."""
    c = session(start({"QMAILQUEUE": str(root.path / "no-such-program")}))
    assert c.cmd("x\r\n.") == "451 unable to exec qq (#4.3.0)\r\n"


def test_queue_failure_reported(root: QRoot, start: Start) -> None:
    """An injector failure (the queue's todo directory is gone) is a 451 with the qq text; nothing stays."""
    c = session(start())
    todo = Path(root.path / "queue" / "todo")
    todo.rename(todo.with_name("todo.away"))
    try:
        assert c.cmd("x\r\n.") == "451 qq trouble creating files in queue (#4.3.0)\r\n"
        assert mess_files(root.path) == []
    finally:
        todo.with_name("todo.away").rename(todo)

"""Cluster forwarding at the transport level (qmail-qmqpd(8)), with the texts of qmail-local(8),
QMAILUSER ATTRIBUTES.

Two members on loopback: mx1 forwards, mx2 runs the QMQP server with a real queue.  What mx2
queued is read back from ``queue/todo`` and ``queue/mess``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from qldap.control.files import ControlDir
from qldap.queue.envelope import Envelope, TodoEntry
from qldap.remote.cluster import (
    EXEC_TEMPORARY,
    LOOPING,
    cluster_forward,
    clusterhost_line,
    forward_to_mailhost,
    header_has_line,
)
from qldap.remote.dns import StaticResolver
from qldap.remote.routes import DnsStatus
from qldap.reports import Letter, Report
from tests.conftest import QRoot
from tests.test_remote_qmqp import Member, free_port, member_root, with_member

MSG = b"Received: (qmail 1 invoked by uid 0); 6 Mar 2022 16:59:46 -0000\nSubject: c\n\nhello\n"
RCPT = "alice@example.com"
SENDER = "bob@example.org"
RESOLVER = StaticResolver.of(a={"mx2.example.com": ["127.0.0.1"], "gone.example.com": DnsStatus.TEMPFAIL})


def mx1(tmp_path: Path) -> ControlDir:
    root = QRoot(tmp_path / "mx1")
    root.control("me", "mx1.example.com")
    return ControlDir(root.path)


def message(tmp_path: Path, data: bytes = MSG) -> Path:
    p = tmp_path / "mess"
    p.write_bytes(data)
    return p


def test_clusterhost_line() -> None:
    assert (
        clusterhost_line("mx1.example.com", RCPT)
        == b"Delivered-To: CLUSTERHOST mx1.example.com alice@example.com\n"
    )
    assert clusterhost_line("mx1", "a\nb@x") == b"Delivered-To: CLUSTERHOST mx1 a_b@x\n"


def test_49_forwarded_message_reaches_the_member_with_the_clusterhost_line(tmp_path: Path) -> None:
    ctl, msg = mx1(tmp_path), message(tmp_path)
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> tuple[Report, list[tuple[TodoEntry, bytes]]]:
        report = await forward_to_mailhost(
            ctl, "mx2.example.com", SENDER, RCPT, msg, resolver=RESOLVER, port=m.port
        )
        return report, m.queued()

    before = int(time.time())
    report, queued = asyncio.run(with_member(root, body))
    assert report.letter is Letter.SUCCESS
    found = re.fullmatch(r"qmail-forward: ok (\d+) qp (\d+)\.\n", report.text)
    assert found and int(found.group(1)) >= before
    [(entry, mess)] = queued
    assert entry.envelope == Envelope(SENDER, (RCPT,))
    head, _, rest = mess.partition(b"with QMQP; ")
    assert head.startswith(b"Received: (qmail ") and b"Received: from unknown ([127.0.0.1])\n" in head
    assert rest.split(b"\n", 1)[1] == b"Delivered-To: CLUSTERHOST mx1.example.com alice@example.com\n" + MSG


def test_50_own_clusterhost_line_is_a_loop_and_nothing_is_sent(tmp_path: Path) -> None:
    ctl = mx1(tmp_path)
    msg = message(tmp_path, b"Delivered-To: CLUSTERHOST mx1.example.com alice@example.com\n" + MSG)
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> tuple[Report, int]:
        report = await forward_to_mailhost(
            ctl, "mx2.example.com", SENDER, RCPT, msg, resolver=RESOLVER, port=m.port
        )
        return report, len(m.queued())

    report, queued = asyncio.run(with_member(root, body))
    assert report == Report(Letter.PERMANENT, LOOPING + "\n")
    assert "it already has my Cluster-Delivered-To line. (#5.4.6)" in report.text
    assert queued == 0


def test_50_message_coming_back_from_the_member_loops(tmp_path: Path) -> None:
    """mx1 → mx2, then mx2's copy handed back to mx1's forwarder: the second hop stops."""
    ctl = mx1(tmp_path)
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> str:
        await cluster_forward(
            ctl, "mx2.example.com", SENDER, RCPT, message(tmp_path), resolver=RESOLVER, port=m.port
        )
        [(_, mess)] = m.queued()
        back = message(tmp_path / "..", mess)
        try:
            await cluster_forward(ctl, "mx2.example.com", SENDER, RCPT, back, resolver=RESOLVER, port=m.port)
        except Exception as exc:  # the failure is the result under test
            return f"{type(exc).__name__}: {exc}"
        return "forwarded twice"

    assert asyncio.run(with_member(root, body)) == f"PermanentFailure: {LOOPING}"


def test_other_lines_do_not_count_as_a_loop(tmp_path: Path) -> None:
    other_host = b"Delivered-To: CLUSTERHOST mx3.example.com alice@example.com\n"
    other_rcpt = b"Delivered-To: CLUSTERHOST mx1.example.com carol@example.com\n"
    in_body = b"Subject: x\n\nDelivered-To: CLUSTERHOST mx1.example.com alice@example.com\n"
    line = clusterhost_line("mx1.example.com", RCPT)
    for data in (other_host + MSG, other_rcpt + MSG, in_body):
        assert not header_has_line(message(tmp_path, data), line)
    assert header_has_line(message(tmp_path, b"Subject: x\n" + line + b"\nbody\n"), line)


def test_transport_failures_carry_the_caller_text(tmp_path: Path) -> None:
    ctl, msg = mx1(tmp_path), message(tmp_path)
    port = free_port("127.0.0.1")

    async def go() -> list[Report]:
        return [
            await forward_to_mailhost(ctl, host, SENDER, RCPT, msg, resolver=RESOLVER, port=port)
            for host in ("nx.example.com", "gone.example.com", "mx2.example.com")
        ]

    unable = "Unable to cluster-forward message: "
    assert asyncio.run(go()) == [
        Report(Letter.PERMANENT, unable + "mail server permanently rejected message (#5.3.0).\n"),
        Report(Letter.TEMPORARY, unable + "mail server temporarily rejected message (#4.3.0).\n"),
        Report(Letter.TEMPORARY, unable + "connection to mail server rejected (#4.4.1).\n"),
    ]


def test_member_refusing_for_good_is_permanent(tmp_path: Path) -> None:
    ctl, msg = mx1(tmp_path), message(tmp_path)
    root = member_root(tmp_path, "mx2.example.com")
    QRoot(root).control("databytes", "10")

    async def body(m: Member) -> Report:
        return await forward_to_mailhost(
            ctl, "mx2.example.com", SENDER, RCPT, msg, resolver=RESOLVER, port=m.port
        )

    assert asyncio.run(with_member(root, body)) == Report(
        Letter.PERMANENT,
        "Unable to cluster-forward message: mail server permanently rejected message (#5.3.0).\n",
    )


def test_unreadable_controls_or_message(tmp_path: Path) -> None:
    no_me = ControlDir(QRoot(tmp_path / "bare").path)
    ctl = mx1(tmp_path)

    async def go() -> list[Report]:
        return [
            await forward_to_mailhost(
                no_me, "mx2.example.com", SENDER, RCPT, message(tmp_path), resolver=RESOLVER
            ),
            await forward_to_mailhost(
                ctl, "mx2.example.com", SENDER, RCPT, tmp_path / "gone", resolver=RESOLVER
            ),
        ]

    assert asyncio.run(go()) == [
        Report(Letter.TEMPORARY, EXEC_TEMPORARY + "\n"),
        Report(Letter.TEMPORARY, "Unable to cluster-forward message: qq read error (#4.3.0).\n"),
    ]

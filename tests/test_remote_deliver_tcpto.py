"""Remembered connect timeouts end to end (qmail-tcpto(8)) and the qmail-tcpto/qmail-tcpok tools.

The "blackhole" is a loopback listener with a backlog of 0 whose queue is already full, so the
kernel drops further SYNs and a connect really times out.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.cli.tcpto import tcpok_main, tcpto_main
from qldap.remote.deliver import deliver_remote
from qldap.remote.dns import StaticResolver
from qldap.reports import Letter, Report
from tests.test_remote_deliver_smtp import MSG, SENDER, SmtpSink, config

BLACKHOLE_IP, GOOD_IP = "127.0.0.4", "127.0.0.5"
RESOLVER = StaticResolver.of(
    mx={"example.org": [(10, "mx1.example.org"), (20, "mx2.example.org")]},
    a={"mx1.example.org": [BLACKHOLE_IP], "mx2.example.org": [GOOD_IP]},
)


class Blackhole:
    """A listening socket that never accepts, its queue filled so that new connects hang."""

    def __init__(self, ip: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.bind((ip, port))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect((ip, port))
            except BlockingIOError:
                pass
            self.fillers.append(c)

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "queue" / "lock").mkdir(parents=True)
    (tmp_path / "mess").write_bytes(MSG)
    return tmp_path


@pytest.fixture
def free_port() -> Iterator[int]:
    s = socket.socket()
    s.bind((GOOD_IP, 0))
    port = s.getsockname()[1]
    s.close()
    yield port


async def attempt(root: Path, port: int, when: float) -> tuple[Report, SmtpSink]:
    async with SmtpSink(host=GOOD_IP, port=port) as good:
        report = await deliver_remote(
            root, config(timeoutconnect=1), SENDER, "joe@example.org", root / "mess",
            resolver=RESOLVER, port=port, clock=lambda: when, pid=0,
        )  # fmt: skip
    return report, good


def test_46_two_timeouts_mark_down_tcpto_shows_tcpok_clears(
    root: Path, free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    hole = Blackhole(BLACKHOLE_IP, free_port)
    try:
        for when in (now - 300, now - 150):  # two timeouts ≥ 120 s apart
            report, good = asyncio.run(attempt(root, free_port, when))
            assert report.letter is Letter.SUCCESS and report.text.startswith(f"{GOOD_IP} accepted message.")
    finally:
        hole.close()

    assert tcpto_main(["--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        rf"{re.escape(BLACKHOLE_IP)} timed out 1[45]\d seconds ago; # recent timeouts: 2\n", out
    )

    async def third() -> tuple[Report, SmtpSink, SmtpSink]:
        async with SmtpSink(host=BLACKHOLE_IP, port=free_port) as revived:
            report, good = await attempt(root, free_port, now)
        return report, good, revived

    report, good, revived = asyncio.run(third())
    assert report.letter is Letter.SUCCESS and len(good.sessions) == 1
    assert revived.sessions == []  # skipped although it answers now

    assert tcpok_main(["--root", str(root)]) == 0
    assert tcpto_main(["--root", str(root)]) == 0
    assert capsys.readouterr().out == ""
    report, good, revived = asyncio.run(third())
    assert report.text.startswith(f"{BLACKHOLE_IP} accepted message.")
    assert len(revived.sessions) == 1 and good.sessions == []


def test_timeouts_closer_than_120_seconds_count_once(
    root: Path, free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    hole = Blackhole(BLACKHOLE_IP, free_port)
    try:
        for when in (now - 100, now - 40):
            asyncio.run(attempt(root, free_port, when))
    finally:
        hole.close()
    assert tcpto_main(["--root", str(root)]) == 0
    assert capsys.readouterr().out.endswith("; # recent timeouts: 1\n")


def test_only_address_timing_out_is_no_connection(root: Path, free_port: int) -> None:
    resolver = StaticResolver.of(a={"example.org": [BLACKHOLE_IP]})
    hole = Blackhole(BLACKHOLE_IP, free_port)
    try:
        report = asyncio.run(deliver_remote(
            root, config(timeoutconnect=1), SENDER, "joe@example.org", root / "mess",
            resolver=resolver, port=free_port,
        ))  # fmt: skip
    finally:
        hole.close()
    assert report == Report(
        Letter.TEMPORARY, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
    )


def test_tools_exit_111_without_a_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tcpto_main(["--root", str(tmp_path)]) == 111
    assert tcpok_main(["--root", str(tmp_path)]) == 111
    err = capsys.readouterr().err
    assert "qmail-tcpto: fatal: unable to read" in err and "qmail-tcpok: fatal: unable to clear" in err
    assert tcpto_main(["--bogus"]) == 100

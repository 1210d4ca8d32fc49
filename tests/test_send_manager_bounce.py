"""Reports, marks and bounces at manager level (qmail-send(8), SCHEDULING and BOUNCES).

Each bounce is checked as it is *delivered*: the manager injects it with the real injector, then
preprocesses and delivers it like any message, so the test spawner sees its envelope and bytes.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from qldap.local.spawn import LocalSpawner
from qldap.reports import Letter, Report
from tests.test_send_manager_support import (
    TestSpawners,
    always,
    make_root,
    put,
    queue_files,
    running_manager,
    settle,
    until,
)

RCPT_550 = (
    "192.0.2.7 does not like recipient.\nRemote host said: 550 5.1.1 no such user\nGiving up on 192.0.2.7.\n"
)
FAIL = always(Letter.PERMANENT, RCPT_550)
DATE = r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000"


def _deliver_all(root: Path, sp: TestSpawners, sender: str, rcpts: list[str], body: bytes) -> list[str]:
    lines: list[str] = []

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            put(root, sender, rcpts, body)
            await until(lambda: run.matching(r"^end msg ") and queue_files(run.layout) == [], "empty queue")
            await settle()
            lines.extend(run.lines)

    asyncio.run(scenario())
    return lines


def test_rcpt_550_bounce_is_qsbmf_to_the_sender(tmp_path: Path) -> None:
    """Empty envelope sender, to the original sender, text as qmail-send(8) BOUNCES (dates
    aside)."""
    root = tmp_path / "q"
    make_root(root)
    sp = TestSpawners(
        remote_rule=lambda r: FAIL(r) if r == "joe@example.net" else Report(Letter.SUCCESS, "ok\n")
    )
    lines = _deliver_all(root, sp, "alice@example.com", ["joe@example.net"], b"Subject: hi\n\nbody\n")
    [bounce] = sp.to("alice@example.com")
    assert bounce.sender == ""
    expected = (
        rf"Received: \(qmail \d+ invoked for bounce\); {DATE}\n"
        rf"Date: {DATE}\n"
        "From: MAILER-DAEMON@mx1.example.com\n"
        "To: alice@example.com\n"
        "Subject: failure notice\n"
        "\n"
        "Hi. This is the qmail-send program at mx1.example.com.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n"
        "\n"
        "<joe@example.net>:\n"
        "192.0.2.7 does not like recipient.\n"
        "Remote host said: 550 5.1.1 no such user\n"
        "Giving up on 192.0.2.7.\n"
        "\n"
        "--- Below this line is a copy of the message.\n"
        "\n"
        "Return-Path: <alice@example.com>\n"
        rf"Received: \(qmail \d+ invoked by uid \d+\); {DATE}\n"
        "Subject: hi\n\nbody\n"
    )
    assert re.fullmatch(expected, bounce.message.decode()), bounce.message.decode()
    numbers = [line.split()[2] for line in lines if line.startswith("bounce msg ")]
    assert len(numbers) == 1
    assert re.fullmatch(r"bounce msg \d+ qp \d+", next(x for x in lines if x.startswith("bounce msg")))


def test_two_failures_make_one_bounce_with_two_paragraphs(tmp_path: Path) -> None:
    """Two failures make one bounce with two paragraphs."""
    root = tmp_path / "q"
    make_root(root)
    sp = TestSpawners(
        remote_rule=lambda r: FAIL(r) if r.endswith("example.net") else Report(Letter.SUCCESS, "k\n")
    )
    lines = _deliver_all(root, sp, "alice@example.com", ["a@example.net", "b@example.net"], b"x\n")
    [bounce] = sp.to("alice@example.com")
    text = bounce.message.decode()
    assert text.count("does not like recipient.") == 2
    assert "\n\n<a@example.net>:\n" in text or "\n\n<b@example.net>:\n" in text
    assert "<a@example.net>:\n" in text and "<b@example.net>:\n" in text
    assert len([x for x in lines if x.startswith("bounce msg ")]) == 1


def test_bouncemaxbytes_cuts_long_messages_only(tmp_path: Path) -> None:
    """100 bytes of ``mess`` then the stripped marker; a short message whole, no marker."""
    root = tmp_path / "q"
    make_root(root, {"bouncemaxbytes": "100"})
    sp = TestSpawners(
        remote_rule=lambda r: FAIL(r) if r == "x@example.net" else Report(Letter.SUCCESS, "k\n")
    )
    long_body = b"Subject: big\n\n" + b"0123456789" * 1000 + b"\n"

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            big = put(root, "alice@example.com", ["x@example.net"], long_body)
            mess = Path(run.layout.mess(big)).read_bytes()
            await until(lambda: sp.to("alice@example.com"), "the first bounce")
            put(root, "carol@example.com", ["x@example.net"], b"short\n")
            await until(lambda: sp.to("carol@example.com"), "the second bounce")
            [first] = sp.to("alice@example.com")
            _head, _, copy = first.message.partition(b"Return-Path: <alice@example.com>\n")
            assert copy == mess[:100] + b"\n\n--- End of message stripped.\n"
            [second] = sp.to("carol@example.com")
            assert second.message.endswith(b"\nshort\n")
            assert b"End of message stripped" not in second.message

    asyncio.run(scenario())


def test_failed_bounce_is_double_bounced_to_postmaster(tmp_path: Path) -> None:
    """Empty sender → from ``#@[]`` to postmaster@me, "the bounce bounced", original bounce."""
    root = tmp_path / "q"
    make_root(root)
    sp = TestSpawners(remote_rule=FAIL)
    _deliver_all(root, sp, "", ["joe@example.net"], b"Subject: a bounce\n\nx\n")
    [double] = sp.to("postmaster@mx1.example.com")
    assert double.sender == "#@[]"
    text = double.message.decode()
    assert "To: postmaster@mx1.example.com\n" in text
    assert "I tried to deliver a bounce message to this address, but the bounce bounced!\n" in text
    assert "--- Below this line is the original bounce.\n\nReturn-Path: <>\n" in text
    assert "I'm afraid I wasn't able" not in text


def test_failed_double_bounce_is_discarded(tmp_path: Path) -> None:
    """Sender ``#@[]`` → ``triple bounce: discarding bounce/N`` and nothing injected."""
    root = tmp_path / "q"
    make_root(root)
    sp = TestSpawners(remote_rule=FAIL)
    lines = _deliver_all(root, sp, "#@[]", ["joe@example.net"], b"x\n")
    [number] = [line.split()[2] for line in lines if line.startswith("new msg ")]
    assert f"triple bounce: discarding bounce/{number}" in lines
    assert not [x for x in lines if x.startswith("bounce msg ")]
    assert len(sp.calls) == 1


def test_empty_doublebounceto_sends_double_bounces_nowhere(tmp_path: Path) -> None:
    """Recipient ``@doublebouncehost``; the real local spawner accepts it silently."""
    root = tmp_path / "q"
    make_root(root, {"doublebounceto": ""})
    (root / "control" / "doublebounceto").write_text("\n")
    sp = TestSpawners(remote_rule=FAIL)
    spawner = LocalSpawner(root, lambda data, sender, rcpts: 0)
    sp.local = spawner.deliver  # type: ignore[method-assign]
    lines = _deliver_all(root, sp, "", ["joe@example.net"], b"x\n")
    starts = [x for x in lines if " to local @mx1.example.com" in x]
    assert len(starts) == 1
    delivery = starts[0].split()[2].rstrip(":")
    assert f"delivery {delivery}: success: did_0+0+0/" in lines


def test_virtual_user_is_shown_without_prepend(tmp_path: Path) -> None:
    """Delivered as ``vuser-joe@example.org``, bounced as ``<joe@example.org>:``."""
    root = tmp_path / "q"
    make_root(root, {"virtualdomains": "example.org:vuser"})
    sp = TestSpawners(local_rule=always(Letter.PERMANENT, "Sorry, no mailbox here by that name. (#5.1.1)\n"))
    lines = _deliver_all(root, sp, "alice@example.com", ["joe@example.org"], b"x\n")
    assert [
        x for x in lines if re.fullmatch(r"starting delivery \d+: msg \d+ to local vuser-joe@example.org", x)
    ]
    [bounce] = sp.to("alice@example.com")
    assert b"\n<joe@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n" in bounce.message


def test_verp_sender_per_delivery_and_bounce_to_the_list(tmp_path: Path) -> None:
    """At manager level: per-recipient VERP sender, bounce to ``owner-@list.example``."""
    root = tmp_path / "q"
    make_root(root)
    sp = TestSpawners(remote_rule=lambda r: FAIL(r) if r == "joe@x.net" else Report(Letter.SUCCESS, "k\n"))
    _deliver_all(root, sp, "owner-@list.example-@[]", ["joe@x.net"], b"x\n")
    assert sp.to("joe@x.net")[0].sender == "owner-joe=x.net@list.example"
    assert len(sp.to("owner-@list.example")) == 1


def test_marks_success_and_failure_and_keeps_deferrals(tmp_path: Path) -> None:
    """K and D recipients are marked ``D`` in place; a Z recipient stays ``T``; mangled reports defer."""
    root = tmp_path / "q"
    layout = make_root(root)
    answers = {
        "ok@far.example": Report(Letter.SUCCESS, "k\n"),
        "no@far.example": Report(Letter.PERMANENT, "no\n"),
        "later@far.example": Report(Letter.TEMPORARY, "later\n"),
    }

    def rule(rcpt: str) -> Report:
        return answers.get(rcpt, Report(Letter.SUCCESS, "k\n"))

    sp = TestSpawners(remote_rule=rule)
    sp.local_rule = lambda r: Report("X", "garbage")  # type: ignore[arg-type]

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            number = put(root, "a@b.example", ["ok@far.example", "no@far.example", "later@far.example",
                                               "odd@mx1.example.com"])  # fmt: skip
            await until(lambda: len(run.matching(r"^delivery \d+: ")) == 4, "four reports")
            # a report is logged before its mark (and a failure's paragraph) is written: wait for the files
            remote, bounce = Path(layout.remote(number)), Path(layout.bounce(number))
            marked = b"Dok@far.example\0Dno@far.example\0Tlater@far.example\0"
            await until(lambda: remote.read_bytes() == marked, "the marks of the remote reports")
            await until(lambda: bounce.exists() and bounce.read_text() == "<no@far.example>:\nno\n\n",
                        "the failure's paragraph")  # fmt: skip
            await settle()  # nothing more comes: the deferrals stay unmarked
            assert remote.read_bytes() == marked
            assert Path(layout.local(number)).read_bytes() == b"Todd@mx1.example.com\0"
            assert run.matching(r"^delivery \d+: report mangled, will defer$")
            assert os.path.exists(layout.info(number))

    asyncio.run(scenario())

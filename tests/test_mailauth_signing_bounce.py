"""Bounces of the queue manager carry a DKIM signature of their From: domain (qldap-dkim(8)).

The real Manager runs with the real injector and the signing wrapper `qldap send` uses; the bounce is
checked as delivered, by Mail::DKIM and OpenDKIM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from qldap.reports import Letter, Report
from tests.peers import configure_keys, mail_dkim, opendkim, without_signatures
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

ORIGINAL = b"From: alice@example.com\nSubject: hi\n\nbody\n"
FAIL = always(Letter.PERMANENT, "192.0.2.7 does not like recipient.\nRemote host said: 550 no such user\n")


def _spawners() -> TestSpawners:
    return TestSpawners(
        remote_rule=lambda r: FAIL(r) if r == "joe@example.net" else Report(Letter.SUCCESS, "ok\n")
    )


def _bounce(root: Path, sp: TestSpawners) -> list[str]:
    lines: list[str] = []

    async def scenario() -> None:
        async with running_manager(root, sp) as run:
            put(root, "alice@example.com", ["joe@example.net"], ORIGINAL)
            # the original's ``end msg`` may come before the bounce (a message of its own) is delivered
            await until(lambda: sp.to("alice@example.com") or run.matching(r"will try later"),
                        "the bounce's delivery or its postponement")  # fmt: skip
            await settle()
            lines.extend(run.lines)

    asyncio.run(scenario())
    return lines


def test_a_bounce_is_dual_signed_for_the_bouncehost_domain(tmp_path: Path) -> None:
    root = tmp_path / "q"
    make_root(root, {"bouncehost": "example.com"})
    keys = [("example.com", "b1", "rsa"), ("example.com", "b2", "ed25519")]
    records = configure_keys(root / "control", keys)
    sp = _spawners()
    _bounce(root, sp)
    [bounce] = sp.to("alice@example.com")
    message = bounce.message
    assert bounce.sender == "" and b"\nFrom: MAILER-DAEMON@example.com\n" in message
    assert message.count(b"\nDKIM-Signature: ") == 2
    sigs, overall = mail_dkim(message, records)
    assert overall == "pass" and {s.selector: s.result for s in sigs}["b1"] == "pass"
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        assert opendkim(without_signatures(message, keep=algorithm), records) == (0, ""), algorithm


def test_a_bounce_of_an_unconfigured_bouncehost_is_unsigned(tmp_path: Path) -> None:
    root = tmp_path / "q"
    make_root(root)  # bouncehost = me = mx1.example.com
    configure_keys(root / "control", [("example.com", "b1", "ed25519")])
    sp = _spawners()
    _bounce(root, sp)
    [bounce] = sp.to("alice@example.com")
    assert b"DKIM-Signature" not in bounce.message


def test_a_broken_key_sends_the_bounce_unsigned_and_logs(tmp_path: Path) -> None:
    root = tmp_path / "q"
    make_root(root, {"bouncehost": "example.com"})
    configure_keys(root / "control", [("example.com", "b1", "rsa")])
    (root / "control" / "dkim" / "example.com.b1.key").write_text("garbage\n")
    sp = _spawners()
    lines = _bounce(root, sp)
    [bounce] = sp.to("alice@example.com")
    assert b"DKIM-Signature" not in bounce.message
    assert any(line.startswith("warning: dkim: unable to sign bounce: bad DKIM key ") and
               line.endswith("; sent unsigned") for line in lines), lines  # fmt: skip


def test_dkimstrict_keeps_the_message_until_the_bounce_can_be_signed(tmp_path: Path) -> None:
    root = tmp_path / "q"
    layout = make_root(root, {"bouncehost": "example.com", "dkimstrict": "1"})
    configure_keys(root / "control", [("example.com", "b1", "rsa")])
    (root / "control" / "dkim" / "example.com.b1.key").write_text("garbage\n")
    sp = _spawners()
    lines = _bounce(root, sp)
    assert sp.to("alice@example.com") == []
    assert any("warning: dkim: unable to sign bounce: bad DKIM key" in line and "will try later" in line
               for line in lines), lines  # fmt: skip
    assert not [line for line in lines if line.startswith("end msg ")]
    assert any(name.startswith("bounce/") for name in queue_files(layout))  # kept for the next attempt

"""The process fallback for root deliveries: the agent runs in a child under the user's uid."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from qldap.directory.schema import DotMode
from qldap.directory.validate import parse_delivery_modes
from qldap.errors import PermanentFailure
from qldap.local.agent import AgentConfig
from qldap.local.child import Job, run_child
from qldap.local.lines import Recipient
from qldap.local.resolve import Plan
from qldap.queue.message import MessageFile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the child switches uid: needs root")


def _setup() -> tuple[Path, Path, Plan]:
    base = Path(tempfile.mkdtemp(prefix="qldap-child-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 2000, 2000)
    msg = base / "queue-mess"
    msg.write_bytes(b"Subject: x\n\nhello\n")
    msg.chmod(0o600)  # unreadable for the user: the child reads it through the inherited descriptor
    plan = Plan(user="u", uid=2000, gid=2000, home=str(home), dash="", ext="", default_delivery="./Maildir/",
                dot_mode=DotMode.LDAPONLY, modes=parse_delivery_modes([]))
    return base, msg, plan


def test_child_delivers_as_the_user_through_the_descriptor() -> None:
    base, msg, plan = _setup()
    try:
        with MessageFile.open(msg) as mf:
            tally = run_child(Job(plan, Recipient("u", "example.com", "u", plan.home, sender="s@x"),
                                  AgentConfig(me="mx"), 2000, 2000), mf)
        assert tally.text() == "did 1+0+0"
        new = list((Path(plan.home) / "Maildir" / "new").iterdir())
        assert len(new) == 1 and os.stat(new[0]).st_uid == 2000
        assert new[0].read_bytes().endswith(b"hello\n")
    finally:
        shutil.rmtree(base)


def test_child_failure_comes_back_with_its_letter() -> None:
    base, _msg, plan = _setup()
    try:
        looping = base / "loop"
        looping.write_bytes(b"Delivered-To: u@example.com\n\nx\n")
        with MessageFile.open(looping) as mf, pytest.raises(PermanentFailure) as exc:
            run_child(Job(plan, Recipient("u", "example.com", "u", plan.home, sender="s@x"),
                          AgentConfig(me="mx"), 2000, 2000), mf)
        assert exc.value.text == "This message is looping: it already has my Delivered-To line. (#5.4.6)"
    finally:
        shutil.rmtree(base)

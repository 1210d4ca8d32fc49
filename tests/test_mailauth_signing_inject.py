"""qmail-inject and sendmail sign what they queue (qldap-dkim(8)); Mail::DKIM and OpenDKIM verify it."""

from __future__ import annotations

import pytest

from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from tests.conftest import QRoot
from tests.peers import configure_keys, mail_dkim, opendkim, without_signatures
from tests.test_cli_inject import INJECT, call, queued, sendmail_cmd

MESSAGE = b"From: Carol <carol@example.com>\nTo: dave@example.org\nSubject: from cron\n\nnightly report\n"


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def test_inject_dual_signs_and_both_verifiers_pass(layout: QueueLayout, qroot: QRoot) -> None:
    keys = [("example.com", "r1", "rsa"), ("example.com", "e1", "ed25519")]
    records = configure_keys(qroot.control_dir, keys)
    r = call(INJECT, layout.root, MESSAGE, "dave@example.org")
    assert r.returncode == 0, r.stderr
    [(entry, mess)] = queued(layout)
    assert entry.envelope.recipients == ("dave@example.org",)
    assert mess.count(b"\nDKIM-Signature: ") == 2  # after the queue's own Received line
    sigs, overall = mail_dkim(mess, records)
    assert overall == "pass" and {s.selector: s.result for s in sigs}["r1"] == "pass"
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        assert opendkim(without_signatures(mess, keep=algorithm), records) == (0, ""), algorithm


def test_sendmail_t_signs_the_completed_header(layout: QueueLayout, qroot: QRoot) -> None:
    """The signature covers the Date: and Message-ID: that qmail-inject added."""
    records = configure_keys(qroot.control_dir, [("example.com", "r1", "rsa")])
    r = call(sendmail_cmd(), layout.root, MESSAGE, "-t")
    assert r.returncode == 0, r.stderr
    [(_, mess)] = queued(layout)
    header = mess.split(b"\n\n", 1)[0]
    assert b"\nMessage-ID: " in header and b"\nDate: " in header
    signature = header.split(b"DKIM-Signature:", 1)[1].replace(b"\n ", b"")
    assert b"message-id" in signature and b"date" in signature
    _, overall = mail_dkim(mess, records)
    assert overall == "pass"
    assert opendkim(mess, records) == (0, "")


def test_a_domain_without_key_is_queued_unsigned(layout: QueueLayout, qroot: QRoot) -> None:
    configure_keys(qroot.control_dir, [("example.net", "r1", "ed25519")])
    r = call(INJECT, layout.root, MESSAGE, "dave@example.org")
    assert r.returncode == 0 and r.stderr == b""
    [(_, mess)] = queued(layout)
    assert b"DKIM-Signature" not in mess


def test_a_broken_key_queues_unsigned_with_a_warning(layout: QueueLayout, qroot: QRoot) -> None:
    configure_keys(qroot.control_dir, [("example.com", "r1", "rsa")])
    (qroot.control_dir / "dkim" / "example.com.r1.key").unlink()
    r = call(INJECT, layout.root, MESSAGE, "dave@example.org")
    assert r.returncode == 0
    assert r.stderr.startswith(b"qmail-inject: warning: dkim: unable to read DKIM key ")
    assert r.stderr.endswith(b"; sent unsigned\n")
    [(_, mess)] = queued(layout)
    assert b"DKIM-Signature" not in mess


def test_dkimstrict_defers_instead(layout: QueueLayout, qroot: QRoot) -> None:
    configure_keys(qroot.control_dir, [("example.com", "r1", "rsa")])
    (qroot.control_dir / "dkim" / "example.com.r1.key").write_text("garbage\n")
    qroot.control("dkimstrict", "1")
    r = call(INJECT, layout.root, MESSAGE, "dave@example.org")
    assert r.returncode == 111
    assert r.stderr.startswith(b"qmail-inject: fatal: unable to sign the message: bad DKIM key ")
    assert queued(layout) == []

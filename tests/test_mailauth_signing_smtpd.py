"""The SMTP daemon signs what it relays for authenticated and RELAYCLIENT clients, and nothing else.

A real daemon against real slapd, driven by smtplib; the queued message is checked by Mail::DKIM and
OpenDKIM (tests/peers), never by dkimpy, which signed it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import smtplib
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.queue.layout import create_queue
from qldap.smtpd.config import SmtpdConfig, SmtpdEnv
from qldap.smtpd.queueing import SPILL_AT, MessageSpool, QueueOutcome
from qldap.smtpd.session import Session
from qldap.smtpd.signing import SubmissionSigner
from tests.conftest import QRoot
from tests.e2e.smtpd import ServerThread, options, queued
from tests.fixtures_slapd import LdapBase
from tests.peers import configure_keys, mail_dkim, opendkim, without_signatures
from tests.test_smtpd_server_ldap import fixture_root, person
from tests.test_smtpd_stdio import CLIENT_ENV, STDIO, Child, environ

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: friend@remote.example, other@elsewhere.example\r\n"
    b"Subject: signed by my provider\r\n"
    b"Date: Sun, 06 Dec 2026 19:00:00 +0000\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"Hello,  world.\r\n"
)
RECIPIENTS = ["friend@remote.example", "other@elsewhere.example"]


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> QRoot:
    sha = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="  # "secret"
    ldap_base.load(person("alice", "mail: alice@example.org", f"userPassword: {sha}"))
    return fixture_root(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)


def _send_authenticated(st: ServerThread, message: bytes = MESSAGE) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(*st.addr, timeout=60) as smtp:
        smtp.ehlo("laptop.example.org")
        smtp.login("alice", "secret")
        return smtp.sendmail("alice@example.org", RECIPIENTS, message)


def test_authenticated_mail_is_dual_signed_once_and_verifies(root: QRoot) -> None:
    keys = [("example.org", "r2026", "rsa"), ("example.org", "e2026", "ed25519")]
    records = configure_keys(root.control_dir, keys)
    st = ServerThread(options(root.path, {"SMTPAUTH": "", "LOGLEVEL": "3"})).start()
    try:
        assert _send_authenticated(st) == {}
    finally:
        st.stop()
    [msg] = queued(root.path)  # one message for both recipients, signed once
    assert msg.todo.envelope.recipients == tuple(RECIPIENTS)
    mess = msg.message
    assert mess.count(b"DKIM-Signature: ") == 2
    sigs, overall = mail_dkim(mess, records)
    assert overall == "pass" and {s.selector: s.result for s in sigs}["r2026"] == "pass"
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        assert opendkim(without_signatures(mess, keep=algorithm), records) == (0, ""), algorithm
    assert any("dkim: signed for example.org" in line for line in st.log), st.log


def test_relayclient_mail_is_signed(root: QRoot) -> None:
    records = configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    st = ServerThread(options(root.path, {"RELAYCLIENT": ""})).start()
    try:
        with smtplib.SMTP(*st.addr, timeout=60) as smtp:
            assert smtp.sendmail("alice@example.org", RECIPIENTS, MESSAGE) == {}
    finally:
        st.stop()
    [msg] = queued(root.path)
    sigs, overall = mail_dkim(msg.message, records)
    assert overall == "pass" and len(sigs) == 1
    assert opendkim(msg.message, records) == (0, "")


def test_inbound_mail_is_not_signed_even_with_a_local_from(root: QRoot) -> None:
    """A stranger's mail to a local user, and a relaymailfrom relay grant, stay unsigned."""
    configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    root.control("relaymailfrom", "alice@example.org")
    st = ServerThread(options(root.path, {"SMTPAUTH": ""})).start()
    try:
        with smtplib.SMTP(*st.addr, timeout=60) as smtp:
            assert smtp.sendmail("stranger@remote.example", ["alice@example.org"], MESSAGE) == {}
            # relaymailfrom lets this envelope sender relay, but anyone can claim it: no signature
            assert smtp.sendmail("alice@example.org", ["friend@remote.example"], MESSAGE) == {}
    finally:
        st.stop()
    messages = queued(root.path)
    assert len(messages) == 2
    assert all(b"DKIM-Signature" not in m.message for m in messages)


def test_a_spilled_large_message_is_signed_whole(root: QRoot) -> None:
    records = configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    attachment = base64.encodebytes(os.urandom(SPILL_AT)).replace(b"\n", b"\r\n")
    big = MESSAGE + b"\r\n" + attachment
    assert len(big) > SPILL_AT
    st = ServerThread(options(root.path, {"SMTPAUTH": ""})).start()
    try:
        assert _send_authenticated(st, big) == {}
    finally:
        st.stop()
    [msg] = queued(root.path)
    assert msg.message.startswith(b"DKIM-Signature: ") or b"\nDKIM-Signature: " in msg.message
    _, overall = mail_dkim(msg.message, records)
    assert overall == "pass"


def test_a_broken_key_queues_unsigned_and_logs(root: QRoot) -> None:
    configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    (root.control_dir / "dkim" / "example.org.r2026.key").write_text("garbage\n")
    st = ServerThread(options(root.path, {"SMTPAUTH": "", "LOGLEVEL": "1"})).start()
    try:
        assert _send_authenticated(st) == {}
    finally:
        st.stop()
    [msg] = queued(root.path)
    assert b"DKIM-Signature" not in msg.message
    assert any("dkim: bad DKIM key" in line and line.endswith("; sent unsigned") for line in st.log), st.log


def test_dkimstrict_answers_451_and_queues_nothing(root: QRoot) -> None:
    configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    (root.control_dir / "dkim" / "example.org.r2026.key").unlink()
    root.control("dkimstrict", "1")
    st = ServerThread(options(root.path, {"SMTPAUTH": "", "LOGLEVEL": "1"})).start()
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send_authenticated(st)
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error == b"unable to sign the message (#4.3.0)"
    finally:
        st.stop()
    assert queued(root.path) == []
    assert any("message refused (dkimstrict)" in line for line in st.log), st.log


def test_the_stdio_mode_signs_on_a_thread(qroot: QRoot) -> None:
    """qmail-smtpd on stdin/stdout (tcpserver, sendmail -bs) with RELAYCLIENT from its environment."""
    qroot.control("me", "mx.example.org")
    create_queue(qroot.path)
    records = configure_keys(qroot.control_dir, [("example.org", "e2026", "ed25519")])
    child = Child(STDIO, environ(qroot, {**CLIENT_ENV, "RELAYCLIENT": ""}))
    try:
        assert child.reply().startswith("220 ")
        assert child.cmd("HELO laptop").startswith("250 ")
        assert child.cmd("MAIL FROM:<alice@example.org>").startswith("250 ")
        assert child.cmd("RCPT TO:<friend@remote.example>").startswith("250 ")
        assert child.cmd("DATA").startswith("354 ")
        assert child.cmd(MESSAGE.decode() + ".").startswith("250 ok ")
        assert child.cmd("QUIT").startswith("221 ")
    finally:
        code, _, err = child.finish()
    assert code == 0, err
    [msg] = queued(qroot.path)
    assert opendkim(msg.message, records) == (0, "")


def _children_running_spawn() -> list[int]:
    """The pids of this process's multiprocessing children (the signing workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_killed_worker_costs_one_signature_never_the_message(qroot: QRoot) -> None:
    """The worker dies (OOM killer, kill -9): that message goes unsigned, the next is signed again."""
    configure_keys(qroot.control_dir, [("example.org", "r2026", "rsa")])
    signer = SubmissionSigner(ControlDir(qroot.path), workers=1)
    session = Session(SmtpdConfig(me="mx.example.org", env=SmtpdEnv(relayclient="")))
    envelope = b"Falice@example.org\0Tfriend@remote.example\0\0"
    logged: list[str] = []

    def attempt() -> tuple[QueueOutcome | None, bytes]:
        spool = MessageSpool(MESSAGE.replace(b"\r\n", b"\n"))
        refused = asyncio.run(signer.sign(session, spool, envelope, lambda text, _level: logged.append(text)))
        data = spool.source()
        assert isinstance(data, bytes)
        spool.close()
        return refused, data

    try:
        assert attempt()[1].startswith(b"DKIM-Signature: ")
        [worker] = _children_running_spawn()
        os.kill(worker, signal.SIGKILL)
        refused, data = attempt()
        assert refused is None and not data.startswith(b"DKIM-Signature")  # queued unsigned
        assert any("signing process failed" in line and line.endswith("sent unsigned") for line in logged)
        assert attempt()[1].startswith(b"DKIM-Signature: ")  # a new worker took over
    finally:
        signer.close()


def test_nodkimsign_exempts_a_relaying_client(root: QRoot) -> None:
    """A front-end MX that relays inbound mail here has RELAYCLIENT, but its mail is not ours to sign."""
    configure_keys(root.control_dir, [("example.org", "r2026", "rsa")])
    st = ServerThread(options(root.path, {"RELAYCLIENT": "", "NODKIMSIGN": ""})).start()
    try:
        with smtplib.SMTP(*st.addr, timeout=60) as smtp:
            assert smtp.sendmail("alice@example.org", RECIPIENTS, MESSAGE) == {}
    finally:
        st.stop()
    [msg] = queued(root.path)
    assert b"DKIM-Signature" not in msg.message

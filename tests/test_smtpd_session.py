"""The session state machine driven by real reader events (qmail-smtpd(8), SESSION START and COMMANDS and
ENVIRONMENT and SMTP AUTH; acceptance checks).

A tiny driver plays the glue: it feeds client bytes to the real ``SmtpReader``, hands commands to the
``Session``, answers lookups from a table, collects the message chunks and renders every reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from qldap.control.domains import Locals, RcptHosts
from qldap.control.files import ControlDir
from qldap.smtpd import replies
from qldap.smtpd.config import SmtpdConfig
from qldap.smtpd.policy import NO_FACTS, Lookup, MxAnswer, RblAnswer, VerifyAnswer
from qldap.smtpd.reader import BareLF, Command, DataChunk, DataEnd, Eof, HeaderTooLong, SmtpReader, TooLong
from qldap.smtpd.session import (
    ALLOWED,
    COMMANDS,
    AuthResult,
    CheckLogin,
    CommitQueue,
    OpenQueue,
    Phase,
    PrepareTls,
    Send,
    Session,
)
from tests.conftest import QRoot

IP = "192.0.2.10"
REL = replies.relay_denied(IP).render()
WHEN = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org\n.example.net\nbackup.test")
    return qroot


@dataclass
class Driver:
    """The glue, minus sockets: bytes in, rendered replies out."""

    session: Session
    answer: Callable[[Lookup], RblAnswer | MxAnswer | VerifyAnswer] | None = None
    logins: Mapping[tuple[str, str], AuthResult] = field(default_factory=dict)
    reader: SmtpReader = field(default_factory=SmtpReader)
    out: list[str] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    queued: list[tuple[bytes, bytes]] = field(default_factory=list)  # (message, envelope)
    closed: bool = False
    qq_result: str | None = None
    _message: bytearray = field(default_factory=bytearray)

    def start(self) -> str:
        self._send(self.session.start())
        return self.flush()

    def say(self, data: bytes) -> str:
        self.reader.receive_data(data)
        while not self.closed and (event := self.reader.next_event()) is not None:
            self._event(event)
        return self.flush()

    def flush(self) -> str:
        text, self.out = "".join(self.out), []
        return text

    def _send(self, send: Send) -> None:
        self.sends.append(send)
        self.out.append(send.reply.render())
        if send.close:
            self.closed = True
        if send.begin_data is not None:
            self.reader.begin_data(send.begin_data)
        if send.start_tls:
            self.reader.discard_buffered()
            self.session.tls_started(
                "TLSv1.3 TLS_AES_256_GCM_SHA384 fingerprint=no certificate presented encrypted SMTP"
            )

    def _event(self, event: object) -> None:
        s = self.session
        if isinstance(event, Command):
            facts = NO_FACTS
            action = s.command(event, facts)
            while not isinstance(action, (Send, OpenQueue, CheckLogin, PrepareTls, CommitQueue)):
                assert self.answer is not None, f"unexpected lookup {action}"
                facts = facts.add(self.answer(action))
                action = s.command(event, facts)
            if isinstance(action, OpenQueue):
                self._message = bytearray(s.trace_headers(WHEN).encode())
                action = s.queue_opened(True)
            elif isinstance(action, CheckLogin):
                result = self.logins.get((action.attempt.login, action.attempt.password), AuthResult.FAILURE)
                action = s.auth_result(result)
            elif isinstance(action, PrepareTls):
                action = s.tls_ready(True)
            assert isinstance(action, Send)
            self._send(action)
        elif isinstance(event, DataChunk):
            self._message += event.data
        elif isinstance(event, DataEnd):
            action2 = s.data_end(event)
            if isinstance(action2, CommitQueue):
                self.queued.append((bytes(self._message), action2.envelope))
                action2 = s.queue_done(self.qq_result, unix_time=1700000000, qp=77)
            self._send(action2)
        elif isinstance(event, BareLF):
            self._send(s.bare_lf())
        elif isinstance(event, (TooLong, HeaderTooLong)):
            self._send(s.too_long())
        elif isinstance(event, Eof):
            self.closed = True


def make(root: QRoot, env: Mapping[str, str] | None = None, **kw: object) -> Driver:
    ctl = ControlDir(root.path)
    environ = {"TCPREMOTEIP": IP, "TCPREMOTEHOST": "client.test", "TCPLOCALHOST": "mx.example.org"}
    environ.update(env or {})
    cfg = SmtpdConfig.load(
        ctl,
        environ,
        own_ips={"192.0.2.1"},
        is_local=Locals(ctl).contains,
        rcpthosts_accepts=RcptHosts(ctl).accepts,
    )
    d = Driver(Session(cfg), **kw)  # type: ignore[arg-type]
    d.start()
    return d


FROM = b"MAIL FROM:<x@remote.test>\r\n"


def test_greeting_and_helo(root: QRoot) -> None:
    """Greeting and HELO."""
    d = Driver(Session(SmtpdConfig.load(ControlDir(root.path), {})))
    assert d.start() == "220 mx.example.org ESMTP\r\n"
    root.control("smtpgreeting", "Hi")
    d = make(root)
    assert d.sends[0].reply.render() == "220 mx.example.org ESMTP Hi\r\n"
    assert d.say(b"HELO a\r\n") == "250 mx.example.org Hi\r\n"


def test_ehlo_lines(root: QRoot) -> None:
    """EHLO lines."""
    assert make(root).say(b"EHLO a\r\n") == "250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    root.control("databytes", "1000")
    root.control("smtpcert", "PEM")
    lines = make(root, {"SMTPAUTH": ""}).say(b"EHLO a\r\n").split("\r\n")
    assert lines[:-1] == [
        "250-mx.example.org",
        "250-PIPELINING",
        "250-SIZE 1000",
        "250-STARTTLS",
        "250-AUTH LOGIN PLAIN",
        "250 8BITMIME",
    ]
    d = make(root, {"SMTPAUTH": "TLSREQUIRED"})
    assert "AUTH" not in d.say(b"EHLO a\r\n")
    assert d.say(b"AUTH PLAIN x\r\n") == replies.AUTH_ENCRYPTION_REQUIRED.render()
    d.say(b"STARTTLS\r\n")
    assert "250-AUTH LOGIN PLAIN" in d.say(b"EHLO a\r\n") and "STARTTLS" not in d.flush()


def test_simple_commands(root: QRoot) -> None:
    """Simple commands."""
    d = make(root)
    assert d.say(b"NOOP\r\n") == "250 ok\r\n"
    assert d.say(b"VRFY bob\r\n") == "252 send some mail, i'll try my best\r\n"
    assert d.say(b"EXPN x\r\n") == "502 unimplemented (#5.5.1)\r\n"
    assert d.say(b"HELP\r\n").startswith("214-qmail home page")
    assert d.say(FROM + b"RSET\r\n") == "250 ok\r\n250 flushed\r\n"
    assert d.say(b"RCPT TO:<alice@example.org>\r\n") == "503 MAIL first (#5.5.1)\r\n"
    assert d.say(b"QUIT\r\nNOOP\r\n") == "221 mx.example.org Goodbye.\r\n"
    assert d.closed and d.session.phase is Phase.CLOSED


def test_sequence_errors(root: QRoot) -> None:
    """Sequence errors."""
    d = make(root)
    assert d.say(b"DATA\r\n") == "503 MAIL first (#5.5.1)\r\n"
    assert d.say(FROM + b"DATA\r\n") == "250 ok\r\n503 RCPT first (#5.5.1)\r\n"
    # a refused DATA leaves the transaction open; a DATA that passed ends it whatever happens
    assert d.say(b"RCPT TO:<alice@example.org>\r\n") == "250 ok\r\n"
    d.qq_result = "Zqq write error or disk full (#4.3.0)"
    assert d.say(b"DATA\r\n.\r\n").endswith("451 qq write error or disk full (#4.3.0)\r\n")
    assert d.say(b"RCPT TO:<alice@example.org>\r\n") == "503 MAIL first (#5.5.1)\r\n"


def test_pipelined_transaction(root: QRoot) -> None:
    """Pipelined MAIL, RCPT, RCPT, DATA: four replies in order, then the queued message."""
    d = make(root)
    d.say(b"HELO a\r\n")
    got = d.say(FROM + b"RCPT TO:<alice@example.org>\r\nRCPT TO:<u@a.example.net>\r\nDATA\r\n")
    assert got == "250 ok\r\n250 ok\r\n250 ok\r\n354 go ahead punk, make my day\r\n"
    assert [s.flush for s in d.sends[-4:]] == [False, False, False, True]
    reply = d.say(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    assert re.fullmatch(r"250 ok [0-9]+ qp [0-9]+ by mx\.example\.org\r\n", reply)
    message, envelope = d.queued[0]
    assert message.decode() == (
        "Received: from client.test (HELO a) ([192.0.2.10])\n"
        "          (envelope-sender <x@remote.test>)\n"
        "          by mx.example.org (qmail-ldap-1.03) with SMTP\n"
        "          for <alice@example.org>; 5 Mar 2024 07:08:09 -0000\n"
        "Subject: hi\n\nbody\n"
    )
    assert envelope == b"Fx@remote.test\0Talice@example.org\0Tu@a.example.net\0\0"


def test_relay_rules(root: QRoot) -> None:
    """Relay rules, through the session."""
    d = make(root)
    assert d.say(FROM + b"RCPT TO:<u@example.net>\r\n").endswith(REL)
    d = make(root, {"RELAYCLIENT": "@hub.test"})
    d.say(FROM + b"RCPT TO:<u@far.test>\r\nDATA\r\n")
    d.say(b".\r\n")
    assert d.queued[0][1] == b"Fx@remote.test\0Tu@far.test@hub.test\0\0"
    root.control("relaymailfrom", "@partner.test")
    d = make(root)
    assert d.say(b"MAIL FROM:<a@partner.test>\r\nRCPT TO:<v@elsewhere.test>\r\n") == "250 ok\r\n250 ok\r\n"
    assert d.say(b"RSET\r\nMAIL FROM:<b@other.test>\r\nRCPT TO:<v@elsewhere.test>\r\n").endswith(REL)
    # relaymailfrom lasts one transaction, also across a MAIL restart
    d.say(b"MAIL FROM:<a@partner.test>\r\n")
    assert d.say(b"MAIL FROM:<b@other.test>\r\nRCPT TO:<v@elsewhere.test>\r\n").endswith(REL)


def test_maxrcptcount_queues_two(root: QRoot) -> None:
    """Maxrcptcount queues two."""
    d = make(root, {"MAXRCPTCOUNT": "2"})
    got = d.say(FROM + b"RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n")
    assert got.endswith("553 sorry, too many recipients (#5.7.1)\r\n")
    d.say(b"DATA\r\n.\r\n")
    assert d.queued[0][1].count(b"\0T") == 2


def test_empty_message_and_dot(root: QRoot) -> None:
    """Empty message and dot."""
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    d.say(b"..dot\r\n.\r\n")
    assert d.queued[0][0].endswith(b"\n.dot\n")
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n.\r\n")
    assert d.queued[1][0].endswith(b"; 5 Mar 2024 07:08:09 -0000\n")


def test_bare_lf_and_long_header(root: QRoot) -> None:
    """Bare LF and long header."""
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b"A: b\r\n\r\nx\n.\n") == replies.BARE_LF.render()
    assert d.closed and not d.queued
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b"X: " + b"a" * 9996 + b"\r\n") == "500 Text line too long.\r\n" and d.closed


def test_hops_and_size(root: QRoot) -> None:
    """Refused after the dot, nothing queued, session goes on."""
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b"Received: x\r\n" * 100 + b"\r\n.\r\n") == replies.TOO_MANY_HOPS.render()
    assert not d.queued
    root.control("databytes", "10")
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b"\r\n0123456789\r\n.\r\nNOOP\r\n") == replies.SIZE_EXCEEDED.render() + "250 ok\r\n"
    assert not d.queued


def test_queue_failure_texts(root: QRoot) -> None:
    """Queue failure texts, through the session."""
    d = make(root, qq_result="Dmail server permanently rejected message (#5.3.0)")
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b".\r\n") == "554 mail server permanently rejected message (#5.3.0)\r\n"


def test_received_info_after_auth_and_tls(root: QRoot) -> None:
    """AUTH PLAIN, relay granted, (alice@[ip]) in Received, SMTPAUTHUSER = login."""
    d = make(root, {"SMTPAUTH": ""}, logins={("alice", "secret"): AuthResult.OK})
    assert d.say(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n") == "235 nice to meet you\r\n"
    assert d.session.auth_user == "alice"
    d.say(FROM + b"RCPT TO:<v@elsewhere.test>\r\nDATA\r\n.\r\n")
    assert b"Received: from client.test ([192.0.2.10])" not in d.queued[0][0]
    assert d.queued[0][0].startswith(b"Received: from client.test (alice@[192.0.2.10])\n")
    # authentication survives RSET
    assert d.say(b"RSET\r\n" + FROM + b"RCPT TO:<v@elsewhere.test>\r\n").endswith("250 ok\r\n")


def test_auth_login_and_errors(root: QRoot) -> None:
    """AUTH login and errors, at session level."""
    d = make(root, {"SMTPAUTH": ""}, logins={("alice", "secret"): AuthResult.OK})
    assert d.say(b"AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n"
    assert d.say(b"YWxpY2U=\r\n") == "334 UGFzc3dvcmQ6\r\n"
    assert d.say(b"c2VjcmV0\r\n") == "235 nice to meet you\r\n"
    assert d.say(b"AUTH LOGIN\r\n") == "503 you are already authenticated\r\n"
    d = make(root, {"SMTPAUTH": ""})
    assert d.say(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n") == "535 authentication failure\r\n"
    assert (d.sends[-1].delay, d.sends[-1].pause_after) == (1.0, 4.0)
    assert d.say(b"AUTH CRAM-MD5\r\n") == "504 authentication type not supported\r\n"
    assert d.say(b"AUTH PLAIN\r\n") == "334 \r\n"
    assert d.say(b"*\r\n") == "501 authentication exchange aborted. (#4.3.0)\r\n"
    assert d.say(b"AUTH PLAIN !!!\r\n") == "501 authentication exchange failed\r\n"
    assert d.say(b"NOOP\r\n") == "250 ok\r\n"
    assert make(root).say(b"AUTH PLAIN x\r\n") == "502 unimplemented (#5.5.1)\r\n"
    d = make(root, {"SMTPAUTH": ""}, logins={("alice", "secret"): AuthResult.TEMPORARY})
    assert d.say(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n") == replies.AUTH_TEMPFAIL.render()


def test_starttls(root: QRoot) -> None:
    """STARTTLS, at session level: the pipelined NOOP is discarded, helo and transaction reset."""
    assert make(root).say(b"STARTTLS\r\n") == "502 unimplemented (#5.5.1)\r\n"
    root.control("smtpcert", "PEM")
    d = make(root)
    assert d.say(b"STARTTLS x\r\n") == replies.TLS_NO_PARAMETERS.render()
    d.say(b"HELO a\r\n" + FROM)
    assert d.say(b"STARTTLS\r\nNOOP\r\n") == "220 ready for tls\r\n"
    assert d.session.tls and d.session.helo == "client.test"
    assert d.say(b"RCPT TO:<a@example.org>\r\n") == "503 MAIL first (#5.5.1)\r\n"
    assert d.say(b"STARTTLS\r\n") == replies.BAD_SEQUENCE.render()
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n.\r\n")
    assert (
        b"with TLSv1.3 TLS_AES_256_GCM_SHA384 fingerprint=no certificate presented encrypted SMTP\n"
        in (d.queued[0][0])
    )
    d = make(root)
    assert d.session.tls_ready(False).reply == replies.TLS_UNAVAILABLE


def test_550greeting_restricted_mode(root: QRoot) -> None:
    """550GREETING's restricted mode, and 550 wins over 421."""
    d = make(root, {"550GREETING": ""})
    assert d.sends[0].reply.render() == (
        "554 mx.example.org Sorry, your mail was administratively denied. (#5.7.1)\r\n"
    )
    assert d.session.read_timeout == 20
    assert d.say(FROM) == "503 bad sequence of commands (#5.5.1)\r\n"
    assert d.say(b"EHLO a\r\n") == "503 bad sequence of commands (#5.5.1)\r\n"
    assert d.say(b"QUIT\r\n") == "221 mx.example.org Goodbye.\r\n" and d.closed
    d = make(root, {"550GREETING": "x", "421GREETING": "y"})
    assert d.sends[0].reply.code == 554
    assert d.say(b"HELO a\r\n") == replies.SERVICE_UNAVAILABLE.render()
    d = make(root, {"550GREETING": "", "SMTP550DISCONNECT": ""})
    assert d.closed


def test_421greeting_restricted_mode(root: QRoot) -> None:
    """421GREETING, as qmail-ldap does it: the 421 greeting, then restricted mode until QUIT
    (HELO/EHLO answer 421, other commands 503), found by tools/conformance."""
    d = make(root, {"421GREETING": "Go away"})
    assert d.sends[0].reply.render() == "421 mx.example.org Go away\r\n" and not d.closed
    assert d.say(b"HELO a\r\n") == replies.SERVICE_UNAVAILABLE.render()
    assert d.say(FROM) == "503 bad sequence of commands (#5.5.1)\r\n"
    assert d.say(b"QUIT\r\n") == "221 mx.example.org Goodbye.\r\n" and d.closed


def test_smtp550disconnect(root: QRoot) -> None:
    """REL closes; 502 and 4xx do not."""
    d = make(root, {"SMTP550DISCONNECT": ""})
    assert d.say(b"EXPN x\r\n") == "502 unimplemented (#5.5.1)\r\n" and not d.closed
    assert d.say(FROM + b"RCPT TO:<u@example.net>\r\nNOOP\r\n") == "250 ok\r\n" + REL
    assert d.closed
    d = make(root, {"SMTP550DISCONNECT": ""})
    assert d.say(b"DATA\r\nNOOP\r\n") == "503 MAIL first (#5.5.1)\r\n" and d.closed


def test_greetdelay_flags(root: QRoot) -> None:
    d = make(root, {"GREETDELAY": "5", "DROPRUSHGREET": ""})
    assert (d.sends[0].stutter, d.sends[0].drop_rush) == (5, True)
    assert make(root, {"DROPRUSHGREET": ""}).sends[0].drop_rush is False


def test_lookups_through_the_session(root: QRoot) -> None:
    """RCPTCHECK and RBL lookups answered by the driver."""
    root.control("rbllist", "bl.test reject any Listed here")
    asked: list[Lookup] = []

    def answer(q: Lookup) -> RblAnswer:
        asked.append(q)
        return RblAnswer(("127.0.0.2",))

    d = make(root, {"RBL": ""}, answer=answer)
    assert d.say(FROM) == "553 sorry, your mailserver [192.0.2.10] is rejected by Listed here\r\n"
    d = make(root, {"RBL": "", "RBLONLYHEADER": ""}, answer=answer)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n.\r\n")
    assert d.queued[0][0].startswith(b"X-RBL: (bl.test) tells us Listed here\nReceived: ")
    n = len(asked)
    make(root, {"RBL": "", "RELAYCLIENT": ""}, answer=answer).say(FROM)
    assert len(asked) == n  # a relay client is never looked up


def test_too_long_command(root: QRoot) -> None:
    d = make(root)
    assert d.say(b"NOOP " + b"x" * 20000) == "500 Text line too long.\r\n" and d.closed


def test_timeout(root: QRoot) -> None:
    d = make(root, {})
    root.control("timeoutsmtpd", "2")
    assert make(root).session.read_timeout == 2
    send = d.session.timeout()
    assert send.reply.render() == "451 timeout (#4.4.2)\r\n" and send.close


@pytest.mark.parametrize("phase", list(Phase))
def test_command_table_is_complete(root: QRoot, phase: Phase) -> None:
    """Walk the table: every verb in every phase gets exactly one defined reaction."""
    assert ALLOWED[Phase.COMMAND] == COMMANDS
    for verb in sorted(COMMANDS | {"EXPN", "ETRN", "BDAT", "XYZZY"}):
        d = make(root, {"550GREETING": ""} if phase is Phase.RESTRICTED else {})
        d.session.phase = phase
        if phase is Phase.AUTH:
            continue  # lines belong to the SASL exchange (covered above)
        action = d.session.command(Command(verb, "", verb))
        if verb not in ALLOWED[phase]:
            expected = replies.UNIMPLEMENTED if phase is Phase.COMMAND else replies.BAD_SEQUENCE
            assert isinstance(action, Send) and action.reply == expected
        else:
            assert isinstance(action, (Send, OpenQueue, PrepareTls, CheckLogin))


def test_queue_start_failure_ends_transaction(root: QRoot) -> None:
    d = make(root)
    d.say(FROM + b"RCPT TO:<a@example.org>\r\n")
    assert isinstance(d.session.command(Command("DATA", "", "DATA")), OpenQueue)
    assert d.session.queue_opened(False).reply.render() == "451 qqt failure (#4.3.0)\r\n"
    assert d.session.phase is Phase.COMMAND
    assert d.say(b"RCPT TO:<a@example.org>\r\n") == "503 MAIL first (#5.5.1)\r\n"


def test_550disconnect_after_data_checks_but_not_queue_failures(root: QRoot) -> None:
    d = make(root, {"SMTP550DISCONNECT": ""}, qq_result="Dmail server permanently rejected message (#5.3.0)")
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b".\r\n").startswith("554 mail server") and not d.closed
    d.say(FROM + b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert d.say(b"Delivered-To: x\r\n" * 100 + b"\r\n.\r\n") == replies.TOO_MANY_HOPS.render()
    assert d.closed


def test_auth_failure_closes_under_550disconnect(root: QRoot) -> None:
    d = make(root, {"SMTPAUTH": "", "SMTP550DISCONNECT": ""})
    assert d.say(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\nNOOP\r\n") == "535 authentication failure\r\n"
    assert d.closed

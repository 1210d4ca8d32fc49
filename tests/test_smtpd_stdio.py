"""``qmail-smtpd`` on stdin/stdout as a real process: pipes, an inetd-style socket, and ``sendmail -bs``.

Each test starts ``python -c "...stdio_main()"`` (or sendmail_main) with a known environment, speaks
SMTP over its fd 0/1 and reads what reached the real queue (``queue/todo/N`` via parse_todo).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from qldap.queue.envelope import Envelope
from qldap.queue.layout import create_queue
from tests.conftest import ROOT_DIR, QRoot
from tests.e2e.smtpd import queued

STDIO = [sys.executable, "-c", "import sys; from qldap.cli.smtpd import stdio_main; sys.exit(stdio_main())"]
SENDMAIL_BS = [sys.executable, "-c",
               "import sys; from qldap.cli.inject import sendmail_main; "
               "sys.exit(sendmail_main(['-bs'], prog='sendmail'))"]  # fmt: skip
CLIENT_ENV = {
    "PROTO": "TCP", "TCPREMOTEIP": "192.0.2.10", "TCPREMOTEHOST": "client.test", "TCPREMOTEINFO": "joe",
    "TCPLOCALIP": "192.0.2.1", "TCPLOCALHOST": "mx.example.org",
}  # fmt: skip
REL = "553 sorry, relaying denied from your location [192.0.2.10] (#5.7.1)\r\n"
DATE = r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000"
WAIT = 60  # a safety net against a hung child, not a timing assertion


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org")
    create_queue(qroot.path)
    return qroot


def environ(root: QRoot, extra: dict[str, str]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QLDAP_ROOT": str(root.path), "USER": "tester"}
    env.update(extra)
    return env


class Child:
    """The program with its stdin and stdout as pipes; ``reply()`` reads one whole SMTP reply."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=ROOT_DIR)  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout

    def reply(self) -> str:
        text = b""
        while True:
            line = self.stdout.readline()
            assert line.endswith(b"\r\n"), (text, line)
            text += line
            if line[3:4] == b" ":
                return text.decode()

    def cmd(self, line: str) -> str:
        self.stdin.write(line.encode() + b"\r\n")
        self.stdin.flush()
        return self.reply()

    def finish(self) -> tuple[int, bytes, str]:
        """Close stdin; the exit code, whatever stdout still held, and stderr."""
        if not self.stdin.closed:
            self.stdin.close()
        rest = self.stdout.read()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        return self.proc.wait(WAIT), rest, err


Spawn = Callable[..., Child]


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
        c.proc.wait(WAIT)
        for f in (c.proc.stdin, c.proc.stdout, c.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def spawn(root: QRoot, children: list[Child]) -> Iterator[Spawn]:
    def make(extra: dict[str, str], cmd: list[str] = STDIO) -> Child:
        child = Child(cmd, environ(root, extra))
        children.append(child)
        return child

    yield make


def test_session_queues_a_message_and_quits(root: QRoot, spawn: Spawn) -> None:
    """Greeting, EHLO, a queued message whose Received line shows the environment's client, 221, exit 0."""
    c = spawn({**CLIENT_ENV, "LOGLEVEL": "2"})
    assert c.reply() == "220 mx.example.org ESMTP\r\n"
    ehlo = c.cmd("EHLO a")
    assert ehlo.startswith("250-mx.example.org\r\n") and "250-PIPELINING\r\n" in ehlo
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("DATA") == "354 go ahead punk, make my day\r\n"
    reply = c.cmd("Subject: t\r\n\r\nline one\r\n..dot\r\n.")
    assert re.fullmatch(r"250 ok [0-9]+ qp [0-9]+ by mx\.example\.org\r\n", reply)
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    code, rest, err = c.finish()
    assert (code, rest) == (0, b"")
    (msg,) = queued(root.path)
    assert msg.todo.envelope == Envelope("x@remote.test", ("alice@example.org",))
    lines = msg.message.decode().split("\n")
    assert lines[1] == "Received: from client.test (HELO a) (joe@[192.0.2.10])"
    assert re.fullmatch(rf"          for <alice@example\.org>; {DATE}", lines[4])
    assert lines[3] == "          by mx.example.org (qmail-ldap-1.03) with SMTP"
    assert lines[5:] == ["Subject: t", "", "line one", ".dot", ""]
    assert "qmail-smtpd 1: connection from 192.0.2.10 (client.test) to 192.0.2.1\n" in err


def test_eof_without_quit_ends_the_session_and_queues_nothing(root: QRoot, spawn: Spawn) -> None:
    c = spawn(CLIENT_ENV)
    assert c.reply().startswith("220 ")
    c.cmd("HELO a")
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert c.cmd("DATA").startswith("354 ")
    c.stdin.write(b"Subject: cut off\r\n\r\nhalf a mess")
    code, rest, _ = c.finish()
    assert (code, rest) == (0, b"")
    assert queued(root.path) == []
    assert os.listdir(root.path / "queue" / "todo") == []


def test_pipelined_commands_before_eof_are_all_answered(spawn: Spawn) -> None:
    """stdin at EOF right after the commands (``printf … | qmail-smtpd``): every reply still goes out."""
    c = spawn(CLIENT_ENV)
    c.stdin.write(b"HELO a\r\nNOOP\r\nQUIT\r\n")
    code, rest, _ = c.finish()
    assert code == 0
    assert rest == (b"220 mx.example.org ESMTP\r\n250 mx.example.org\r\n250 ok\r\n"
                    b"221 mx.example.org Goodbye.\r\n")  # fmt: skip


def test_quit_ends_the_process_while_stdin_stays_open(spawn: Spawn) -> None:
    """A client that keeps its end open after QUIT must not keep the server process alive."""
    c = spawn(CLIENT_ENV)
    assert c.reply().startswith("220 ")
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    assert c.proc.wait(WAIT) == 0
    assert not c.stdin.closed
    assert c.stdout.read() == b""


@pytest.mark.parametrize(("relay", "expected"), [(True, "250 ok\r\n"), (False, REL)])
def test_relayclient_comes_from_the_environment(spawn: Spawn, relay: bool, expected: str) -> None:
    env = {**CLIENT_ENV, "RELAYCLIENT": ""} if relay else CLIENT_ENV
    c = spawn(env)
    assert c.reply().startswith("220 ")
    c.cmd("HELO a")
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<someone@foreign.test>") == expected
    assert c.cmd("QUIT").startswith("221 ")
    assert c.finish()[0] == 0


def test_rules_file_is_not_consulted(root: QRoot, spawn: Spawn) -> None:
    """Under tcpserver the rules were applied already: a deny rule for the client changes nothing."""
    root.control("qmail-smtpd.rules", "192.0.2.10:deny\n:deny")
    c = spawn(CLIENT_ENV)
    assert c.reply() == "220 mx.example.org ESMTP\r\n"
    assert c.cmd("QUIT").startswith("221 ")


def test_unreadable_controls_answer_421(root: QRoot, spawn: Spawn) -> None:
    root.control("me", None)
    c = spawn(CLIENT_ENV)
    assert c.reply() == "421 unable to read controls (#4.3.0)\r\n"
    assert c.finish()[1] == b""


def test_sendmail_bs_is_a_trusted_localhost_session(root: QRoot, spawn: Spawn) -> None:
    """sendmail -bs without PROTO: RELAYCLIENT, localhost facts and TCPREMOTEINFO=sendmail-bs."""
    c = spawn({}, SENDMAIL_BS)
    assert c.reply() == "220 mx.example.org ESMTP\r\n"
    assert c.cmd("HELO me") == "250 mx.example.org\r\n"
    assert c.cmd("MAIL FROM:<tester@mx.example.org>") == "250 ok\r\n"
    assert c.cmd("RCPT TO:<someone@foreign.test>") == "250 ok\r\n"
    assert c.cmd("DATA").startswith("354 ")
    assert c.cmd("Subject: via bs\r\n\r\nhello\r\n.").startswith("250 ok ")
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    code, rest, _ = c.finish()
    assert (code, rest) == (0, b"")
    (msg,) = queued(root.path)
    assert msg.todo.envelope == Envelope("tester@mx.example.org", ("someone@foreign.test",))
    lines = msg.message.decode().split("\n")
    assert lines[1] == "Received: from localhost (HELO me) (sendmail-bs@[127.0.0.1])"
    assert lines[3] == "          by localhost (qmail-ldap-1.03) with SMTP"


def test_sendmail_bs_keeps_a_given_proto_environment(spawn: Spawn) -> None:
    """With PROTO already set sendmail adds nothing: no RELAYCLIENT, so a foreign recipient is refused."""
    c = spawn(CLIENT_ENV, SENDMAIL_BS)
    assert c.reply().startswith("220 ")
    c.cmd("HELO a")
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<someone@foreign.test>") == REL
    assert c.cmd("QUIT").startswith("221 ")
    assert c.finish()[0] == 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cert")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=mx.example.org"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem = d / "smtpcert.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


def test_inetd_style_socket_on_fd_0_and_1_with_starttls(root: QRoot, certificate: Path) -> None:
    """As under inetd: one connected socket is both stdin and stdout; STARTTLS passes through the glue.

    TLS 1.2, because under TLS 1.3 a command sent right behind the client's Finished can be dropped by
    server.py's ``discard_buffered()`` after the handshake (asyncio delivers it before start_tls returns).
    """
    root.control("smtpcert", certificate.read_text())
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(STDIO, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.PIPE,
                            env=environ(root, CLIENT_ENV), cwd=ROOT_DIR)  # fmt: skip
    theirs.close()
    try:
        ours.settimeout(WAIT)
        f = ours.makefile("rb")

        def reply() -> bytes:
            text = b""
            while not text or text.split(b"\r\n")[-2][3:4] != b" ":
                text += f.readline()
            return text

        assert reply() == b"220 mx.example.org ESMTP\r\n"
        ours.sendall(b"EHLO a\r\n")
        assert b"250-STARTTLS\r\n" in reply()
        ours.sendall(b"STARTTLS\r\n")
        assert reply() == b"220 ready for tls\r\n"
        f.close()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        tls = ctx.wrap_socket(ours)
        f = tls.makefile("rb")
        tls.sendall(b"EHLO a\r\n")
        assert "STARTTLS" not in reply().decode()
        tls.sendall(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        assert [reply(), reply()] == [b"250 ok\r\n", b"250 ok\r\n"]
        assert reply() == b"354 go ahead punk, make my day\r\n"
        tls.sendall(b"secret\r\n.\r\nQUIT\r\n")
        assert reply().startswith(b"250 ok ")
        assert reply() == b"221 mx.example.org Goodbye.\r\n"
        f.close()
        tls.close()  # as clients do after 221; the server's TLS shutdown then ends at once
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        assert proc.stderr is not None
        proc.stderr.close()
        ours.close()
    (msg,) = queued(root.path)
    by = msg.message.decode().split("\n")[3]
    assert re.fullmatch(r"          by mx\.example\.org \(qmail-ldap-1\.03\) with TLSv1\.2 .*", by), by


def test_rcptcheck_session_ends_with_exit_0(root: QRoot, spawn: Spawn, ldap_base, slapd) -> None:  # type: ignore[no-untyped-def]
    # the LDAP connection RCPTCHECK opened is dropped after the event loop ended; that must not turn
    # an orderly session into "fatal: internal error" and exit 111 (found by tools/conformance)
    root.control("ldapserver", f"127.0.0.1:{slapd.port}")
    root.control("ldapbasedn", ldap_base.dn)
    root.control("ldapobjectclass", "qmailUser")
    ldap_base.load("dn: uid=alice,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: alice\n"
                   "cn: alice\nsn: alice\nmail: alice@example.org\nmailMessageStore: /nonexistent/\n")
    child = spawn({**CLIENT_ENV, "RCPTCHECK": ""})
    assert child.reply().startswith("220 ")
    assert child.cmd("HELO client.test").startswith("250 ")
    assert child.cmd("MAIL FROM:<bob@remote.test>") == "250 ok\r\n"
    assert child.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    assert child.cmd("RCPT TO:<nobody@example.org>").startswith("554 ")
    assert child.cmd("QUIT").startswith("221 ")
    code, rest, err = child.finish()
    assert (code, rest) == (0, b""), err

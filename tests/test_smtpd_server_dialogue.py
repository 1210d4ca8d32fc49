"""The SMTP daemon over real sockets: session start, rules, pipelining, timeouts, TLS, DNS checks, relaying.

Acceptance checks of qmail-smtpd(8) that need I/O (1, 11, 41, 49, 50, 51, 53, 54, 55, 56), the open-relay
battery, the connection limit and the command-line limit.  The daemon runs in-process on 127.0.0.1;
clients connect from 127.0.0.2/127.0.0.3; DNS answers come from the daemon's resolver seam.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qldap.queue.layout import create_queue
from qldap.smtpd import replies
from qldap.smtpd.dns import StaticResolver
from qldap.smtpd.policy import MxAnswer
from tests.conftest import QRoot
from tests.e2e.smtpd import TIMEOUT, Client, ServerThread, options, queued

CLIENT = "127.0.0.2"
OTHER = "127.0.0.3"
REL = replies.relay_denied(CLIENT).render()
PROBE = replies.relay_probe(CLIENT).render()
Start = Callable[..., ServerThread]


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

    def make(
        env: dict[str, str] | None = None, resolver: StaticResolver | None = None, **kw: object
    ) -> ServerThread:
        resolver = resolver or StaticResolver(ptr={CLIENT: "client.test"})
        st = ServerThread(options(root.path, env, **kw), resolver).start()
        running.append(st)
        return st

    yield make
    for st in running:
        st.stop()


def connect(st: ServerThread, source: str = CLIENT) -> Client:
    c = Client(st.addr, source)
    assert c.reply().startswith("220 ")
    return c


def test_greeting_and_helo(root: QRoot, start: Start) -> None:
    """Greeting and HELO, and the session log lines of qmail-smtpd(8) LOG at LOGLEVEL 2 (no command lines)."""
    st = start({"LOGLEVEL": "2"})
    c = Client(st.addr, CLIENT)
    assert c.reply() == "220 mx.example.org ESMTP\r\n"
    root.control("smtpgreeting", "Hi")
    c = Client(st.addr, CLIENT)
    assert c.reply() == "220 mx.example.org ESMTP Hi\r\n"
    assert c.cmd("HELO a") == "250 mx.example.org Hi\r\n"
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    assert c.rest() == b""
    connected = r"qmail-smtpd \d+: connection from 127\.0\.0\.2 \(client\.test\) to 127\.0\.0\.1"
    assert any(re.fullmatch(connected, line) for line in st.log)
    assert not any("HELO" in line for line in st.log)


def test_greeting_variables(root: QRoot, start: Start) -> None:
    """550GREETING's restricted mode; 421GREETING's too."""
    c = Client(start({"550GREETING": ""}).addr, CLIENT)
    assert c.reply() == "554 mx.example.org Sorry, your mail was administratively denied. (#5.7.1)\r\n"
    assert c.cmd("MAIL FROM:<x@remote.test>") == "503 bad sequence of commands (#5.5.1)\r\n"
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"
    c = Client(start({"421GREETING": "Go away"}).addr, CLIENT)
    assert c.reply() == "421 mx.example.org Go away\r\n"
    assert c.cmd("EHLO c") == "421 Service temporarily not available (#4.3.2)\r\n"
    assert c.cmd("QUIT") == "221 mx.example.org Goodbye.\r\n"


def test_unreadable_controls(root: QRoot, start: Start) -> None:
    """qmail-smtpd(8), SESSION START: a broken control file answers ``421 unable to read controls (#4.3.0)``
    and closes, at the start of a session (no ``me``) or when a check needs it mid-session (a corrupt
    locals.cdb)."""
    st = start()
    c = connect(st)
    c.cmd("MAIL FROM:<x@remote.test>")
    root.control("locals.cdb", b"not a cdb")
    c.send("RCPT TO:<alice@example.org>\r\n")
    assert c.rest() == b"421 unable to read controls (#4.3.0)\r\n"
    root.control("locals.cdb", None)
    root.control("me", None)
    assert Client(st.addr, CLIENT).rest() == b"421 unable to read controls (#4.3.0)\r\n"


def test_abrupt_clients_do_not_disturb(root: QRoot, start: Start) -> None:
    """Clients that vanish mid-command or mid-DATA free their slot; the daemon keeps serving."""
    st = start(max_sessions=2)
    for data in (b"MAIL FROM:<x@remote.test>", b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
                 b"DATA\r\nSubject: half"):  # fmt: skip
        for _ in range(2):
            c = connect(st)
            c.send(data)
            c.close()
    deadline = time.monotonic() + 60  # a hang guard: the slots are freed as soon as the closes are read
    while len(st.server.connections if st.server else ()) and time.monotonic() < deadline:
        time.sleep(0.05)
    first, second = connect(st), connect(st)
    assert first.cmd("NOOP") == second.cmd("NOOP") == "250 ok\r\n"
    assert queued(root.path) == []


def test_client_rules_allow_deny_and_variables(root: QRoot, start: Start) -> None:
    """Client rules (127.0.0. for 192.0.2.): the most specific rule wins, deny closes without a byte,
    rule variables reach the session, and an edited rules file applies to the next connection."""
    root.control("qmail-smtpd.rules", '127.0.0.:deny\n127.0.0.2:allow,RELAYCLIENT=""\n')
    st = start()
    c = connect(st, CLIENT)
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<victim@elsewhere.test>") == "250 ok\r\n"
    denied = Client(st.addr, OTHER)
    assert denied.rest() == b""
    root.control("qmail-smtpd.rules", "127.0.0.3:allow\n127.0.0.2:deny\n")
    assert Client(st.addr, CLIENT).rest() == b""
    c = connect(st, OTHER)
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<victim@elsewhere.test>") == replies.relay_denied(OTHER).render()
    root.control("qmail-smtpd.rules", "127.0.0.3:maybe\n")  # unparsable: refuse everyone, say nothing
    assert Client(st.addr, OTHER).rest() == b""


def test_no_ptr_means_unknown_host(root: QRoot, start: Start) -> None:
    """The Received line (no PTR → ``from unknown``, HELO shown); TCPREMOTEHOST unset for ``=`` rules."""
    root.control("qmail-smtpd.rules", '=:allow,RELAYCLIENT=""\n:allow\n')
    st = start(resolver=StaticResolver())
    c = connect(st)
    assert c.cmd("HELO client.test") == "250 mx.example.org\r\n"
    c.cmd("MAIL FROM:<x@remote.test>")
    assert c.cmd("RCPT TO:<u@far.test>") == REL  # the "=" rule (host known) did not apply
    assert c.cmd("RCPT TO:<alice@example.org>") == "250 ok\r\n"
    c.cmd("DATA")
    assert c.cmd("hi\r\n.").startswith("250 ok")
    (msg,) = queued(root.path)
    assert msg.message.split(b"\n")[1] == b"Received: from unknown (HELO client.test) ([127.0.0.2])"


def test_pipelined_packet(root: QRoot, start: Start) -> None:
    """MAIL, RCPT, RCPT, DATA in one packet → 250, 250, 250, 354 in order."""
    c = connect(start())
    c.send(
        "MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<u@a.example.net>\r\nDATA\r\n"
    )
    ok = "250 ok\r\n"
    assert [c.reply() for _ in range(4)] == [ok, ok, ok, "354 go ahead punk, make my day\r\n"]
    c.send("a\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert c.reply().startswith("250 ok ")
    assert [c.reply() for _ in range(3)] == [
        "250 flushed\r\n",
        "250 ok\r\n",
        "221 mx.example.org Goodbye.\r\n",
    ]
    assert queued(root.path)[0].todo.envelope.recipients == ("alice@example.org", "u@a.example.net")


def test_timeout(root: QRoot, start: Start) -> None:
    """With timeoutsmtpd=1: a silent client gets ``451 timeout (#4.4.2)`` and EOF."""
    root.control("timeoutsmtpd", "1")
    c = connect(start())
    assert c.rest() == b"451 timeout (#4.4.2)\r\n"


def test_command_line_too_long(root: QRoot, start: Start) -> None:
    """qmail-smtpd(8), SESSION START: a command line over 16384 octets → ``500 Text line too long.``
    and close."""
    c = connect(start())
    c.send(b"NOOP " + b"x" * 16379 + b"\r\n")
    assert c.reply() == "250 ok\r\n"  # 16384 octets before CRLF: exactly at the limit is fine
    c.send(b"NOOP " + b"x" * 16380 + b"\r\n")
    assert c.rest() == b"500 Text line too long.\r\n"


def test_smtp550disconnect(root: QRoot, start: Start) -> None:
    """REL is followed by EOF."""
    c = connect(start({"SMTP550DISCONNECT": ""}))
    c.cmd("MAIL FROM:<x@remote.test>")
    c.send("RCPT TO:<u@example.net>\r\n")
    assert c.rest() == REL.encode()


RELAY_BATTERY = (
    ("<victim@elsewhere.test>", REL),
    ("<victim%elsewhere.test@relay2.test>", PROBE),  # percent hack
    ("<victim%elsewhere.test@example.org>", PROBE),
    ("<elsewhere.test!victim@example.org>", PROBE),  # bang path
    ("<victim@elsewhere.test@example.org>", PROBE),  # double @
    ("<victim@example.org@elsewhere.test>", PROBE),
    ("<@example.org:victim@elsewhere.test>", REL),  # source route
    ("<@a.test,@b.test:victim@elsewhere.test>", REL),
    ('<"victim@elsewhere.test"@example.org>', PROBE),  # quoted local part
    ('<"alice@example.org"@elsewhere.test>', PROBE),
    ("<u@[198.51.100.7]>", REL),  # IP literal not ours
    ("<victim@elsewhere.test.>", REL),  # trailing dots
    ("<alice@example.org.>", REL),
    ("<u@example.net>", REL),
)


def test_open_relay_battery(root: QRoot, start: Start) -> None:
    """Every relay trick from a client without relay rights is refused with 553; nothing is queued."""
    c = connect(start({"BLOCKRELAYPROBE": ""}))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    for address, expected in RELAY_BATTERY:
        assert c.cmd(f"RCPT TO:{address}") == expected, address
    assert c.cmd("DATA") == "503 RCPT first (#5.5.1)\r\n"
    assert c.cmd("RCPT TO:<postmaster@[127.0.0.1]>") == "250 ok\r\n"  # our own IP literal is local
    c.cmd("DATA")
    assert c.cmd("x\r\n.").startswith("250 ok")
    (msg,) = queued(root.path)
    assert msg.todo.envelope.recipients == ("postmaster@mx.example.org",)
    # without BLOCKRELAYPROBE, every trick aimed at a foreign domain still meets the relay check
    c = connect(start())
    c.cmd("MAIL FROM:<x@remote.test>")
    foreign = [a for a, _ in RELAY_BATTERY if not a.rstrip(">").endswith(("@example.org", 'example.org"'))]
    assert len(foreign) == 10
    for address in foreign:
        assert c.cmd(f"RCPT TO:{address}") == REL, address


def test_connection_limit(root: QRoot, start: Start) -> None:
    """Past max_sessions a client is told 421 at once; a freed slot serves the next one."""
    st = start(max_sessions=2)
    first, second = connect(st), connect(st)
    extra = Client(st.addr, CLIENT)
    assert extra.rest() == replies.SERVICE_UNAVAILABLE.to_bytes()
    assert second.cmd("NOOP") == "250 ok\r\n"
    first.cmd("QUIT")
    deadline = time.monotonic() + 10
    while True:
        again = Client(st.addr, CLIENT)
        greeting = again.reply()
        if greeting.startswith("220 ") or time.monotonic() > deadline:
            break
    assert greeting == "220 mx.example.org ESMTP\r\n"


def test_rbl(root: QRoot, start: Start) -> None:
    """With canned DNS: reject, RBLONLYHEADER tag, no query for a relay client."""
    root.control("rbllist", "bl.test reject any Listed here")
    listed = {"2.0.0.127.bl.test": ["127.0.0.2"]}
    c = connect(start({"RBL": ""}, StaticResolver(a=listed)))
    assert (
        c.cmd("MAIL FROM:<x@remote.test>")
        == f"553 sorry, your mailserver [{CLIENT}] is rejected by Listed here\r\n"
    )
    c = connect(start({"RBL": "", "RBLONLYHEADER": ""}, StaticResolver(a=listed)))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    c.cmd("RCPT TO:<alice@example.org>")
    c.cmd("DATA")
    assert c.cmd("x\r\n.").startswith("250 ok")
    assert queued(root.path)[0].message.split(b"\n")[1] == b"X-RBL: (bl.test) tells us Listed here"
    relay_dns = StaticResolver(a=listed)
    c = connect(start({"RBL": "", "RELAYCLIENT": ""}, relay_dns))
    assert c.cmd("MAIL FROM:<x@remote.test>") == "250 ok\r\n"
    assert [kind for kind, _ in relay_dns.asked] == ["ptr"]


def test_return_mx_check(root: QRoot, start: Start) -> None:
    """With canned DNS; a temporary DNS failure answers 421 and closes."""
    dns = StaticResolver(mx={"good.test": MxAnswer.EXISTS, "flaky.test": MxAnswer.TEMPFAIL})
    c = connect(start({"RETURNMXCHECK": ""}, dns))
    assert c.cmd("MAIL FROM:<a@nxdomain.test>") == "554 refused mailfrom because return MX does not exist\r\n"
    assert c.cmd("MAIL FROM:<>") == "250 ok\r\n"
    assert c.cmd("MAIL FROM:<a@good.test>") == "250 ok\r\n"
    assert c.cmd("MAIL FROM:<a@[192.0.2.7]>") == "250 ok\r\n"
    c.send("MAIL FROM:<a@flaky.test>\r\n")
    assert c.rest() == replies.RETURN_MX_TEMPFAIL.to_bytes()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cert")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=mx.example.org"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem = d / "smtpcert.pem"
    pem.write_bytes((d / "cert.pem").read_bytes() + (d / "key.pem").read_bytes())
    return pem


def test_starttls(root: QRoot, start: Start, certificate: Path) -> None:
    """220 ready for tls, a pipelined NOOP behind STARTTLS is never answered, the
    session restarts under TLS (no STARTTLS offered, 503 for a second one), Received names the cipher."""
    root.control("smtpcert", certificate.read_text())
    st = start()
    c = connect(st)
    assert "250-STARTTLS\r\n" in c.cmd("EHLO a")
    assert c.cmd("STARTTLS x") == "501 Syntax error (no parameters allowed) (#5.5.4)\r\n"
    c.send("STARTTLS\r\nNOOP\r\n")
    assert c.reply() == "220 ready for tls\r\n"
    assert c.buf == b""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock)
    ehlo = c.cmd("EHLO a")
    assert ehlo.startswith("250-mx.example.org\r\n") and "STARTTLS" not in ehlo  # the NOOP got no reply
    assert c.cmd("STARTTLS") == "503 bad sequence of commands (#5.5.1)\r\n"
    c.cmd("MAIL FROM:<x@remote.test>")
    c.cmd("RCPT TO:<alice@example.org>")
    c.cmd("DATA")
    assert c.cmd("x\r\n.").startswith("250 ok")
    received = queued(root.path)[0].message.split(b"\n")[1:5]
    tls_by = rb"          by mx\.example\.org \(qmail-ldap-1\.03\) with TLSv1\.[23] \S+ fingerprint="
    assert re.fullmatch(tls_by + rb"no certificate presented encrypted SMTP", received[2]), received
    root.control("smtpcert", None)
    plain = connect(st)
    assert plain.cmd("STARTTLS") == "502 unimplemented (#5.5.1)\r\n"


def test_starttls_bad_certificate(root: QRoot, start: Start) -> None:
    """qmail-smtpd(8), COMMANDS: a certificate file that cannot be used → 454, the session goes on in
    clear."""
    root.control("smtpcert", "not a certificate")
    c = connect(start())
    assert c.cmd("STARTTLS") == "454 TLS not available: unable to initialize ctx (#4.3.0)\r\n"
    assert c.cmd("NOOP") == "250 ok\r\n"


def test_greetdelay(root: QRoot, start: Start) -> None:
    """A client that talks first gets 554 and EOF; a patient one the whole greeting."""
    st = start({"GREETDELAY": "5", "DROPRUSHGREET": ""})
    rush = socket.create_connection(st.addr, timeout=TIMEOUT, source_address=(CLIENT, 0))  # a hang guard
    rush.sendall(b"EHLO a\r\n")
    rest = Client.__new__(Client)
    rest.sock, rest.buf = rush, b""
    assert rest.rest() == b"554 SMTP protocol violation\r\n"
    st = start({"GREETDELAY": "1", "DROPRUSHGREET": ""})
    patient = Client(st.addr, CLIENT)
    assert patient.reply() == "220 mx.example.org ESMTP\r\n"
    assert patient.cmd("NOOP") == "250 ok\r\n"

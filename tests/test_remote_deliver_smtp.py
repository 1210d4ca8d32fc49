"""deliver_remote over real loopback sockets against a scripted SMTP sink (qmail-send(8), REMOTE DELIVERY).

The sink (:class:`SmtpSink`) is a small asyncio SMTP server scripted per connection: greeting,
EHLO extensions (STARTTLS with a self-signed certificate made by the ``openssl`` CLI, AUTH LOGIN),
a reply per command, a reply (or a dropped connection) after the final dot, slowness.  It records
every command, the raw DATA bytes, whether TLS was on and the AUTH credentials.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from qldap.remote.deliver import deliver_remote, interface_addresses, parse_fib_trie, parse_if_inet6
from qldap.remote.dns import StaticResolver
from qldap.remote.routes import AMBIGUOUS_MX, DnsStatus, SmtpRoutes
from qldap.reports import Letter, Report, delivery_line
from qldap.send.config import SendConfig

T = TypeVar("T")

MSG = b"Subject: hi\n\nhello\n"
SENDER = "alice@example.com"


# -- the sink ---------------------------------------------------------------------------------------


@dataclass
class Script:
    """How the sink behaves on one connection."""

    greeting: str = "220 sink.test ESMTP"
    extensions: tuple[str, ...] = ("8BITMIME",)
    tls: ssl.SSLContext | None = None  # advertise STARTTLS with this server context
    auth: bool = False  # advertise AUTH LOGIN PLAIN
    replies: dict[str, str] = field(default_factory=dict)  # verb → reply, e.g. {"RCPT": "550 no"}
    after_dot: str = "250 ok 1646585986 qp 777"
    drop_after_dot: bool = False
    delay: float = 0.0  # seconds before every reply


@dataclass
class Session:
    """What the sink saw on one connection."""

    peer: str = ""
    commands: list[str] = field(default_factory=list)
    data: bytes | None = None  # raw DATA bytes before the final dot line
    tls: bool = False
    auth: tuple[str, str] | None = None


class SmtpSink:
    """An SMTP server on loopback; ``scripts[i]`` drives connection *i* (the last one repeats)."""

    def __init__(self, scripts: Script | Sequence[Script] = (), host: str = "127.0.0.1", port: int = 0):
        self.scripts = [scripts] if isinstance(scripts, Script) else list(scripts) or [Script()]
        self.host, self.port = host, port
        self.sessions: list[Session] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SmtpSink:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(len(self.sessions), len(self.scripts) - 1)]
        session = Session(peer=writer.get_extra_info("peername")[0])
        self.sessions.append(session)

        async def reply(text: str) -> None:
            if script.delay:
                await asyncio.sleep(script.delay)
            writer.write(text.replace("\n", "\r\n").encode() + b"\r\n")
            await writer.drain()

        try:
            await reply(script.greeting)
            while line := await reader.readline():
                command = line.rstrip(b"\r\n").decode()
                session.commands.append(command)
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO" and verb not in script.replies:
                    features = [*script.extensions]
                    if script.tls is not None and not session.tls:
                        features.append("STARTTLS")
                    if script.auth:
                        features.append("AUTH LOGIN PLAIN")
                    lines = ["sink.test", *features]
                    await reply(
                        "\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}" for i, x in enumerate(lines))
                    )
                elif verb == "STARTTLS" and script.tls is not None and verb not in script.replies:
                    await reply("220 go ahead")
                    await writer.start_tls(script.tls)
                    session.tls = True
                elif verb == "AUTH" and script.auth:
                    await reply("334 VXNlcm5hbWU6")
                    user = base64.b64decode(await reader.readline()).decode()
                    await reply("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(await reader.readline()).decode()
                    session.auth = (user, password)
                    await reply(script.replies.get("AUTH", "235 welcome"))
                elif verb == "DATA":
                    answer = script.replies.get("DATA", "354 go")
                    await reply(answer)
                    if answer.startswith("354"):
                        data = await reader.readline()
                        while data != b".\r\n" and not data.endswith(b"\r\n.\r\n"):
                            chunk = await reader.read(65536)  # the client waits for our answer
                            if not chunk:
                                return  # the client gave up inside DATA: no message arrived
                            data += chunk
                        session.data = data[:-3]
                        if script.drop_after_dot:
                            writer.transport.abort()
                            return
                        await reply(script.after_dot)
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:
                    await reply(script.replies.get(verb, "250 ok"))
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()


def run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a self-signed certificate made by the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=sink.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


@pytest.fixture
def message(tmp_path: Path) -> Path:
    p = tmp_path / "mess"
    p.write_bytes(MSG)
    return p


def config(**changes: object) -> SendConfig:
    """A remote-delivery config; its timeouts only guard against a hang (a test of them sets its own)."""
    base = SendConfig(
        me="mx1.example.com", is_local=lambda _d: False, envnoathost="mx1.example.com",
        helohost="mx1.example.com", timeoutconnect=30, timeoutremote=30,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def routes(**table: str) -> SmtpRoutes:
    return SmtpRoutes.from_mapping({k.replace("_", "."): v for k, v in table.items()})


async def send(tmp: Path, cfg: SendConfig, msg: Path, rcpt: str = "joe@example.net", **kw: object) -> Report:
    return await deliver_remote(tmp, cfg, SENDER, rcpt, msg, tcpto_path=tmp / "tcpto", **kw)  # type: ignore[arg-type]


# -- routes and MX --------------------------------------------------------------------------------


def test_36_smtproutes_relay_with_port_and_no_mx_query(tmp_path: Path, message: Path) -> None:
    async def go() -> tuple[Report, SmtpSink, StaticResolver]:
        resolver = StaticResolver.of(a={"relay.test": ["127.0.0.1"]}, mx={"example.net": [(10, "mx.bad")]})
        async with SmtpSink() as sink:
            cfg = config(smtproutes=routes(example_net=f"relay.test:{sink.port}"))
            report = await send(tmp_path, cfg, message, resolver=resolver)
        return report, sink, resolver

    report, sink, resolver = run(go)
    assert report == Report(
        Letter.SUCCESS, "127.0.0.1 accepted message.\nRemote host said: 250 ok 1646585986 qp 777\n"
    )
    assert resolver.asked == [("A", "relay.test")]
    assert sink.sessions[0].commands[:3] == [
        "EHLO mx1.example.com", f"MAIL FROM:<{SENDER}>", "RCPT TO:<joe@example.net>",
    ]  # fmt: skip
    assert sink.sessions[0].data == b"Subject: hi\r\n\r\nhello\r\n"
    assert sink.sessions[0].commands[-1] == "QUIT"


def _two_mx() -> StaticResolver:
    return StaticResolver.of(
        mx={"example.org": [(20, "mx2.example.org"), (10, "mx1.example.org")]},
        a={"mx1.example.org": ["127.0.0.2"], "mx2.example.org": ["127.0.0.3"]},
    )


def test_37_refusing_best_mx_then_next_mx_in_same_attempt(tmp_path: Path, message: Path) -> None:
    assert not {"127.0.0.2", "127.0.0.3"} & interface_addresses()

    async def go() -> tuple[Report, SmtpSink]:
        async with SmtpSink(host="127.0.0.3") as sink:  # nothing listens on 127.0.0.2:port: refused
            report = await send(tmp_path, config(), message, "joe@example.org",
                                resolver=_two_mx(), port=sink.port)  # fmt: skip
        return report, sink

    report, sink = run(go)
    assert report.letter is Letter.SUCCESS
    assert report.text.startswith("127.0.0.3 accepted message.\n")
    assert len(sink.sessions) == 1


def test_38_self_as_best_mx_is_a_permanent_failure(tmp_path: Path, message: Path) -> None:
    me = sorted(interface_addresses())[0]
    resolver = StaticResolver.of(
        mx={"example.org": [(10, "self.example.org"), (20, "other.example.org")]},
        a={"self.example.org": [me], "other.example.org": ["127.0.0.3"]},
    )
    report = run(lambda: send(tmp_path, config(), message, "joe@example.org", resolver=resolver))
    assert report == Report(Letter.PERMANENT, AMBIGUOUS_MX + "\n")
    assert "isn't in my control/locals file" in report.text and "(#5.4.6)" in report.text


def test_39_cluster_cookie_in_greeting_is_a_loop(tmp_path: Path, message: Path) -> None:
    async def go() -> tuple[Report, SmtpSink]:
        async with SmtpSink(Script(greeting="220 mx ESMTP hi C00kie")) as sink:
            cfg = config(smtpclustercookie="C00kie", smtproutes=routes(example_net=f"127.0.0.1:{sink.port}"))
            return await send(tmp_path, cfg, message), sink

    report, sink = run(go)
    assert report == Report(
        Letter.PERMANENT, "Sorry. Message is looping within cluster, giving up. (#5.4.6)\n"
    )
    assert sink.sessions[0].commands == ["QUIT"]


def test_40_421_greeting_tries_next_mx(tmp_path: Path, message: Path) -> None:
    async def go() -> tuple[Report, SmtpSink, SmtpSink]:
        good = SmtpSink(host="127.0.0.3")
        async with good, SmtpSink(Script(greeting="421 busy"), host="127.0.0.2", port=good.port) as busy:
            report = await send(tmp_path, config(), message, "joe@example.org",
                                resolver=_two_mx(), port=good.port)  # fmt: skip
        return report, busy, good

    report, busy, good = run(go)
    assert report.letter is Letter.SUCCESS and report.text.startswith("127.0.0.3 accepted message.")
    assert len(busy.sessions) == 1 and busy.sessions[0].data is None
    assert good.sessions[0].data == b"Subject: hi\r\n\r\nhello\r\n"


def test_421_on_every_address_is_no_connection(tmp_path: Path, message: Path) -> None:
    async def go() -> Report:
        async with SmtpSink(Script(greeting="421 busy")) as sink:
            return await send(
                tmp_path, config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port}")), message
            )

    assert run(go) == Report(
        Letter.TEMPORARY, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
    )


def relay_run(tmp: Path, script: Script, msg: Path, **cfg_changes: object) -> tuple[Report, SmtpSink]:
    async def go() -> tuple[Report, SmtpSink]:
        async with SmtpSink(script) as sink:
            cfg = config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port}"), **cfg_changes)
            return await send(tmp, cfg, msg), sink

    return run(go)


# -- the dialogue over the wire -------------------------------------------------------------------


def test_41_451_after_dot_is_a_deferral_logged_as_failed_after_sending(tmp_path: Path, message: Path) -> None:
    report, _ = relay_run(tmp_path, Script(after_dot="451 try later"), message)
    assert report == Report(
        Letter.TEMPORARY, "127.0.0.1 failed after I sent the message.\nRemote host said: 451 try later\n"
    )
    line = delivery_line(7, report)
    assert line.startswith("delivery 7: deferral: ") and "failed_after_I_sent_the_message" in line


def test_42_connection_dropped_after_dot_is_a_possible_duplicate(tmp_path: Path, message: Path) -> None:
    report, sink = relay_run(tmp_path, Script(drop_after_dot=True), message)
    assert sink.sessions[0].data == b"Subject: hi\r\n\r\nhello\r\n"
    assert report == Report(
        Letter.TEMPORARY, "Connected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n"
    )
    assert "Possible_duplicate!" in delivery_line(1, report)


def test_43_partial_final_line_fails_before_any_body_is_sent(tmp_path: Path) -> None:
    msg = tmp_path / "partial"
    msg.write_bytes(b"Subject: x\n\nno newline")
    report, sink = relay_run(tmp_path, Script(), msg)
    assert report == Report(
        Letter.PERMANENT, "SMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
    )
    assert sink.sessions[0].data is None


def test_44_dot_stuffing_and_crlf_on_the_wire(tmp_path: Path) -> None:
    msg = tmp_path / "dots"
    msg.write_bytes(b"Subject: d\n\n.x\n..y\n.\nend\n")
    report, sink = relay_run(tmp_path, Script(), msg)
    assert report.letter is Letter.SUCCESS
    assert sink.sessions[0].data == b"Subject: d\r\n\r\n..x\r\n...y\r\n..\r\nend\r\n"


def test_45_size_is_sent_only_when_advertised(tmp_path: Path) -> None:
    msg = tmp_path / "big"
    msg.write_bytes(b"Subject: s\n\n" + b"x" * 200 + b"\n")
    size = msg.stat().st_size
    _, sized = relay_run(tmp_path, Script(extensions=("SIZE 1000000",)), msg)
    _, plain = relay_run(tmp_path, Script(), msg)
    assert sized.sessions[0].commands[1] == f"MAIL FROM:<{SENDER}> SIZE={size + size // 32 + 1}"
    assert plain.sessions[0].commands[1] == f"MAIL FROM:<{SENDER}>"


def test_recipient_550_bounces_with_both_texts(tmp_path: Path, message: Path) -> None:
    report, sink = relay_run(tmp_path, Script(replies={"RCPT": "550 no such user"}), message)
    assert report == Report(
        Letter.PERMANENT,
        "127.0.0.1 does not like recipient.\nRemote host said: 550 no such user\nGiving up on 127.0.0.1.\n",
    )
    assert "DATA" not in sink.sessions[0].commands


def test_multiline_reply_text_is_kept_whole(tmp_path: Path, message: Path) -> None:
    report, _ = relay_run(
        tmp_path, Script(replies={"MAIL": "452-4.2.2 mailbox full\n452 try later"}), message
    )
    assert report == Report(
        Letter.TEMPORARY,
        "Connected to 127.0.0.1 but sender was rejected.\nRemote host said: 452-4.2.2 mailbox full\n"
        "452 try later\n",
    )


def test_slow_server_times_out_as_connection_died(tmp_path: Path, message: Path) -> None:
    report, _ = relay_run(tmp_path, Script(delay=2.5), message, timeoutremote=1)
    assert report == Report(Letter.TEMPORARY, "Connected to 127.0.0.1 but connection died. (#4.4.2)\n")


def test_outgoingip_is_the_source_address(tmp_path: Path, message: Path) -> None:
    report, sink = relay_run(tmp_path, Script(), message, outgoingip="127.0.0.9")
    assert report.letter is Letter.SUCCESS
    assert sink.sessions[0].peer == "127.0.0.9"


def test_invalid_outgoingip_defers(tmp_path: Path, message: Path) -> None:
    report, sink = relay_run(tmp_path, Script(), message, outgoingip="not-an-ip")
    assert report == Report(Letter.TEMPORARY, "invalid ipaddr in control/outgoingip (#4.3.0)\n")
    assert sink.sessions == []


def test_unreadable_message_defers(tmp_path: Path) -> None:
    report, sink = relay_run(tmp_path, Script(), tmp_path / "missing")
    assert report == Report(Letter.TEMPORARY, "Unable to read message. (#4.3.0)\n")
    assert sink.sessions == []


# -- DNS --------------------------------------------------------------------------------------------


def test_47_nxdomain_fails_and_servfail_defers(tmp_path: Path, message: Path) -> None:
    resolver = StaticResolver.of(mx={"tmp.example": DnsStatus.TEMPFAIL})
    nx = run(lambda: send(tmp_path, config(), message, "joe@nx.example", resolver=resolver))
    temp = run(lambda: send(tmp_path, config(), message, "joe@tmp.example", resolver=resolver))
    assert nx == Report(Letter.PERMANENT, "Sorry, I couldn't find any host named nx.example. (#5.1.2)\n")
    assert temp == Report(Letter.TEMPORARY, "Sorry, I couldn't find any host by that name. (#4.1.2)\n")


def test_ip_literal_domain_is_used_directly(tmp_path: Path, message: Path) -> None:
    async def go() -> tuple[Report, StaticResolver]:
        resolver = StaticResolver()
        async with SmtpSink(host="127.0.0.3") as sink:
            report = await send(
                tmp_path, config(), message, "joe@[127.0.0.3]", resolver=resolver, port=sink.port
            )
        return report, resolver

    report, resolver = run(go)
    assert report.letter is Letter.SUCCESS and resolver.asked == []


# -- TLS and AUTH -------------------------------------------------------------------------------------


def test_48_starttls_is_used_and_reported(tmp_path: Path, message: Path, server_tls: ssl.SSLContext) -> None:
    report, sink = relay_run(tmp_path, Script(tls=server_tls), message)
    session = sink.sessions[0]
    assert session.tls and session.commands[:3] == [
        "EHLO mx1.example.com",
        "STARTTLS",
        "EHLO mx1.example.com",
    ]
    assert session.data == b"Subject: hi\r\n\r\nhello\r\n"
    assert report.letter is Letter.SUCCESS
    assert report.text.startswith("127.0.0.1 accepted message.\nRemote host said: 250 ok")
    assert "STARTTLS proto=TLSv1." in report.text and "; cipher=" in report.text
    assert "; fingerprint=" in report.text


def test_starttls_refused_continues_in_clear(
    tmp_path: Path, message: Path, server_tls: ssl.SSLContext
) -> None:
    report, sink = relay_run(tmp_path, Script(tls=server_tls, replies={"STARTTLS": "454 not now"}), message)
    assert report.letter is Letter.SUCCESS and "STARTTLS" not in report.text
    assert not sink.sessions[0].tls and sink.sessions[0].data is not None


def test_auth_login_with_smtproutes_credentials(
    tmp_path: Path, message: Path, server_tls: ssl.SSLContext
) -> None:
    async def go() -> tuple[Report, SmtpSink]:
        async with SmtpSink(Script(auth=True, tls=server_tls)) as sink:
            cfg = config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port} carol s3cret pass"))
            return await send(tmp_path, cfg, message), sink

    report, sink = run(go)
    assert report.letter is Letter.SUCCESS
    session = sink.sessions[0]
    assert session.tls and session.auth == ("carol", "s3cret pass")
    assert f"MAIL FROM:<{SENDER}> AUTH=<{SENDER}>" in session.commands


def test_auth_needed_but_not_offered(tmp_path: Path, message: Path) -> None:
    async def go() -> Report:
        async with SmtpSink(Script()) as sink:
            cfg = config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port} carol pw"))
            return await send(tmp_path, cfg, message)

    assert run(go) == Report(
        Letter.TEMPORARY, "Connected to 127.0.0.1 but no SMTP AUTH support detected but needed.\n"
    )


def test_auth_rejected_password(tmp_path: Path, message: Path) -> None:
    async def go() -> Report:
        async with SmtpSink(Script(auth=True, replies={"AUTH": "535 bad password"})) as sink:
            cfg = config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port} carol pw"))
            return await send(tmp_path, cfg, message)

    assert run(go) == Report(
        Letter.PERMANENT,
        "Connected to 127.0.0.1 but authentication was rejected (password).\n"
        "Remote host said: 535 bad password\n",
    )


# -- this host's addresses ----------------------------------------------------------------------------

FIB = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 198.51.100.4
        /32 host LOCAL
"""


def test_interface_addresses_from_proc_texts() -> None:
    assert parse_fib_trie(FIB) == {"127.0.0.1", "198.51.100.4"}
    inet6 = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000002 04 40 00 82     eth0\n"
    )
    assert parse_if_inet6(inet6) == {"::1", "fd00::2"}
    assert "127.0.0.1" in interface_addresses()


def test_broken_tls_handshake_is_tls_not_available(tmp_path: Path, message: Path) -> None:
    script = Script(extensions=("STARTTLS",), replies={"STARTTLS": "220 go ahead"})  # then plain text
    report, sink = relay_run(tmp_path, script, message)
    assert report.letter is Letter.TEMPORARY and report.text.startswith("TLS not available: ")
    assert sink.sessions[0].data is None


def test_bad_tlsremoteciphers_is_tls_not_available(
    tmp_path: Path, message: Path, server_tls: ssl.SSLContext
) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "tlsremoteciphers").write_text("NO-SUCH-CIPHER\n")
    report, sink = relay_run(tmp_path, Script(tls=server_tls), message)
    assert report == Report(Letter.TEMPORARY, "TLS not available: No cipher can be selected.\n")
    assert sink.sessions[0].data is None


def test_ehlo_refused_falls_back_to_helo(tmp_path: Path, message: Path) -> None:
    report, sink = relay_run(tmp_path, Script(replies={"EHLO": "502 unknown"}), message)
    assert report.letter is Letter.SUCCESS
    assert sink.sessions[0].commands[:2] == ["EHLO mx1.example.com", "HELO mx1.example.com"]

"""QMQP over loopback: qmqp_send (qmail-qmqpc) against serve_qmqpd (qmail-qmqpd) and a real queue.

Checks the netstring codec, that a submission ends in ``queue/todo/N`` with the QMQP Received line,
the server's replies (``Kok <time> qp <qp>``, NUL addresses, size limit, queue failure) and the
client's caller texts for every way a submission can end (qmail-queue(8), EXIT STATUS and qmail-qmqpd(8)).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from qldap.queue.envelope import Envelope, TodoEntry, parse_todo
from qldap.queue.inject import Injector
from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from qldap.remote.dns import StaticResolver
from qldap.remote.qmqp import (
    MessageParts,
    NetstringError,
    QmqpSettings,
    netstring,
    parse_netstrings,
    qmqp_send,
)
from qldap.remote.qmqpd import BAD_ADDRESS, QmqpServer, qmqp_received, serve_qmqpd
from qldap.remote.routes import DnsStatus
from tests.conftest import QRoot

T = TypeVar("T")
MSG = b"Subject: q\n\nbody line\n"


@dataclass
class Member:
    """A cluster member: a qmail root with a queue and a QMQP server on loopback."""

    root: Path
    host: str
    port: int

    @property
    def layout(self) -> QueueLayout:
        return QueueLayout.of(self.root)

    def queued(self) -> list[tuple[TodoEntry, bytes]]:
        """(todo entry, mess bytes) of every queued message."""
        out = []
        for name in sorted(os.listdir(self.layout.dir("todo")), key=int):
            number = int(name)
            entry = parse_todo(Path(self.layout.todo(number)).read_bytes())
            out.append((entry, Path(self.layout.mess(number)).read_bytes()))
        return out


def member_root(base: Path, me: str) -> Path:
    root = QRoot(base / me)
    root.control("me", me)
    create_queue(root.path, current_user_ids())
    return root.path


async def with_member(
    root: Path, body: Callable[[Member], Awaitable[T]], host: str = "127.0.0.1", port: int = 0
) -> T:
    listener, injector = await serve_qmqpd(root, host, port, ids=current_user_ids())
    try:
        return await body(Member(root, host, listener.sockets[0].getsockname()[1]))
    finally:
        listener.close()
        await listener.wait_closed()
        injector.close()


def settings(port: int, **kw: object) -> QmqpSettings:
    """Client settings whose timeouts only guard against a hang: no test here waits for one to fire."""
    return QmqpSettings(port=port, timeoutconnect=30, timeout=30, **kw)  # type: ignore[arg-type]


# -- netstrings ------------------------------------------------------------------------------------


def test_netstring_codec() -> None:
    assert netstring(b"") == b"0:,"
    assert netstring(b"hello") == b"5:hello,"
    assert parse_netstrings(b"5:hello,0:,3:a,b,") == [b"hello", b"", b"a,b"]
    for bad in (b"5:hell,", b"x:,", b"3:abc", b":abc,", b"12345678901234:x,"):
        with pytest.raises(NetstringError):
            parse_netstrings(bad)


def test_received_line_layout() -> None:
    assert qmqp_received(None, "192.0.2.1", "mx2.example.com", 1646585986) == (
        b"Received: from unknown ([192.0.2.1])\n"
        b"          by mx2.example.com (qmail-ldap-1.03) with QMQP; 6 Mar 2022 16:59:46 -0000\n"
    )
    assert qmqp_received("evil\nX: y", "192.0.2.1", "m", 0).startswith(
        b"Received: from evil?X:?y ([192.0.2.1])\n"
    )


# -- end to end --------------------------------------------------------------------------------------


def test_submission_is_queued_with_the_qmqp_received_line(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> tuple[str, list[tuple[TodoEntry, bytes]]]:
        text = await qmqp_send(m.host, MSG, "alice@example.com", ["bob@example.com", "carol@example.com"],
                               settings=settings(m.port))  # fmt: skip
        return text, m.queued()

    text, queued = asyncio.run(with_member(root, body))
    assert text == ""
    [(entry, mess)] = queued
    assert entry.envelope == Envelope("alice@example.com", ("bob@example.com", "carol@example.com"))
    assert entry.uid == os.getuid()
    lines = mess.split(b"\n")
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked by uid \d+\); .* -0000", lines[0])
    assert lines[1] == b"Received: from unknown ([127.0.0.1])"
    assert re.fullmatch(rb"          by mx2\.example\.com \(qmail-ldap-1\.03\) with QMQP; .* -0000", lines[2])
    assert mess.endswith(b"\n" + MSG)


def test_message_parts_stream_a_file_after_a_prefix(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")
    big = tmp_path / "big"
    big.write_bytes(b"Subject: big\n\n" + b"0123456789abcdef\n" * 20000)  # several chunks

    async def body(m: Member) -> tuple[str, list[tuple[TodoEntry, bytes]]]:
        parts = MessageParts((b"X-First: yes\n", big))
        return await qmqp_send(
            [m.host], parts, "", ["bob@example.com"], settings=settings(m.port)
        ), m.queued()

    text, [(entry, mess)] = asyncio.run(with_member(root, body))
    assert text == "" and entry.envelope == Envelope("", ("bob@example.com",))
    assert mess.endswith(b"X-First: yes\n" + big.read_bytes())


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def request(message: bytes, *addresses: bytes) -> bytes:
    return netstring(netstring(message) + b"".join(netstring(a) for a in addresses))


def test_server_replies_on_the_wire(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> list[bytes]:
        async def ask(data: bytes) -> bytes:
            return await asyncio.to_thread(raw_request, m.port, data)

        return [
            await ask(request(MSG, b"a@x", b"b@y")),
            await ask(request(MSG, b"a@x", b"b\0@y")),
            await ask(b"12:not qmqp at all,"),
            await ask(b"garbage"),
        ]

    ok, nul, bad, garbage = asyncio.run(with_member(root, body))
    text = parse_netstrings(ok)[0].decode()
    assert re.fullmatch(r"Kok \d+ qp \d+", text)
    assert parse_netstrings(nul) == [BAD_ADDRESS.encode()]
    assert bad == b"" and garbage == b""
    assert len(os.listdir(QueueLayout.of(root).dir("todo"))) == 1


def test_nul_address_is_a_permanent_refusal_for_the_client(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> str:
        return await qmqp_send(m.host, MSG, "a@x", ["b\0@y"], settings=settings(m.port))

    assert asyncio.run(with_member(root, body)) == "Dmail server permanently rejected message (#5.3.0)"


def test_databytes_limits_the_request(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")
    QRoot(root).control("databytes", "100")

    async def body(m: Member) -> tuple[str, bytes]:
        text = await qmqp_send(m.host, b"x" * 200 + b"\n", "a@x", ["b@y"], settings=settings(m.port))
        raw = await asyncio.to_thread(raw_request, m.port, request(b"x" * 200, b"a@x", b"b@y"))
        return text, raw

    text, raw = asyncio.run(with_member(root, body))
    assert text == "Dmail server permanently rejected message (#5.3.0)"
    assert parse_netstrings(raw) == [b"Dsorry, that message size exceeds my databytes limit (#5.3.4)"]


def test_queue_failure_is_a_temporary_refusal(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")
    injector = Injector(tmp_path / "no-such-root", ids=current_user_ids())
    server = QmqpServer(injector, "mx2.example.com", how="by uid 0", uid=0)

    async def go() -> tuple[str, bytes]:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            text = await qmqp_send("127.0.0.1", MSG, "a@x", ["b@y"], settings=settings(port))
            raw = await asyncio.to_thread(raw_request, port, request(MSG, b"a@x", b"b@y"))
            return text, raw
        finally:
            listener.close()
            injector.close()

    text, raw = asyncio.run(go())
    assert text == "Zmail server temporarily rejected message (#4.3.0)"
    assert parse_netstrings(raw)[0].startswith(b"Zqq ")
    assert os.listdir(QueueLayout.of(root).dir("todo")) == []


def free_port(ip: str) -> int:
    s = socket.socket()
    s.bind((ip, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_qmqpservers_first_that_connects_answers(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")
    port = free_port("127.0.0.3")

    async def body(m: Member) -> str:  # 127.0.0.2:port refuses, 127.0.0.3:port is the member
        return await qmqp_send(["not-an-ip", "127.0.0.2", "127.0.0.3"], MSG, "a@x", ["b@y"],
                               settings=settings(m.port))  # fmt: skip

    assert asyncio.run(with_member(root, body, host="127.0.0.3", port=port)) == ""
    assert len(os.listdir(QueueLayout.of(root).dir("todo"))) == 1


def test_client_caller_texts_without_a_server() -> None:
    port = free_port("127.0.0.2")
    resolver = StaticResolver.of(a={"down.example": DnsStatus.TEMPFAIL, "mx.example": ["127.0.0.2"]})

    async def go() -> list[str]:
        async def send(target: str | list[str]) -> str:
            return await qmqp_send(target, MSG, "a@x", ["b@y"], settings=settings(port), resolver=resolver)

        return [
            await send("nx.example"),
            await send("down.example"),
            await send("mx.example"),
            await send([]),
        ]

    assert asyncio.run(go()) == [
        "Dmail server permanently rejected message (#5.3.0)",
        "Zmail server temporarily rejected message (#4.3.0)",
        "Zconnection to mail server rejected (#4.4.1)",
        "Zqq unable to read configuration (#4.3.0)",
    ]


def test_server_hanging_up_without_reply_is_a_dialogue_failure(tmp_path: Path) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    async def go() -> tuple[str, str]:
        listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            hung = await qmqp_send("127.0.0.1", MSG, "a@x", ["b@y"], settings=settings(port))
            unreadable = await qmqp_send(
                "127.0.0.1", tmp_path / "missing", "a@x", ["b@y"], settings=settings(port)
            )
            return hung, unreadable
        finally:
            listener.close()

    assert asyncio.run(go()) == ("Zcommunication with mail server failed (#4.4.2)", "Zqq read error (#4.3.0)")


def test_qmqpcip_is_the_source_address(tmp_path: Path) -> None:
    root = member_root(tmp_path, "mx2.example.com")

    async def body(m: Member) -> str:
        return await qmqp_send(m.host, MSG, "a@x", ["b@y"], settings=settings(m.port, bind="127.0.0.9"))

    assert asyncio.run(with_member(root, body)) == ""
    [(_, mess)] = Member(root, "", 0).queued()
    assert b"Received: from unknown ([127.0.0.9])\n" in mess

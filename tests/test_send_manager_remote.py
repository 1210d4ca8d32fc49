"""The remote channel end to end: ``qldap send`` → the real remote delivery → an SMTP sink on loopback.

The sink is reached through ``smtproutes``, so no DNS is involved.  It accepts every recipient except
``nobody@example.net`` (550), which must come back as a bounce delivered to the sender, through the
same route.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_send_manager_support import ManagerProcess, make_root, put, queue_files

pytest.importorskip("qldap.remote.deliver")


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class Sink:
    port: int
    messages: list[Received] = field(default_factory=list)


class _Handler(socketserver.StreamRequestHandler):
    sink: Sink

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._say("220 sink.test ESMTP")
        sender, rcpts = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250 sink.test")
            elif verb == "MAIL":
                sender, rcpts = re.search(r"<(.*?)>", cmd).group(1), []  # type: ignore[union-attr]
                self._say("250 ok")
            elif verb == "RCPT":
                rcpt = re.search(r"<(.*?)>", cmd).group(1)  # type: ignore[union-attr]
                if rcpt == "nobody@example.net":
                    self._say("550 5.1.1 no such user")
                else:
                    rcpts.append(rcpt)
                    self._say("250 ok")
            elif verb == "DATA":
                self._say("354 go ahead")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.sink.messages.append(Received(sender, rcpts, bytes(data).replace(b"\r\n", b"\n")))
                self._say("250 ok 1 qp 2")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("250 ok")


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    box = Sink(server.server_address[1])
    _Handler.sink = box
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


def test_remote_delivery_and_bounce_through_smtproutes(tmp_path: Path, sink: Sink) -> None:
    root = tmp_path / "q"
    layout = make_root(root, {"smtproutes": f"example.net:127.0.0.1:{sink.port}"})
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        number = put(
            root, "alice@example.net", ["bob@example.net", "nobody@example.net"], b"Subject: r\n\nhi\n"
        )
        mgr.wait_for(rf"^end msg {number}$")
        success = mgr.wait_for(
            r"^delivery \d+: success: 127.0.0.1_accepted_message./Remote_host_said:_250_ok"
        )
        assert success
        failure = mgr.wait_for(r"^delivery \d+: failure: ")[0]
        assert "127.0.0.1_does_not_like_recipient./Remote_host_said:_550_5.1.1_no_such_user/" in failure
        mgr.wait_for(r"^bounce msg \d+ qp \d+$")
        mgr.wait_for(r"^end msg ", count=2)
        by_rcpt = {tuple(m.recipients): m for m in sink.messages}
        assert by_rcpt[("bob@example.net",)].sender == "alice@example.net"
        assert by_rcpt[("bob@example.net",)].data.endswith(b"Subject: r\n\nhi\n")
        bounce = by_rcpt[("alice@example.net",)]
        assert bounce.sender == ""
        text = bounce.data.decode()
        assert re.match(r"Received: \(qmail \d+ invoked for bounce\); \d", text)
        assert "\n<nobody@example.net>:\n127.0.0.1 does not like recipient.\n" in text
        assert "Remote host said: 550 5.1.1 no such user\nGiving up on 127.0.0.1.\n" in text
        assert "--- Below this line is a copy of the message.\n\nReturn-Path: <alice@example.net>\n" in text
        assert queue_files(layout) == []
    finally:
        assert mgr.stop() == 0


def test_refused_connection_defers_without_bounce(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    root = tmp_path / "q"
    layout = make_root(root, {"smtproutes": f"example.net:127.0.0.1:{closed}"})
    mgr = ManagerProcess(root, tmp_path / "log")
    try:
        mgr.wait_for(r"^qldap send: ready$")
        number = put(root, "alice@example.net", ["bob@example.net"])
        mgr.wait_for(r"^delivery 1: deferral: ")
        assert f"remote/{number % 23}/{number}" in queue_files(layout)
        assert not any(x.startswith("bounce msg") for x in mgr.lines())
    finally:
        assert mgr.stop() == 0

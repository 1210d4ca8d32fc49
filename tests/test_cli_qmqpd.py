"""`qldap qmqpd` as a daemon: QMQP in, queued; SIGHUP harmless; SIGTERM exit 0; services.yaml knows it."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

from qldap.control.services import Daemon, parse_services
from qldap.queue.envelope import parse_todo
from qldap.queue.layout import create_queue
from qldap.remote.qmqp import QmqpSettings, qmqp_send
from tests.conftest import QRoot


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_qmqpd_daemon_queues_and_stops(qroot: QRoot) -> None:
    create_queue(qroot.path)
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "qldap.cli.qldap", "qmqpd", "--root", str(qroot.path),
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == f"qldap qmqpd: listening on 127.0.0.1:{port}\n"
        proc.send_signal(signal.SIGHUP)
        text = asyncio.run(qmqp_send("127.0.0.1", b"Subject: via qmqp\n\nhi\n", "a@member.example",
                                     ["b@example.com"], settings=QmqpSettings(port=port, timeoutconnect=5)))
        assert text == ""
        todo = list((qroot.path / "queue" / "todo").iterdir())
        assert len(todo) == 1
        env = parse_todo(todo[0].read_bytes()).envelope
        assert (env.sender, env.recipients) == ("a@member.example", ("b@example.com",))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_services_yaml_has_a_qmqpd_section(qroot: QRoot) -> None:
    services = parse_services('qmqpd:\n  listen: ["10.0.0.1:628"]\n', qroot.path)
    spec = services.get(Daemon.QMQPD)
    assert spec is not None and [str(x) for x in spec.listen] == ["10.0.0.1:628"]

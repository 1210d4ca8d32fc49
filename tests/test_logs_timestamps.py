"""LOGTIMESTAMPS applies to the queue manager's and the POP3 daemon's log lines too."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from qldap.queue.layout import create_queue
from tests.conftest import QRoot

TAI = re.compile(r"^@4000[0-9a-f]{20} ")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _first_line_matching(proc: subprocess.Popen[str], needle: str) -> str:
    assert proc.stderr is not None
    for _ in range(50):
        line = proc.stderr.readline()
        if needle in line or not line:
            return line
    return ""


def test_send_lines_carry_tai64n(qroot: QRoot) -> None:
    create_queue(qroot.path)
    env = dict(os.environ, LOGTIMESTAMPS="tai64n")
    proc = subprocess.Popen([sys.executable, "-m", "qldap.cli.qldap", "send", "--root", str(qroot.path)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _first_line_matching(proc, "status: local")
        assert TAI.match(line), line
    finally:
        proc.terminate()
        proc.wait(30)


def test_pop3d_lines_carry_iso(qroot: QRoot) -> None:
    (qroot.path / "directory.ldif").write_text("dn: dc=example,dc=com\nobjectClass: dcObject\ndc: example\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LOGTIMESTAMPS="iso")
    proc = subprocess.Popen([sys.executable, "-m", "qldap.cli.qldap", "pop3d", "--root", str(qroot.path),
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _first_line_matching(proc, "listening on")
        assert ISO.match(line) and line.rstrip().endswith(f"qldap pop3d: listening on 127.0.0.1:{port}"), line
    finally:
        proc.terminate()
        proc.wait(30)

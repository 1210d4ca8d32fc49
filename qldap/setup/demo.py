"""`qldap demo`: a zero-setup tour on the embedded directory — no slapd, no root needed.

Creates a temporary root with the sample directory, starts the SMTP daemon and the queue manager on
free loopback ports, sends one mail through SMTP to a demo user, waits until it lands in the Maildir,
prints where it landed and its header, then stops everything (``--keep`` leaves it running).
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from qldap.setup.demo_ldif import DEMO_DOMAIN, DEMO_PASSWORD
from qldap.setup.init import InitOptions, init_root

ME = "mail.example.com"
READY_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 30.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(root: Path, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed by the OS at exit
    return subprocess.Popen(
        [sys.executable, "-m", "qldap.cli.qldap", *args, "--root", str(root)],
        stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
    )  # fmt: skip


def _wait_for(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _log_says(log: Path, text: str) -> bool:
    try:
        return text in log.read_text(errors="replace")
    except OSError:
        return False


def run_demo(*, keep: bool, out: TextIO) -> int:
    """Run the demo; returns the exit code."""
    base = Path(tempfile.mkdtemp(prefix="qldap-demo-"))
    base.chmod(0o755)  # deliveries may run as another uid (nobody when started as root)
    root = base / "qmail"
    init_root(InitOptions(root=root, me=ME, demo=True))
    port = free_port()
    logs = base / "logs"
    logs.mkdir()
    procs = [
        _start(root, ["smtpd", "--listen", f"127.0.0.1:{port}", "--rules",
                      str(root / "control" / "qmail-smtpd.rules")], logs / "smtpd.log"),
        _start(root, ["send"], logs / "send.log"),
    ]
    try:
        _wait_for(lambda: _log_says(logs / "smtpd.log", "listening on"), READY_TIMEOUT, "qldap smtpd")
        _wait_for(lambda: _log_says(logs / "send.log", "ready"), READY_TIMEOUT, "qldap send")
        out.write(f"qldap demo: root {root}\n")
        out.write(f"qldap demo: smtpd listening on 127.0.0.1:{port}, queue manager running\n")
        rcpt = f"alice@{DEMO_DOMAIN}"
        body = (
            f"From: Bob <bob@remote.example>\r\nTo: Alice <{rcpt}>\r\nSubject: Hello from qldap demo\r\n"
            f"\r\nThis message went SMTP -> queue -> LDIF directory lookup -> Maildir.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("demo.client")
            smtp.mail("bob@remote.example")
            resp = smtp.rcpt(rcpt)
            smtp.data(body.encode())
            out.write(f"qldap demo: SMTP accepted the message for <{rcpt}> ({resp[0]} {resp[1].decode()})\n")
        new = root / "mail" / "alice" / "Maildir" / "new"
        _wait_for(lambda: any(new.iterdir()), DELIVERY_TIMEOUT, "delivery to alice's Maildir")
        landed = sorted(new.iterdir())[0]
        out.write(f"qldap demo: delivered to {landed}\n\n")
        text = landed.read_bytes().decode("utf-8", "replace")
        out.write(text.split("\n\n", 1)[0] + "\n\n")
        if keep:
            out.write(
                "qldap demo: still running (--keep). Try:\n"
                f"  swaks --server 127.0.0.1:{port} --to bob@{DEMO_DOMAIN}\n"
                f"  QLDAP_ROOT={root} qmail-ldaplookup -m alice@{DEMO_DOMAIN}\n"
                f"  demo users alice bob carol dave erin frank, password '{DEMO_PASSWORD}'\n"
                f"  stop with: kill {' '.join(str(p.pid) for p in procs)}\n"
            )
            return 0
        return 0
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        out.write(f"qldap demo: failed: {exc}\n")
        for name in ("smtpd", "send"):
            out.write(f"--- {name} log ---\n{(logs / f'{name}.log').read_text(errors='replace')[-3000:]}\n")
        return 111
    finally:
        if not keep:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            shutil.rmtree(base, ignore_errors=True)

"""`qldap demo`: a zero-setup tour on the embedded directory — no slapd, no root needed.

Creates a temporary root with the sample directory, starts the SMTP daemon, the queue manager and the
POP3 daemon on free loopback ports, sends one mail through SMTP to a demo user, waits until it lands
in the Maildir, reads it back over POP3, prints where it landed and its header, then stops the daemons.

Why the files stay: the point of the demo is the file it shows, so the root is kept after a clean run
and the last line is the command that removes it; ``--keep`` leaves the daemons running as well and
prints the commands to talk to them (SMTP, POP3 with curl) and to stop them.  Each daemon runs in its
own process group, which is what the printed stop command names, so nothing else is touched.
"""

from __future__ import annotations

import os
import poplib
import shlex
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


def _pop3_check(port: int, user: str, password: str) -> int:
    """Log in over POP3 with USER/PASS (as curl does) and return the number of messages.

    The session ends without QUIT, so the mailbox is left as it was: a QUIT would move the message
    from new/ to cur/ and the path the demo prints would no longer exist.
    """
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        count, _size = pop.stat()
        pop.retr(1)
        return int(count)
    finally:
        pop.close()


def run_demo(*, keep: bool, out: TextIO) -> int:
    """Run the demo; returns the exit code."""
    base = Path(tempfile.mkdtemp(prefix="qldap-demo-"))
    base.chmod(0o755)  # deliveries may run as another uid (nobody when started as root)
    root = base / "qmail"
    init_root(InitOptions(root=root, me=ME, demo=True))
    port, pop_port = free_port(), free_port()
    logs = base / "logs"
    logs.mkdir()
    procs = [
        _start(root, ["smtpd", "--listen", f"127.0.0.1:{port}", "--rules",
                      str(root / "control" / "qmail-smtpd.rules")], logs / "smtpd.log"),
        _start(root, ["send"], logs / "send.log"),
        _start(root, ["pop3d", "--listen", f"127.0.0.1:{pop_port}"], logs / "pop3d.log"),
    ]  # fmt: skip
    remove = f"rm -rf {shlex.quote(str(base))}"
    ok = False
    try:
        _wait_for(lambda: _log_says(logs / "smtpd.log", "listening on"), READY_TIMEOUT, "qldap smtpd")
        _wait_for(lambda: _log_says(logs / "send.log", "ready"), READY_TIMEOUT, "qldap send")
        _wait_for(lambda: _log_says(logs / "pop3d.log", "listening on"), READY_TIMEOUT, "qldap pop3d")
        out.write(f"qldap demo: root {root}\n")
        out.write(f"qldap demo: smtpd on 127.0.0.1:{port}, pop3d on 127.0.0.1:{pop_port}, "
                  "queue manager running\n")
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
        count = _pop3_check(pop_port, "alice", DEMO_PASSWORD)
        out.write(f"qldap demo: POP3 login as alice works ({count} message in her mailbox)\n")
        curl = f"curl -s pop3://127.0.0.1:{pop_port}/1 -u alice:{DEMO_PASSWORD}"
        ok = True
        if keep:
            groups = " ".join(f"-{p.pid}" for p in procs)
            out.write(
                "qldap demo: still running (--keep). Try:\n"
                f"  {curl}\n"
                f"  swaks --server 127.0.0.1:{port} --to bob@{DEMO_DOMAIN}\n"
                f"  QLDAP_ROOT={root} qmail-ldaplookup -m alice@{DEMO_DOMAIN}\n"
                f"  demo users alice bob carol dave erin frank, password '{DEMO_PASSWORD}'\n"
                f"qldap demo: stop the daemons with: kill -TERM -- {groups}\n"
            )
        else:
            out.write(
                f"qldap demo: daemons stopped; the root and the delivered file are kept. Read it with:\n"
                f"  cat {shlex.quote(str(landed))}\n"
                "  (run `qldap demo --keep` to keep the daemons running; it prints a curl pop3:// line)\n"
            )
        out.write(f"qldap demo: remove everything with: {remove}\n")
        return 0
    except (TimeoutError, OSError, smtplib.SMTPException, poplib.error_proto) as exc:
        out.write(f"qldap demo: failed: {exc}\n")
        for name in ("smtpd", "send", "pop3d"):
            out.write(f"--- {name} log ---\n{(logs / f'{name}.log').read_text(errors='replace')[-3000:]}\n")
        return 111
    finally:
        if not (keep and ok):
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        if not ok:
            shutil.rmtree(base, ignore_errors=True)

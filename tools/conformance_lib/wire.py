"""Interoperability on the wire: POP-before-SMTP over UDP and QMQP over TCP, C against qldap.

POP-before-SMTP: one daemon (C ``pbsdbd`` or qldap's) listens; one side's ``pbsadd`` registers a
client address (as after a POP3 login); then *both* sides' ``pbscheck`` ask the same daemon.  The
observation of each side is what its pbscheck handed to the next program (``RELAYCLIENT`` and the
``pbsenv`` variables) and its exit status, so a mixed pair (C adder, qldap daemon …) must give what
the all-C pair gives.

QMQP: a client submits one message; the observation is the client's exit status and the envelope and
message that reached the server's queue.  C ``qmail-qmqpd`` runs per connection under a small
tcpserver stand-in with ``QMAILQUEUE`` pointing at the reference's ``capture-queue``; qldap's
``qldap qmqpd`` injects into its own queue, read back from ``queue/mess`` and ``queue/todo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .core import Case, Observed, show
from .world import World

SECRET = "conformance-secret"
PBS_IP = "10.9.8.7"


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _daemon(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a daemon in its own process group for the block; stop it by its pid afterwards."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _udp_bound(port: int) -> bool:
    try:
        text = Path("/proc/net/udp").read_text()
    except OSError:
        return True
    return f":{port:04X} " in text


def pbs(name: str, daemon: str, adder: str, ip: str = PBS_IP, *, add: bool = True,
        pbsenv: str | None = None, check_secret: str = SECRET) -> Case:
    """A pbs case: *daemon* and *adder* are ``c`` or ``q``; both pbschecks then ask the daemon."""

    def run(world: World) -> Observed:
        port = _free_udp()
        ctl = {"pbsservers": "127.0.0.1", "pbsport": str(port), "pbssecret": SECRET, "pbsip": "127.0.0.1"}
        if pbsenv is not None:
            ctl["pbsenv"] = pbsenv
        world.controls(ctl)
        env = world.env({"TCPREMOTEIP": ip, "USER": "alice", "HOME": "/home/alice"})
        prog = world.c("pbsdbd") if daemon == "c" else world.q("pbsdbd")
        with _daemon([prog], world.env(), world.home if daemon == "c" else world.base):
            deadline = time.monotonic() + 15
            while not _udp_bound(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            added = ""
            if add:
                add_prog = world.c("pbsadd") if adder == "c" else world.q("pbsadd")
                r = world.run([add_prog, "/bin/true"], env=env)
                added = f"pbsadd exit {r.rc}"
            if check_secret != SECRET:
                world.controls({**ctl, "pbssecret": check_secret})
            check_env = world.env({"TCPREMOTEIP": ip})
            seen = []
            for side in ("c", "q"):
                exe = world.c("pbscheck") if side == "c" else world.q("pbscheck")
                r = world.run([exe, "/usr/bin/env"], env=check_env)
                keep = sorted(line for line in r.out.decode("latin-1").splitlines()
                              if line.split("=")[0] in ("RELAYCLIENT", "USER", "HOME", "PBSUSER"))
                seen.append("\n".join([added, f"pbscheck exit {r.rc}", *keep]))
        return Observed(seen[0], seen[1])

    return Case("interop", name, run)


# -- QMQP ---------------------------------------------------------------------------------------
MESSAGE = b"From: a@remote.example.com\nTo: alice@example.org\nSubject: qmqp\n\nover QMQP\n"
SENDER = "sender@remote.example.com"
RECIPIENTS = ("alice@example.org", "ivan@example.org")


def _envelope(sender: str, recipients: tuple[str, ...]) -> bytes:
    return b"F" + sender.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in recipients) + b"\0"


class _CServer:
    """A tcpserver stand-in: every accepted connection runs C qmail-qmqpd on it as stdin/stdout."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, peer = self.sock.accept()
            env = self.world.env({"TCPREMOTEIP": peer[0], "TCPLOCALIP": "127.0.0.1",
                                  "QMAILQUEUE": self.world.c("capture-queue")})
            subprocess.run([self.world.c("qmail-qmqpd")], stdin=conn, stdout=conn, env=env,
                           stderr=subprocess.DEVNULL, cwd=self.world.home, timeout=30, check=False)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def _c_capture(world: World) -> str:
    caps = [(m, e) for m, e in world.captures() if e]
    if not caps:
        return "nothing queued"
    msg, env = caps[-1]
    return "envelope: " + show(env).replace("\\x00", " | ") + "\n" + _strip_received(msg)


def _strip_received(msg: bytes) -> str:
    """The message without the server's own Received: line (its text is each server's own)."""
    text = msg.decode("latin-1")
    text = re.sub(r"\A(?:Received: [^\n]*\n(?:[ \t][^\n]*\n)*)+", "", text)
    return text


def _q_queued(world: World) -> str:
    """The newest message in qldap's queue: envelope from todo/, body from mess/."""
    todo = sorted((world.qroot / "queue" / "todo").rglob("*"), key=lambda p: p.stat().st_mtime_ns)
    todo = [p for p in todo if p.is_file()]
    if not todo:
        return "nothing queued"
    env_raw = todo[-1].read_bytes()
    fields = [f for f in env_raw.split(b"\0") if f[:1] in (b"F", b"T")]
    env = b"".join(f + b"\0" for f in fields) + b"\0"
    mess = [p for p in (world.qroot / "queue" / "mess").rglob(todo[-1].name) if p.is_file()]
    body = mess[0].read_bytes() if mess else b""
    return "envelope: " + show(env).replace("\\x00", " | ") + "\n" + _strip_received(body)


def _clear_q_queue(world: World) -> None:
    for sub in ("todo", "mess", "intd", "info", "local", "remote"):
        for p in (world.qroot / "queue" / sub).rglob("*"):
            if p.is_file():
                p.unlink()


def qmqp_c_client(name: str, server: str) -> Case:
    """C qmail-qmqpc submits to *server* (``c`` or ``q``) on 628; compare with the all-C pair."""

    def submit(world: World, srv: str, ip: str) -> str:
        world.clear_captures()
        _clear_q_queue(world)
        world.controls({"qmqpservers": ip})
        if srv == "c":
            with _CServer628(world, ip):
                rc = _run_qmqpc(world)
            return f"client exit {rc}\n{_c_capture(world)}"
        with _daemon([world.q("qldap"), "qmqpd", "--root", str(world.qroot), "--listen", f"{ip}:628"],
                     world.env(), world.base):
            _wait_tcp(ip, 628)
            rc = _run_qmqpc(world)
            time.sleep(0.2)
        return f"client exit {rc}\n{_q_queued(world)}"

    def run(world: World) -> Observed:
        return Observed(submit(world, "c", "127.0.0.71"), submit(world, server, "127.0.0.72"))

    return Case("interop", name, run)


def _run_qmqpc(world: World) -> int:
    """qmail-qmqpc reads the message on fd 0 and the envelope on fd 1 (like qmail-queue)."""
    r, w = os.pipe()
    os.write(w, _envelope(SENDER, RECIPIENTS))
    os.close(w)
    try:
        proc = subprocess.run([world.c("qmail-qmqpc")], input=MESSAGE, stdout=r, stderr=subprocess.PIPE,
                              env=world.env(), cwd=world.home, timeout=30, check=False)
    finally:
        os.close(r)
    return proc.returncode


def _wait_tcp(ip: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.05)


class _CServer628(_CServer):
    """The tcpserver stand-in on IP:628 (qmail-qmqpc's fixed port)."""

    def __init__(self, world: World, ip: str) -> None:
        self.world = world
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 628))
        self.sock.listen(4)
        self.port = 628
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def __enter__(self) -> _CServer628:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def qmqp_q_client(name: str) -> Case:
    """qldap's cluster QMQP client submits to C qmail-qmqpd; compare with C qmail-qmqpc doing the same."""

    def run(world: World) -> Observed:
        from qldap.remote.qmqp import QmqpSettings, qmqp_send

        world.controls({"qmqpservers": "127.0.0.73"})
        world.clear_captures()
        with _CServer628(world, "127.0.0.73"):
            rc = _run_qmqpc(world)
        c = f"client ok {rc == 0}\n{_c_capture(world)}"
        world.clear_captures()
        srv = _CServer(world)
        try:
            text = asyncio.run(qmqp_send("127.0.0.1", MESSAGE, SENDER, RECIPIENTS,
                                         settings=QmqpSettings(port=srv.port, timeoutconnect=10)))
        finally:
            srv.close()
        q = f"client ok {text == ''}\n{_c_capture(world)}"
        return Observed(c, q)

    return Case("interop", name, run)


def cases() -> list[Case]:
    out = [
        pbs("pbs-c-add-c-dbd", "c", "c"),
        pbs("pbs-c-add-q-dbd", "q", "c"),
        pbs("pbs-q-add-c-dbd", "c", "q"),
        pbs("pbs-q-add-q-dbd", "q", "q"),
        pbs("pbs-unknown-ip-c-dbd", "c", "c", add=False),
        pbs("pbs-unknown-ip-q-dbd", "q", "q", add=False),
        pbs("pbs-env-c-add-q-dbd", "q", "c", pbsenv="USER\nHOME"),
        pbs("pbs-env-q-add-c-dbd", "c", "q", pbsenv="USER\nHOME"),
        pbs("pbs-wrong-secret-c-dbd", "c", "q", check_secret="other-secret"),
        pbs("pbs-wrong-secret-q-dbd", "q", "c", check_secret="other-secret"),
        qmqp_c_client("qmqp-c-client-q-server", "q"),
        qmqp_q_client("qmqp-q-client-c-server"),
    ]
    return out

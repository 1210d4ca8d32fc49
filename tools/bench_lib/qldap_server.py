"""qldap under test: a root from ``qldap init`` pointing at the bench slapd, ``qldap smtpd`` with
RCPTCHECK on (every RCPT is a directory lookup) and ``qldap send`` delivering to the Maildirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench_lib.load import BENCH_DOMAIN
from bench_lib.world import BENCH_SUFFIX, Daemon, World

REPO = Path(__file__).resolve().parent.parent.parent


def qldap_program() -> str:
    """The project's ``qldap`` command (the worktree's venv first)."""
    venv = REPO / ".venv" / "bin" / "qldap"
    if venv.exists():
        return str(venv)
    found = shutil.which("qldap")
    if found is None:
        raise SystemExit("bench: the qldap command is not installed")
    return found


class QldapServer:
    """One qmail root with smtpd and send; *controls* are extra control files (name, value)."""

    label = "qldap"

    def __init__(self, world: World, base: Path, *, controls: Sequence[tuple[str, str]] = (),
                 smtpd_args: Sequence[str] = (), loglevel: int = 1) -> None:
        self.world, self.base = world, base
        self.root = base / "root"
        self.qldap = qldap_program()
        subprocess.run([self.qldap, "init", "--me", BENCH_DOMAIN, "--ldap", world.slapd.url,
                        "--basedn", BENCH_SUFFIX, str(self.root)], check=True, capture_output=True)
        for name, value in controls:
            (self.root / "control" / name).write_text(value + "\n")
        self.smtpd_args = list(smtpd_args)
        self.env = dict(os.environ, LOGLEVEL=str(loglevel))
        self.smtpd: Daemon | None = None
        self.send: Daemon | None = None
        self.port = 0

    def start(self) -> None:
        self.start_smtpd()
        self.start_send()

    def start_smtpd(self) -> None:
        argv = [self.qldap, "smtpd", "--root", str(self.root), "--listen", "127.0.0.1:0",
                "--env", "RCPTCHECK=", *self.smtpd_args]
        self.smtpd = Daemon("smtpd", argv,
                            self.base / "smtpd.log", "listening on", self.env)
        self.port = int(self.smtpd.text().split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])

    def start_send(self) -> None:
        self.send = Daemon("send", [self.qldap, "send", "--root", str(self.root)],
                           self.base / "send.log", "ready", self.env)

    def stop_send(self) -> None:
        if self.send is not None:
            self.send.stop()
            self.send = None

    def stop(self) -> None:
        self.stop_send()
        if self.smtpd is not None:
            self.smtpd.stop()
            self.smtpd = None

    def daemons(self) -> dict[str, int]:
        """Root pids of the process trees to account (slapd is added by the caller)."""
        out = {}
        if self.smtpd is not None:
            out["smtpd"] = self.smtpd.pid
        if self.send is not None:
            out["send"] = self.send.pid
        return out

    def queued(self) -> int:
        """Messages in the queue (files in queue/mess), for the drain run."""
        total = 0
        for d in (self.root / "queue" / "mess").glob("*"):
            try:
                total += len(os.listdir(d))
            except OSError:
                pass
        return total

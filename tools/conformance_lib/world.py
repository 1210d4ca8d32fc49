"""The shared world of a conformance run: one private slapd, the C qmail home and a qldap root.

Why one world for every case: the slapd and its entries are the expensive part, and both sides must
see exactly the same directory.  The C programs read ``<qmail-home>/control`` only (the home is
compiled in), so each case rewrites the *whole* control directory of both sides from one mapping
(:meth:`World.controls`); nothing a previous case wrote survives into the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from qldap_slapd import Slapd, free_port

REPO = Path(__file__).resolve().parent.parent.parent
SUFFIX = "dc=example,dc=org"
ROOTDN = f"cn=admin,{SUFFIX}"
ROOTPW = "rootsecret"
DOMAIN = "example.org"
ME = "mx.example.org"
# deliveries run as this account on both sides (qmailUID/qmailGID of every entry)
UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()
TIMEOUT = 30.0
MAILBOX_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivan", "jack", "kate",
                 "leo", "mona", "nick", "olga", "paul", "catchall", "dashcatch", "dashexact", "rita", "sam",
                 "tina", "uma", "vera", "walt", "wade", "wynn", "wren", "xena", "yves", "zara",
                 "zoe", "nora", "hugo", "ada", "fay", "ivy", "pat", "otto", "gus", "lex",
                 "rosa", "kim")  # fmt: skip


@dataclass(frozen=True)
class Result:
    """What a program did: exit status, its output streams (bytes) and files it left, normalised later."""

    rc: int
    out: bytes
    err: bytes


def base_controls(port: int) -> dict[str, str]:
    """Control files both sides get unless a case overrides them (value None in a case removes one)."""
    return {
        "me": ME,
        "ldapserver": f"127.0.0.1:{port}",
        "ldapbasedn": SUFFIX,
        "ldaplogin": ROOTDN,
        "ldappassword": ROOTPW,
        "ldaptimeout": "5",
        "locals": f"{DOMAIN}\n{ME}",
        "rcpthosts": f"{DOMAIN}\n{ME}\nrelay.example.net",
        "ldaplocaldelivery": "0",
        "ldapobjectclass": "qmailUser",
    }


class World:
    """A temporary directory holding the slapd, the qldap root and scratch space for every case."""

    def __init__(self, reference_home: Path, entries_ldif: str, log: bool = False) -> None:
        self.home = reference_home
        self.cbin = reference_home / "bin"
        self.base = Path(tempfile.mkdtemp(prefix="qldap-conformance-"))
        self.base.chmod(0o755)
        self.mail = self.base / "mail"
        self.mail.mkdir(mode=0o755)
        self.qroot = self.base / "qroot"
        self.port = free_port()
        self.entries_ldif = entries_ldif.replace("{mail}", str(self.mail))
        self.slapd = Slapd(self.base / "slapd", port=self.port, suffix=SUFFIX, rootdn=ROOTDN,
                           rootpw=ROOTPW, initial_ldif=self.entries_ldif, tie_to_parent=True)  # fmt: skip
        self.verbose = log
        self.python = sys.executable
        self.qbin = Path(sys.executable).parent
        self._saved_control: Path | None = None
        self._lock: IO[str] | None = None
        self._written: dict[str, str | None] | None = None
        self._controls_lock = threading.Lock()

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> None:
        """Lock the C home, start slapd, make the qldap root, keep a copy of the C home's controls.

        The lock (``<home>/.conformance.lock``) makes a second run against the same home wait instead
        of rewriting the control files under the first one's feet.
        """
        self._lock = (self.home / ".conformance.lock").open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        (self.base / "slapd").mkdir()
        self.slapd.start()
        from qldap.queue.layout import create_queue

        (self.qroot / "control").mkdir(parents=True)
        (self.qroot / "users").mkdir()
        create_queue(self.qroot)
        ctl = self.home / "control"
        saved = self.base / "c-control-saved"
        if ctl.exists():
            shutil.copytree(ctl, saved, symlinks=True)
            self._saved_control = saved
        (self.home / "capture").mkdir(exist_ok=True)

    def close(self) -> None:
        """Stop slapd, restore the C home's control directory, remove the temporary tree."""
        with contextlib.suppress(Exception):
            self.slapd.stop()
        if self._saved_control is not None:
            ctl = self.home / "control"
            shutil.rmtree(ctl, ignore_errors=True)
            shutil.copytree(self._saved_control, ctl, symlinks=True)
        if not os.environ.get("QLDAP_CONFORMANCE_KEEP"):
            shutil.rmtree(self.base, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock

    # -- per case ------------------------------------------------------------------------------
    def controls(self, overrides: Mapping[str, str | None] | None = None) -> None:
        """Write the same control files on both sides: the base set with *overrides* applied."""
        files: dict[str, str | None] = dict(base_controls(self.port))
        files.update(overrides or {})
        with self._controls_lock:
            if files == self._written:
                return  # cases of one parallel batch share them (see Case.parallel)
            self._written = None
            self._write_controls(files)
            self._written = files

    def _write_controls(self, files: Mapping[str, str | None]) -> None:
        for ctl in (self.home / "control", self.qroot / "control"):
            shutil.rmtree(ctl, ignore_errors=True)
            ctl.mkdir(parents=True)
            for name, text in files.items():
                if text is None:
                    continue
                (ctl / name).write_text(text if text.endswith("\n") or text == "" else text + "\n")

    def mailboxes(self, users: Sequence[str] = MAILBOX_USERS) -> None:
        """Fresh empty message stores (``mail/<uid>/`` with a Maildir) owned by the delivery account."""
        for user in users:
            store = self.mail / user
            shutil.rmtree(store, ignore_errors=True)
            for sub in ("tmp", "new", "cur"):
                (store / "Maildir" / sub).mkdir(parents=True, mode=0o700)
            for dirpath, _dirs, _files in os.walk(store):
                os.chown(dirpath, UID, GID)

    def scratch(self, name: str) -> Path:
        """A fresh empty directory for one case."""
        path = self.base / "scratch" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        path.chmod(0o755)
        return path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A small clean environment (PATH, the qldap root) plus *extra*."""
        env = {"PATH": f"{self.qbin}:/usr/bin:/bin:/usr/sbin:/sbin", "QLDAP_ROOT": str(self.qroot),
               "LANG": "C"}  # fmt: skip
        env.update(extra or {})
        return env

    def run(self, argv: Sequence[str], stdin: bytes = b"", env: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = TIMEOUT,
            pass_fds: Sequence[int] = ()) -> Result:  # fmt: skip
        """Run *argv* to completion with *stdin*; a hang is reported as rc -999 rather than raised."""
        try:
            proc = subprocess.run(list(argv), input=stdin, capture_output=True, env=dict(env or self.env()),
                                  cwd=cwd, timeout=timeout, pass_fds=tuple(pass_fds))  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            return Result(-999, exc.stdout or b"", (exc.stderr or b"") + b"\n[timeout]")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def c(self, program: str) -> str:
        """Path of a C program in the reference home."""
        return str(self.cbin / program)

    def q(self, program: str) -> str:
        """Path of a qldap console script in the venv."""
        return str(self.qbin / program)

    def private_capture(self, tag: str) -> tuple[str, Path]:
        """A copy of the reference's capture-queue writing into a capture directory of its own.

        Returns (the program for ``QMAILQUEUE``, its capture directory); lets cases and the two sides
        of one case run at the same time without reading each other's messages.
        """
        d = self.scratch("capture-" + tag)
        (d / "bin").mkdir()
        prog = d / "bin" / "capture-queue"
        shutil.copy2(self.cbin / "capture-queue", prog)
        (d / "capture").mkdir()
        (d / "capture").chmod(0o777)
        return str(prog), d / "capture"

    @staticmethod
    def read_captures(cap: Path) -> list[tuple[bytes, bytes]]:
        """The (message, envelope) pairs capture-queue wrote into *cap*, oldest first."""
        out = []
        for msg in sorted(cap.glob("*.msg"), key=lambda p: p.stat().st_mtime_ns):
            envf = msg.with_suffix(".env")
            out.append((msg.read_bytes(), envf.read_bytes() if envf.exists() else b""))
        return out

    def clear_captures(self) -> None:
        """Empty the C capture directory (capture-queue writes <pid>.msg/.env there)."""
        cap = self.home / "capture"
        shutil.rmtree(cap, ignore_errors=True)
        cap.mkdir()
        cap.chmod(0o777)

    def captures(self) -> list[tuple[bytes, bytes]]:
        """The (message, envelope) pairs capture-queue wrote, oldest first."""
        return self.read_captures(self.home / "capture")

    def slapd_down(self) -> int:
        """A port where nothing listens (an LDAP outage without stopping the shared slapd)."""
        return free_port()

"""The private world a fault run happens in: temp dirs, a private slapd with N users, roots, ``qldap up``.

Why one slapd and one set of mailboxes for the whole run but a fresh qmail root per scenario: the
users (and their Maildirs, which accounting reads) are the expensive part to set up, while each
scenario needs its own queue (the disk scenario puts it on a tmpfs) and its own ``qldap up`` so a
fault left behind by one scenario cannot be blamed on the next.  Every process started here is
remembered by pid, and :meth:`World.close` also sweeps ``/proc`` for any process whose command line
names this run's unique temporary directory (a daemon orphaned by a ``kill -9`` of its supervisor),
so nothing outlives the run; tmpfs mounts are unmounted the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qldap_slapd import Slapd, free_port

REPO = Path(__file__).resolve().parent.parent.parent
DOMAIN = "faults.test"
SUFFIX = "dc=faults,dc=test"
BOUNCE_USER = "bounces"
SENDER = f"{BOUNCE_USER}@{DOMAIN}"
UID = 2000 if os.geteuid() == 0 else os.geteuid()
GID = 2000 if os.geteuid() == 0 else os.getegid()
DAEMONS = ("smtpd", "send", "pop3d", "pbsdbd")

Log = Callable[[str], None]


def user_name(i: int) -> str:
    """The uid of user number *i*."""
    return f"u{i}"


def users_ldif(mailroot: Path, count: int) -> str:
    """LDIF for *count* users plus the bounce user, each with a Maildir store below *mailroot*."""
    out = []
    for name in [*(user_name(i) for i in range(count)), BOUNCE_USER]:
        out.append(
            f"dn: uid={name},{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\n"
            f"uid: {name}\ncn: {name}\nsn: {name}\nmail: {name}@{DOMAIN}\n"
            f"qmailUID: {UID}\nqmailGID: {GID}\nmailMessageStore: {mailroot / name}/\n"
        )
    return "\n".join(out)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").rstrip("\0").split("\0")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


@dataclass(frozen=True, slots=True)
class Ports:
    """The loopback ports of one root's daemons."""

    smtp: int
    pop3: int
    pbs: int


class Up:
    """One ``qldap up ROOT`` process, its log file, and kill -9 of it or of one of its daemons."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()

    def start(self, timeout: float = 60.0) -> None:
        """Start ``qldap up`` and return once it reports every daemon ready.

        Raises:
            RuntimeError: it exited or did not get ready in *timeout* seconds.
        """
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, PYTHONPATH=str(REPO), LOGLEVEL="2")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "qldap.cli.qldap", "up", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(self.root),
                start_new_session=True)  # fmt: skip
        self.seen.add(self.proc.pid)
        self.wait_log(f"all {len(DAEMONS)} daemons ready", offset, timeout)

    def log_text(self, offset: int = 0) -> str:
        """The log from byte *offset* on."""
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        """The current size of the log (an offset for :meth:`wait_log`)."""
        return self.log_path.stat().st_size

    def wait_log(self, text: str, offset: int, timeout: float) -> None:
        """Wait until *text* appears in the log after *offset*.

        Raises:
            RuntimeError: ``qldap up`` exited or *timeout* passed first.
        """
        deadline = time.monotonic() + timeout
        while text not in self.log_text(offset):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"qldap up exited ({self.proc.returncode}):\n{self.log_text(offset)[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} within {timeout:g} s:\n{self.log_text(offset)[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The supervisor's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def daemons(self) -> dict[str, int]:
        """Running daemons of this supervisor: name → pid."""
        out: dict[str, int] = {}
        if self.pid is None:
            return out
        for child in _children(self.pid):
            argv = _cmdline(child)
            if "qldap.cli.qldap" in argv:
                i = argv.index("qldap.cli.qldap")
                if i + 1 < len(argv) and argv[i + 1] in DAEMONS:
                    out[argv[i + 1]] = child
                    self.seen.add(child)
        return out

    def signal(self, signum: int) -> None:
        """Send *signum* to the supervisor (ALRM: retry now; HUP: reload)."""
        if self.pid is not None:
            os.kill(self.pid, signum)

    def kill_daemon(self, name: str) -> bool:
        """kill -9 the daemon *name*; False when it was not running (being restarted)."""
        pid = self.daemons().get(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def kill_self(self) -> list[int]:
        """kill -9 the supervisor itself; returns the pids of its daemons, now orphans."""
        orphans = list(self.daemons().values())
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        return orphans

    def stop(self, timeout: float = 90.0) -> int | None:
        """TERM the supervisor and wait; kill it (and whatever it left) when it does not stop."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_pids(self.seen)
        return rc


def kill_pids(pids: set[int]) -> None:
    """SIGKILL each still-living pid of *pids* (each a process this run started)."""
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class World:
    """The temporary directory, the private slapd with the users, and the roots made in it."""

    def __init__(self, users: int, log: Log) -> None:
        self.users = users
        self.log = log
        self.base = Path(tempfile.mkdtemp(prefix="qldap-faults-"))
        self.base.chmod(0o755)  # deliveries run as UID and must traverse to the mailboxes
        self.mailroot = self.base / "mail"
        self.mailroot.mkdir(mode=0o755)
        for name in [*(user_name(i) for i in range(users)), BOUNCE_USER]:
            store = self.mailroot / name
            store.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(store, UID, GID)
        ldif = users_ldif(self.mailroot, users)
        self.slapd = Slapd(self.base / "slapd", port=free_port(), suffix=SUFFIX, rootdn=f"cn=admin,{SUFFIX}",
                           initial_ldif=ldif)  # fmt: skip
        (self.base / "slapd").mkdir()
        self.ups: list[Up] = []
        self.mounts: list[Path] = []

    def start(self) -> None:
        """Start slapd (bulk-loading the users)."""
        self.slapd.start()
        self.log(f"slapd on {self.slapd.url} with {self.users} users")

    def make_root(
        self, name: str, controls: dict[str, str] | None = None, tmpfs_kib: int = 0
    ) -> tuple[Path, Ports]:
        """A fresh qmail root for scenario *name* (queue on a tmpfs of *tmpfs_kib* KiB when > 0).

        Raises:
            OSError/CalledProcessError: the tmpfs could not be mounted.
        """
        from qldap.setup.init import InitOptions, init_root

        root = self.base / name
        if tmpfs_kib:
            (root / "queue").mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_kib}k,mode=0755", "tmpfs",
                            str(root / "queue")], check=True, capture_output=True)  # fmt: skip
            self.mounts.append(root / "queue")
        init_root(InitOptions(root=root, me=f"mx.{DOMAIN}", ldap_uris=(self.slapd.url,), basedn=SUFFIX,
                              domains=(DOMAIN,)))  # fmt: skip
        ports = Ports(free_port(), free_port(), free_port())
        ctl = {"ldaptimeout": "2", "pbssecret": "faults-secret", "pbsip": "127.0.0.1",
               "pbsport": str(ports.pbs), "concurrencylocal": "10", **(controls or {})}  # fmt: skip
        for key, value in ctl.items():
            (root / "control" / key).write_text(value + "\n")
        (root / "services.yaml").write_text(
            f'smtpd:\n  listen: ["127.0.0.1:{ports.smtp}"]\n  rules: control/qmail-smtpd.rules\n'
            f'  env: {{RCPTCHECK: "", LOGLEVEL: "1"}}\n'
            f"send: {{}}\n"
            f'pop3d:\n  listen: ["127.0.0.1:{ports.pop3}"]\n  env: {{}}\n'
            f"pbsdbd: {{}}\n"
        )
        return root, ports

    def up(self, root: Path) -> Up:
        """A started ``qldap up`` for *root*."""
        up = Up(root, root / "up.log")
        self.ups.append(up)
        up.start()
        return up

    def sweep(self) -> None:
        """Kill every process whose command line names this run's directory (orphaned daemons)."""
        mine = str(self.base)
        for entry in os.listdir("/proc"):
            pid = int(entry) if entry.isdigit() else 0
            if pid and pid != os.getpid() and any(mine in arg for arg in _cmdline(pid)):
                kill_pids({pid})

    def close(self, keep: bool = False) -> None:
        """Stop everything this world started, unmount its tmpfs, remove its files (unless *keep*)."""
        for up in self.ups:
            up.stop()
        with contextlib.suppress(Exception):
            self.slapd.stop()
        self.sweep()
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)

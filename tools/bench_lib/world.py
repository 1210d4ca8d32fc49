"""The shared world of a benchmark: one private slapd with N qmailUser entries and their Maildirs.

Both servers under test read the same directory and deliver into the same ``mail/uI/Maildir``
trees, so any difference in the figures comes from the servers, not from the data.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qldap_slapd import Slapd

from bench_lib.load import BENCH_DOMAIN

BENCH_SUFFIX = "dc=example,dc=com"
VMAIL_ID = 2000  # the shared qmailUID/qmailGID of every mailbox when run as root
DB_MAXSIZE = 8 << 30  # room for 1,000,000 entries with their indexes


class BenchSlapd(Slapd):
    """:class:`Slapd` with a database large enough for a million users (mdb maps its maximum size)."""

    def slapd_conf(self) -> str:
        conf = super().slapd_conf().replace("maxsize 268435456", f"maxsize {DB_MAXSIZE}")
        return conf.replace("loglevel none", "loglevel none\ntool-threads 2")


def write_users_ldif(path: Path, n: int, mail_root: Path, uid: int, gid: int) -> None:
    """N qmailUser entries u0..u{N-1}@bench.example with stores ``MAIL_ROOT/uI/``, streamed to *path*."""
    with path.open("w") as out:
        out.write(f"dn: ou=people,{BENCH_SUFFIX}\nobjectClass: top\nobjectClass: organizationalUnit\n"
                  "ou: people\n\n")
        chunk: list[str] = []
        for i in range(n):
            chunk.append(
                f"dn: uid=u{i},ou=people,{BENCH_SUFFIX}\nobjectClass: top\nobjectClass: person\n"
                f"objectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: u{i}\ncn: u{i}\nsn: u{i}\n"
                f"mail: u{i}@{BENCH_DOMAIN}\nmailMessageStore: {mail_root}/u{i}/\n"
                f"qmailUID: {uid}\nqmailGID: {gid}\naccountStatus: active\n\n")
            if len(chunk) >= 10000:
                out.write("".join(chunk))
                chunk = []
        out.write("".join(chunk))


def make_mailboxes(users: Iterable[int], mail_root: Path, uid: int, gid: int) -> None:
    """Home + Maildir/{tmp,new,cur} for each of *users*, owned by the shared id (as provisioning would).

    Only the users a run will write to get a Maildir: with a million entries in the directory the
    lookups are what must scale, not the bench's set-up time.
    """
    mail_root.mkdir(mode=0o755, exist_ok=True)
    chown = os.geteuid() == 0
    for i in sorted(set(users)):
        home = mail_root / f"u{i}"
        if home.exists():
            continue
        md = home / "Maildir"
        for d in (home, md, md / "tmp", md / "new", md / "cur"):
            os.mkdir(d, 0o700)
            if chown:
                os.chown(d, uid, gid)
    if chown:
        os.chown(mail_root, uid, gid)


def recipients(users: int, count: int, seed: int, *, distinct: bool = False) -> list[int]:
    """*count* uniformly random user numbers below *users*, the same for the same seed.

    *distinct* draws without replacement (while count <= users): no user twice, so a cache in the
    server cannot make a small directory look cheaper than a large one.
    """
    rng = random.Random(seed)
    if distinct and count <= users:
        return rng.sample(range(users), count)
    return [rng.randrange(users) for _ in range(count)]


@dataclass(frozen=True)
class World:
    """A running slapd with the users, and where their mail goes."""

    base: Path
    slapd: BenchSlapd
    mail_root: Path
    users: int
    uid: int
    gid: int

    @property
    def slapd_pid(self) -> int:
        pid = self.slapd.pid
        if pid is None:
            raise RuntimeError("slapd is not running")
        return pid

    def mailboxes(self, users: Sequence[int]) -> None:
        make_mailboxes(users, self.mail_root, self.uid, self.gid)

    def stop(self) -> None:
        self.slapd.stop()


def build_world(base: Path, users: int) -> World:
    """Bulk-load a private slapd with *users* entries (slapadd before it starts) and start it."""
    root_user = os.geteuid() == 0
    uid, gid = (VMAIL_ID, VMAIL_ID) if root_user else (os.getuid(), os.getgid())
    mail_root = base / "mail"
    mail_root.mkdir(mode=0o755, exist_ok=True)
    if root_user:
        os.chown(mail_root, uid, gid)
    ldif = base / "users.ldif"
    write_users_ldif(ldif, users, mail_root, uid, gid)
    slapd = BenchSlapd(base / "slapd", ldif=[ldif], suffix=BENCH_SUFFIX, tie_to_parent=True)
    slapd.start()
    ldif.unlink()
    return World(base, slapd, mail_root, users, uid, gid)


class Daemon:
    """A daemon started in its own session with stdout/stderr in a log file; waits for its ready line."""

    def __init__(self, name: str, argv: list[str], log: Path, ready: str, env: dict[str, str]) -> None:
        self.name, self.log = name, log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._fh, stderr=self._fh,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"bench: {name} did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; only this process (its own children are its business)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()

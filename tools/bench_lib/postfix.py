"""A private Postfix (Debian's ``postfix`` + ``postfix-ldap``) delivering to the bench Maildirs.

Everything belongs to this instance: its own config directory (main.cf, master.cf, the LDAP map
files), queue_directory and data_directory under the bench's temp dir, smtpd on one loopback port.
It is started with ``postfix -c DIR start``; as root, Postfix accepts a non-default config
directory without it being listed in the system's ``alternate_config_directories`` (that check is
only made for unprivileged callers), so /etc/postfix is read for nothing but the shared meta files
(``postfix-files``, ``dynamicmaps.cf`` naming the ldap map module) and no system instance is started
or changed.  It is stopped with ``postfix -c DIR stop`` and, should that fail, by the master's pid.

Delivery is virtual(8) into Maildirs: virtual_mailbox_maps, virtual_uid_maps and virtual_gid_maps
are ldap: tables on the same slapd and the same filter qldap uses; smtpd rejects unknown recipients
with ``reject_unlisted_recipient`` (a lookup in virtual_mailbox_maps per RCPT).  Process limits,
``max_use``, ``max_idle`` and the concurrency limits keep Debian's defaults: the figures are for the
server as an ISP would install it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench_lib.load import BENCH_DOMAIN
from bench_lib.world import BENCH_SUFFIX, World

PORT_RANGE = (27000, 27999)
POSTFIX = "/usr/sbin/postfix"
DAEMON_DIR = Path("/usr/lib/postfix/sbin")
FILTER = "(&(objectClass=qmailUser)(|(mail=%s)(mailAlternateAddress=%s)))"

# service type private unpriv chroot wakeup maxproc command: chroot off (nothing is copied into the
# queue directory); virtual runs as root so that it can take the mailbox owner's uid.
MASTER_CF = """\
{listen} inet n - n - {maxproc} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def installed() -> str | None:
    """None when Postfix with LDAP maps can run here, else what is missing."""
    if not os.access(POSTFIX, os.X_OK) or not (DAEMON_DIR / "master").exists():
        return "postfix is not installed (apt-get install postfix postfix-ldap; tools/install-deps)"
    if not Path("/usr/lib/postfix/postfix-ldap.so").exists():
        return "postfix-ldap is not installed (tools/install-deps)"
    if os.geteuid() != 0:
        return "a private Postfix needs root (virtual(8) delivery as the mailbox owner)"
    return None


def free_port() -> int:
    """A free loopback port from PORT_RANGE (tried in random order)."""
    ports = list(range(PORT_RANGE[0], PORT_RANGE[1] + 1))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _ldap_map(world: World, attribute: str, fmt: str = "%s") -> str:
    return (f"server_host = {world.slapd.url}\nversion = 3\nbind = no\nsearch_base = {BENCH_SUFFIX}\n"
            f"scope = sub\nquery_filter = {FILTER}\nresult_attribute = {attribute}\n"
            f"result_format = {fmt}\n")


class PostfixServer:
    """The private instance; :meth:`start` returns once its smtpd greets on the port."""

    label = "postfix"

    def __init__(self, world: World, base: Path, *, smtpd_maxproc: int | None = None) -> None:
        self.world, self.base = world, base
        self.smtpd_maxproc = smtpd_maxproc  # None: default_process_limit (100), as installed
        self.conf = base / "etc"
        self.queue = base / "queue"
        self.data = base / "data"
        self.port = free_port()
        self.master_pid: int | None = None

    def _write_config(self) -> None:
        for d in (self.base, self.conf):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        for d in (self.queue, self.data):
            d.mkdir(mode=0o755, exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        maps = {"mailbox": ("mailMessageStore", "%sMaildir/"), "uid": ("qmailUID", "%s"),
                "gid": ("qmailGID", "%s")}
        for name, (attr, fmt) in maps.items():
            (self.conf / f"ldap-{name}.cf").write_text(_ldap_map(self.world, attr, fmt))
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.invalid",
            "mydomain": "bench.invalid",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "maillog_file": str(self.base / "maillog"),
            "maillog_file_prefixes": str(self.base),
            "virtual_mailbox_domains": BENCH_DOMAIN,
            "virtual_mailbox_base": "/",
            "virtual_mailbox_maps": f"ldap:{self.conf}/ldap-mailbox.cf",
            "virtual_uid_maps": f"ldap:{self.conf}/ldap-uid.cf",
            "virtual_gid_maps": f"ldap:{self.conf}/ldap-gid.cf",
            "virtual_minimum_uid": "100",
            "smtpd_recipient_restrictions": "reject_unlisted_recipient, reject_unauth_destination",
            "smtpd_relay_restrictions": "reject_unauth_destination",
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}",
                                                             maxproc=self.smtpd_maxproc or "-"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MAIL_CONFIG": str(self.conf)}
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True, text=True,
                              env=env, check=False, timeout=120)

    def start(self) -> None:
        """Configure, ``postfix -c DIR start``, and wait for the 220 greeting."""
        self._write_config()
        proc = self._postfix("start")
        if proc.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{proc.stdout}{proc.stderr}{self.log_tail()}")
        deadline = time.monotonic() + 60
        pidfile = self.queue / "pid" / "master.pid"
        while time.monotonic() < deadline:
            try:
                self.master_pid = int(pidfile.read_text().split()[0])
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not greet on port {self.port}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.base / "maillog").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def daemons(self) -> dict[str, int]:
        return {"master": self.master_pid} if self.master_pid else {}

    def stop(self) -> None:
        """``postfix -c DIR stop``; then SIGTERM/SIGKILL of our master by pid if it is still there."""
        pid = self.master_pid
        if pid is None:
            return
        self._postfix("stop")
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _alive(pid):
                break
            os.kill(pid, sig)
            time.sleep(2)
        self.master_pid = None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

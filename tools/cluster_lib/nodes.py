"""The qldap side of the lab: one qmail root per node and its daemons, started inside the node's namespace.

Each node runs ``qldap smtpd`` (port 25), ``qldap send``, ``qldap pop3d`` (110) and the QMQP server
(628, through :mod:`cluster_lib.qmqpd_launch`); node a also runs the shared ``qldap pbsdbd`` (UDP
2821) that every node's ``pbsservers`` names.  Daemons are started with ``ip netns exec`` in their
own session, so they outlive ``tools/cluster up``; their pids are kept in ``DIR/state.json`` and
their output in ``DIR/nodes/X/log/NAME.log``.

mailHost values are IP literals (the QMQP client uses them without DNS; there is no DNS in the
namespaces), and each node lists its own address in ``ldapclusterhosts`` so that ``mailHost`` = its
address means "deliver here".  Mailboxes are found through ``mailMessageStore: uid/`` below each
node's own ``ldapmessagestore``: every user has a Maildir in every node's store, so a message
delivered on the wrong node would be seen there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cluster_lib.ldap import LDAP_PORT, SUFFIX, LabUser
from cluster_lib.netns import NodeNet, ns_exec

SMTP_PORT = 25
POP3_PORT = 110
QMQP_PORT = 628
PBS_PORT = 2821
PBS_SECRET = "lab-pbs-secret"
CLUSTER_COOKIE = "qldap-lab-cluster"
READY_TIMEOUT = 60.0
TOOLS_DIR = Path(__file__).resolve().parent.parent
QLDAP = [sys.executable, "-m", "qldap.cli.qldap"]


class LabError(RuntimeError):
    """A lab daemon did not start, or the lab is in an unexpected state."""


@dataclass(frozen=True, slots=True)
class Daemon:
    """How to start one daemon and the stderr line that says it is ready."""

    name: str
    argv: tuple[str, ...]
    ready: str


def node_dir(lab: Path, node: NodeNet) -> Path:
    return lab / "nodes" / node.name


def root_of(lab: Path, node: NodeNet) -> Path:
    return node_dir(lab, node) / "root"


def store_of(lab: Path, node: NodeNet) -> Path:
    return node_dir(lab, node) / "store"


def maildir_of(lab: Path, node: NodeNet, uid: str) -> Path:
    return store_of(lab, node) / uid / "Maildir"


def me_of(node: NodeNet) -> str:
    return f"{node.name}.cluster.test"


def _mkdir_owned(path: Path, uid: int, gid: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    os.chown(path, uid, gid)


def build_root(lab: Path, node: NodeNet, pbs_node: NodeNet, users: list[LabUser], uid: int, gid: int) -> Path:
    """Create *node*'s qmail root with the cluster controls and a Maildir per user in its store."""
    from qldap.setup.init import InitOptions, init_root

    root = root_of(lab, node)
    init_root(InitOptions(root=root, me=me_of(node), ldap_uris=(f"ldap://{node.ip}:{LDAP_PORT}",),
                          basedn=SUFFIX, domains=("example.com",)))
    controls = {
        "ldaptimeout": "5",
        "ldapcluster": "1",
        "ldapclusterhosts": node.ip,
        "ldapmessagestore": f"{store_of(lab, node)}/",
        "smtpclustercookie": CLUSTER_COOKIE,
        "timeoutconnect": "5",
        "pbsservers": pbs_node.ip,
        "pbsport": str(PBS_PORT),
        "pbssecret": PBS_SECRET,
        "pbsenv": "USER=TCPREMOTEINFO=[pbs]",
    }
    if node == pbs_node:
        controls["pbsip"] = node.ip
    for name, value in controls.items():
        (root / "control" / name).write_text(value + "\n")
    store = store_of(lab, node)
    store.mkdir(parents=True, exist_ok=True)
    store.chmod(0o755)
    for u in users:
        os.makedirs(store / u.uid, exist_ok=True)
        os.chown(store / u.uid, uid, gid)
        for sub in ("tmp", "new", "cur"):
            _mkdir_owned(maildir_of(lab, node, u.uid) / sub, uid, gid)
        _mkdir_owned(maildir_of(lab, node, u.uid), uid, gid)
    (node_dir(lab, node) / "log").mkdir(exist_ok=True)
    return root


def daemons(lab: Path, node: NodeNet, pbs_node: NodeNet) -> list[Daemon]:
    """The daemons of *node*, in start order."""
    root = str(root_of(lab, node))
    out = []
    if node == pbs_node:
        out.append(Daemon("pbsdbd", (*QLDAP, "pbsdbd", "--root", root),
                          f"qldap pbsdbd: listening on {node.ip}:{PBS_PORT}"))
    out += [
        Daemon("qmqpd", (sys.executable, "-m", "cluster_lib.qmqpd_launch", root, node.ip, str(QMQP_PORT)),
               f"qldap qmqpd: listening on {node.ip}:{QMQP_PORT}"),
        Daemon("send", (*QLDAP, "send", "--root", root), "qldap send: ready"),
        Daemon("smtpd", (*QLDAP, "smtpd", "--root", root, "--listen", f"{node.ip}:{SMTP_PORT}"),
               f"qldap smtpd: listening on {node.ip}:{SMTP_PORT}"),
        Daemon("pop3d", (*QLDAP, "pop3d", "--root", root, "--listen", f"{node.ip}:{POP3_PORT}"),
               f"qldap pop3d: listening on {node.ip}:{POP3_PORT}"),
    ]
    return out


def log_of(lab: Path, node: NodeNet, name: str) -> Path:
    return node_dir(lab, node) / "log" / f"{name}.log"


def start_daemon(lab: Path, node: NodeNet, d: Daemon) -> int:
    """Start *d* inside *node*'s namespace and wait for its ready line; its pid.

    Raises:
        LabError: it exited or stayed silent for READY_TIMEOUT seconds (the log tail is included).
    """
    log = log_of(lab, node, d.name)
    env = dict(os.environ, PYTHONPATH=str(TOOLS_DIR), POP3_LOGLEVEL="2")
    with log.open("ab") as fh:
        offset = fh.tell()
        proc = subprocess.Popen(ns_exec(node.netns, d.argv), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=fh, start_new_session=True, cwd=str(TOOLS_DIR), env=env)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with log.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
        if d.ready in text:
            return proc.pid
        if proc.poll() is not None:
            raise LabError(f"{node.name}/{d.name} exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise LabError(f"{node.name}/{d.name} not ready within {READY_TIMEOUT:g}s")


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal *pid* (one we started) and wait until it is gone; SIGKILL after *timeout*."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def state_path(lab: Path) -> Path:
    return lab / "state.json"


def load_state(lab: Path) -> dict[str, dict[str, int]]:
    """node name -> daemon name -> pid, as recorded by ``up``; empty when there is no state."""
    try:
        raw = json.loads(state_path(lab).read_text())
    except (OSError, ValueError):
        return {}
    return {str(n): {str(k): int(v) for k, v in ds.items()} for n, ds in raw.items()}


def save_state(lab: Path, state: dict[str, dict[str, int]]) -> None:
    state_path(lab).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")

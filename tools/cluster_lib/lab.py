"""Bring the whole lab up and down: network, the three slapds, the three qldap roots and their daemons.

``up`` is all-or-nothing: on any failure everything built so far is torn down before the error is
reported.  ``down`` works from ``DIR/state.json`` plus ``ip netns pids`` (a process still inside a
lab namespace can only have been started by the lab) and never fails half-way: each step is tried.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from qldap_slapd import Slapd

from cluster_lib import ldap, netns, nodes
from cluster_lib.netns import NODES, NodeNet

PROVIDER = NODES[0]
PBS_NODE = NODES[0]
LOOP_USER = "loopy"
SENDER_USER = "postie"


@dataclass(frozen=True, slots=True)
class Lab:
    """Where the lab lives and who its users are."""

    dir: Path

    @property
    def users(self) -> list[ldap.LabUser]:
        a, b, c = NODES
        return [ldap.LabUser("a1", a), ldap.LabUser("a2", a), ldap.LabUser("b1", b), ldap.LabUser("b2", b),
                ldap.LabUser("c1", c), ldap.LabUser("c2", c), ldap.LabUser(SENDER_USER, a),
                ldap.LabUser(LOOP_USER, b)]

    def slapd(self, node: NodeNet, initial_ldif: str = "") -> Slapd:
        return ldap.node_slapd(node, nodes.node_dir(self.dir, node) / "slapd", PROVIDER, initial_ldif)

    def node(self, name: str) -> NodeNet:
        return next(n for n in NODES if n.name == name)


def _ids() -> tuple[int, int]:
    from qldap.setup.init import delivery_ids

    ids = delivery_ids()
    return ids.uid, ids.gid


def up(lab: Lab) -> dict[str, object]:
    """Build and start everything; a summary (addresses, pids, entry counts).

    Raises:
        netns.NetnsError, nodes.LabError, SlapdError: something failed (the lab is torn down first).
    """
    if nodes.state_path(lab.dir).exists():
        raise nodes.LabError(f"{lab.dir} holds a running lab: run `tools/cluster down` first")
    lab.dir.mkdir(parents=True, exist_ok=True)
    lab.dir.chmod(0o755)
    for parent in lab.dir.parents:  # deliveries run as the mailbox owner, never root
        if not parent.stat().st_mode & 0o001:
            raise nodes.LabError(f"{parent} is not traversable by mailbox owners: choose another --dir")
    (lab.dir / "nodes").mkdir(exist_ok=True, mode=0o755)
    for node in NODES:
        nodes.node_dir(lab.dir, node).mkdir(exist_ok=True, mode=0o755)
    state: dict[str, dict[str, int]] = {n.name: {} for n in NODES}
    nodes.save_state(lab.dir, state)
    try:
        netns.create_network()
        return _start_all(lab, state)
    except BaseException:
        down(lab, remove_files=False)
        raise


def _start_all(lab: Lab, state: dict[str, dict[str, int]]) -> dict[str, object]:
    from qldap.passwords.schemes import make_hash

    uid, gid = _ids()
    users = lab.users
    provider = lab.slapd(PROVIDER, ldap.users_ldif(users, uid, gid, make_hash("ssha", ldap.PASSWORD)))
    slapds = []
    for node in NODES:
        s = provider if node == PROVIDER else lab.slapd(node)
        ldap.start_in(node, s)
        state[node.name]["slapd"] = s.pid or 0
        nodes.save_state(lab.dir, state)
        slapds.append((node, s))
    counts = ldap.wait_synced(slapds, ldap.count_entries(PROVIDER, provider))
    if len(set(counts.values())) != 1:
        raise nodes.LabError(f"consumers did not catch up with the provider: {counts}")
    for node in NODES:
        nodes.build_root(lab.dir, node, PBS_NODE, users, uid, gid)
    for node in NODES:
        for d in nodes.daemons(lab.dir, node, PBS_NODE):
            state[node.name][d.name] = nodes.start_daemon(lab.dir, node, d)
            nodes.save_state(lab.dir, state)
    return {"dir": str(lab.dir), "nodes": {n.name: {"ip": n.ip, "me": nodes.me_of(n),
                                                    "pids": state[n.name]} for n in NODES},
            "entries": counts, "client_ip": netns.CLIENT_IP}


def start_node(lab: Lab, node: NodeNet) -> None:
    """Start *node*'s slapd and daemons again after :func:`kill_node` (recording the new pids)."""
    state = nodes.load_state(lab.dir)
    s = lab.slapd(node)
    ldap.start_in(node, s)
    state[node.name] = {"slapd": s.pid or 0}
    for d in nodes.daemons(lab.dir, node, PBS_NODE):
        state[node.name][d.name] = nodes.start_daemon(lab.dir, node, d)
    nodes.save_state(lab.dir, state)


def kill_node(lab: Lab, node: NodeNet) -> list[str]:
    """SIGKILL every process of *node* (a crash, not a shutdown); the names killed."""
    state = nodes.load_state(lab.dir)
    killed = []
    for name, pid in state.get(node.name, {}).items():
        nodes.stop_pid(pid, signal.SIGKILL)
        killed.append(name)
    for pid in netns.ns_pids(node.netns):
        nodes.stop_pid(pid, signal.SIGKILL)
    state[node.name] = {}
    nodes.save_state(lab.dir, state)
    return killed


def down(lab: Lab, *, remove_files: bool = True) -> dict[str, object]:
    """Stop every lab process, delete the namespaces (veths and bridge with them), remove DIR."""
    stopped = 0
    for ds in nodes.load_state(lab.dir).values():
        for pid in ds.values():
            if pid > 0:
                nodes.stop_pid(pid, signal.SIGTERM)
                stopped += 1
    for name in (netns.HUB, *(n.netns for n in NODES)):
        for pid in netns.ns_pids(name):
            nodes.stop_pid(pid, signal.SIGKILL)
            stopped += 1
    removed = netns.delete_network()
    nodes.state_path(lab.dir).unlink(missing_ok=True)
    if remove_files:
        shutil.rmtree(lab.dir, ignore_errors=True)
    return {"signalled": stopped, "namespaces_removed": removed}

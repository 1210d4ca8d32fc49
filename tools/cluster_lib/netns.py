"""Build and remove the lab's network: one hub namespace holding a bridge, one namespace per node.

Why a hub namespace instead of a bridge in the host: nothing of the lab may appear in the machine's
own network namespace, so the bridge, every veth end and the client address 10.77.0.100 live in
namespaces created here, and deleting those namespaces removes every link with them.  Only
addresses of 10.77.0.0/24 inside these namespaces are ever configured.

:func:`in_netns` switches the *calling thread* into a namespace (``setns``) so that sockets it
creates, and processes it forks, belong there; the lab's driver is single-threaded.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
PREFIX = "qlc-"
HUB = PREFIX + "hub"
BRIDGE = "qlcbr0"
SUBNET_BITS = 24
CLIENT_IP = "10.77.0.100"


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message carries its output."""


@dataclass(frozen=True, slots=True)
class NodeNet:
    """One node's namespace and address."""

    name: str  # "a", "b", "c"
    ip: str

    @property
    def netns(self) -> str:
        return PREFIX + self.name


NODES = (NodeNet("a", "10.77.0.1"), NodeNet("b", "10.77.0.2"), NodeNet("c", "10.77.0.3"))


def ip_available() -> str | None:
    """None when ``ip netns`` can be used here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"ip (iproute2) is not usable: {exc}"
    if proc.returncode != 0:
        return f"`ip netns list` failed: {proc.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def ns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_network(nodes: Sequence[NodeNet] = NODES) -> None:
    """Create the hub with its bridge and one namespace per node joined to it by a veth pair.

    Raises:
        NetnsError: a namespace already exists (run ``down`` first) or an ``ip`` command failed.
    """
    for name in (HUB, *(n.netns for n in nodes)):
        if ns_exists(name):
            raise NetnsError(f"namespace {name} already exists: run `tools/cluster down` first")
    _ip("netns", "add", HUB)
    _ip("-n", HUB, "link", "set", "lo", "up")
    _ip("-n", HUB, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", HUB, "addr", "add", f"{CLIENT_IP}/{SUBNET_BITS}", "dev", BRIDGE)
    _ip("-n", HUB, "link", "set", BRIDGE, "up")
    for node in nodes:
        _ip("netns", "add", node.netns)
        _ip("-n", node.netns, "link", "set", "lo", "up")
        hub_end = f"qlcv{node.name}"
        # both ends are created inside our namespaces: nothing ever appears in the host's
        _ip("-n", HUB, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _ip("-n", HUB, "link", "set", hub_end, "master", BRIDGE)
        _ip("-n", HUB, "link", "set", hub_end, "up")
        _ip("-n", node.netns, "addr", "add", f"{node.ip}/{SUBNET_BITS}", "dev", "eth0")
        _ip("-n", node.netns, "link", "set", "eth0", "up")


def ns_pids(name: str) -> list[int]:
    """The pids of processes living in namespace *name* (all of them were started by the lab)."""
    if not ns_exists(name):
        return []
    out = _ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def delete_network(nodes: Sequence[NodeNet] = NODES) -> list[str]:
    """Delete the node namespaces and the hub (their veths and the bridge go with them); the names removed."""
    removed = []
    for name in (*(n.netns for n in nodes), HUB):
        if ns_exists(name):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def ns_exec(netns: str, argv: Sequence[str]) -> list[str]:
    """*argv* run inside *netns* (``ip netns exec`` execs in place: the pid stays the command's)."""
    return ["ip", "netns", "exec", netns, *argv]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace *name*; sockets made inside stay there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)

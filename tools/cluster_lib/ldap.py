"""The lab's directory: one syncrepl provider on node a, a refreshAndPersist consumer on b and on c.

Choice: each node's qldap queries the slapd in its own namespace (a: the provider, b and c: their
consumer), as an ISP would place a read-only replica next to each mail server.  Writes (loading the
users) go to the provider only; the consumers catch up through syncrepl, which :func:`wait_synced`
checks by counting entries.  The slapd.conf text is :class:`Slapd`'s with the ``syncprov`` overlay
(provider) or a ``syncrepl`` stanza (consumer) appended; ``tools/qldap_slapd.py`` is reused, not
changed.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qldap_slapd import Slapd, SlapdError, find_program

from cluster_lib.netns import NodeNet, in_netns

LDAP_PORT = 389
SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
PASSWORD = "clusterpw"
REPL_INDEX = "index entryCSN,entryUUID eq"


class ProviderSlapd(Slapd):
    """The writable master: back_mdb plus the syncprov overlay."""

    def slapd_conf(self) -> str:
        base = super().slapd_conf().replace("moduleload back_mdb", "moduleload back_mdb\nmoduleload syncprov")
        return base + f"{REPL_INDEX}\noverlay syncprov\nsyncprov-checkpoint 10 1\n"


class ConsumerSlapd(Slapd):
    """A replica that pulls everything below the suffix from *provider_url* and keeps listening."""

    def __init__(self, state_dir: Path, provider_url: str, *, port: int, suffix: str) -> None:
        super().__init__(state_dir, port=port, suffix=suffix)
        self.provider_url = provider_url

    def slapd_conf(self) -> str:
        stanza = (
            f"syncrepl rid=001 provider={self.provider_url}"
            f' type=refreshAndPersist retry="1 +" searchbase="{self.suffix}"'
            f' bindmethod=simple binddn="{self.rootdn}" credentials={self.rootpw}\n'
        )
        return super().slapd_conf() + f"{REPL_INDEX}\n" + stanza

    def _bulk_load(self) -> None:
        # a consumer starts empty: even the suffix entry must come from the provider
        self._pending = []


@dataclass(frozen=True, slots=True)
class LabUser:
    """One mailbox of the lab: its uid and the node whose address is its mailHost."""

    uid: str
    home: NodeNet

    @property
    def address(self) -> str:
        return f"{self.uid}@example.com"


def node_slapd(node: NodeNet, state_dir: Path, provider: NodeNet, initial_ldif: str = "") -> Slapd:
    """The Slapd object of *node* (the provider, loaded with *initial_ldif*, when *node* is *provider*)."""
    if node == provider:
        s: Slapd = ProviderSlapd(state_dir, port=LDAP_PORT, suffix=SUFFIX, initial_ldif=initial_ldif)
    else:
        s = ConsumerSlapd(state_dir, f"ldap://{provider.ip}:{LDAP_PORT}", port=LDAP_PORT, suffix=SUFFIX)
    s.host = node.ip  # instance attribute: listen on the node's address, not loopback
    return s


def start_in(node: NodeNet, slapd: Slapd) -> None:
    """Start *slapd* inside *node*'s namespace (the forked slapd inherits it)."""
    with in_netns(node.netns):
        slapd.start()


def users_ldif(users: list[LabUser], uid: int, gid: int, password_hash: str) -> str:
    """The ou=people subtree: each user with a relative mailMessageStore and mailHost = its node's IP."""
    parts = [f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n"]
    for u in users:
        parts.append(
            f"dn: uid={u.uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\n"
            f"uid: {u.uid}\ncn: {u.uid}\nsn: {u.uid}\nmail: {u.address}\n"
            f"mailHost: {u.home.ip}\nmailMessageStore: {u.uid}/\n"
            f"qmailUID: {uid}\nqmailGID: {gid}\nuserPassword: {password_hash}\n"
        )
    return "\n".join(parts)


def count_entries(node: NodeNet, slapd: Slapd) -> int:
    """Entries below the suffix as *node*'s slapd sees them (0 while the suffix is missing)."""
    with in_netns(node.netns):
        try:
            out = slapd.search(SUFFIX, "(objectClass=*)", "1.1")
        except SlapdError:
            return 0
    return sum(1 for line in out.splitlines() if line.startswith("dn:"))


def wait_synced(nodes: list[tuple[NodeNet, Slapd]], want: int, timeout: float = 60.0) -> dict[str, int]:
    """Wait until every slapd holds *want* entries; the counts seen last, by node name."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {n.name: count_entries(n, s) for n, s in nodes}
        if all(c == want for c in counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.3)


def diverge(node: NodeNet, slapd: Slapd, uid: str, mail_host: str) -> None:
    """Give *node*'s consumer its own ``mailHost`` for *uid*, as replication trouble would.

    A consumer refuses writes over LDAP ("shadow context"), so the entry is changed offline with
    ``slapmodify`` while that slapd is stopped; on restart syncrepl only fetches what changed on the
    provider since its cookie, so the two copies keep disagreeing.

    Raises:
        SlapdError: slapmodify failed or slapd did not come back.
    """
    ldif = (f"dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: mailHost\nmailHost: {mail_host}\n")
    src = slapd.state_dir / "diverge.ldif"
    src.write_text(ldif)
    slapd.stop()
    slapmodify = find_program("slapmodify")
    if slapmodify is None:
        raise SlapdError("slapmodify not found")
    conf = str(slapd.state_dir / "slapd.conf")
    proc = subprocess.run([slapmodify, "-f", conf, "-b", SUFFIX, "-l", str(src)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        start_in(node, slapd)
        raise SlapdError(f"slapmodify failed: {proc.stderr.strip()}")
    start_in(node, slapd)


def mail_host_seen(node: NodeNet, slapd: Slapd, uid: str) -> str:
    """The ``mailHost`` of *uid* as *node*'s slapd has it ("" when absent)."""
    with in_netns(node.netns):
        out = slapd.search(SUFFIX, f"(uid={uid})", "mailHost")
    for line in out.splitlines():
        if line.lower().startswith("mailhost:"):
            return line.split(":", 1)[1].strip()
    return ""

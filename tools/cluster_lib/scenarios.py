"""The lab's four scenarios, run from the hub namespace as a client at 10.77.0.100; a JSON-ready summary.

1. routing: every user's mail, submitted over SMTP at every node, ends in the Maildir on its mailHost
   and nowhere else.
2. loop: node b's replica is made to disagree with the provider about ``loopy``'s mailHost (a says b,
   b says a); a message for loopy goes a → b → a and is bounced by a on its own CLUSTERHOST line.
3. pbs: a POP3 login on node a lets the same client address relay through node b's (and c's) smtpd,
   through the shared pbsdbd on a.
4. node_down: node c is killed (SIGKILL, slapd included); mail for its users submitted at a and b is
   deferred, and delivered once c is started again and the managers get SIGALRM.
Results are observed on disk (Maildir files carrying a per-message token) and in the managers' logs.
"""

from __future__ import annotations

import os
import poplib
import signal
import smtplib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cluster_lib import lab, ldap, netns, nodes
from cluster_lib.netns import HUB, NODES, NodeNet, in_netns

Result = dict[str, object]
WAIT = 60.0
ROUTED = ("a1", "a2", "b1", "b2", "c1", "c2")
FOREIGN = "friend@far-away.example"


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def submit(node: NodeNet, sender: str, rcpt: str, token: str) -> None:
    """Send one message over SMTP to *node* from the hub; the token is in Subject and body.

    Raises:
        smtplib.SMTPException, OSError: the node refused it.
    """
    msg = f"From: {sender}\nTo: {rcpt}\nSubject: {token}\n\nlab message {token}\n"
    with in_netns(HUB), smtplib.SMTP(node.ip, nodes.SMTP_PORT, timeout=30) as smtp:
        smtp.sendmail(sender, [rcpt], msg)


def holders(the_lab: lab.Lab, uid: str, token: str) -> list[str]:
    """Names of the nodes whose Maildir of *uid* holds a message with *token*."""
    want = token.encode()
    out = []
    for node in NODES:
        md = nodes.maildir_of(the_lab.dir, node, uid)
        for sub in ("new", "cur"):
            d = md / sub
            if any(want in p.read_bytes() for p in d.iterdir()) if d.is_dir() else False:
                out.append(node.name)
                break
    return out


def _token(kind: str) -> str:
    return f"lab-{kind}-{uuid.uuid4().hex[:12]}"


def routing(the_lab: lab.Lab) -> Result:
    users = {u.uid: u for u in the_lab.users}
    sent: list[tuple[str, str]] = []
    for node in NODES:
        for uid in ROUTED:
            token = _token(f"route-{node.name}-{uid}")
            submit(node, f"{lab.SENDER_USER}@example.com", users[uid].address, token)
            sent.append((uid, token))
    wait_until(lambda: all(users[u].home.name in holders(the_lab, u, t) for u, t in sent))
    on_host = misplaced = 0
    missing = []
    for uid, token in sent:
        where = holders(the_lab, uid, token)
        on_host += users[uid].home.name in where
        misplaced += sum(1 for w in where if w != users[uid].home.name)
        if not where:
            missing.append(token)
    return {"ok": on_host == len(sent) and misplaced == 0, "sent": len(sent), "on_mailhost": on_host,
            "misplaced": misplaced, "missing": missing}


def loop(the_lab: lab.Lab) -> Result:
    a, b = NODES[0], NODES[1]
    slapd_b = the_lab.slapd(b)
    ldap.diverge(b, slapd_b, lab.LOOP_USER, a.ip)
    state = nodes.load_state(the_lab.dir)
    state[b.name]["slapd"] = slapd_b.pid or 0
    nodes.save_state(the_lab.dir, state)
    views = {n.name: ldap.mail_host_seen(n, the_lab.slapd(n), lab.LOOP_USER) for n in (a, b)}
    token = _token("loop")
    submit(a, f"{lab.SENDER_USER}@example.com", f"{lab.LOOP_USER}@example.com", token)
    bounced = wait_until(lambda: bool(holders(the_lab, lab.SENDER_USER, token)))
    bounce_text, lines = False, 0
    for node in NODES:
        for p in _maildir_files(nodes.maildir_of(the_lab.dir, node, lab.SENDER_USER)):
            data = p.read_bytes()
            if token.encode() in data:
                bounce_text = b"This message is looping" in data
                lines = data.count(b"Delivered-To: CLUSTERHOST ")
    time.sleep(2)  # a looping message would keep producing copies and CLUSTERHOST hops meanwhile
    copies = holders(the_lab, lab.LOOP_USER, token)
    disagree = views == {a.name: b.ip, b.name: a.ip}
    return {"ok": disagree and bounced and bounce_text and lines == 2 and not copies,
            "views": views, "bounced": bounced, "bounce_says_looping": bounce_text,
            "clusterhost_lines": lines, "delivered_to_loopy_on": copies,
            "bounce_on": holders(the_lab, lab.SENDER_USER, token)}


def _maildir_files(md: Path) -> list[Path]:
    return [p for sub in ("new", "cur") if (md / sub).is_dir() for p in (md / sub).iterdir()]


def relay_code(node: NodeNet) -> int:
    """The RCPT reply of *node*'s smtpd to a foreign recipient, from the client address (no DATA)."""
    with in_netns(HUB), smtplib.SMTP(node.ip, nodes.SMTP_PORT, timeout=30) as smtp:
        smtp.ehlo("roaming.client.test")
        smtp.mail(f"{lab.SENDER_USER}@example.com")
        code, _ = smtp.rcpt(FOREIGN)
        smtp.rset()
        return code


def pbs(the_lab: lab.Lab) -> Result:
    a, b, c = NODES
    before = relay_code(b)
    with in_netns(HUB):
        pop = poplib.POP3(a.ip, nodes.POP3_PORT, timeout=30)
        pop.user(lab.SENDER_USER)
        pop.pass_(ldap.PASSWORD)
        pop.quit()
    after_b = relay_code(b)
    after_c = relay_code(c)
    return {"ok": before == 553 and after_b == 250 and after_c == 250, "login_node": a.name,
            "before_login_b": before, "after_login_b": after_b, "after_login_c": after_c}


def _deferrals(path: Path, offset: int) -> int:
    with path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return sum(1 for line in text.splitlines() if ": deferral: " in line and "cluster-forward" in line)


def _queue_size(root: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(root / "queue" / "mess"))


def node_down(the_lab: lab.Lab) -> Result:
    a, b, c = NODES
    logs = {n.name: nodes.log_of(the_lab.dir, n, "send") for n in (a, b)}
    offsets = {k: p.stat().st_size for k, p in logs.items()}
    killed = lab.kill_node(the_lab, c)
    sent: list[tuple[str, str]] = []
    for node in (a, b):
        for uid in ("c1", "c2"):
            token = _token(f"down-{node.name}-{uid}")
            submit(node, f"{lab.SENDER_USER}@example.com", f"{uid}@example.com", token)
            sent.append((uid, token))
    per_node = len(sent) // 2
    wait_until(lambda: all(_deferrals(logs[k], offsets[k]) >= per_node for k in logs))
    deferred = sum(_deferrals(logs[k], offsets[k]) for k in logs)
    queued = {n.name: _queue_size(nodes.root_of(the_lab.dir, n)) for n in (a, b)}
    early = sum(1 for uid, t in sent if holders(the_lab, uid, t))
    lab.start_node(the_lab, c)
    state = nodes.load_state(the_lab.dir)
    for node in (a, b):
        os.kill(state[node.name]["send"], signal.SIGALRM)
    wait_until(lambda: all("c" in holders(the_lab, u, t) for u, t in sent))
    delivered = sum(1 for uid, t in sent if "c" in holders(the_lab, uid, t))
    drained = wait_until(lambda: all(_queue_size(nodes.root_of(the_lab.dir, n)) == 0 for n in (a, b)), 20)
    lost = len(sent) - delivered
    return {"ok": deferred >= len(sent) and early == 0 and lost == 0 and drained, "killed": killed,
            "sent": len(sent), "deferrals_logged": deferred, "queued_while_down": queued,
            "delivered_while_down": early, "delivered_after_return": delivered, "queues_drained": drained,
            "lost": lost}


SCENARIOS: tuple[tuple[str, Callable[[lab.Lab], Result]], ...] = (
    ("routing", routing), ("loop", loop), ("pbs", pbs), ("node_down", node_down))


def run_all(the_lab: lab.Lab) -> Result:
    """Run every scenario (a failing one does not stop the others); the summary with ``ok`` and ``lost``."""
    if not netns.ns_exists(HUB) or not nodes.state_path(the_lab.dir).exists():
        raise nodes.LabError(f"no lab in {the_lab.dir}: run `tools/cluster up` first")
    results: dict[str, Result] = {}
    for name, fn in SCENARIOS:
        try:
            results[name] = fn(the_lab)
        except Exception as exc:  # reported in the summary; the next scenario still runs
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    lost = 0
    for key in ("routing", "node_down"):
        r = results.get(key, {})
        missing = r.get("missing", [])
        lost += len(missing) if isinstance(missing, list) else 0
        n = r.get("lost", 0)
        lost += n if isinstance(n, int) else 0
    return {"ok": all(r.get("ok") is True for r in results.values()), "lost": lost, "scenarios": results}

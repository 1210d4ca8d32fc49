"""Metrics endpoints and systemd readiness, end to end: ``qldap up`` with ``metrics:`` in services.yaml.

Real parts only: the supervisor runs the real smtpd, send and pop3d against the shared slapd; the
test talks SMTP and POP3 with smtplib/poplib, scrapes ``/metrics`` with urllib and parses the text
with prometheus-client's own parser; the systemd side is a real AF_UNIX datagram socket named by
``NOTIFY_SOCKET``.  Waits end as soon as the awaited state is reached (no timing assertions).
"""

from __future__ import annotations

import os
import poplib
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qldap import metrics, sdnotify
from qldap.control.services import Listen, parse_services
from qldap.errors import ConfigError
from tests import test_ops_up_e2e as e2e
from tests.test_ops_supervise import WAIT, Up
from tests.test_ops_up_e2e import PATIENCE, Site, delivered, free_port, wait_until

mailroot, site, ups = e2e.mailroot, e2e.site, e2e.ups  # the fixtures of the qldap up e2e tests

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:PORT/metrics``, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(what: str, port: int, check: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + PATIENCE
    while True:
        samples = scrape(port)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"gave up waiting for {what}; last scrape {samples}"
        time.sleep(0.05)


def with_metrics(site: Site) -> tuple[int, int, int]:
    """Rewrite services.yaml with a metrics endpoint per daemon; their ports."""
    ports = free_port(), free_port(), free_port()
    (site.root / "services.yaml").write_text(
        f'smtpd:\n  listen: ["127.0.0.1:{site.smtp_port}"]\n  rules: control/qmail-smtpd.rules\n'
        f'  env: {{RCPTCHECK: "", LOGLEVEL: "2"}}\n  metrics: "127.0.0.1:{ports[0]}"\n'
        f'send:\n  metrics: "127.0.0.1:{ports[1]}"\n'
        f'pop3d:\n  listen: ["127.0.0.1:{site.pop_port}"]\n  metrics: "127.0.0.1:{ports[2]}"\n'
    )
    return ports


def start_up(site: Site, started: list[Up]) -> Up:
    code = "import sys; from qldap.cli.qldap import main; sys.exit(main(sys.argv[1:]))"
    up = Up([sys.executable, "-c", code, "up", str(site.root)])
    started.append(up)
    up.wait_for("qldap up: all 3 daemons ready")
    return up


@pytest.mark.slapd
@pytest.mark.slow
def test_counters_move_with_real_smtp_and_pop3_traffic(site: Site, ups: list[Up]) -> None:
    smtp_m, send_m, pop_m = with_metrics(site)
    up = start_up(site, ups)
    before = scrape(smtp_m)
    assert value(before, "qldap_sessions_total", daemon="smtpd") == 0
    with smtplib.SMTP("127.0.0.1", site.smtp_port, timeout=WAIT) as smtp:
        smtp.ehlo("client.example")
        assert smtp.docmd("RCPT", "TO:<alice@example.com>")[0] == 503  # before MAIL: bad sequence
        assert smtp.sendmail("joe@far.example", ["alice@example.com"], b"Subject: m\r\n\r\nhi\r\n") == {}
    wait_until("the message in alice's Maildir", lambda: len(delivered(site)) == 1)

    got = eventually("the smtpd session to end", smtp_m,
                     lambda s: value(s, "qldap_sessions_current", daemon="smtpd") == 0)
    assert value(got, "qldap_sessions_total", daemon="smtpd") == 1
    assert value(got, "qldap_smtp_replies_total", command="RCPT", result="rejected", reason="503 5.5.1") == 1
    assert value(got, "qldap_smtp_replies_total", command="RCPT", result="accepted", reason="250") == 1
    assert value(got, "qldap_smtp_replies_total", command="MAIL", result="accepted", reason="250") == 1
    assert value(got, "qldap_smtp_replies_total", command="message", result="accepted", reason="250") == 1

    sent = eventually("the delivery counted", send_m,
                      lambda s: value(s, "qldap_deliveries_total", channel="local", result="success") == 1)
    assert value(sent, "qldap_deliveries_total", channel="local", result="bounce") == 0
    assert value(sent, "qldap_ldap_operations_total", daemon="send", operation="search", outcome="ok") >= 1
    assert value(sent, "qldap_ldap_operation_seconds_count", daemon="send") >= 1
    assert ("qldap_queue_messages", ()) in sent
    assert ("qldap_queue_oldest_age_seconds", ()) in sent

    pop = poplib.POP3("127.0.0.1", site.pop_port, timeout=WAIT)
    try:
        pop.user("alice")
        assert pop.pass_("secret").startswith(b"+OK")
    finally:
        pop.quit()
    popped = eventually("the POP3 session counted", pop_m,
                        lambda s: value(s, "qldap_sessions_total", daemon="pop3d") == 1)
    assert value(popped, "qldap_ldap_operations_total", daemon="pop3d", operation="search", outcome="ok") >= 1

    up.signal(15)
    assert up.proc.wait(timeout=PATIENCE) == 0
    rest = up.drain()
    assert any(f"qldap smtpd: metrics on 127.0.0.1:{smtp_m}" in line for line in up.lines + rest)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of *name* over every sample whose labels include *labels* (any other labels)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.mark.slapd
@pytest.mark.slow
def test_a_directory_outage_shows_as_errors_deferrals_and_a_waiting_queue(site: Site, ups: list[Up]) -> None:
    """LDAP unreachable: RCPTCHECK defers (451), the delivery defers, the message waits in the queue —
    and each daemon's endpoint says so: LDAP errors, deferred replies, deferred deliveries, queue size
    and a growing age of the oldest message."""
    smtp_m, send_m, _ = with_metrics(site)
    (site.root / "control" / "ldapserver").write_text(f"127.0.0.1:{free_port()}\n")  # nobody listens
    up = start_up(site, ups)
    with smtplib.SMTP("127.0.0.1", site.smtp_port, timeout=WAIT) as smtp:
        smtp.ehlo("client.example")
        assert smtp.docmd("MAIL", "FROM:<joe@far.example>")[0] == 250
        assert smtp.docmd("RCPT", "TO:<alice@example.com>")[0] == 451  # temporary, never 5xx
    got = eventually("the deferred RCPT counted", smtp_m,
                     lambda s: total(s, "qldap_smtp_replies_total", command="RCPT", result="deferred") == 1)
    assert total(got, "qldap_smtp_replies_total", result="rejected") == 0
    assert value(got, "qldap_ldap_operations_total", daemon="smtpd", operation="search",
                 outcome="unreachable") >= 1  # fmt: skip

    inject = Path(sys.executable).parent / "qmail-inject"
    env = dict(os.environ, QLDAP_ROOT=str(site.root))
    done = subprocess.run([str(inject), "alice@example.com"], input=b"Subject: waits\n\nfor LDAP\n",
                          env=env, capture_output=True, timeout=PATIENCE, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent = eventually("the deferral counted", send_m,
                      lambda s: value(s, "qldap_deliveries_total", channel="local", result="defer") >= 1)
    assert value(sent, "qldap_deliveries_total", channel="local", result="bounce") == 0
    assert value(sent, "qldap_deliveries_total", channel="local", result="success") == 0
    assert value(sent, "qldap_ldap_operations_total", daemon="send", operation="search",
                 outcome="unreachable") >= 1  # fmt: skip
    assert value(sent, "qldap_queue_messages") == 1
    first = value(sent, "qldap_queue_oldest_age_seconds")
    later = eventually("the oldest message to age", send_m,
                       lambda s: value(s, "qldap_queue_oldest_age_seconds") > first)
    assert value(later, "qldap_queue_messages") == 1
    assert delivered(site) == []
    up.signal(15)
    assert up.proc.wait(timeout=PATIENCE) == 0


@pytest.mark.slapd
@pytest.mark.slow
def test_qldap_up_tells_systemd_ready_and_stopping(
    site: Site, ups: list[Up], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(WAIT)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        up = start_up(site, ups)
        ready = sock.recv(4096).decode()
        assert ready.splitlines()[0] == "READY=1"
        assert "STATUS=all 3 daemons ready" in ready
        up.signal(15)
        assert sock.recv(4096) == b"STOPPING=1"
        assert up.proc.wait(timeout=PATIENCE) == 0


def test_notify_reaches_an_abstract_socket_and_reports_failures() -> None:
    name = f"qldap-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(WAIT)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is None
        assert sock.recv(4096) == b"READY=1"
    assert sdnotify.notify("READY=1", {}) is None  # not under systemd: nothing to do
    gone = sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert gone is not None and "unable to notify systemd at /nonexistent/notify" in gone
    odd = sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert odd is not None and "neither an absolute path nor @abstract" in odd


def test_services_yaml_metrics_key(tmp_path: Path) -> None:
    services = parse_services('smtpd:\n  listen: ["127.0.0.1:25"]\n  metrics: "127.0.0.1:9101"\nsend: {}\n',
                              tmp_path)
    smtpd, send = services.specs
    assert smtpd.metrics == Listen("127.0.0.1", 9101)
    assert send.metrics is None
    assert smtpd.environment({})[metrics.ENV] == "127.0.0.1:9101"
    assert metrics.ENV not in send.environment({})
    with pytest.raises(ConfigError, match=r"smtpd: metrics: port 0 .* \(line 3\)"):
        parse_services('smtpd:\n  listen: ["127.0.0.1:25"]\n  metrics: "127.0.0.1:0"\n', tmp_path)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:25 is already used by smtpd"):
        parse_services('smtpd:\n  listen: ["127.0.0.1:25"]\nsend:\n  metrics: "127.0.0.1:25"\n', tmp_path)


def test_reasons_are_bounded_to_codes_and_statuses() -> None:
    assert metrics.reply_reason(553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)") == (
        "553 5.7.1"
    )
    assert metrics.reply_reason(250, "ok 1700000000 qp 42") == "250"
    assert [metrics.reply_result(c) for c in (250, 354, 451, 550)] == [
        "accepted", "accepted", "deferred", "rejected"
    ]


WORKERS = r"""
import os, sys
from pathlib import Path
from qldap import metrics
metrics.prepare_multiprocess(Path(sys.argv[1]))
endpoint = metrics.start("smtpd", "127.0.0.1:0")
pids = []
for n in range(2):
    pid = os.fork()
    if pid == 0:
        rec = metrics.recorder()
        rec.session_opened()
        rec.smtp_reply("RCPT", 550, "sorry, no mailbox here by that name. (#5.1.1)")
        if n == 1:
            rec.session_closed()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
metrics.worker_exited(pids[0])
print(endpoint.port, flush=True)
sys.stdin.read()
"""


def test_worker_processes_share_one_endpoint(tmp_path: Path) -> None:
    """Multiprocess mode: two forked workers' counts appear, summed, at the parent's endpoint."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop(metrics.MULTIPROC_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", WORKERS, str(tmp_path / "mp")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        got = scrape(port)
        assert value(got, "qldap_sessions_total", daemon="smtpd") == 2
        rcpt = value(got, "qldap_smtp_replies_total", command="RCPT", result="rejected", reason="550 5.1.1")
        assert rcpt == 2
        assert value(got, "qldap_sessions_current", daemon="smtpd") == 0  # one closed, one exited
    finally:
        proc.kill()
        proc.wait()

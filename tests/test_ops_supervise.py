"""`qldap up`'s supervisor with small test daemons: ready lines, restarts with backoff, signals, stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.control.services import Daemon, Listen, ServiceSpec, parse_services
from qldap.errors import ConfigError
from qldap.supervise import Backoff, daemon_command, describe_exit

WAIT = 30.0  # a hang guard only: every wait ends as soon as the awaited line appears
# The stop timeout where a test wants a child killed: the well-behaved children stopping alongside it must
# be done by then even on a loaded machine, so it is long, not tight (it is the test's duration too).
STUBBORN_TIMEOUT = 10.0

# A stand-in daemon: prints the ready lines of the real ones, reports signals, and can crash or
# ignore TERM as its environment says.  argv: NAME [HOST:PORT …]
DAEMON = r'''
import os, signal, sys, time
name, listens = sys.argv[1], sys.argv[2:]

def say(text):
    sys.stderr.write(f"qldap {name}: {text}\n")
    sys.stderr.flush()

def on_hup(signum, frame):
    say("got HUP")

def on_alrm(signum, frame):
    say("got ALRM")

def on_term(signum, frame):
    say("stopping cleanly")
    sys.exit(0)

signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGALRM, on_alrm)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else on_term)

counter = os.environ.get("CRASH_COUNTER")
crash = False
if counter:
    runs = int(open(counter).read() or 0) if os.path.exists(counter) else 0
    open(counter, "w").write(str(runs + 1))
    crash = runs < int(os.environ["CRASHES"])
say(f"started pid {os.getpid()}")
for addr in listens:
    say(f"listening on {addr}")
if not listens:
    say("ready")
if crash:
    sys.exit(int(os.environ.get("CRASH_STATUS", "3")))
while True:
    time.sleep(0.05)
'''

# Runs the real Supervisor with the test daemon plugged in through the command seam.
DRIVER = r'''
import sys
from pathlib import Path
from qldap.control.services import load_services
from qldap.logs import Logger
from qldap.supervise import Backoff, Options, supervise

root, daemon = Path(sys.argv[1]), sys.argv[2]

def command_for(spec, root):
    return [sys.executable, daemon, spec.name, *(str(a) for a in spec.listen)]

options = Options(backoff=Backoff(0.2, 0.8, 60.0), stop_timeout=float(sys.argv[3]), command_for=command_for)
sys.exit(supervise(root, load_services(root), Logger("qldap up"), options))
'''


class Up:
    """A running supervisor process whose stderr lines are collected by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str) -> str:
        """Collect lines until one contains *text*; fail at EOF or after the hang guard."""
        deadline = time.monotonic() + WAIT
        for line in self.lines:
            if text in line:
                self.lines.remove(line)
                return line
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"supervisor ended before {text!r}; got {self.lines}")
            if text in line:
                return line
            self.lines.append(line)
        pytest.fail(f"no line with {text!r}; got {self.lines}")

    def drain(self) -> list[str]:
        """Every remaining line up to EOF (call after the process ended)."""
        out = list(self.lines)
        while (line := self._queue.get(timeout=WAIT)) is not None:
            out.append(line)
        return out

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def _descendants(pid: int) -> list[int]:
    """Every live descendant of *pid* (children may run in their own sessions)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def up_factory(root: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        # never leave daemons behind, even when a test failed before a clean stop
        leftovers = _descendants(up.proc.pid)
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start(root: Path, started: list[Up], yaml_text: str, stop_timeout: float = WAIT) -> Up:
    (root / "services.yaml").write_text(yaml_text)
    scripts = root.parent
    (scripts / "daemon.py").write_text(DAEMON)
    (scripts / "driver.py").write_text(DRIVER)
    driver, daemon = str(scripts / "driver.py"), str(scripts / "daemon.py")
    up = Up([sys.executable, driver, str(root), daemon, str(stop_timeout)])
    started.append(up)
    return up


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def child_pid(line: str) -> int:
    return int(line.rsplit(" ", 1)[1])


# -- pure parts -----------------------------------------------------------------------------------


def test_backoff_doubles_to_the_maximum_and_resets_after_a_long_run() -> None:
    b = Backoff(1.0, 30.0, 60.0)
    delays = []
    delay = None
    for _ in range(7):
        delay = b.next(delay, uptime=2.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.next(30.0, uptime=60.0) == 1.0
    assert b.next(30.0, uptime=59.9) == 30.0


def test_describe_exit_tells_status_from_signal() -> None:
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by signal 9"


def test_daemon_command_passes_root_listeners_and_rules(tmp_path: Path) -> None:
    rules = tmp_path / "control" / "tcp.smtp"
    rules.parent.mkdir()
    rules.write_text(":allow\n")
    spec = ServiceSpec(Daemon.SMTPD, (Listen("127.0.0.1", 2525), Listen("::1", 25)), rules)
    assert daemon_command(spec, tmp_path) == [
        sys.executable, "-m", "qldap.cli.qldap", "smtpd", "--root", str(tmp_path),
        "--listen", "127.0.0.1:2525", "--listen", "[::1]:25", "--rules", str(rules),
    ]
    send = parse_services("send: {}\n", tmp_path).specs[0]
    assert daemon_command(send, tmp_path) == [sys.executable, "-m", "qldap.cli.qldap", "send", "--root",
                                              str(tmp_path)]


def test_daemon_command_passes_smtpd_processes(tmp_path: Path) -> None:
    """``processes: 2`` becomes ``--processes 2``; 1 (the default) adds nothing; 0 or a string is refused."""
    two = parse_services('smtpd: {listen: ["127.0.0.1:2525"], processes: 2}', tmp_path).specs[0]
    assert daemon_command(two, tmp_path)[-2:] == ["--processes", "2"]
    one = parse_services('smtpd: {listen: ["127.0.0.1:2525"], processes: 1}', tmp_path).specs[0]
    assert "--processes" not in daemon_command(one, tmp_path)
    for bad in ("0", '"2"'):
        with pytest.raises(ConfigError, match=r"smtpd: processes: must be a whole number of at least 1"):
            parse_services(f'smtpd: {{listen: ["127.0.0.1:2525"], processes: {bad}}}', tmp_path)
    with pytest.raises(ConfigError, match="send: unknown key 'processes'"):
        parse_services("send: {processes: 2}", tmp_path)


def test_section_env_overrides_the_supervisor_environment() -> None:
    spec = ServiceSpec(Daemon.SEND, env=(("LOGLEVEL", "4"),))
    assert spec.environment({"LOGLEVEL": "1", "PATH": "/bin"}) == {"LOGLEVEL": "4", "PATH": "/bin"}


# -- with processes -------------------------------------------------------------------------------

SERVICES = """\
smtpd:
  listen: ["127.0.0.1:2525", "[::1]:2525"]
send: {}
pop3d:
  listen: ["127.0.0.1:1110"]
"""


def test_ready_line_per_listener_and_clean_stop(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, SERVICES)
    assert up.wait_for("qldap up: smtpd listening on") == "qldap up: smtpd listening on 127.0.0.1:2525"
    assert up.wait_for("qldap up: smtpd listening on") == "qldap up: smtpd listening on [::1]:2525"
    assert up.wait_for("qldap up: pop3d listening on") == "qldap up: pop3d listening on 127.0.0.1:1110"
    assert up.wait_for("qldap up: send") == "qldap up: send ready"
    assert up.wait_for("qldap up: all") == "qldap up: all 3 daemons ready"
    up.signal(signal.SIGTERM)
    assert up.proc.wait(timeout=WAIT) == 0
    rest = up.drain()
    assert sum("stopping cleanly" in line for line in rest) == 3
    for name in ("smtpd", "send", "pop3d"):
        assert f"qldap up: {name} exited with status 0" in rest
    assert rest[-1] == "qldap up: stopped"


def test_child_lines_are_relayed(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, "send: {}\n")
    assert up.wait_for("qldap send: ready") == "qldap send: ready"
    assert up.stop() == 0


def test_crash_is_restarted_with_doubling_backoff(root: Path, up_factory: list[Up]) -> None:
    counter = root.parent / "runs"
    up = start(root, up_factory, f"""\
smtpd:
  listen: ["127.0.0.1:2525"]
  env: {{CRASH_COUNTER: "{counter}", CRASHES: "3", CRASH_STATUS: "7"}}
""")
    assert up.wait_for("smtpd exited") == "qldap up: smtpd exited with status 7; restarting in 0.2 s"
    assert up.wait_for("smtpd exited") == "qldap up: smtpd exited with status 7; restarting in 0.4 s"
    assert up.wait_for("smtpd exited") == "qldap up: smtpd exited with status 7; restarting in 0.8 s"
    pids = {child_pid(up.wait_for("qldap smtpd: started pid")) for _ in range(4)}
    assert len(pids) == 4
    assert counter.read_text() == "4"
    assert up.stop() == 0
    assert not any("status 7" in line for line in up.drain())


def test_a_killed_child_is_restarted(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, "send: {}\n")
    pid = child_pid(up.wait_for("qldap send: started pid"))
    up.wait_for("qldap up: send ready")
    os.kill(pid, signal.SIGKILL)
    assert up.wait_for("send killed") == "qldap up: send killed by signal 9; restarting in 0.2 s"
    new_pid = child_pid(up.wait_for("qldap send: started pid"))
    assert new_pid != pid
    assert up.stop() == 0


def test_hup_reaches_every_child_and_alrm_only_send(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, SERVICES)
    up.wait_for("qldap up: all 3 daemons ready")
    up.signal(signal.SIGHUP)
    got = sorted(up.wait_for("got HUP").split(":")[0] for _ in range(3))
    assert got == ["qldap pop3d", "qldap send", "qldap smtpd"]
    up.signal(signal.SIGALRM)
    assert up.wait_for("got ALRM") == "qldap send: got ALRM"
    assert up.stop() == 0
    assert not any("got ALRM" in line for line in up.drain())


def test_a_child_ignoring_term_is_killed_after_the_timeout(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, """\
send:
  env: {IGNORE_TERM: "1"}
pbsdbd: {}
""", stop_timeout=STUBBORN_TIMEOUT)
    stubborn = child_pid(up.wait_for("qldap send: started pid"))
    up.wait_for("qldap up: all 2 daemons ready")
    up.signal(signal.SIGTERM)
    assert up.wait_for("did not stop") == "qldap up: send did not stop within 10 s; killing it"
    assert up.proc.wait(timeout=WAIT) == 0
    rest = up.drain()
    assert "qldap up: send killed by signal 9" in rest
    assert "qldap up: pbsdbd exited with status 0" in rest
    assert not pid_alive(stubborn)


def test_children_do_not_outlive_a_stop(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, SERVICES)
    pids = [child_pid(up.wait_for("started pid")) for _ in range(3)]
    up.wait_for("all 3 daemons ready")
    assert all(pid_alive(p) for p in pids)
    assert up.stop() == 0
    assert not any(pid_alive(p) for p in pids)


def test_sigint_stops_like_sigterm(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, "send: {}\n")
    up.wait_for("all 1 daemons ready")
    up.signal(signal.SIGINT)
    assert up.proc.wait(timeout=WAIT) == 0
    assert "qldap up: SIGINT received; stopping every daemon" in up.drain()


def test_empty_services_yaml_runs_nothing_and_exits_0(root: Path, up_factory: list[Up]) -> None:
    up = start(root, up_factory, "")
    assert up.proc.wait(timeout=WAIT) == 0
    assert up.drain() == ["qldap up: services.yaml starts no daemons; nothing to do"]


# -- the command and the real daemons -------------------------------------------------------------


def test_up_refuses_an_invalid_services_yaml(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qldap.supervise import up_main

    (root / "services.yaml").write_text('smtpd:\n  lisen: ["127.0.0.1:2525"]\n')
    assert up_main([str(root)]) == 111
    assert capsys.readouterr().err == (
        "qldap up: fatal: services.yaml: smtpd: unknown key 'lisen'; "
        "allowed: listen, rules, env, metrics, limits, processes (line 2)\n"
    )


def test_up_without_services_yaml(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qldap.supervise import up_main

    assert up_main([str(root)]) == 111
    assert capsys.readouterr().err.startswith("qldap up: fatal: services.yaml: ")


def _registered_daemons() -> set[str]:
    """The daemon subcommands `qldap` can run now (they land module by module)."""
    import importlib.util

    from qldap.cli import qldap

    return {name for name in getattr(qldap, "DAEMONS", ()) if importlib.util.find_spec(f"qldap.cli.{name}")}


REAL = pytest.mark.skipif(not {"smtpd", "send"} <= _registered_daemons(),
                          reason="the smtpd/send daemon modules have not landed yet")


def _real_root(tmp_path: Path) -> tuple[Path, int]:
    import socket

    from qldap.setup.init import InitOptions, init_root

    root = tmp_path / "qmail"
    init_root(InitOptions(root=root, me="mx1.example.com", demo=True))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    (root / "services.yaml").write_text(
        f'smtpd:\n  listen: ["127.0.0.1:{port}"]\n  rules: control/qmail-smtpd.rules\nsend: {{}}\n'
    )
    return root, port


def _real_up(root: Path, started: list[Up]) -> Up:
    code = f"import sys; from qldap.supervise import up_main; sys.exit(up_main([{str(root)!r}]))"
    up = Up([sys.executable, "-c", code])
    started.append(up)
    up.wait_for("qldap up: all 2 daemons ready")
    return up


@REAL
def test_real_daemons_under_up(tmp_path: Path, up_factory: list[Up]) -> None:
    import socket

    root, port = _real_root(tmp_path)
    up = _real_up(root, up_factory)
    assert f"qldap up: smtpd listening on 127.0.0.1:{port}" in up.lines
    assert "qldap up: send ready" in up.lines
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        assert conn.recv(512).startswith(b"220 ")
    assert up.stop() == 0
    assert "qldap up: stopped" in up.drain()


@REAL
def test_term_right_after_acceptance_loses_no_mail(tmp_path: Path, up_factory: list[Up]) -> None:
    import smtplib

    from qldap.cli.qstat import count_queue
    from qldap.queue.layout import QueueLayout

    root, port = _real_root(tmp_path)
    up = _real_up(root, up_factory)
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as smtp:
        refused = smtp.sendmail("joe@far.example", ["alice@example.com"], b"Subject: t\r\n\r\nkeep me\r\n")
    assert refused == {}
    assert up.stop() == 0
    delivered = [p for p in (root / "mail" / "alice" / "Maildir" / "new").iterdir()]
    queued = count_queue(QueueLayout.of(root)).messages
    assert len(delivered) + queued >= 1
    assert all(b"keep me" in p.read_bytes() for p in delivered)


@REAL
def test_daemons_die_with_a_killed_supervisor(tmp_path: Path, up_factory: list[Up]) -> None:
    root, port = _real_root(tmp_path)
    up = _real_up(root, up_factory)
    children = _descendants(up.proc.pid)
    assert children
    up.proc.kill()  # kill -9: no chance to stop the daemons itself
    up.proc.wait()
    deadline = time.monotonic() + WAIT
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in children)
    # so a new supervisor can take over the ports and the queue lock at once
    again = _real_up(root, up_factory)
    assert f"qldap up: smtpd listening on 127.0.0.1:{port}" in again.lines
    assert again.stop() == 0

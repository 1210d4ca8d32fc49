"""Helpers for the queue-manager tests: test spawners, a settable clock, a manager in-process or as a process.

The in-process manager is the real :class:`~qldap.send.manager.Manager` on a real queue with the real
trigger FIFO and the real injector for bounces; only the two spawners (and, where qmail-send(8) SCHEDULING
timing is tested, the clock) are test doubles.  :class:`ManagerProcess` runs the real ``qldap send`` program.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qldap.control.domains import Locals
from qldap.control.files import ControlDir
from qldap.mailauth.dkimsign import DkimSigner
from qldap.queue.envelope import Envelope, parse_todo
from qldap.queue.inject import QueuedMessage, inject
from qldap.queue.layout import QueueLayout, create_queue, current_user_ids
from qldap.queue.trigger import TriggerReader
from qldap.reports import Letter, Report
from qldap.send.channels import CrashHook
from qldap.send.config import SendConfig
from qldap.send.manager import Manager
from qldap.send.signing import signing_bounces
from qldap.send.state import reloader

ROOT_DIR = Path(__file__).resolve().parent.parent
QLDAP = ROOT_DIR / ".venv" / "bin" / "qldap"
PYTHON = ROOT_DIR / ".venv" / "bin" / "python"
PATIENCE = 60.0  # seconds a test waits for something that should happen (a bound, not a measurement)


class FakeClock:
    """A clock tests set by hand (starts at the real time so file mtimes and it agree)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@dataclass
class Call:
    """One delivery a test spawner saw."""

    recipient: str
    sender: str
    message: bytes
    at: float  # the manager's clock at the start


Rule = Callable[[str], Report]


def always(letter: Letter, text: str) -> Rule:
    """A rule answering every recipient with the same report."""
    return lambda _rcpt: Report(letter, text)


OK = always(Letter.SUCCESS, "did 1+0+0\n")


@dataclass
class TestSpawners:
    """Local and remote test spawners: record each call, answer by rule, optionally stall."""

    __test__ = False
    clock: Callable[[], float] = time.time
    local_rule: Rule = OK
    remote_rule: Rule = OK
    local_delay: float = 0.0
    calls: list[tuple[str, Call]] = field(default_factory=list)
    running_local: int = 0
    max_local: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def local(self, recipient: str, sender: str, message: Path) -> Report:
        """The blocking local seam."""
        call = Call(recipient, sender, Path(message).read_bytes(), self.clock())
        with self._lock:
            self.running_local += 1
            self.max_local = max(self.max_local, self.running_local)
        try:
            if self.local_delay:
                time.sleep(self.local_delay)
            self.calls.append(("local", call))
            return self.local_rule(recipient)
        finally:
            with self._lock:
                self.running_local -= 1

    async def remote(self, cfg: SendConfig, sender: str, recipient: str, message: Path) -> Report:
        """The async remote seam."""
        self.calls.append(("remote", Call(recipient, sender, Path(message).read_bytes(), self.clock())))
        return self.remote_rule(recipient)

    def to(self, recipient: str) -> list[Call]:
        """Calls for *recipient*, in order."""
        return [c for _, c in self.calls if c.recipient == recipient]


def make_root(path: Path, controls: dict[str, str] | None = None) -> QueueLayout:
    """A qmail root with ``me`` = mx1.example.com, *controls*, and a queue."""
    (path / "control").mkdir(parents=True, exist_ok=True)
    for name, text in {"me": "mx1.example.com", **(controls or {})}.items():
        (path / "control" / name).write_text(text if text.endswith("\n") or not text else text + "\n")
    return create_queue(path, current_user_ids())


def put(
    root: Path | QueueLayout, sender: str, rcpts: Iterable[str], body: bytes = b"Subject: t\n\nhi\n"
) -> int:
    """Inject one message with the real injector (it pulls the trigger); its number."""
    env = Envelope(sender, tuple(rcpts))
    return inject(root, body, env, how="by uid 0", uid=os.getuid(), pid=os.getpid(), bigbrother={}).number


def config(root: Path) -> SendConfig:
    """The manager's config read from *root*'s control files (as ``qldap send`` reads it)."""
    ctl = ControlDir(root)
    return SendConfig.from_control(ctl, is_local=Locals(ctl).contains)


@dataclass
class Running:
    """A manager running in this process, with its log lines."""

    manager: Manager
    lines: list[str]
    layout: QueueLayout

    def matching(self, pattern: str) -> list[str]:
        """Log lines matching the regular expression *pattern*."""
        rx = re.compile(pattern)
        return [line for line in list(self.lines) if rx.search(line)]


@asynccontextmanager
async def running_manager(
    root: Path,
    spawners: TestSpawners,
    clock: Callable[[], float] | None = None,
    hook: CrashHook | None = None,
) -> AsyncIterator[Running]:
    """Run the real Manager on *root* with *spawners*; stopped cleanly (TERM semantics) on exit."""
    layout = QueueLayout.of(root)
    lines: list[str] = []

    def inject_bounce(chunks: Iterable[bytes], env: Envelope) -> QueuedMessage:
        return inject(layout, b"".join(chunks), env, how="for bounce", uid=os.getuid(), pid=os.getpid(),
                      bigbrother={})  # fmt: skip

    signed = signing_bounces(inject_bounce, DkimSigner(ControlDir(root)), lines.append)  # as `qldap send`
    kwargs: dict[str, object] = {"hook": hook}
    if clock is not None:
        kwargs["clock"] = clock
    manager = Manager(layout, config(root), local=spawners.local, remote=spawners.remote,
                      inject_bounce=signed, log=lines.append,
                      reload=reloader(lambda: config(root)), **kwargs)  # type: ignore[arg-type]  # fmt: skip
    trigger = TriggerReader(layout.trigger)
    task = asyncio.ensure_future(manager.run(trigger.wait))
    try:
        yield Running(manager, lines, layout)
    finally:
        manager.request_stop()
        await asyncio.wait_for(task, PATIENCE)
        trigger.close()


async def until(predicate: Callable[[], object], what: str = "condition") -> None:
    """Wait (polling) until *predicate* is true; fail after :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settle() -> None:
    """Give the manager a moment to act on what it was told (used only before asserting "nothing")."""
    for _ in range(20):
        await asyncio.sleep(0.01)


def queue_files(layout: QueueLayout) -> list[str]:
    """Every file in the queue except ``lock/``, relative to ``queue/``."""
    out = []
    for dirpath, _dirs, files in os.walk(layout.queue):
        rel = os.path.relpath(dirpath, layout.queue)
        if rel.startswith("lock"):
            continue
        out.extend(os.path.join(rel, f) for f in files)
    return sorted(out)


def todo_envelopes(layout: QueueLayout) -> list[Envelope]:
    """The envelopes of every ``todo`` entry."""
    return [
        parse_todo(Path(layout.todo(int(n))).read_bytes()).envelope for n in os.listdir(layout.dir("todo"))
    ]


class ManagerProcess:
    """The real ``qldap send --root ROOT`` as a child process, its stderr collected in a file."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log_path = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.start_offset = log.stat().st_size  # where this process's lines begin
        self.proc = subprocess.Popen([str(QLDAP), "send", "--root", str(root)], stdin=subprocess.DEVNULL,
                                     stdout=self._fh, stderr=self._fh, start_new_session=True)  # fmt: skip
        self.offset = log.stat().st_size if log.exists() else 0

    def lines(self) -> list[str]:
        """Every line logged so far (across restarts sharing the log file)."""
        return self.log_path.read_text(errors="replace").splitlines()

    def wait_ready(self) -> None:
        """Block until *this* process (not an earlier one sharing the log) printed its ready line."""
        deadline = time.monotonic() + PATIENCE
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(self.start_offset)
                if b"qldap send: ready" in f.read():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the manager never became ready")
            time.sleep(0.02)

    def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        """Block until *count* lines match *pattern*; those lines."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + PATIENCE
        while True:
            hits = [line for line in self.lines() if rx.search(line)]
            if len(hits) >= count:
                return hits
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                if exited:
                    time.sleep(0.1)  # the last lines may still be on their way
                    if len([line for line in self.lines() if rx.search(line)]) >= count:
                        continue
                raise AssertionError(
                    f"timed out waiting for {pattern!r}; log:\n" + "\n".join(self.lines()[-40:])
                )
            time.sleep(0.02)

    def send(self, signum: int) -> None:
        """Send a signal to the manager."""
        self.proc.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def kill9(self) -> None:
        """SIGKILL and wait."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()

    def wait(self) -> int:
        """Wait for the exit; the exit code."""
        try:
            return self.proc.wait(PATIENCE)
        finally:
            self._fh.close()


def run_python(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run *script* with the project's Python (the test tree importable); capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT_DIR), **(env or {})}
    return subprocess.run([str(PYTHON), "-c", script, *args], capture_output=True, text=True, env=full_env,
                          timeout=PATIENCE * 4, check=False)  # fmt: skip

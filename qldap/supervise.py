"""Run every daemon of services.yaml as a child process, restart crashed ones, pass signals on.

Why processes and not one asyncio loop for all daemons: the GIL pins one event loop to one core,
so the SMTP server, the queue manager and POP3 in separate interpreters use every core; and a crash
or a leak in one daemon costs only that daemon, the isolation qmail's process split gave.  The
supervisor itself is a small asyncio loop: it starts each child (``python -m qldap.cli.qldap DAEMON
--root ROOT --listen …``, or what a test passes as :attr:`Options.command_for`), relays the child's
stderr line by line, and turns the child's ready lines (``qldap smtpd: listening on HOST:PORT``,
``qldap send: ready``) into its own (``qldap up: smtpd listening on HOST:PORT``).

Signals: HUP is forwarded to every child (each reloads its configuration), ALRM only to ``send``
(retry every deferred message now), TERM and INT stop: every child gets TERM (the daemons finish what
they accepted), and one still running after :attr:`Options.stop_timeout` is killed.  A child that
exits on its own is restarted after a delay that doubles from 1 s to 30 s and starts over once a
child has stayed up for 60 s (:class:`Backoff`).  Children get their own session, so a Ctrl-C on
the terminal reaches only the supervisor, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qldap.control.services import Daemon, Services, ServiceSpec
from qldap.exitcodes import ExitCode
from qldap.logs import Logger
from qldap.sdnotify import ENV as NOTIFY_ENV
from qldap.sdnotify import notify

PROG = "qldap up"
_READY = re.compile(r"^(?:\S+ )?qldap (?P<name>[\w-]+): (?:listening on (?P<addr>\S+)|(?P<ready>ready))\s*$")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delays: *initial* seconds, doubled after each quick crash up to *maximum*, back to
    *initial* once a child ran for *reset_after* seconds."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def next(self, previous: float | None, uptime: float) -> float:
        """The delay before the next start, given the *previous* delay (None: first crash) and how long
        the child ran."""
        if previous is None or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


CommandFor = Callable[[ServiceSpec, Path], Sequence[str]]


#: Set in each child's environment: the supervisor's pid, so the daemon dies with it (see
#: :func:`qldap.cli.qldap.die_with_supervisor`) and a restarted `qldap up` never finds orphans
#: holding its ports and locks.
SUPERVISOR_ENV = "QLDAP_SUPERVISOR_PID"


def daemon_command(spec: ServiceSpec, root: Path) -> list[str]:
    """The command line of the real daemon for *spec*: ``python -m qldap.cli.qldap NAME --root ROOT``
    with one ``--listen`` per address, ``--rules FILE`` when the section names one, and one option per
    ``limits:`` entry (``--max-per-ip 10`` …), and ``--processes N`` when ``processes:`` is above 1."""
    argv = [sys.executable, "-m", "qldap.cli.qldap", spec.name, "--root", str(root)]
    for addr in spec.listen:
        argv += ["--listen", str(addr)]
    if spec.rules is not None:
        argv += ["--rules", str(spec.rules)]
    for option, value in spec.limits:
        argv += [option, str(value)]
    if spec.processes > 1:
        argv += ["--processes", str(spec.processes)]
    return argv


@dataclass(frozen=True, slots=True)
class Options:
    """How the supervisor runs its children; the defaults are the production values."""

    backoff: Backoff = field(default_factory=Backoff)
    stop_timeout: float = 60.0
    command_for: CommandFor = daemon_command
    environ: Mapping[str, str] | None = None  # None: os.environ at start


def describe_exit(returncode: int) -> str:
    """``exited with status N`` or, for a negative asyncio return code, ``killed by signal N``."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Child:
    """One supervised daemon: its spec, the running process (if any) and its restart state."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.delay: float | None = None
        self.ready = False
        self.ready_seen = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL the child's whole session (it leads its own group), helpers it started included."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class Supervisor:
    """Keeps every daemon of *services* running until TERM/INT; :meth:`run` returns the exit code."""

    def __init__(self, root: Path, services: Services, log: Logger, options: Options | None = None) -> None:
        self.root = root
        self.log = log
        self.options = options or Options()
        self.children = [_Child(spec) for spec in services.specs]
        self._stop: asyncio.Event | None = None
        self._all_ready_told = False

    async def run(self) -> int:
        """Start the children, supervise them, stop them on TERM/INT; 0 after a clean stop."""
        if not self.children:
            self.log.info("services.yaml starts no daemons; nothing to do")
            return ExitCode.OK
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handlers = {
            signal.SIGTERM: self._request_stop,
            signal.SIGINT: self._request_stop,
            signal.SIGHUP: self._reload,
            signal.SIGALRM: self._retry_now,
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler, signum)
        try:
            tasks = [asyncio.create_task(self._keep(child)) for child in self.children]
            await self._stop.wait()
            await self._shutdown(tasks)
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)
        self.log.info("stopped")
        return ExitCode.OK

    # -- signals -------------------------------------------------------------------------------

    def _request_stop(self, signum: int) -> None:
        assert self._stop is not None
        if not self._stop.is_set():
            self.log.info(f"{signal.Signals(signum).name} received; stopping every daemon")
            self._notify("STOPPING=1")
            self._stop.set()

    def _reload(self, _signum: int) -> None:
        self.log.info("HUP received; telling every daemon to reload")
        for child in self.children:
            child.signal(signal.SIGHUP)

    def _retry_now(self, _signum: int) -> None:
        self.log.info("ALRM received; telling send to retry the queue now")
        for child in self.children:
            if child.spec.daemon is Daemon.SEND:
                child.signal(signal.SIGALRM)

    def _notify(self, state: str) -> None:
        """Tell systemd *state* when it started us as Type=notify (docs/operations.md)."""
        env = os.environ if self.options.environ is None else self.options.environ
        problem = notify(state, env)
        if problem is not None:
            self.log.error(problem)

    # -- one child -----------------------------------------------------------------------------

    def stopping(self) -> bool:
        """True once TERM or INT was received."""
        return self._stop is not None and self._stop.is_set()

    async def _keep(self, child: _Child) -> None:
        """Start *child*, relay its output, restart it with backoff until the supervisor stops."""
        name = child.spec.name
        while not self.stopping():
            started = time.monotonic()
            try:
                await self._start(child)
            except OSError as exc:
                returncode: int | None = None
                self.log.error(f"unable to start {name}: {exc.strerror or exc}")
            else:
                returncode = await self._watch(child)
            if self.stopping():
                break
            child.delay = self.options.backoff.next(child.delay, time.monotonic() - started)
            what = describe_exit(returncode) if returncode is not None else "did not start"
            self.log.error(f"{name} {what}; restarting in {_seconds(child.delay)} s")
            await self._sleep(child.delay)

    async def _start(self, child: _Child) -> None:
        argv = list(self.options.command_for(child.spec, self.root))
        base = os.environ if self.options.environ is None else self.options.environ
        child.ready = False
        child.ready_seen = 0
        child.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_child_environment(child.spec.environment(base)),
            cwd=str(self.root),
            start_new_session=True,
            limit=1 << 20,
        )
        if self.stopping():  # TERM arrived while the child was being started
            child.signal(signal.SIGTERM)

    async def _watch(self, child: _Child) -> int:
        """Relay *child*'s stderr until EOF, then wait for it; returns its return code."""
        proc = child.proc
        assert proc is not None and proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:  # a line over the limit: pass it on in pieces
                raw = await proc.stderr.read(1 << 16)
            if not raw:
                break
            line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
            self.log.relay(line)
            self._note_ready(child, line)
        return await proc.wait()

    def _note_ready(self, child: _Child, line: str) -> None:
        m = _READY.match(line)
        if m is None or m.group("name") != child.spec.name:
            return
        name = child.spec.name
        if m.group("addr"):
            self.log.info(f"{name} listening on {m.group('addr')}")
        else:
            self.log.info(f"{name} ready")
        child.ready_seen += 1
        needed = max(1, len(child.spec.listen))
        if child.ready_seen >= needed and not child.ready:
            child.ready = True
            if child.delay is not None:
                self.log.info(f"{name} is running again")
            if not self._all_ready_told and all(c.ready for c in self.children):
                self._all_ready_told = True
                self.log.info(f"all {len(self.children)} daemons ready")
                self._notify(f"READY=1\nSTATUS=all {len(self.children)} daemons ready")

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- stop ----------------------------------------------------------------------------------

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        for child in self.children:
            child.signal(signal.SIGTERM)
        _done, pending = await asyncio.wait(tasks, timeout=self.options.stop_timeout)
        if pending:
            for child in self.children:
                if child.running:
                    limit = _seconds(self.options.stop_timeout)
                    self.log.error(f"{child.spec.name} did not stop within {limit} s; killing it")
                    child.kill_group()
            _done, pending = await asyncio.wait(pending, timeout=self.options.stop_timeout)
            for task in pending:  # a grandchild outside the group still holds the pipe open
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for child in self.children:
            if child.proc is not None and child.proc.returncode is not None:
                self.log.info(f"{child.spec.name} {describe_exit(child.proc.returncode)}")


def _child_environment(env: dict[str, str]) -> dict[str, str]:
    """A daemon's environment: the supervisor's pid added; ``NOTIFY_SOCKET`` removed (only the
    supervisor speaks for the service; a daemon's "ready" would be premature)."""
    env.pop(NOTIFY_ENV, None)
    env[SUPERVISOR_ENV] = str(os.getpid())
    return env


def _seconds(value: float) -> str:
    """``1``, ``30``, ``0.25``: whole numbers without a fraction."""
    return str(int(value)) if value == int(value) else f"{value:g}"


def supervise(root: Path, services: Services, log: Logger, options: Options | None = None) -> int:
    """Run :class:`Supervisor` to completion in a fresh event loop; returns the exit code."""
    return asyncio.run(Supervisor(root, services, log, options).run())


def run_up(root: Path, options: Options | None = None) -> int:
    """``qldap up ROOT``: validate services.yaml, then supervise its daemons until TERM/INT.

    The supervisor's own lines go to stderr as ``qldap up: …``, shaped by ``LOGLEVEL`` and
    ``LOGTIMESTAMPS`` of its environment.

    Raises:
        ConfigError: services.yaml is missing or invalid (nothing is started).
    """
    from qldap.control.services import load_services

    services = load_services(root)
    log = Logger.from_env(PROG, os.environ)
    return supervise(root, services, log, options)


def up_main(argv: Sequence[str] | None = None) -> int:
    """Console form of ``qldap up DIR`` (``PROG: fatal: …`` and exit 111 on a configuration error)."""
    import argparse

    from qldap.cli._run import run
    from qldap.control.files import find_root

    def body(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="run every daemon of services.yaml")
        parser.add_argument("dir", nargs="?", help="the qmail root (default: $QLDAP_ROOT or /var/qmail)")
        ns = parser.parse_args(list(args))
        return run_up(find_root(ns.dir))

    return run(PROG, body, argv)

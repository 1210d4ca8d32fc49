"""Optional Prometheus metrics for the daemons: cheap hooks on the hot path, an HTTP endpoint off it.

Why a process-wide recorder instead of a value passed down: the hooks sit in a dozen places across
smtpd, send and directory, and metrics are process-wide by nature (one endpoint per daemon).  Until
:func:`start` runs, :func:`recorder` is a :class:`Recorder` whose hooks do nothing, so a daemon with
metrics off pays one method call per event and prometheus-client is never imported.  With metrics
on, a hook is one label lookup and one counter increment (prometheus-client's own short lock); the
expensive parts — the queue's size and oldest age, the text format — run only when the endpoint is
scraped, in the HTTP server's thread.

Several processes serving one daemon (SO_REUSEPORT workers) use prometheus-client's multiprocess
mode: the parent calls :func:`prepare_multiprocess` before it forks (every process then writes its
values to memory-mapped files in that directory) and serves the one endpoint, which sums them;
:func:`worker_exited` drops a dead worker's live gauges.  One endpoint per worker was rejected: a
scraper would have to know the worker count, and the per-worker series would vanish on restart.

Label values are bounded: the SMTP command is one of :data:`COMMANDS` or ``other``; the reason is the
reply code and its enhanced status (``550 5.1.1``), both taken from the fixed texts of
qmail-smtpd(8), never client text.

This module is a core module: it imports nothing of qldap, and it is the only importer of
prometheus_client (``tests/test_layers.py``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ENV = "QLDAP_METRICS"
"""``HOST:PORT`` of the daemon's endpoint; ``qldap up`` sets it from services.yaml's ``metrics:``."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

COMMANDS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "QUIT", "AUTH", "STARTTLS", "HELP"}
)
_STATUS = re.compile(r"\(#(\d\.\d{1,3}\.\d{1,3})\)")
_LETTER_RESULT = {"K": "success", "Z": "defer", "D": "bounce"}


def reply_reason(code: int, text: str) -> str:
    """``550 5.1.1`` from a reply's code and its ``(#5.1.1)``; the bare code when the text has none."""
    m = _STATUS.search(text)
    return f"{code} {m.group(1)}" if m else str(code)


def reply_result(code: int) -> str:
    """``accepted`` (2xx/3xx), ``deferred`` (4xx) or ``rejected`` (5xx)."""
    return "accepted" if code < 400 else "deferred" if code < 500 else "rejected"


class _Label(Protocol):
    @property
    def value(self) -> str: ...


class DirectoryEvent(Protocol):
    """What ``directory.observe.SearchEvent`` carries (a protocol: core modules import no package)."""

    @property
    def operation(self) -> _Label: ...

    @property
    def outcome(self) -> _Label: ...

    @property
    def seconds(self) -> float: ...


class Recorder:
    """The hooks; this base class records nothing (metrics off)."""

    enabled = False

    def session_opened(self) -> None:
        """A client connection was accepted."""

    def session_closed(self) -> None:
        """A client connection ended."""

    def smtp_reply(self, command: str, code: int, text: str) -> None:
        """smtpd answered *command* (``MAIL`` …, ``message`` for the end of DATA) with *code*/*text*."""

    def delivery(self, channel: str, letter: str) -> None:
        """A delivery on *channel* (``local``/``remote``) ended with report letter K, Z or D."""

    def directory_event(self, event: DirectoryEvent) -> None:
        """One directory backend operation ended (the observer of ``directory.open.open_directory``)."""


_recorder: Recorder = Recorder()


def recorder() -> Recorder:
    """The process's recorder: a no-op until :func:`start` ran."""
    return _recorder


class PrometheusRecorder(Recorder):
    """Hooks backed by prometheus-client metrics, labelled with the daemon's name."""

    enabled = True

    def __init__(self, daemon: str, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        multi = MULTIPROC_ENV in os.environ
        extra: dict[str, Any] = {"multiprocess_mode": "livesum"} if multi else {}
        self.daemon = daemon
        self._current = Gauge(
            "qldap_sessions_current", "Client sessions open now", ["daemon"], registry=registry, **extra
        ).labels(daemon)
        self._total = Counter(
            "qldap_sessions", "Client sessions accepted since start", ["daemon"], registry=registry
        ).labels(daemon)
        self._replies = Counter(
            "qldap_smtp_replies",
            "smtpd replies by command, result and reason (code and enhanced status)",
            ["command", "result", "reason"],
            registry=registry,
        )
        self._deliveries = Counter(
            "qldap_deliveries", "Deliveries by channel and result", ["channel", "result"], registry=registry
        )
        self._searches = Counter(
            "qldap_ldap_operations",
            "Directory backend operations (search, bind) by outcome",
            ["daemon", "operation", "outcome"],
            registry=registry,
        )
        self._ops: dict[tuple[str, str], Any] = {}
        self._latency = Histogram(
            "qldap_ldap_operation_seconds",
            "Directory backend operation latency",
            ["daemon"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        ).labels(daemon)
        self._children: dict[tuple[str, ...], Any] = {}

    def session_opened(self) -> None:
        self._total.inc()
        self._current.inc()

    def session_closed(self) -> None:
        self._current.dec()

    def smtp_reply(self, command: str, code: int, text: str) -> None:
        if command not in COMMANDS and command != "message":
            command = "other"
        key = (command, str(code), text)
        child = self._children.get(key)
        if child is None:
            child = self._replies.labels(command, reply_result(code), reply_reason(code, text))
            if len(self._children) < 4096:  # texts with addresses in them must not grow this forever
                self._children[key] = child
        child.inc()

    def delivery(self, channel: str, letter: str) -> None:
        child = self._children.get((channel, letter))
        if child is None:  # 2 channels x 3 letters
            child = self._children[(channel, letter)] = self._deliveries.labels(
                channel, _LETTER_RESULT.get(letter, "defer")
            )
        child.inc()

    def directory_event(self, event: DirectoryEvent) -> None:
        op, outcome = event.operation.value, event.outcome.value
        child = self._ops.get((op, outcome))
        if child is None:  # both are closed enums: this dictionary stays small
            child = self._ops[(op, outcome)] = self._searches.labels(self.daemon, op, outcome)
        child.inc()
        self._latency.observe(event.seconds)


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """What send reports at scrape time: messages it holds and the birth time of the oldest."""

    messages: int
    oldest_birth: float | None


class _QueueCollector:
    """Computes the queue gauges when scraped, never on the delivery path."""

    def __init__(self, figures: Callable[[], QueueFigures], clock: Callable[[], float]) -> None:
        self._figures = figures
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        f = self._figures()
        yield GaugeMetricFamily("qldap_queue_messages", "Messages send holds", value=f.messages)
        age = 0.0 if f.oldest_birth is None else max(0.0, self._clock() - f.oldest_birth)
        yield GaugeMetricFamily("qldap_queue_oldest_age_seconds", "Age of the oldest message", value=age)


@dataclass
class Endpoint:
    """A running metrics endpoint: where it listens and how to stop it."""

    host: str
    port: int
    _server: Any

    def close(self) -> None:
        """Stop serving (the thread ends with its server)."""
        self._server.shutdown()
        self._server.server_close()


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port).

    Raises:
        ValueError: no port, or a port that is not 0–65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"metrics address {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port_text)


def start(
    daemon: str,
    listen: str,
    *,
    queue: Callable[[], QueueFigures] | None = None,
    clock: Callable[[], float] = time.time,
) -> Endpoint:
    """Turn the hooks on and serve ``/metrics`` on *listen* (``HOST:PORT``, port 0 picks one).

    Raises:
        ValueError: *listen* is not HOST:PORT.
        OSError: the address cannot be bound.
    """
    global _recorder
    host, port = parse_listen(listen)
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    rec = PrometheusRecorder(daemon, registry)
    served: Any = registry
    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)  # type: ignore[no-untyped-call]
    if queue is not None:
        served.register(_QueueCollector(queue, clock))
    server, _thread = start_http_server(port, host, served)
    _recorder = rec
    bound = server.server_address
    return Endpoint(str(bound[0]), int(bound[1]), server)


def start_from_env(
    daemon: str, environ: Mapping[str, str] | None = None, *, queue: Callable[[], QueueFigures] | None = None
) -> Endpoint | None:
    """:func:`start` on ``$QLDAP_METRICS`` when it is set and not empty; None when metrics are off.

    Raises:
        ValueError: the address is not HOST:PORT.
        OSError: the address cannot be bound.
    """
    env = os.environ if environ is None else environ
    listen = env.get(ENV, "")
    return start(daemon, listen, queue=queue) if listen else None


def prepare_multiprocess(directory: Path) -> None:
    """Before forking workers: make *directory* the (emptied) shared value store of every process.

    Must run before :func:`start` and before any worker records anything.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)


def worker_exited(pid: int) -> None:
    """A worker ended: its live gauges (open sessions) stop counting."""
    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def stop(endpoint: Endpoint | None = None) -> None:
    """Back to the no-op recorder, closing *endpoint* (tests that start several in one process)."""
    global _recorder
    _recorder = Recorder()
    if endpoint is not None:
        endpoint.close()

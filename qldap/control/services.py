"""Read ``ROOT/services.yaml`` into frozen :class:`ServiceSpec` records, refusing anything unclear.

Why validation works on the YAML *node* tree rather than on the loaded dicts: every error can then
name its line, and a value's type can be judged by what the YAML resolver made of it — ``LOGLEVEL: 3``
is an integer the operator probably meant as ``"3"``, and ``RCPTCHECK: no`` is a boolean nobody meant;
both are refused with the quoting fix rather than silently turned into ``"3"`` or ``"False"``.
Every message names the file, the section, the key and what is allowed, because the supervisor
refuses to start on any of them and the operator must be able to fix it from that one line.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qldap.errors import ConfigError
from qldap.metrics import ENV as METRICS_ENV

SOURCE = "services.yaml"


class Daemon(enum.Enum):
    """The daemons ``qldap up`` can run, in the order it starts them."""

    SMTPD = "smtpd"
    SEND = "send"
    POP3D = "pop3d"
    PBSDBD = "pbsdbd"
    QMQPD = "qmqpd"


ALLOWED_KEYS: Mapping[Daemon, tuple[str, ...]] = {
    Daemon.SMTPD: ("listen", "rules", "env", "metrics", "limits", "processes"),
    Daemon.SEND: ("env", "metrics"),
    Daemon.POP3D: ("listen", "env", "metrics", "limits"),
    Daemon.PBSDBD: ("env", "metrics"),
    Daemon.QMQPD: ("listen", "env", "metrics", "limits"),
}
"""The keys each section may have; ``listen`` is required where it is allowed; ``metrics`` (one
``HOST:PORT``, off when absent) is the daemon's Prometheus endpoint (docs/operations.md); ``limits``
bounds the sessions (:data:`LIMIT_KEYS`); ``processes`` is smtpd's worker count (``--processes``)."""

LIMIT_KEYS: Mapping[Daemon, Mapping[str, tuple[str, int]]] = {
    Daemon.SMTPD: {"sessions": ("--max-sessions", 1), "per_ip": ("--max-per-ip", 0),
                   "deadline": ("--session-deadline", 0), "queue_workers": ("--queue-workers", 0)},
    Daemon.POP3D: {"sessions": ("--max-sessions", 1), "per_ip": ("--max-per-ip", 0),
                   "deadline": ("--session-deadline", 0), "failure_delay": ("--failure-delay", 0)},
    Daemon.QMQPD: {"sessions": ("--max-sessions", 1), "per_ip": ("--max-per-ip", 0),
                   "deadline": ("--session-deadline", 0)},
}
"""Per daemon, the keys of ``limits:`` → (the daemon's option, the smallest value allowed):
concurrent sessions, sessions from one client address (0 = no limit), seconds a whole session may
last (0 = none), for smtpd its queue writer processes, and for pop3d the seconds before a failed
login is answered (qldap-services(5))."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_NAMES = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "empty (null)",
    "tag:yaml.org,2002:timestamp": "a date",
}


@dataclass(frozen=True, slots=True)
class Listen:
    """One TCP listening address; ``host`` is an IP literal (IPv6 without brackets) or a host name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One section of services.yaml: which daemon, where it listens, its rules file and environment."""

    daemon: Daemon
    listen: tuple[Listen, ...] = ()
    rules: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    metrics: Listen | None = None
    limits: tuple[tuple[str, int], ...] = ()  # (daemon option, value) in services.yaml order
    processes: int = 1  # smtpd's worker processes on its listeners (qmail-smtpd(8), --processes)

    @property
    def name(self) -> str:
        """The section (and daemon subcommand) name: ``smtpd``, ``send`` …"""
        return self.daemon.value

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """*base* (the supervisor's environment) overridden by this section's ``env``."""
        merged = dict(base)
        merged.update(self.env)
        if self.metrics is not None:
            merged[METRICS_ENV] = str(self.metrics)
        return merged


@dataclass(frozen=True, slots=True)
class Services:
    """Every daemon services.yaml asks for, in :class:`Daemon` order."""

    specs: tuple[ServiceSpec, ...] = ()

    def get(self, daemon: Daemon) -> ServiceSpec | None:
        """The section of *daemon*, None when it is not started."""
        return next((s for s in self.specs if s.daemon is daemon), None)


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → :class:`Listen`.

    Raises:
        ValueError: with the reason (no port, bad port, IPv6 without brackets, bad host).
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, as [{host}]:{port_text}")
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{host!r} in {text!r} is not an IPv4 address") from None
        elif not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} in {text!r} is not an IP address or host name")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"port {port_text!r} in {text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is not in 1-65535")
    return Listen(host, port)


class _Loader(yaml.SafeLoader):
    """SafeLoader; only :meth:`compose_node` is used, so no Python objects are ever built."""


class _Where:
    """Formats errors: ``services.yaml: smtpd: … (line N)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Node | None, *parts: str) -> ConfigError:
        line = f" (line {node.start_mark.line + 1})" if node is not None else ""
        return ConfigError(": ".join((self.source, *parts)) + line)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_NAMES.get(node.tag, "a string")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _string(node: Node, where: _Where, *path: str) -> str:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return str(node.value)
    hint = f' (quote it: "{node.value}")' if isinstance(node, ScalarNode) and not _is_null(node) else ""
    raise where.error(node, *path, f"must be a string, not {_describe(node)}{hint}")


def _pairs(node: MappingNode, where: _Where, *path: str) -> list[tuple[str, Node, Node]]:
    """The (key, key node, value node) pairs of a mapping; keys must be unique strings."""
    seen: set[str] = set()
    out = []
    for key_node, value_node in node.value:
        key = _string(key_node, where, *path, "key")
        if key in seen:
            raise where.error(key_node, *path, f"duplicate key {key!r}")
        seen.add(key)
        out.append((key, key_node, value_node))
    return out


def parse_services(text: str, root: Path, source: str = SOURCE) -> Services:
    """Validate services.yaml *text* (paths relative to *root*); an empty document starts nothing.

    Raises:
        ConfigError: a YAML syntax error (with its line), an unknown section or key, a bad listen
            address or port, a non-string env value, a rules file that does not exist.
    """
    where = _Where(source)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: YAML syntax error: {exc.problem or exc.context}{line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from None
    if node is None or _is_null(node):
        return Services()
    if not isinstance(node, MappingNode):
        raise where.error(node, f"must be a mapping of daemon sections, not {_describe(node)}")
    specs: dict[Daemon, ServiceSpec] = {}
    allowed = ", ".join(d.value for d in Daemon)
    for name, key_node, value in _pairs(node, where):
        try:
            daemon = Daemon(name)
        except ValueError:
            raise where.error(key_node, f"unknown section {name!r}; allowed: {allowed}") from None
        specs[daemon] = _section(daemon, value, root, where)
    _check_unique_listeners(specs.values(), where)
    return Services(tuple(specs[d] for d in Daemon if d in specs))


def _section(daemon: Daemon, node: Node, root: Path, where: _Where) -> ServiceSpec:
    name = daemon.value
    if _is_null(node):
        node = MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
    if not isinstance(node, MappingNode):
        raise where.error(node, name, f"must be a mapping (use {{}} for no settings), not {_describe(node)}")
    allowed = ALLOWED_KEYS[daemon]
    listen: tuple[Listen, ...] = ()
    rules: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    metrics: Listen | None = None
    limits: tuple[tuple[str, int], ...] = ()
    processes = 1
    for key, key_node, value in _pairs(node, where, name):
        if key not in allowed:
            raise where.error(key_node, name, f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        if key == "listen":
            listen = _listen(value, where, name)
        elif key == "rules":
            rules = _rules(value, root, where, name)
        elif key == "metrics":
            metrics = _metrics(value, where, name)
        elif key == "limits":
            limits = _limits(daemon, value, where, name)
        elif key == "processes":
            number = _whole(value)
            if number is None or number < 1:
                raise where.error(value, name, "processes", "must be a whole number of at least 1")
            processes = number
        else:
            env = _env(value, where, name)
    if "listen" in allowed and not listen:
        raise where.error(node, name, 'listen: required: a list of "HOST:PORT" addresses')
    return ServiceSpec(daemon, listen, rules, env, metrics, limits, processes)


def _listen(node: Node, where: _Where, name: str) -> tuple[Listen, ...]:
    if isinstance(node, ScalarNode) and not _is_null(node):
        items: list[Node] = [node]  # a single address without brackets is accepted as a list of one
    elif isinstance(node, SequenceNode):
        items = list(node.value)
    else:
        raise where.error(node, name, "listen", f'must be a list of "HOST:PORT", not {_describe(node)}')
    out: list[Listen] = []
    for item in items:
        text = _string(item, where, name, "listen")
        try:
            addr = parse_listen(text)
        except ValueError as exc:
            raise where.error(item, name, "listen", str(exc)) from None
        if addr in out:
            raise where.error(item, name, "listen", f"{text!r} is listed twice")
        out.append(addr)
    return tuple(out)


def _metrics(node: Node, where: _Where, name: str) -> Listen:
    text = _string(node, where, name, "metrics")
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise where.error(node, name, "metrics", str(exc)) from None


def _limits(daemon: Daemon, node: Node, where: _Where, name: str) -> tuple[tuple[str, int], ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, MappingNode):
        shape = f"must be a mapping such as {{per_ip: 10}}, not {_describe(node)}"
        raise where.error(node, name, "limits", shape)
    allowed = LIMIT_KEYS[daemon]
    out = []
    for key, key_node, value in _pairs(node, where, name, "limits"):
        if key not in allowed:
            raise where.error(key_node, name, "limits", f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        option, least = allowed[key]
        number = _whole(value)
        if number is None or number < least:
            raise where.error(value, name, "limits", f"{key}: must be a whole number of at least {least}")
        out.append((option, number))
    return tuple(out)


def _whole(node: Node) -> int | None:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        try:
            return int(str(node.value), 0)
        except ValueError:
            return None
    return None


def _rules(node: Node, root: Path, where: _Where, name: str) -> Path:
    text = _string(node, where, name, "rules")
    if not text:
        raise where.error(node, name, "rules", "must name a file (relative to the root)")
    path = root / text
    if not path.is_file():
        raise where.error(node, name, "rules", f"file {path} does not exist")
    return path


def _env(node: Node, where: _Where, name: str) -> tuple[tuple[str, str], ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, MappingNode):
        raise where.error(node, name, "env", f"must be a mapping of NAME: \"value\", not {_describe(node)}")
    out = []
    for key, key_node, value in _pairs(node, where, name, "env"):
        if not _ENV_NAME.match(key):
            raise where.error(key_node, name, "env", f"{key!r} is not a variable name (letters, digits, _)")
        text = _string(value, where, name, "env", key)
        if "\0" in text:
            raise where.error(value, name, "env", key, "value contains NUL")
        out.append((key, text))
    return tuple(out)


def _check_unique_listeners(specs: Iterable[ServiceSpec], where: _Where) -> None:
    seen: dict[Listen, str] = {}
    for spec in specs:
        for addr in (*spec.listen, *((spec.metrics,) if spec.metrics is not None else ())):
            if addr in seen:
                raise where.error(None, spec.name, "listen", f"{addr} is already used by {seen[addr]}")
            seen[addr] = spec.name


def load_services(root: str | Path) -> Services:
    """Read and validate ``ROOT/services.yaml``; a missing file is an error (nothing to run).

    Raises:
        ConfigError: the file is missing or unreadable, or :func:`parse_services` refuses it.
    """
    root = Path(root)
    path = root / SOURCE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{SOURCE}: {path} does not exist (create it with qldap init)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{SOURCE}: unable to read {path}: {exc}") from None
    return parse_services(text, root)

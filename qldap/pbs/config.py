"""Read the POP-before-SMTP control files once into a frozen :class:`PbsConfig` (qldap-control(5),
POP-BEFORE-SMTP).

Why a role: pbsdbd reads ``pbsip pbsport pbssecret pbscachesize pbstimeout``, the clients (pbsadd,
pbscheck) read ``pbsservers pbsport pbssecret pbsenv``; a broken file one side never reads must not
stop the other, exactly as each original program read only its own files.  Fields a role does not
read keep their defaults.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.pbs.cache import DEFAULT_SIZE, DEFAULT_TIMEOUT
from qldap.pbs.env import MAX_RULES, EnvRule, parse_rules

DEFAULT_IP = "0.0.0.0"
DEFAULT_PORT = 2821
MAX_PORT = 65000
MAX_SECRET = 255


class SecretTooLong(ConfigError):
    """``control/pbssecret`` is longer than 255 bytes (pbsadd: ``control/pbssecret is to long``)."""


class TooManyEnvRules(ConfigError):
    """``control/pbsenv`` has more than 255 lines (``control/pbsenvs has to many entries``)."""


class PbsRole(Enum):
    """Which program the configuration is for."""

    DAEMON = "pbsdbd"
    CLIENT = "client"  # pbsadd, pbscheck


@dataclass(frozen=True, slots=True)
class PbsConfig:
    """The POP-before-SMTP settings of one program."""

    ip: str = DEFAULT_IP
    port: int = DEFAULT_PORT
    secret: bytes = b""
    cachesize: int = DEFAULT_SIZE
    timeout: int = DEFAULT_TIMEOUT
    servers: tuple[str, ...] = ()
    env: tuple[EnvRule, ...] = ()

    def __repr__(self) -> str:  # the secret stays out of logs
        return (
            f"PbsConfig(ip={self.ip!r}, port={self.port}, cachesize={self.cachesize}, "
            f"timeout={self.timeout}, servers={self.servers!r}, env={self.env!r})"
        )


def _address(value: str, name: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"control/{name}: {value!r} is not an IP address")


def load_config(ctl: ControlDir, role: PbsRole) -> PbsConfig:
    """Read the files *role* uses.

    Raises:
        ConfigError: a file is unreadable or illegal (port > 65000, a bad address, no ``pbsservers``
            for a client).
        SecretTooLong: ``pbssecret`` over 255 bytes (clients; the daemon could never match it either).
        TooManyEnvRules: ``pbsenv`` over 255 lines (clients).
    """
    port = ctl.integer("pbsport", DEFAULT_PORT)
    if port > MAX_PORT:
        raise ConfigError(f"control/pbsport: {port} is above {MAX_PORT}")
    secret = (ctl.line("pbssecret", "") or "").encode("utf-8", "surrogateescape")
    if len(secret) > MAX_SECRET:
        raise SecretTooLong("control/pbssecret is to long")
    if role is PbsRole.DAEMON:
        return PbsConfig(
            ip=_address(ctl.line("pbsip", DEFAULT_IP) or DEFAULT_IP, "pbsip"),
            port=port,
            secret=secret,
            cachesize=ctl.integer("pbscachesize", DEFAULT_SIZE),
            timeout=ctl.integer("pbstimeout", DEFAULT_TIMEOUT),
        )
    servers = tuple(_address(line.strip(), "pbsservers") for line in ctl.lines("pbsservers"))
    if not servers:
        raise ConfigError("control/pbsservers: missing or empty")
    lines = ctl.lines("pbsenv")
    if len(lines) > MAX_RULES:
        raise TooManyEnvRules("control/pbsenvs has to many entries")
    return PbsConfig(port=port, secret=secret, servers=servers, env=parse_rules(lines))

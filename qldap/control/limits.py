"""How many sessions a network daemon serves, how many per client address, and for how long.

Why one small module for smtpd, pop3d and qmqpd: tcpserver used to enforce the first two for every
qmail service (``-c`` and per-address rules) and nothing enforced the third; the daemons now do all
three themselves, the same way, from the same services.yaml ``limits:`` section
(qldap-services(5)).  The counter is not thread-safe: each daemon uses it from its event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_DEADLINE = 3600  # seconds a whole session may last (slowloris: bytes trickled forever)


class Refusal(enum.Enum):
    """Why a new connection is turned away."""

    TOTAL = "too many sessions"
    PER_IP = "too many sessions from your address"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """*sessions* at once (≥ 1), *per_ip* from one address (0 = no limit), *deadline* seconds per
    session (0 = none)."""

    sessions: int
    per_ip: int = 0
    deadline: float = DEFAULT_DEADLINE


class ClientCounter:
    """Sessions in progress, in total and per client address."""

    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self.total = 0
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str) -> Refusal | None:
        """Count a new session from *ip*; the refusal (and nothing counted) when a limit is reached."""
        if self.total >= self.limits.sessions:
            return Refusal.TOTAL
        held = self._by_ip.get(ip, 0)
        if self.limits.per_ip and held >= self.limits.per_ip:
            return Refusal.PER_IP
        self.total += 1
        self._by_ip[ip] = held + 1
        return None

    def release(self, ip: str) -> None:
        """The session from *ip* that :meth:`admit` counted has ended."""
        held = self._by_ip.get(ip, 0)
        if held <= 0:
            return
        self.total -= 1
        if held == 1:
            del self._by_ip[ip]
        else:
            self._by_ip[ip] = held - 1

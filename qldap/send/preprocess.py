"""Recipient rewriting at preprocessing time (qmail-send(8), PREPROCESSING): which channel, which address.

Why a pure function: the rewrite runs once per recipient when a message leaves ``todo/`` and its
result is written into the ``local``/``remote`` channel files; the manager's file handling wraps
:func:`rewrite_recipient`, and the bounce composer uses :func:`display_recipient` to show users the
address they wrote instead of the virtual-domain form.  Keys are probed in the order of qmail-send(8),
PREPROCESSING: ``user@domain``, ``domain``, each dot-suffix of the domain, the empty key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from qldap.address import Address
from qldap.send.config import SendConfig


class Channel(Enum):
    """The two delivery channels; the value is the word used in file names and log lines."""

    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The preprocessing result for one recipient."""

    channel: Channel
    address: str


def _split(address: str) -> tuple[str, str]:
    """(local part, domain) at the last ``@`` (qldap.address.Address); the address must contain one."""
    addr = Address.parse(address)
    return addr.local, addr.domain


def _domain_keys(domain: str) -> list[str]:
    """``domain``, each dot-suffix (``.b.example.org``, ``.example.org``, ``.org``), the empty key."""
    keys = [domain]
    keys.extend(domain[i:] for i, ch in enumerate(domain) if ch == ".")
    keys.append("")
    return keys


def apply_percent_hack(address: str, percenthack: frozenset[str]) -> str:
    """While the domain is listed and the local part has a ``%``, its last ``%`` becomes ``@``."""
    local, domain = _split(address)
    while domain.lower() in percenthack and "%" in local:
        local, _, domain = local.rpartition("%")
    return f"{local}@{domain}"


def virtual_prepend(address: str, virtualdomains: Mapping[str, str]) -> str | None:
    """The first ``virtualdomains`` value matching *address*, or None when nothing matches."""
    lowered = address.lower()
    _local, domain = _split(lowered)
    for key in (lowered, *_domain_keys(domain)):
        value = virtualdomains.get(key)
        if value is not None:
            return value
    return None


def rewrite_recipient(recipient: str, cfg: SendConfig) -> Rewritten:
    """Channel and address for one envelope recipient (qmail-send(8) PREPROCESSING steps 1–5).

    Raises:
        ConfigError, TemporaryFailure: whatever the locals check raises (unreadable ``locals.cdb``);
            the caller leaves the message in ``todo/`` for the next scan.
    """
    address = recipient if "@" in recipient else f"{recipient}@{cfg.envnoathost}"
    address = apply_percent_hack(address, cfg.percenthack)
    _local, domain = _split(address)
    if cfg.is_local(domain.lower()):
        return Rewritten(Channel.LOCAL, address)
    prepend = virtual_prepend(address, cfg.virtualdomains)
    if prepend:
        return Rewritten(Channel.LOCAL, f"{prepend}-{address}")
    return Rewritten(Channel.REMOTE, address)


def display_recipient(address: str, virtualdomains: Mapping[str, str]) -> str:
    """The address to show in a bounce: a leading ``P-`` removed when the domain maps to ``P``.

    Only the domain, its dot-suffixes and the catch-all are consulted; addresses rewritten by a
    ``user@domain`` entry are shown as rewritten (as in qmail).
    """
    if "@" not in address:
        return address
    _local, domain = _split(address)
    for key in _domain_keys(domain.lower()):
        prepend = virtualdomains.get(key)
        if prepend is None:
            continue
        if prepend and address.startswith(prepend + "-"):
            return address[len(prepend) + 1 :]
        return address
    return address

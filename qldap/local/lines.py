"""The lines qmail-local adds and the environment it gives programs (qmail-local(8), DELIVERY).

Pure: a frozen `Recipient` in, strings and an environment mapping out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qldap.address import quote_address
from qldap.local.mbox import ufline


@dataclass(frozen=True, slots=True)
class Recipient:
    """One local delivery: who, for whom, and which `.qmail` extension applies."""

    local: str  # L: the local part as addressed (extension included)
    host: str  # H: the domain as addressed (alias domains not mapped)
    user: str  # the account (USER)
    home: str  # HOME
    dash: str = ""
    ext: str = ""
    sender: str = ""
    newsender: str | None = None  # defaults to sender

    @property
    def address(self) -> str:
        """``L@H``: RECIPIENT and the Delivered-To address."""
        return f"{self.local}@{self.host}"


def _no_newlines(text: str) -> str:
    return text.replace("\n", "_")


def dtline(r: Recipient) -> str:
    """``Delivered-To: L@H`` with a newline; newlines inside → ``_``."""
    return f"Delivered-To: {_no_newlines(r.address)}\n"


def rpline(sender: str) -> str:
    """``Return-Path: <sender>`` with a newline; ``<>`` for the null sender."""
    return f"Return-Path: <{_no_newlines(quote_address(sender))}>\n"


def _ext_n(ext: str, n: int) -> str:
    parts = ext.split("-", n)
    return parts[n] if len(parts) > n else ""


def _host_n(host: str, n: int) -> str:
    """HOST minus its last *n* labels, never fewer than one (qmail-local(8), DELIVERY): for ``example.org``
    HOST2, HOST3 and HOST4 are all ``example``, as qmail-local sets them."""
    labels = host.split(".")
    return ".".join(labels[: max(1, len(labels) - n)])


def program_env(r: Recipient, *, default: str | None = None, now: float | None = None) -> dict[str, str]:
    """The variables of qmail-local(8) DELIVERY for a program run for recipient *r*."""
    env = {
        "SENDER": r.sender,
        "NEWSENDER": r.sender if r.newsender is None else r.newsender,
        "RECIPIENT": r.address,
        "USER": r.user,
        "HOME": r.home,
        "LOCAL": r.local,
        "HOST": r.host,
        "EXT": r.ext,
        "EXT2": _ext_n(r.ext, 1),
        "EXT3": _ext_n(r.ext, 2),
        "EXT4": _ext_n(r.ext, 3),
        "HOST2": _host_n(r.host, 1),
        "HOST3": _host_n(r.host, 2),
        "HOST4": _host_n(r.host, 3),
        "DTLINE": dtline(r),
        "RPLINE": rpline(r.sender),
        "UFLINE": ufline(r.sender, time.time() if now is None else now).decode("utf-8", "replace"),
    }
    if default is not None:
        env["DEFAULT"] = default
    return env

"""Tell systemd about the supervisor's state (``READY=1``, ``STOPPING=1``) over ``$NOTIFY_SOCKET``.

Why not libsystemd or a package: the protocol is one datagram of ``KEY=VALUE`` lines sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace, where
the ``@`` stands for a leading NUL byte); a dependency for that would be heavier than the code.
Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) nothing is sent.  Failing to
notify never stops the mail service: the error is returned for the caller to log.

This module is a core module: it imports nothing of qldap.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | bytes | None:
    """The address to send to: a path, or bytes with a leading NUL for ``@abstract``; None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    return None


def notify(state: str, environ: Mapping[str, str]) -> str | None:
    """Send *state* (e.g. ``"READY=1\\nSTATUS=…"``) when ``$NOTIFY_SOCKET`` is set.

    Returns:
        None when sent or when there is nowhere to send; otherwise why it failed (to be logged).
    """
    value = environ.get(ENV, "")
    if not value:
        return None
    address = socket_address(value)
    if address is None:
        return f"{ENV}={value!r} is neither an absolute path nor @abstract"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        return f"unable to notify systemd at {value}: {exc.strerror or exc}"
    return None

"""Compose the trace lines a receiver puts in front of a message: the Received header and X-RBL lines.

Why in ``queue``: smtpd and qmqpd both stamp messages on their way into the queue, and ``remote``
(qmqpd's home) may not import ``smtpd`` (docs/architecture.md).

Why the ``?`` substitution: everything in the Received header except the protocol text comes from
the client (HELO argument, envelope addresses, ident info) or from DNS; characters outside a small
safe set are replaced by ``?`` so a client cannot forge extra header lines or confuse log parsers.
The layout (LF line ends, 10-space continuation indent, ``qmail-ldap-1.03``) is byte-exact to what
qmail-ldap writes, because mail-analysis tools match it.
"""

from __future__ import annotations

from datetime import datetime

from qldap.dates import qmail_date

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.@%+/=:-_#[]")
_INDENT = " " * 10


def safe(text: str) -> str:
    """*text* with every character outside ``A-Za-z0-9.@%+/=:-_#[]`` replaced by ``?``."""
    return "".join(ch if ch in _SAFE else "?" for ch in text)


def rfc822_date(when: datetime) -> str:
    """``<d> <Mon> <yyyy> <HH>:<MM>:<SS> -0000`` in UTC, the day not padded."""
    return qmail_date(when.timestamp())


def tls_protocol(version: str, cipher: str, fingerprint: str | None) -> str:
    """The ``with`` text of a TLS session: ``<version> <cipher> fingerprint=<hash> encrypted SMTP``."""
    shown = fingerprint if fingerprint else "no certificate presented"
    return f"{version} {cipher} fingerprint={shown} encrypted SMTP"


def received_header(
    *,
    remote_host: str | None,
    helo: str,
    info: str | None,
    ip: str,
    sender: str,
    local: str,
    protocol: str,
    recipient: str,
    when: datetime,
) -> str:
    """The Received header of qmail-smtpd(8), DATA, ending in LF.

    Args:
        remote_host: TCPREMOTEHOST, None when unknown (written ``unknown``).
        helo: the last HELO/EHLO argument; shown only when it differs (any case) from the host.
        info: TCPREMOTEINFO or, after AUTH, AUTHPREPEND+login; None for none.
        ip: TCPREMOTEIP.
        sender: the envelope sender (may be empty).
        local: TCPLOCALHOST, else TCPLOCALIP, else ``unknown``.
        protocol: ``SMTP`` or :func:`tls_protocol`; written as is.
        recipient: the first recipient, with its RELAYCLIENT suffix.
        when: the time of receipt.
    """
    host = remote_host if remote_host else "unknown"
    line = f"Received: from {safe(host)}"
    if helo.lower() != host.lower():
        line += f" (HELO {safe(helo)})"
    who = f"{safe(info)}@" if info else ""
    return (
        f"{line} ({who}[{safe(ip)}])\n"
        f"{_INDENT}(envelope-sender <{safe(sender)}>)\n"
        f"{_INDENT}by {safe(local)} (qmail-ldap-1.03) with {protocol}\n"
        f"{_INDENT}for <{safe(recipient)}>; {rfc822_date(when)}\n"
    )


def xrbl_line(basedomain: str, matchon: str, message: str) -> str:
    """``X-RBL: (<basedomain>) matches with <matchon> and tells us <message>`` + LF; shorter for ``any``."""
    if matchon == "any":
        return f"X-RBL: ({basedomain}) tells us {message}\n"
    return f"X-RBL: ({basedomain}) matches with {matchon} and tells us {message}\n"

"""The byte pipe under the wire client: TCP, TLS (ldaps, or StartTLS's upgrade) or a Unix socket.

Why separate from :mod:`qldap.directory.wire`: the LDAP exchange is the same over every transport,
while the transport has its own failure texts, which an operator must be able to act on.  A TLS
failure (unknown CA, wrong host name, expired certificate, a refused client certificate, a server
that does not speak TLS) is raised as :class:`TlsFailure` — an OSError, so the client treats it like
an unreachable server: the next ``ldapserver`` line is tried, and when none works the lookup is a
temporary failure (451 / defer / exit 111), never a bounce.  Verification is always on
(``ssl.create_default_context``: CERT_REQUIRED and host-name checking); the control files are
described in docs/operations.md ("LDAP over TLS").
"""

from __future__ import annotations

import socket
import ssl

from qldap.directory.config import Scheme, ServerAddress, TlsSettings
from qldap.errors import ConfigError

_HINT = "check control/ldaptlscacert and the host name in control/ldapserver"


class TlsFailure(OSError):
    """The TLS handshake with a server failed; the message says why in words an operator can act on."""


def tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """A client context verifying certificates and host names against ``ldaptlscacert`` (or the system store).

    Raises:
        ConfigError: a CA, certificate or key file is missing, unreadable or not PEM.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"control/ldaptlscacert: unable to use {settings.ca_file}: {_reason(exc)}")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file:
        try:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ValueError) as exc:
            where = settings.cert_file + (f" / {settings.key_file}" if settings.key_file else "")
            raise ConfigError(f"control/ldaptlscert, ldaptlskey: unable to use {where}: {_reason(exc)}")
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def describe(exc: BaseException) -> str:
    """The operator's text for a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message} ({_HINT})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "TLS handshake failed: no answer within ldaptimeout"
    return f"TLS handshake failed: {_reason(exc) or 'connection closed'}"


def wrap(sock: socket.socket, ctx: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """Run the TLS handshake on *sock* for *host* (SNI and the name checked); the socket is closed on failure.

    Raises:
        TlsFailure: the handshake or the verification failed, or the peer closed the connection.
    """
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:
        sock.close()
        raise TlsFailure(describe(exc)) from exc


def connect(address: ServerAddress, timeout: float, ctx: ssl.SSLContext | None) -> socket.socket:
    """A connected socket to *address* (already TLS for ldaps) with *timeout* on every operation.

    Raises:
        OSError: the server cannot be reached (refused, no route, timeout, missing socket file).
        TlsFailure: ldaps and the handshake failed.
    """
    if address.scheme is Scheme.LDAPI:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address.path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if address.scheme is Scheme.LDAPS:
        assert ctx is not None  # WireSearcher builds it whenever a server needs it
        return wrap(sock, ctx, address.host)
    return sock

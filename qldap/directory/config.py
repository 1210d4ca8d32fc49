"""LdapConfig: the LDAP control files read once into a frozen record (qldap-control(5), LDAP,
qldap-control(5)).

Why strict here: a wrong ``ldapuid`` or a relative ``ldapmessagestore`` would otherwise surface as
odd deliveries much later; reading them at start-up turns them into a ConfigError (deliveries
deferred) with the file named.  ``ldapserver`` itself may be absent: :func:`qldap.directory.open`
then looks for the embedded directory.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from urllib.parse import quote, unquote, urlsplit

from qldap.control.files import ControlDir
from qldap.errors import ConfigError

DEFAULT_PORT = 389
DEFAULT_TLS_PORT = 636
DEFAULT_TIMEOUT = 30
DEFAULT_LDAPI_PATH = "/var/run/slapd/ldapi"  # Debian's slapd; what ``ldapi:///`` means to OpenLDAP there


class Scheme(enum.Enum):
    """How a server is reached: TCP, TCP wrapped in TLS from the first byte, or a Unix socket."""

    LDAP = "ldap"
    LDAPS = "ldaps"
    LDAPI = "ldapi"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One ``ldapserver`` line; for ``ldapi`` the socket is *path* and host/port are unused."""

    host: str
    port: int = DEFAULT_PORT
    scheme: Scheme = Scheme.LDAP
    path: str = ""

    def __str__(self) -> str:
        if self.scheme is Scheme.LDAPI:
            return f"ldapi://{quote(self.path, safe='')}"
        hostport = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return hostport if self.scheme is Scheme.LDAP else f"ldaps://{hostport}"


def parse_server(line: str) -> ServerAddress:
    """``host``, ``host:port``, ``[v6]:port``, ``ldap://host[:port]``, ``ldaps://host[:port]`` (636)
    or ``ldapi://PATH`` with the socket path percent-encoded (``ldapi://%2Frun%2Fslapd%2Fldapi``;
    ``ldapi://`` alone is Debian's default socket) as a ServerAddress.

    Raises:
        ConfigError: empty host, bad port, a relative ldapi path, or another scheme.
    """
    text = line.strip()
    if "://" in text:
        scheme_text, _, rest = text.partition("://")
        try:
            scheme = Scheme(scheme_text.lower())
        except ValueError:
            raise ConfigError(f"control/ldapserver: unsupported URI scheme in {line!r} (ldap, ldaps, ldapi)")
        netloc = rest.partition("/")[0]  # a DN or other URL parts after the server are ignored, as before
        if scheme is Scheme.LDAPI:
            path = unquote(netloc) or DEFAULT_LDAPI_PATH
            if not path.startswith("/"):
                raise ConfigError(f"control/ldapserver: ldapi needs an absolute socket path in {line!r}")
            return ServerAddress("", 0, scheme, path)
        parts = urlsplit(f"//{netloc}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"control/ldapserver: bad port in {line!r}")
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"control/ldapserver: no host in {line!r}")
        default = DEFAULT_TLS_PORT if scheme is Scheme.LDAPS else DEFAULT_PORT
        return ServerAddress(host, default if port is None else port, scheme)
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"control/ldapserver: bad line {line!r}")
        port = _port(rest[1:], line) if rest else None
    elif text.count(":") == 1:
        host, _, ptext = text.partition(":")
        port = _port(ptext, line)
    if not host:
        raise ConfigError(f"control/ldapserver: no host in {line!r}")
    return ServerAddress(host, DEFAULT_PORT if port is None else port)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS control files (names after OpenLDAP's ldap.conf TLS_CACERT, TLS_CERT, TLS_KEY).

    Certificate and host-name verification are always on: ``ca_file`` (``ldaptlscacert``) names the
    CA certificates to trust, else the system's store is used; ``cert_file``/``key_file``
    (``ldaptlscert``/``ldaptlskey``) are the optional client certificate; ``start_tls``
    (``ldapstarttls``) upgrades every ``ldap://``/``host:port`` server with StartTLS (RFC 4511 section 4.14)
    before the bind, and a server that refuses is skipped like an unreachable one.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    start_tls: bool = False

    @classmethod
    def from_control(cls, ctl: ControlDir) -> TlsSettings:
        """Read ``ldaptlscacert``, ``ldaptlscert``, ``ldaptlskey`` and ``ldapstarttls``.

        Raises:
            ConfigError: an unreadable control file, a relative path, or a key without a certificate.
        """
        paths = {}
        for name in ("ldaptlscacert", "ldaptlscert", "ldaptlskey"):
            value = ctl.line(name) or None
            if value is not None and not value.startswith("/"):
                raise ConfigError(f"control/{name}: {value!r} is not an absolute path")
            paths[name] = value
        if paths["ldaptlskey"] and not paths["ldaptlscert"]:
            raise ConfigError("control/ldaptlskey: a key without control/ldaptlscert")
        return cls(paths["ldaptlscacert"], paths["ldaptlscert"], paths["ldaptlskey"],
                   ctl.boolean("ldapstarttls", False))

    def needed_by(self, servers: tuple[ServerAddress, ...]) -> bool:
        """True when some server is reached over TLS (ldaps, or ldap with StartTLS)."""
        return any(s.scheme is Scheme.LDAPS or (self.start_tls and s.scheme is Scheme.LDAP) for s in servers)


def _port(text: str, line: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"control/ldapserver: bad port in {line!r}")
    return int(text)


def _id(ctl: ControlDir, name: str) -> int | None:
    value = ctl.integer(name, 0)
    if value == 0:
        return None  # 0 / absent = no default (qldap-control(5): "if non-zero")
    if not 100 <= value <= 65535:
        raise ConfigError(f"control/{name}: {value} is outside 100-65535")
    return value


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """Every control setting the directory layer and its consumers read."""

    servers: tuple[ServerAddress, ...] = ()
    basedn: str = ""
    objectclass: str = ""
    login: str = ""
    password: str = field(default="", repr=False)
    group_login: str = ""
    group_password: str = field(default="", repr=False)
    timeout: int = DEFAULT_TIMEOUT
    rebind: bool = False
    local_delivery: bool = True
    cluster: bool = False
    cluster_hosts: tuple[str, ...] = ()
    default_dot_mode: str = "ldaponly"
    message_store: str | None = None
    ldap_uid: int | None = None
    ldap_gid: int | None = None
    quota_size: int = 0
    quota_count: int = 0
    alias_domains: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cache_ttl: int = 0
    dash_ext: bool = True
    me: str = ""
    tls: TlsSettings = TlsSettings()

    @classmethod
    def from_control(cls, ctl: ControlDir) -> LdapConfig:
        """Read the LDAP control files of *ctl*.

        ``ldapgrouplogin`` present switches group lookups to ``ldapgrouplogin``/``ldapgrouppassword``;
        absent, they use ``ldaplogin``/``ldappassword``.  ``me`` may be absent (empty here); programs
        that need it read it with ``ControlDir.me()``.

        Raises:
            ConfigError: an unreadable file or an illegal value (ldapserver line, ldapuid/ldapgid
                outside 100–65535, relative ldapmessagestore).
        """
        store = ctl.line("ldapmessagestore") or None
        if store is not None:
            if not store.startswith("/"):
                raise ConfigError(f"control/ldapmessagestore: {store!r} is not an absolute path")
            if not store.endswith("/"):
                store += "/"
        login = ctl.line("ldaplogin") or ""
        password = ctl.line("ldappassword") or ""
        if ctl.exists("ldapgrouplogin"):
            group_login = ctl.line("ldapgrouplogin") or ""
            group_password = ctl.line("ldapgrouppassword") or ""
        else:
            group_login, group_password = login, password
        timeout = ctl.integer("ldaptimeout", DEFAULT_TIMEOUT)
        return cls(
            servers=tuple(parse_server(line) for line in ctl.lines("ldapserver")),
            basedn=ctl.line("ldapbasedn") or "",
            objectclass=ctl.line("ldapobjectclass") or "",
            login=login,
            password=password,
            group_login=group_login,
            group_password=group_password,
            timeout=timeout if timeout > 0 else DEFAULT_TIMEOUT,
            rebind=ctl.boolean("ldaprebind", False),
            local_delivery=ctl.boolean("ldaplocaldelivery", True),
            cluster=ctl.boolean("ldapcluster", False),
            cluster_hosts=tuple(h.lower() for h in ctl.lines("ldapclusterhosts")),
            default_dot_mode=ctl.line("ldapdefaultdotmode") or "ldaponly",
            message_store=store,
            ldap_uid=_id(ctl, "ldapuid"),
            ldap_gid=_id(ctl, "ldapgid"),
            quota_size=ctl.integer("defaultquotasize", 0),
            quota_count=ctl.integer("defaultquotacount", 0),
            alias_domains=MappingProxyType(ctl.mapping("aliasdomains")),
            cache_ttl=ctl.integer("ldapcachettl", 0),
            dash_ext=ctl.boolean("ldapdashext", True),
            me=ctl.line("me") or "",
            tls=TlsSettings.from_control(ctl),
        )

    def with_group_credentials(self) -> LdapConfig:
        """The same settings binding with the group credentials (qmail-group's lookups)."""
        return replace(self, login=self.group_login, password=self.group_password)

    def is_this_host(self, host: str) -> bool:
        """True when *host* is ``me`` or an ``ldapclusterhosts`` line (case-insensitive)."""
        key = host.lower()
        return key == self.me.lower() or key in self.cluster_hosts


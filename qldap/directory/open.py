"""open_directory: pick the backend for a qmail root (slapd over LDAP, or the embedded LDIF file).

Why a factory: every program asks the same question ("which directory does this root use?"), and the
answer — ``control/ldapserver`` present → LDAP, else ``ROOT/directory.ldif`` → embedded, else a
configuration error — must be identical everywhere.

The LDAP client is qldap's own (:mod:`qldap.directory.wire`, a fraction of ldap3's CPU per lookup);
a control file ``ldapclient`` whose first line is ``ldap3`` selects the ldap3-based LdapSearcher
instead (same semantics; the fallback).  ldap3 is imported only then.
"""

from __future__ import annotations

from qldap.control.files import ControlDir
from qldap.directory.base import Searcher
from qldap.directory.cache import ResultCache
from qldap.directory.config import LdapConfig
from qldap.directory.lookup import Directory
from qldap.errors import ConfigError

EMBEDDED_NAME = "directory.ldif"
CLIENT_FILE = "ldapclient"


def make_searcher(config: LdapConfig, ctl: ControlDir) -> Searcher:
    """The backend for *config*: an LDAP client when servers are configured, else the LDIF file.

    The client is WireSearcher unless ``control/ldapclient`` says ``ldap3`` (LdapSearcher).

    Raises:
        ConfigError: no ``ldapserver`` and no ``ROOT/directory.ldif``, or an unknown ``ldapclient``.
    """
    if config.servers:
        client = (ctl.line(CLIENT_FILE) or "wire").strip().lower()
        if client == "ldap3":
            from qldap.directory.ldap import LdapSearcher

            return LdapSearcher(config)
        if client != "wire":
            raise ConfigError(f"control/{CLIENT_FILE}: unknown LDAP client {client!r} (wire or ldap3)")
        from qldap.directory.wire import WireSearcher

        return WireSearcher(config)
    embedded = ctl.root / EMBEDDED_NAME
    if embedded.is_file():
        from qldap.directory.ldif import LdifSearcher

        return LdifSearcher(embedded, config.basedn)
    raise ConfigError(f"unable to read control/ldapserver: missing or empty, and no {EMBEDDED_NAME}")


def open_directory(ctl: ControlDir, *, group: bool = False, config: LdapConfig | None = None) -> Directory:
    """A Directory for the root of *ctl*; ``group=True`` binds with the group credentials.

    The result cache is on only when ``control/ldapcachettl`` is positive.

    Raises:
        ConfigError: bad LDAP control files, or neither ldapserver nor directory.ldif.
    """
    cfg = config if config is not None else LdapConfig.from_control(ctl)
    if group:
        cfg = cfg.with_group_credentials()
    cache = ResultCache(cfg.cache_ttl) if cfg.cache_ttl > 0 else None
    return Directory(cfg, make_searcher(cfg, ctl), cache)

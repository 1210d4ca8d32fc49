"""open_directory: pick the backend for a qmail root (slapd over LDAP, or the embedded LDIF file).

Why a factory: every program asks the same question ("which directory does this root use?"), and the
answer — ``control/ldapserver`` present → LDAP, else ``ROOT/directory.ldif`` → embedded, else a
configuration error — must be identical everywhere.

There is one LDAP client, qldap's own (:mod:`qldap.directory.wire`).  The ``ldapclient`` control file
of earlier releases (``ldap3`` selected an ldap3-based client) is no longer read: a leftover file is
ignored, with one log line when the caller passes a *log* function, and qmail-showctl lists it as
obsolete (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable

from qldap.control.files import ControlDir
from qldap.directory.base import Searcher
from qldap.directory.cache import ResultCache
from qldap.directory.config import LdapConfig
from qldap.directory.lookup import Directory
from qldap.directory.observe import ObservedSearcher, Observer
from qldap.errors import ConfigError
from qldap.metrics import recorder

EMBEDDED_NAME = "directory.ldif"
OBSOLETE_CLIENT_FILE = "ldapclient"
OBSOLETE_CLIENT_NOTICE = (
    "warning: control/ldapclient is obsolete and ignored: qldap has one LDAP client; remove the file"
)


def make_searcher(config: LdapConfig, ctl: ControlDir, log: Callable[[str], None] | None = None) -> Searcher:
    """The backend for *config*: the wire LDAP client when servers are configured, else the LDIF file.

    *log* receives the client's warnings (a server skipped, and why: refused, TLS verification …).

    Raises:
        ConfigError: no ``ldapserver`` and no ``ROOT/directory.ldif``, or unusable TLS files.
    """
    if config.servers:
        from qldap.directory.wire import WireSearcher

        return WireSearcher(config, log=log)
    embedded = ctl.root / EMBEDDED_NAME
    if embedded.is_file():
        from qldap.directory.ldif import LdifSearcher

        return LdifSearcher(embedded, config.basedn)
    raise ConfigError(f"unable to read control/ldapserver: missing or empty, and no {EMBEDDED_NAME}")


def open_directory(
    ctl: ControlDir,
    *,
    group: bool = False,
    config: LdapConfig | None = None,
    observer: Observer | None = None,
    log: Callable[[str], None] | None = None,
) -> Directory:
    """A Directory for the root of *ctl*; ``group=True`` binds with the group credentials.

    The result cache is on only when ``control/ldapcachettl`` is positive.  *observer* receives a
    :class:`qldap.directory.observe.SearchEvent` per backend operation (metrics); *log* receives
    start-up notices (an obsolete ``ldapclient`` file) and the LDAP client's warnings (a server skipped
    and why, e.g. a failed TLS certificate verification).

    Raises:
        ConfigError: bad LDAP control files, or neither ldapserver nor directory.ldif.
    """
    cfg = config if config is not None else LdapConfig.from_control(ctl)
    if group:
        cfg = cfg.with_group_credentials()
    if log is not None and ctl.exists(OBSOLETE_CLIENT_FILE):
        log(OBSOLETE_CLIENT_NOTICE)
    cache = ResultCache(cfg.cache_ttl) if cfg.cache_ttl > 0 else None
    searcher = make_searcher(cfg, ctl, log)
    if observer is None and recorder().enabled:  # the daemon's metrics endpoint (docs/operations.md)
        observer = recorder().directory_event
    if observer is not None:
        searcher = ObservedSearcher(searcher, observer)
    return Directory(cfg, searcher, cache)

"""Create a complete qmail root (`qldap init`): control files with secure defaults, queue, alias, users.

Why these defaults: a fresh root must never be an open relay (rcpthosts lists only the root's own
domains; only loopback clients may relay), must deliver to Maildirs out of the box
(``defaultdelivery`` ``./Maildir/``), and must answer postmaster/mailer-daemon through the alias user
as RFC 5321 requires.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from qldap.errors import ConfigError
from qldap.setup.demo_ldif import DEMO_DOMAIN, DEMO_PASSWORD, DEMO_SUFFIX, DemoIds, demo_ldif


@dataclass(frozen=True, slots=True)
class InitOptions:
    """What `qldap init` was asked for."""

    root: Path
    me: str
    ldap_uris: tuple[str, ...] = ()
    basedn: str = ""
    demo: bool = False
    domains: tuple[str, ...] = field(default=())


def ldap_server_line(uri: str) -> str:
    """Turn ``ldap://host:port/`` (or a bare ``host[:port]``) into a control/ldapserver line;
    ``ldaps://host[:port]`` and ``ldapi://PATH`` are kept as URIs (qldap-control(5), LDAP SERVERS).

    Raises:
        ConfigError: the URI is not ldap://, ldaps:// or ldapi://, or names no host.
    """
    if "://" not in uri:
        return uri.strip()
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme == "ldapi":
        return f"ldapi://{parts.netloc}"
    if scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigError(f"unsupported LDAP URI {uri!r}: use ldap://, ldaps://host[:port] or ldapi://")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    hostport = f"{host}:{parts.port}" if parts.port else host
    return hostport if scheme == "ldap" else f"ldaps://{hostport}"


def delivery_ids() -> DemoIds:
    """The ids demo mailboxes belong to: the invoking user, or ``nobody`` when that user is root.

    Deliveries never run as root (qmail-local(8), QMAILUSER ATTRIBUTES), and qmailUID must be 100–65535.
    """
    uid, gid = os.getuid(), os.getgid()
    if 100 <= uid <= 65535 and 100 <= gid <= 65535:
        return DemoIds(uid, gid)
    try:
        pw = pwd.getpwnam("nobody")
        return DemoIds(pw.pw_uid, pw.pw_gid if 100 <= pw.pw_gid <= 65535 else pw.pw_uid)
    except KeyError:
        return DemoIds(65534, 65534)


def closed_parent(path: Path) -> Path | None:
    """The first directory above *path* that other users cannot enter (mode without o+x), if any.

    Deliveries run as the mailbox owners, never as root, so every directory above the mail stores
    and the alias home must be searchable by them.
    """
    for parent in Path(os.path.abspath(path)).parents:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return parent
        except OSError:
            return parent
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


SERVICES_YAML = """\
# Daemons `qldap up` runs (see README). Remove a section to not start that daemon.
smtpd:
  listen: ["127.0.0.1:2525"]
  rules: control/qmail-smtpd.rules
  env: {{RCPTCHECK: "", LOGLEVEL: "2"}}
send: {{}}
pop3d:
  listen: ["127.0.0.1:1110"]
  env: {{}}
"""

SMTPD_RULES = """\
# Per-client rules for qldap smtpd (tcprules syntax). Loopback may relay; everybody else may only
# send to this server's own domains (control/rcpthosts).
127.:allow,RELAYCLIENT=""
:allow
"""


def init_root(opts: InitOptions) -> list[Path]:
    """Create the root described by *opts*; returns the files written.

    Refuses to overwrite an existing ``control/me`` (an existing root is never clobbered).

    Raises:
        ConfigError: the root already exists or an option is invalid.
    """
    root = opts.root
    ctl = root / "control"
    if (ctl / "me").exists():
        raise ConfigError(f"{root} already has control/me; refusing to overwrite an existing root")
    written: list[Path] = []

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        p = root / rel
        _write(p, text, mode)
        written.append(p)

    domains = list(opts.domains) or ([DEMO_DOMAIN] if opts.demo else [])
    me = opts.me
    put("control/me", me + "\n")
    put("control/locals", "".join(f"{d}\n" for d in [me, *domains]))
    put("control/rcpthosts", "".join(f"{d}\n" for d in [me, *domains]))
    put("control/defaultdelivery", "./Maildir/\n")
    put("control/qmail-smtpd.rules", SMTPD_RULES)
    put("control/ldapobjectclass", "qmailUser\n")
    basedn = opts.basedn or (DEMO_SUFFIX if opts.demo else "")
    if basedn:
        put("control/ldapbasedn", basedn + "\n")
    if opts.ldap_uris:
        put("control/ldapserver", "".join(ldap_server_line(u) + "\n" for u in opts.ldap_uris))
    put("services.yaml", SERVICES_YAML.format())

    alias = root / "alias"
    for sub in ("tmp", "new", "cur"):
        (alias / "Maildir" / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("postmaster", "mailer-daemon", "root"):
        put(f"alias/.qmail-{name}", "./Maildir/\n", 0o600)
    if os.geteuid() == 0:
        # the alias user is the owner of ROOT/alias (delivery never runs as root)
        ids = delivery_ids()
        for dirpath, _dirs, files in os.walk(alias):
            os.chown(dirpath, ids.uid, ids.gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), ids.uid, ids.gid)
    (root / "users").mkdir(parents=True, exist_ok=True)

    from qldap.queue.layout import create_queue

    create_queue(root)

    if opts.demo:
        from qldap.passwords.schemes import make_hash

        ids = delivery_ids()
        mail_root = root / "mail"
        mail_root.mkdir(parents=True, exist_ok=True)
        for user in ("alice", "bob", "dave", "erin", "frank", "team"):
            for sub in ("tmp", "new", "cur"):
                d = mail_root / user / "Maildir" / sub
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.geteuid() == 0:
                for dirpath, _dirs, _files in os.walk(mail_root / user):
                    os.chown(dirpath, ids.uid, ids.gid)
        put("directory.ldif", demo_ldif(mail_root, ids, make_hash("ssha", DEMO_PASSWORD)))
    return written

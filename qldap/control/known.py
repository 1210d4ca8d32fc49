"""The registry of every control file qldap knows: name, kind, default, meaning, spec section.

Why one table: qmail-showctl prints each known file with its value or default, flags obsolete and
unknown ones (services.md §5.5), and configuration validation needs the same facts; keeping them in
one immutable table keeps the tools from drifting apart.  Defaults here are the *runtime* defaults a
program uses when the file is absent; :func:`defaults_for_me` gives the values an installation
writes into a fresh root (qmail's ``config-fast`` convention), which differ for ``defaultdomain`` and
``plusdomain``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Kind(enum.Enum):
    """How a control file is read (the ControlDir accessor that applies)."""

    LINE = "line"  # first line, trailing blanks stripped
    INTEGER = "integer"  # leading digits of the first line
    BOOLEAN = "boolean"  # integer, non-zero = on
    LIST = "list"  # one entry per line, blank and # lines skipped
    MAP = "map"  # list of key:value, split at the first colon
    TEXT = "text"  # raw multi-line content
    CDB = "cdb"  # constant database


class FromMe(enum.Enum):
    """A default that is the content of ``control/me``."""

    ME = "me"


Default = str | int | bool | FromMe | None
"""A literal default, :attr:`FromMe.ME`, or None (absent = feature off / nothing / required)."""


@dataclass(frozen=True, slots=True)
class ControlFile:
    """One known control file."""

    name: str
    kind: Kind
    default: Default
    meaning: str
    section: str
    obsolete: bool = False
    required: bool = False


ME = FromMe.ME
_S, _Q, _D, _V = "smtpd.md", "queue.md", "delivery.md", "services.md"

ENTRIES: tuple[ControlFile, ...] = (
    # -- identity and host names ----------------------------------------------------------------
    ControlFile("me", Kind.LINE, None, "fully qualified name of this host; default of the other host names",
                f"{_S} §3", required=True),
    ControlFile("defaulthost", Kind.LINE, ME, "host added by qmail-inject to header addresses without @",
                f"{_Q} §8"),
    ControlFile("defaultdomain", Kind.LINE, ME, "domain added by qmail-inject to hosts without a dot",
                f"{_Q} §8"),
    ControlFile("plusdomain", Kind.LINE, ME, "domain replacing a trailing + in qmail-inject addresses",
                f"{_Q} §8"),
    ControlFile("idhost", Kind.LINE, ME, "host part of Message-IDs that qmail-inject creates", f"{_Q} §8"),
    ControlFile("envnoathost", Kind.LINE, ME, "domain appended to envelope recipients lacking @",
                f"{_Q} §3"),
    ControlFile("localiphost", Kind.LINE, ME, "name replacing an own [IP] literal in SMTP recipients",
                f"{_S} §2.1"),
    ControlFile("helohost", Kind.LINE, ME, "name the SMTP client announces in EHLO/HELO", f"{_Q} §6.4"),
    # -- local and accepted domains ---------------------------------------------------------------
    ControlFile("locals", Kind.LIST, ME, "domains delivered locally (exact match)", f"{_Q} §3"),
    ControlFile("locals.cdb", Kind.CDB, None, "compiled locals; when present, locals is ignored",
                f"{_Q} §3"),
    ControlFile("rcpthosts", Kind.LIST, None, "further domains (.suffix = subdomains) SMTP accepts mail for",
                f"{_S} §3.2"),
    ControlFile("morercpthosts", Kind.LIST, None, "source list of morercpthosts.cdb", f"{_S} §3.2"),
    ControlFile("morercpthosts.cdb", Kind.CDB, None, "more accepted domains, consulted after rcpthosts",
                f"{_S} §3.2"),
    ControlFile("rcpthosts.cdb", Kind.CDB, None, "compiled accepted domains; replaces rcpthosts and "
                "morercpthosts.cdb", f"{_S} §3.2"),
    ControlFile("virtualdomains", Kind.MAP, None, "address or domain to prepend mapping for virtual users",
                f"{_Q} §3"),
    ControlFile("percenthack", Kind.LIST, None, "domains whose user%host local parts are rerouted",
                f"{_Q} §3"),
    # -- SMTP server ------------------------------------------------------------------------------
    ControlFile("smtpgreeting", Kind.LINE, "", "text after the host name in the greeting and HELO reply",
                f"{_S} §3"),
    ControlFile("smtpclustercookie", Kind.LINE, None, "cluster loop-detection token ending the greeting",
                f"{_S} §1"),
    ControlFile("timeoutsmtpd", Kind.INTEGER, 120, "seconds the SMTP server waits for client input",
                f"{_S} §1"),
    ControlFile("databytes", Kind.INTEGER, 0, "largest message SMTP accepts in bytes, 0 = no limit",
                f"{_S} §3"),
    ControlFile("badmailfrom", Kind.LIST, None, "envelope senders refused at MAIL", f"{_S} §2.2"),
    ControlFile("badmailfrom-unknown", Kind.LIST, None, "senders refused when the client has no PTR name",
                f"{_S} §2.2"),
    ControlFile("goodmailfrom", Kind.LIST, None, "senders exempt from most MAIL checks", f"{_S} §2.2"),
    ControlFile("relaymailfrom", Kind.LIST, None, "senders granted relaying for one transaction",
                f"{_S} §2.2"),
    ControlFile("badrcptto", Kind.LIST, None, "recipients refused at RCPT", f"{_S} §2.3"),
    ControlFile("goodmailaddr", Kind.LIST, None, "addresses that always pass RCPTCHECK/SENDERCHECK",
                f"{_S} §6"),
    ControlFile("rbllist", Kind.LIST, None, "DNS block lists: basedomain action matchon message",
                f"{_S} §3.3"),
    ControlFile("signatures", Kind.LIST, None, "first-body-line patterns refused under REJECTEXEC",
                f"{_S} §3.3"),
    ControlFile("smtpcert", Kind.TEXT, None, "PEM certificate chain and key enabling STARTTLS",
                f"{_S} §2.5"),
    ControlFile("tlsciphers", Kind.LINE, "compat", "cipher policy name or cipher string of the SMTP server",
                f"{_S} §2.5"),
    ControlFile("tlsdheparams", Kind.LINE, "none", "Diffie-Hellman parameter choice for TLS", f"{_S} §2.5"),
    ControlFile("qmail-smtpd.rules", Kind.TEXT, None, "per-client-IP allow/deny rules and variables",
                f"{_S} §7"),
    ControlFile("tcp.smtp", Kind.TEXT, None, "conventional name of a rules file named in services.yaml",
                "README.md"),
    ControlFile("qmail-smtpd.cdb", Kind.CDB, None, "tcprules output of the C system; qldap reads the text "
                "rules instead", f"{_S} §7", obsolete=True),
    # -- mail authentication --------------------------------------------------------------------
    ControlFile("dkimkeys", Kind.LIST, None, "DKIM signing keys: domain:selector:rsa|ed25519:keyfile "
                "(.domain = subdomains; relative keyfile = below control/)", "qldap-dkim(8)"),
    ControlFile("dkimstrict", Kind.BOOLEAN, False, "1 defers a message whose signing fails instead of "
                "sending it unsigned", "qldap-dkim(8)"),
    # -- queue, bounces, scheduling ---------------------------------------------------------------
    ControlFile("concurrencylocal", Kind.INTEGER, 10, "simultaneous local deliveries, 0 = hold",
                f"{_Q} §4.1"),
    ControlFile("concurrencyremote", Kind.INTEGER, 20, "simultaneous remote deliveries, 0 = hold",
                f"{_Q} §4.1"),
    ControlFile("holdlocal", Kind.BOOLEAN, False, "1 stops starting local deliveries", f"{_Q} §4.1"),
    ControlFile("holdremote", Kind.BOOLEAN, False, "1 stops starting remote deliveries", f"{_Q} §4.1"),
    ControlFile("queuelifetime", Kind.INTEGER, 604800, "seconds a message is retried before it bounces",
                f"{_Q} §4.2"),
    ControlFile("bigbrother", Kind.MAP, None, "address or @domain to an address receiving copies",
                f"{_Q} §2.9"),
    ControlFile("bouncefrom", Kind.LINE, "MAILER-DAEMON", "local part of the From of bounces", f"{_Q} §5.2"),
    ControlFile("bouncehost", Kind.LINE, ME, "host part of the From of bounces", f"{_Q} §5.2"),
    ControlFile("bouncemaxbytes", Kind.INTEGER, 0, "bytes of the original copied into a bounce, 0 = all",
                f"{_Q} §5.2"),
    ControlFile("custombouncetext", Kind.TEXT, None, "paragraph added to bounces after the introduction",
                f"{_Q} §5.2"),
    ControlFile("doublebounceto", Kind.LINE, "postmaster", "local part receiving double bounces",
                f"{_Q} §5.3"),
    ControlFile("doublebouncehost", Kind.LINE, ME, "host part receiving double bounces", f"{_Q} §5.3"),
    # -- remote delivery and cluster transport ----------------------------------------------------
    ControlFile("smtproutes", Kind.MAP, None, "domain to relay[:port][ user password] overriding MX",
                f"{_Q} §6.2"),
    ControlFile("timeoutconnect", Kind.INTEGER, 60, "seconds to wait for an outgoing TCP connection",
                f"{_Q} §6.3"),
    ControlFile("timeoutremote", Kind.INTEGER, 120, "seconds to wait for each remote SMTP reply",
                f"{_Q} §6.4"),
    ControlFile("outgoingip", Kind.LINE, "0.0.0.0", "local address outgoing SMTP connections bind to",
                f"{_Q} §6.3"),
    ControlFile("remotecert", Kind.TEXT, None, "client certificate offered when sending over TLS",
                f"{_Q} §6.4"),
    ControlFile("tlsremoteciphers", Kind.LINE, "compat", "cipher policy of the SMTP client", f"{_Q} §6.4"),
    ControlFile("qmqpservers", Kind.LIST, None, "QMQP servers tried in order when no host is given",
                f"{_Q} §7"),
    ControlFile("qmqpcip", Kind.LINE, "0.0.0.0", "local address the QMQP client binds to", f"{_Q} §7"),
    # -- LDAP -------------------------------------------------------------------------------------
    ControlFile("ldapserver", Kind.LIST, None,
                "LDAP servers (host[:port] or ldap://, ldaps://, ldapi:// URIs) in failover order; "
                "absent = embedded directory.ldif", f"{_D} §1"),
    ControlFile("ldapbasedn", Kind.LINE, "", "subtree searched for users and addresses", f"{_D} §1"),
    ControlFile("ldapobjectclass", Kind.LINE, "", "objectClass AND-ed into every search when non-empty",
                f"{_D} §1"),
    ControlFile("ldaplogin", Kind.LINE, "", "bind DN of the service account, empty = anonymous", f"{_D} §1"),
    ControlFile("ldappassword", Kind.LINE, "", "password of the service account", f"{_D} §1"),
    ControlFile("ldaptimeout", Kind.INTEGER, 30, "seconds allowed per LDAP search and connect", f"{_D} §1"),
    ControlFile("ldapstarttls", Kind.BOOLEAN, False,
                "upgrade ldap:// and host:port servers with StartTLS before the bind, 1 = on",
                "docs/operations.md"),
    ControlFile("ldaptlscacert", Kind.LINE, None,
                "PEM file of the CA certificates trusted for LDAP over TLS; absent = the system's",
                "docs/operations.md"),
    ControlFile("ldaptlscert", Kind.LINE, None, "PEM client certificate presented to LDAP servers over TLS",
                "docs/operations.md"),
    ControlFile("ldaptlskey", Kind.LINE, None, "PEM private key of ldaptlscert (absent = in ldaptlscert)",
                "docs/operations.md"),
    ControlFile("ldaprebind", Kind.BOOLEAN, False, "check passwords by binding as the user", f"{_V} §1.2"),
    ControlFile("ldaplocaldelivery", Kind.BOOLEAN, True, "fall back to users/cdb and passwd when not in LDAP",
                f"{_D} §6"),
    ControlFile("ldapcluster", Kind.BOOLEAN, False, "route by mailHost to other cluster members",
                f"{_Q} §7"),
    ControlFile("ldapclusterhosts", Kind.LIST, None, "further names counted as this host for mailHost",
                f"{_Q} §7"),
    ControlFile("ldapdefaultdotmode", Kind.LINE, "ldaponly", "dot-mode of entries that set none",
                f"{_D} §1"),
    ControlFile("ldapmessagestore", Kind.LINE, None, "absolute prefix of relative mailMessageStore values",
                f"{_D} §4.1"),
    ControlFile("ldapuid", Kind.INTEGER, None, "uid for entries without qmailUID", f"{_D} §4.2"),
    ControlFile("ldapgid", Kind.INTEGER, None, "gid for entries without qmailGID", f"{_D} §4.2"),
    ControlFile("defaultquotasize", Kind.INTEGER, 0, "mailbox byte quota when the entry sets none, 0 = none",
                f"{_D} §1"),
    ControlFile("defaultquotacount", Kind.INTEGER, 0, "mailbox message quota when the entry sets none",
                f"{_D} §1"),
    ControlFile("aliasdomains", Kind.MAP, None, "alias:real domain pairs applied to LDAP filters",
                f"{_D} §3.1"),
    ControlFile("ldapgrouplogin", Kind.LINE, "", "bind DN used by qmail-group when the file exists",
                f"{_V} §4.1"),
    ControlFile("ldapgrouppassword", Kind.LINE, "", "password for ldapgrouplogin", f"{_V} §4.1"),
    ControlFile("ldapcachettl", Kind.INTEGER, 0, "seconds directory answers may be cached, 0 = no cache",
                "qldap"),
    ControlFile("ldapdashext", Kind.BOOLEAN, True, "search dash-extension catchalls (a-b-catchall@d), 1 = on",
                "qldap"),
    ControlFile("cleartextpasswd", Kind.BOOLEAN, False, "accept userPassword values stored in clear text",
                "qldap"),
    ControlFile("automaildirmake", Kind.BOOLEAN, False, "auth modules create a missing Maildir at login",
                "qldap"),
    ControlFile("pop3cert", Kind.LINE, None, "PEM certificate and key for POP3 STLS", "qldap"),
    # -- local delivery ---------------------------------------------------------------------------
    ControlFile("defaultdelivery", Kind.TEXT, None, "delivery instructions when the user has none "
                "(fallback aliasempty, then ./Maildir/)", f"{_D} §0"),
    ControlFile("aliasempty", Kind.TEXT, None, "historic name of defaultdelivery, read when that is absent",
                f"{_D} §0"),
    ControlFile("dirmaker", Kind.LINE, None, "program creating a missing home directory", f"{_D} §4.6"),
    ControlFile("quotawarning", Kind.TEXT, None, "body of the warning sent at 70% of quota; empty = off",
                f"{_D} §7.8"),
    # -- POP-before-SMTP --------------------------------------------------------------------------
    ControlFile("pbsservers", Kind.LIST, None, "pbsdbd addresses pbsadd/pbscheck talk to (needed by them)",
                f"{_V} §3.1"),
    ControlFile("pbsip", Kind.LINE, "0.0.0.0", "address pbsdbd binds to", f"{_V} §3.1"),
    ControlFile("pbsport", Kind.INTEGER, 2821, "UDP port of pbsdbd", f"{_V} §3.1"),
    ControlFile("pbssecret", Kind.LINE, "", "shared secret authorising add packets (≤255 bytes)",
                f"{_V} §3.1"),
    ControlFile("pbscachesize", Kind.INTEGER, 1048576, "bytes of memory for the pbsdbd cache", f"{_V} §3.1"),
    ControlFile("pbstimeout", Kind.INTEGER, 600, "seconds a POP login grants relaying", f"{_V} §3.1"),
    ControlFile("pbsenv", Kind.LIST, None, "variables carried from login to SMTP: NAME[=NEW[=PREFIX]]",
                f"{_V} §3.1"),
    # -- obsolete names that qmail-showctl asks to remove -----------------------------------------
    *(
        ControlFile(name, Kind.TEXT, None, "setting of older qmail-ldap releases; no longer read",
                    f"{_V} §5.5", obsolete=True)
        for name in ("ldapusername", "ldappasswdappend", "ldapdefaultquota", "rblonlyheader",
                     "maxrcptcount", "tarpitdelay", "tarpitcount")
    ),
    ControlFile("ldapclient", Kind.TEXT, None, "LDAP client choice of earlier qldap releases; ignored "
                "(one client now)", "docs/operations.md", obsolete=True),
)

"""Every known control file, in the order qmail-showctl-like listings use."""

KNOWN: Mapping[str, ControlFile] = MappingProxyType({e.name: e for e in ENTRIES})
"""Every known control file by name."""


def lookup(name: str) -> ControlFile | None:
    """The registry entry of *name*, None when qldap does not know the file."""
    return KNOWN.get(name)


def effective_default(entry: ControlFile, me: str | None) -> str | int | bool | None:
    """The value a program uses when *entry*'s file is absent (``me`` substituted for :attr:`FromMe.ME`).

    With *me* unknown (None) a ``me`` default is None as well.
    """
    if isinstance(entry.default, FromMe):
        return me
    return entry.default


def parent_domain(me: str) -> str:
    """``me`` without its first label when at least three labels remain: ``mx1.example.com`` →
    ``example.com``; ``example.com`` unchanged (qmail's config-fast rule for defaultdomain)."""
    first, sep, rest = me.partition(".")
    return rest if sep and first and "." in rest else me


def last_two_labels(me: str) -> str:
    """The last two labels of *me* when it has more: ``a.b.example.com`` → ``example.com``
    (qmail's config-fast rule for plusdomain)."""
    labels = me.split(".")
    return ".".join(labels[-2:]) if len(labels) > 2 else me


def defaults_for_me(me: str) -> Mapping[str, str]:
    """The host-name control files a fresh installation derives from *me* (``qldap init``).

    ``defaultdomain`` is *me* minus its first label and ``plusdomain`` its last two labels (as qmail's
    config-fast writes them; when the files are absent at run time both fall back to *me* itself);
    every other host name is *me*, and ``doublebounceto``/``bouncefrom`` get their fixed defaults.
    """
    values = {
        name: me
        for name in ("defaulthost", "idhost", "bouncehost", "doublebouncehost", "helohost", "localiphost",
                     "envnoathost", "locals", "rcpthosts")
    }
    values["defaultdomain"] = parent_domain(me)
    values["plusdomain"] = last_two_labels(me)
    values["doublebounceto"] = "postmaster"
    values["bouncefrom"] = "MAILER-DAEMON"
    return MappingProxyType(values)

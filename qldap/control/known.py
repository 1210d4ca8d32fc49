"""The registry of every control file qldap knows: name, kind, default, meaning, manual page.

Why one table: qmail-showctl prints each known file with its value or default, flags obsolete and
unknown ones (qmail-showctl(8)), and configuration validation needs the same facts; keeping them in
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
    manual: str  # the page that documents the file, e.g. qmail-smtpd(8)
    obsolete: bool = False
    required: bool = False


ME = FromMe.ME

ENTRIES: tuple[ControlFile, ...] = (
    # -- identity and host names ----------------------------------------------------------------
    ControlFile("me", Kind.LINE, None, "fully qualified name of this host; default of the other host names",
                "qmail-smtpd(8)", required=True),
    ControlFile("defaulthost", Kind.LINE, ME, "host added by qmail-inject to header addresses without @",
                "qmail-inject(1)"),
    ControlFile("defaultdomain", Kind.LINE, ME, "domain added by qmail-inject to hosts without a dot",
                "qmail-inject(1)"),
    ControlFile("plusdomain", Kind.LINE, ME, "domain replacing a trailing + in qmail-inject addresses",
                "qmail-inject(1)"),
    ControlFile("idhost", Kind.LINE, ME, "host part of Message-IDs that qmail-inject creates",
                "qmail-inject(1)"),
    ControlFile("envnoathost", Kind.LINE, ME, "domain appended to envelope recipients lacking @",
                "qmail-send(8)"),
    ControlFile("localiphost", Kind.LINE, ME, "name replacing an own [IP] literal in SMTP recipients",
                "qmail-smtpd(8)"),
    ControlFile("helohost", Kind.LINE, ME, "name the SMTP client announces in EHLO/HELO", "qmail-send(8)"),
    # -- local and accepted domains ---------------------------------------------------------------
    ControlFile("locals", Kind.LIST, ME, "domains delivered locally (exact match)", "qmail-send(8)"),
    ControlFile("locals.cdb", Kind.CDB, None, "compiled locals; when present, locals is ignored",
                "qmail-send(8)"),
    ControlFile("rcpthosts", Kind.LIST, None, "further domains (.suffix = subdomains) SMTP accepts mail for",
                "qmail-smtpd(8)"),
    ControlFile("morercpthosts", Kind.LIST, None, "source list of morercpthosts.cdb", "qmail-smtpd(8)"),
    ControlFile("morercpthosts.cdb", Kind.CDB, None, "more accepted domains, consulted after rcpthosts",
                "qmail-smtpd(8)"),
    ControlFile("rcpthosts.cdb", Kind.CDB, None, "compiled accepted domains; replaces rcpthosts and "
                "morercpthosts.cdb", "qmail-smtpd(8)"),
    ControlFile("virtualdomains", Kind.MAP, None, "address or domain to prepend mapping for virtual users",
                "qmail-send(8)"),
    ControlFile("percenthack", Kind.LIST, None, "domains whose user%host local parts are rerouted",
                "qmail-send(8)"),
    # -- SMTP server ------------------------------------------------------------------------------
    ControlFile("smtpgreeting", Kind.LINE, "", "text after the host name in the greeting and HELO reply",
                "qmail-smtpd(8)"),
    ControlFile("smtpclustercookie", Kind.LINE, None, "cluster loop-detection token ending the greeting",
                "qmail-smtpd(8)"),
    ControlFile("timeoutsmtpd", Kind.INTEGER, 120, "seconds the SMTP server waits for client input",
                "qmail-smtpd(8)"),
    ControlFile("databytes", Kind.INTEGER, 0, "largest message SMTP accepts in bytes, 0 = no limit",
                "qmail-smtpd(8)"),
    ControlFile("badmailfrom", Kind.LIST, None, "envelope senders refused at MAIL", "qmail-smtpd(8)"),
    ControlFile("badmailfrom-unknown", Kind.LIST, None, "senders refused when the client has no PTR name",
                "qmail-smtpd(8)"),
    ControlFile("goodmailfrom", Kind.LIST, None, "senders exempt from most MAIL checks", "qmail-smtpd(8)"),
    ControlFile("relaymailfrom", Kind.LIST, None, "senders granted relaying for one transaction",
                "qmail-smtpd(8)"),
    ControlFile("badrcptto", Kind.LIST, None, "recipients refused at RCPT", "qmail-smtpd(8)"),
    ControlFile("goodmailaddr", Kind.LIST, None, "addresses that always pass RCPTCHECK/SENDERCHECK",
                "qmail-smtpd(8)"),
    ControlFile("rbllist", Kind.LIST, None, "DNS block lists: basedomain action matchon message",
                "qmail-smtpd(8)"),
    ControlFile("signatures", Kind.LIST, None, "first-body-line patterns refused under REJECTEXEC",
                "qmail-smtpd(8)"),
    ControlFile("smtpcert", Kind.TEXT, None, "PEM certificate chain and key enabling STARTTLS",
                "qmail-smtpd(8)"),
    ControlFile("tlsciphers", Kind.LINE, "compat", "cipher policy name or cipher string of the SMTP server",
                "qmail-smtpd(8)"),
    ControlFile("tlsdheparams", Kind.LINE, "none", "Diffie-Hellman parameter choice for TLS",
                "qmail-smtpd(8)"),
    ControlFile("qmail-smtpd.rules", Kind.TEXT, None, "per-client-IP allow/deny rules and variables",
                "qmail-smtpd(8)"),
    ControlFile("tcp.smtp", Kind.TEXT, None, "conventional name of a rules file named in services.yaml",
                "README.md"),
    ControlFile("qmail-smtpd.cdb", Kind.CDB, None, "tcprules output of the C system; qldap reads the text "
                "rules instead", "qmail-smtpd(8)", obsolete=True),
    # -- mail authentication --------------------------------------------------------------------
    ControlFile("dkimkeys", Kind.LIST, None, "DKIM signing keys: domain:selector:rsa|ed25519:keyfile "
                "(.domain = subdomains; relative keyfile = below control/)", "qldap-dkim(8)"),
    ControlFile("dkimstrict", Kind.BOOLEAN, False, "1 defers a message whose signing fails instead of "
                "sending it unsigned", "qldap-dkim(8)"),
    ControlFile("mailauth", Kind.LINE, None, "inbound SPF/DKIM/DMARC checks on for all clients: policy words "
                "tag, dmarcreject, spfreject, tempfail", "qmail-smtpd(8)"),
    ControlFile("mailauthdomains", Kind.MAP, None, "recipient domain (.suffix = subdomains) to policy words "
                "overriding mailauth/MAILAUTH after DATA", "qmail-smtpd(8)"),
    ControlFile("authservid", Kind.LINE, ME, "authserv-id of the Authentication-Results header smtpd adds",
                "qmail-smtpd(8)"),
    # -- queue, bounces, scheduling ---------------------------------------------------------------
    ControlFile("concurrencylocal", Kind.INTEGER, 10, "simultaneous local deliveries, 0 = hold",
                "qmail-send(8)"),
    ControlFile("concurrencyremote", Kind.INTEGER, 20, "simultaneous remote deliveries, 0 = hold",
                "qmail-send(8)"),
    ControlFile("holdlocal", Kind.BOOLEAN, False, "1 stops starting local deliveries", "qmail-send(8)"),
    ControlFile("holdremote", Kind.BOOLEAN, False, "1 stops starting remote deliveries", "qmail-send(8)"),
    ControlFile("queuelifetime", Kind.INTEGER, 604800, "seconds a message is retried before it bounces",
                "qmail-send(8)"),
    ControlFile("bigbrother", Kind.MAP, None, "address or @domain to an address receiving copies",
                "qmail-queue(8)"),
    ControlFile("bouncefrom", Kind.LINE, "MAILER-DAEMON", "local part of the From of bounces",
                "qmail-send(8)"),
    ControlFile("bouncehost", Kind.LINE, ME, "host part of the From of bounces", "qmail-send(8)"),
    ControlFile("bouncemaxbytes", Kind.INTEGER, 0, "bytes of the original copied into a bounce, 0 = all",
                "qmail-send(8)"),
    ControlFile("custombouncetext", Kind.TEXT, None, "paragraph added to bounces after the introduction",
                "qmail-send(8)"),
    ControlFile("doublebounceto", Kind.LINE, "postmaster", "local part receiving double bounces",
                "qmail-send(8)"),
    ControlFile("doublebouncehost", Kind.LINE, ME, "host part receiving double bounces", "qmail-send(8)"),
    # -- remote delivery and cluster transport ----------------------------------------------------
    ControlFile("smtproutes", Kind.MAP, None, "domain to relay[:port][ user password] overriding MX",
                "qmail-send(8)"),
    ControlFile("timeoutconnect", Kind.INTEGER, 60, "seconds to wait for an outgoing TCP connection",
                "qmail-tcpto(8)"),
    ControlFile("timeoutremote", Kind.INTEGER, 120, "seconds to wait for each remote SMTP reply",
                "qmail-send(8)"),
    ControlFile("outgoingip", Kind.LINE, "0.0.0.0", "local address outgoing SMTP connections bind to",
                "qmail-tcpto(8)"),
    ControlFile("remotecert", Kind.TEXT, None, "client certificate offered when sending over TLS",
                "qmail-send(8)"),
    ControlFile("tlsremoteciphers", Kind.LINE, "compat", "cipher policy of the SMTP client", "qmail-send(8)"),
    ControlFile("qmqpservers", Kind.LIST, None, "QMQP servers tried in order when no host is given",
                "qmail-qmqpd(8)"),
    ControlFile("qmqpcip", Kind.LINE, "0.0.0.0", "local address the QMQP client binds to", "qmail-qmqpd(8)"),
    # -- LDAP -------------------------------------------------------------------------------------
    ControlFile("ldapserver", Kind.LIST, None,
                "LDAP servers (host[:port] or ldap://, ldaps://, ldapi:// URIs) in failover order; "
                "absent = embedded directory.ldif", "qldap-control(5)"),
    ControlFile("ldapbasedn", Kind.LINE, "", "subtree searched for users and addresses", "qldap-control(5)"),
    ControlFile("ldapobjectclass", Kind.LINE, "", "objectClass AND-ed into every search when non-empty",
                "qldap-control(5)"),
    ControlFile("ldaplogin", Kind.LINE, "", "bind DN of the service account, empty = anonymous",
                "qldap-control(5)"),
    ControlFile("ldappassword", Kind.LINE, "", "password of the service account", "qldap-control(5)"),
    ControlFile("ldaptimeout", Kind.INTEGER, 30, "seconds allowed per LDAP search and connect",
                "qldap-control(5)"),
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
    ControlFile("ldaprebind", Kind.BOOLEAN, False, "check passwords by binding as the user", "auth_pop(8)"),
    ControlFile("ldaplocaldelivery", Kind.BOOLEAN, True, "fall back to users/cdb and passwd when not in LDAP",
                "qmail-local(8)"),
    ControlFile("ldapcluster", Kind.BOOLEAN, False, "route by mailHost to other cluster members",
                "qmail-qmqpd(8)"),
    ControlFile("ldapclusterhosts", Kind.LIST, None, "further names counted as this host for mailHost",
                "qmail-qmqpd(8)"),
    ControlFile("ldapdefaultdotmode", Kind.LINE, "ldaponly", "dot-mode of entries that set none",
                "qldap-control(5)"),
    ControlFile("ldapmessagestore", Kind.LINE, None, "absolute prefix of relative mailMessageStore values",
                "qmail-local(8)"),
    ControlFile("ldapuid", Kind.INTEGER, None, "uid for entries without qmailUID", "qmail-local(8)"),
    ControlFile("ldapgid", Kind.INTEGER, None, "gid for entries without qmailGID", "qmail-local(8)"),
    ControlFile("defaultquotasize", Kind.INTEGER, 0, "mailbox byte quota when the entry sets none, 0 = none",
                "qldap-control(5)"),
    ControlFile("defaultquotacount", Kind.INTEGER, 0, "mailbox message quota when the entry sets none",
                "qldap-control(5)"),
    ControlFile("aliasdomains", Kind.MAP, None, "alias:real domain pairs applied to LDAP filters",
                "qmail-local(8)"),
    ControlFile("ldapgrouplogin", Kind.LINE, "", "bind DN used by qmail-group when the file exists",
                "qmail-group(8)"),
    ControlFile("ldapgrouppassword", Kind.LINE, "", "password for ldapgrouplogin", "qmail-group(8)"),
    ControlFile("ldapcachettl", Kind.INTEGER, 0, "seconds directory answers may be cached, 0 = no cache",
                "qldap-control(5)"),
    ControlFile("ldapdashext", Kind.BOOLEAN, True, "search dash-extension catchalls (a-b-catchall@d), 1 = on",
                "qldap-control(5)"),
    ControlFile("cleartextpasswd", Kind.BOOLEAN, False, "accept userPassword values stored in clear text",
                "qldap-control(5)"),
    ControlFile("automaildirmake", Kind.BOOLEAN, False, "auth modules create a missing Maildir at login",
                "qldap-control(5)"),
    ControlFile("pop3cert", Kind.LINE, None, "PEM certificate and key for POP3 STLS", "qldap-control(5)"),
    # -- local delivery ---------------------------------------------------------------------------
    ControlFile("defaultdelivery", Kind.TEXT, None, "delivery instructions when the user has none "
                "(fallback aliasempty, then ./Maildir/)", "qmail-local(8)"),
    ControlFile("aliasempty", Kind.TEXT, None, "historic name of defaultdelivery, read when that is absent",
                "qmail-local(8)"),
    ControlFile("dirmaker", Kind.LINE, None, "program creating a missing home directory", "qmail-local(8)"),
    ControlFile("quotawarning", Kind.TEXT, None, "body of the warning sent at 70% of quota; empty = off",
                "qmail-local(8)"),
    # -- POP-before-SMTP --------------------------------------------------------------------------
    ControlFile("pbsservers", Kind.LIST, None, "pbsdbd addresses pbsadd/pbscheck talk to (needed by them)",
                "qldap-control(5)"),
    ControlFile("pbsip", Kind.LINE, "0.0.0.0", "address pbsdbd binds to", "qldap-control(5)"),
    ControlFile("pbsport", Kind.INTEGER, 2821, "UDP port of pbsdbd", "qldap-control(5)"),
    ControlFile("pbssecret", Kind.LINE, "", "shared secret authorising add packets (≤255 bytes)",
                "qldap-control(5)"),
    ControlFile("pbscachesize", Kind.INTEGER, 1048576, "bytes of memory for the pbsdbd cache",
                "qldap-control(5)"),
    ControlFile("pbstimeout", Kind.INTEGER, 600, "seconds a POP login grants relaying", "qldap-control(5)"),
    ControlFile("pbsenv", Kind.LIST, None, "variables carried from login to SMTP: NAME[=NEW[=PREFIX]]",
                "qldap-control(5)"),
    # -- obsolete names that qmail-showctl asks to remove -----------------------------------------
    *(
        ControlFile(name, Kind.TEXT, None, "setting of older qmail-ldap releases; no longer read",
                    "qmail-showctl(8)", obsolete=True)
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

"""Turn a directory answer for one recipient into a delivery plan (qmail-local(8), QMAILUSER ATTRIBUTES),
purely.

Why pure: the order of checks is the contract (accountStatus before numbers, cluster before paths,
identity after store), every failure has a fixed text, and none of it needs I/O once the entry is in
hand — so the whole of qmail-local(8) QMAILUSER ATTRIBUTES is one function tested with records, and the agent
only executes the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qldap.directory.base import Found
from qldap.directory.config import LdapConfig
from qldap.directory.errors import IllegalValue, MissingAttribute
from qldap.directory.schema import AccountStatus, DotMode
from qldap.directory.validate import (
    DeliveryModes,
    check_forward,
    check_path,
    check_program,
    check_user,
    parse_delivery_modes,
    parse_dot_mode,
    parse_number,
    resolve_id,
)
from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.quota import Quota

DISABLED = "Mailaddress is administratively disabled. (#5.2.1)"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
TOO_BIG = "The message exeeded the maximum size the user accepts. (#5.2.3)"
LSPAWN_TEMP = "Temporary failure in qmail-lspawn."
FORWARD_ONLY_DEFAULT = '|echo "Unable to deliver mail: account incorrectly configured. (#5.3.5)"; exit 100'


@dataclass(frozen=True, slots=True)
class ClusterRelay:
    """The recipient lives on another cluster host: forward there instead of delivering."""

    mail_host: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the delivery agent needs for one LDAP-resolved recipient."""

    user: str  # USER (the uid attribute, or the alias account in forward-only mode)
    uid: int | None  # None: the alias user's ids (forward-only mode)
    gid: int | None
    home: str
    dash: str
    ext: str
    default_delivery: str
    dot_mode: DotMode
    modes: DeliveryModes
    forwards: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    reply_text: str | None = None
    quota: Quota = field(default_factory=Quota)
    group_dn: str | None = None
    forward_only: bool = False
    warnings: tuple[str, ...] = ()
    from_ldap: bool = True  # False: users/passwd/alias fallback, which gets none of the
    # variables of qmail-local(8), QMAILUSER ATTRIBUTES

    def env(self) -> dict[str, str]:
        """The variables of qmail-local(8) QMAILUSER ATTRIBUTES (absent ones are simply not in the
        mapping)."""
        if not self.from_ldap:
            return {}
        out: dict[str, str] = {"QMAILDOTMODE": self.dot_mode.value}
        if self.quota.active:
            out["MAILDIRQUOTA"] = self.quota.spec()
        if self.forwards:
            out["QMAILFORWARDS"] = join_values(self.forwards)
        if self.programs:
            out["QMAILDELIVERYPROGRAM"] = join_values(self.programs)
        if self.reply_text is not None and self.modes.given:
            out["QMAILREPLYTEXT"] = self.reply_text
        if self.modes.words:
            out["QMAILMODE"] = join_values(self.modes.words)
        if self.forward_only:
            out["QMAILMODE"] = "forwardonly"
            out["QMAILDOTMODE"] = DotMode.LDAPONLY.value
        if self.group_dn is not None:
            out["QLDAPGROUP"] = self.group_dn
        return out


def join_values(values: tuple[str, ...]) -> str:
    """Join multi-valued attributes with ``:``, writing a ``:`` inside a value as ``\\:``."""
    return ":".join(v.replace(":", "\\:") for v in values)


def split_values(text: str) -> list[str]:
    """Split on unescaped ``:`` and restore ``\\:`` (the agent's side of :func:`join_values`)."""
    out: list[str] = []
    cur = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == ":":
            cur += ":"
            i += 2
            continue
        if ch == ":":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _no_trailing_backslash(values: tuple[str, ...], attribute: str) -> None:
    for v in values:
        if v.endswith("\\"):
            raise IllegalValue(f"{attribute}: value ends in a backslash")


def _default_store(store: str) -> str:
    """A mailMessageStore used as default delivery starts with ``/`` or ``.`` (else ``./`` is added)."""
    return store if store.startswith(("/", ".")) else "./" + store


def plan_ldap(
    found: Found,
    config: LdapConfig,
    *,
    local: str,
    default_delivery: str,
    message_size: int,
    alias_home: str | Callable[[], str | None] | None,
) -> Plan | ClusterRelay:
    """Apply qmail-local(8) QMAILUSER ATTRIBUTES steps 1–7 to a matched entry; *local* is the recipient's
    local part.  *alias_home* may be a function: it is asked only in forward-only mode, the one step
    that needs the alias user's home.

    Raises:
        PermanentFailure: status disabled/deleted, illegal or missing values, message too big, several
            values in a single-valued attribute.
        TemporaryFailure: invalid ``ldapdefaultdotmode``; forward-only mode without an alias user.
    """
    user = found.user()  # NotUnique for several values in single-valued attributes
    cand = found.candidate

    # 1. accountStatus
    if user.status is AccountStatus.DISABLED:
        raise PermanentFailure(DISABLED)
    if user.status is AccountStatus.DELETED:
        raise PermanentFailure(NO_MAILBOX)

    # 2. numbers
    size_max = parse_number(user.size_max, "mailSizeMax") if user.size_max is not None else 0
    qsize, qcount = config.quota_size, config.quota_count
    if user.quota_size is not None:
        qsize = parse_number(user.quota_size, "mailQuotaSize")
    if user.quota_count is not None:
        qcount = parse_number(user.quota_count, "mailQuotaCount")
    if size_max > 0 and message_size > size_max:
        raise PermanentFailure(TOO_BIG)

    # 3. cluster
    if config.cluster and user.mail_host and not config.is_this_host(user.mail_host):
        return ClusterRelay(user.mail_host)

    # forwards and programs are validated whenever present (qmail-local(8), QMAILUSER ATTRIBUTES: nothing runs
    # on an illegal value)
    forwards = tuple(check_forward(f) for f in user.forwards)
    programs = tuple(check_program(p) for p in user.programs)
    _no_trailing_backslash(forwards, "mailForwardingAddress")
    _no_trailing_backslash(programs, "deliveryProgramPath")
    modes = parse_delivery_modes(user.delivery_modes)
    _no_trailing_backslash(modes.words, "deliveryMode")
    warnings = tuple(f"Warning: undefined mail delivery mode: {w} (ignored)." for w in modes.unknown)

    # 4. store and home (qmail-local(8), QMAILUSER ATTRIBUTES)
    home_dir, store = user.home_directory, user.message_store
    if home_dir is not None:
        if not home_dir.startswith("/"):
            raise IllegalValue("homeDirectory: not absolute")
        check_path(home_dir, "homeDirectory")
    if store is not None:
        check_path(store, "mailMessageStore")
    if home_dir is not None:
        home = home_dir
        default = _default_store(store) if store is not None else default_delivery
    elif store is not None:
        if store.startswith("/"):
            home = store
        elif config.message_store:
            home = config.message_store + store
        else:
            raise IllegalValue("mailMessageStore: relative and no ldapmessagestore")
        default = default_delivery
    else:
        # forward-only mode
        if not forwards:
            raise MissingAttribute("mailForwardingAddress")
        forward_home = alias_home() if callable(alias_home) else alias_home
        if forward_home is None:
            raise TemporaryFailure("Unable to find alias user!")
        return Plan(
            user="alias", uid=None, gid=None, home=forward_home, dash="-",
            ext=local,
            default_delivery=FORWARD_ONLY_DEFAULT, dot_mode=DotMode.LDAPONLY,
            modes=parse_delivery_modes(["forwardonly"]), forwards=forwards, forward_only=True,
            warnings=warnings,
        )  # fmt: skip

    # 5. identity
    if user.uid is None:
        raise MissingAttribute("uid")
    account = check_user(user.uid)
    uid = resolve_id(user.qmail_uid, config.ldap_uid, "qmailUID")
    gid = resolve_id(user.qmail_gid, config.ldap_gid, "qmailGID")

    # 7. dot mode (entry's value is a permanent matter, the configured default a temporary one)
    if user.dot_mode is not None:
        dot_mode = parse_dot_mode(user.dot_mode)
    else:
        try:
            dot_mode = DotMode(config.default_dot_mode.lower())
        except ValueError:
            raise TemporaryFailure(LSPAWN_TEMP) from None

    return Plan(
        user=account, uid=uid, gid=gid, home=home, dash=cand.dash, ext=cand.ext,
        default_delivery=default, dot_mode=dot_mode, modes=modes, forwards=forwards, programs=programs,
        reply_text=user.reply_text, quota=Quota(qsize, qcount),
        group_dn=user.dn if user.is_group else None, warnings=warnings,
    )  # fmt: skip

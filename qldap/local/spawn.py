"""Local delivery of one recipient (qmail-lspawn's role): look up, plan, run the agent, inject, report.

Returns qmail's report letters — ``K`` delivered, ``Z`` deferred, ``D`` bounced — with the text.  The
invariant of qmail-local(8) holds here: a directory or system problem is always ``Z``; ``D`` comes
only from the data (the entry, the `.qmail` files, the message).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qldap.address import Address
from qldap.control.cdb import CdbReader
from qldap.control.files import ControlDir, Signature, path_signature
from qldap.directory.base import Ambiguous, Found, NotFound, Trash, Unavailable
from qldap.directory.config import LdapConfig
from qldap.directory.errors import AddressWithoutHost
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.directory.schema import DotMode
from qldap.directory.validate import parse_delivery_modes
from qldap.errors import ConfigError, DeliveryFailure, PermanentFailure, TemporaryFailure
from qldap.local import creds, users
from qldap.local.agent import AgentConfig, Tally, deliver
from qldap.local.child import Job, run_child
from qldap.local.dotqmail import Kind as DotKind
from qldap.local.dotqmail import parse_default_delivery
from qldap.local.lines import Recipient
from qldap.local.resolve import ClusterRelay, Plan, plan_ldap
from qldap.queue.message import MessageFile

NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
NO_ALIAS = "Unable to find alias user!"
PASSWD = "/etc/passwd"
ALIAS_MAX_AGE = 60.0  # seconds an alias answer is reused while /etc/passwd and ROOT/alias are unchanged

# (message bytes, envelope sender, recipients) -> qp; raises DeliveryFailure with the caller text.
Injector = Callable[[bytes, str, tuple[str, ...]], int]


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery's result: ``K``, ``Z`` or ``D`` and the report text."""

    letter: str
    text: str


@dataclass(frozen=True, slots=True)
class Account:
    """A system account used for fallback deliveries (passwd entry or the alias user)."""

    name: str
    uid: int
    gid: int
    home: str


def default_delivery(ctl: ControlDir) -> str:
    """``defaultdelivery``, else ``aliasempty``, else ``./Maildir/`` (may span several lines)."""
    for name in ("defaultdelivery", "aliasempty"):
        lines = ctl.raw_lines(name)
        if lines:
            return "\n".join(lines)
    return "./Maildir/"


def default_maildir(ctl: ControlDir) -> str:
    """The maildir a POP3 login reads when the user has no MAILDIR: the first maildir line (``.`` or
    ``/`` … ``/``) of :func:`default_delivery`, else ``./Maildir/``.

    Why here, next to :func:`default_delivery`: qmail-pop3d(8) must open the very maildir that
    qmail-local(8) fills from the same control file, or mail is delivered where POP3 cannot see it.
    """
    for instruction in parse_default_delivery(default_delivery(ctl)):
        if instruction.kind is DotKind.MAILDIR:
            return instruction.target
    return "./Maildir/"


def alias_account(root: Path) -> Account | None:
    """The alias user: the ``alias`` account if the system has one, else the owner of ROOT/alias."""
    try:
        pw = pwd.getpwnam("alias")
        return Account("alias", pw.pw_uid, pw.pw_gid, pw.pw_dir)
    except KeyError:
        pass
    try:
        st = os.stat(root / "alias")
    except OSError:
        return None
    if st.st_uid == 0 and os.geteuid() == 0:
        return None
    return Account("alias", st.st_uid, st.st_gid, str(root / "alias"))


class AliasCache:
    """:func:`alias_account` answers reused while ``/etc/passwd`` and ``ROOT/alias`` are unchanged.

    Why: ``getpwnam("alias")`` walks every NSS source (on systemd hosts about sixty system calls:
    passwd plus the userdb directories), once per local delivery — more than the delivery itself.
    The C qmail-lspawn asks per delivery; two ``stat`` calls detect every edit of the usual files-based
    set-up at once, and :data:`ALIAS_MAX_AGE` bounds how long a change made elsewhere (another NSS
    source) stays unseen.  Thread-safe (one tuple is replaced atomically).
    """

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self._alias_dir = os.path.join(self.root, "alias")  # a str: no pathlib per delivery
        self._clock = clock
        self._lock = threading.Lock()
        self._hit: tuple[float, tuple[Signature, Signature], Account | None] | None = None

    def get(self) -> Account | None:
        """The alias user now (see :func:`alias_account`)."""
        try:
            sig = (path_signature(PASSWD), path_signature(self._alias_dir))
        except ConfigError:
            return alias_account(self.root)
        now = self._clock()
        hit = self._hit
        if hit is not None and hit[1] == sig and now - hit[0] < ALIAS_MAX_AGE:
            return hit[2]
        account = alias_account(self.root)
        with self._lock:
            self._hit = (now, sig, account)
        return account


def _open_message(path: str) -> MessageFile:
    """The queued message, opened read-only (a str path: no pathlib on the delivery path)."""
    return MessageFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC), owned=True)


def passwd_account(local: str) -> tuple[Account, str, str] | None:
    """The system-account step (qmail-local(8), NO ENTRY): the longest prefix of *local* naming a real
    account; (account, dash, ext)."""
    lower = local.lower()
    cuts = [len(lower)] + [i for i in range(len(lower) - 1, 0, -1) if lower[i] == "-"]
    for cut in cuts:
        name = lower[:cut]
        if not name or len(name) >= 32:
            continue
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid == 0:
            continue
        try:
            st = os.stat(pw.pw_dir)
        except OSError:
            continue
        if st.st_uid != pw.pw_uid:
            continue
        acct = Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
        if cut == len(lower):
            return acct, "", ""
        return acct, "-", local[cut + 1 :]
    return None


class LocalSpawner:
    """Deliver local recipients; thread-safe (one instance serves the manager's thread pool)."""

    def __init__(
        self,
        root: Path,
        inject: Injector,
        *,
        directory: Directory | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.log = log
        self.ctl = ControlDir(self.root)
        self.inject = inject
        self._directory = directory
        self.users = CdbReader(self.root / "users" / "cdb")
        self._alias = AliasCache(self.root)
        self._cfg: AgentConfig | None = None

    def directory(self) -> Directory:
        """The directory, opened on first use and reused (connections are pooled inside)."""
        if self._directory is None:
            self._directory = open_directory(self.ctl, log=self.log)
        return self._directory

    def reload(self) -> None:
        """Forget the directory so the next delivery reads the LDAP controls again (SIGHUP)."""
        old, self._directory = self._directory, None
        if old is not None:
            old.close()

    def deliver(self, recipient: str, sender: str, message: str | os.PathLike[str]) -> Report:
        """Deliver *message* to *recipient*; never raises for delivery outcomes."""
        try:
            return Report("K", self._deliver(recipient, sender, os.fspath(message)))
        except DeliveryFailure as exc:
            return Report(exc.letter, exc.text)
        except ConfigError as exc:
            return Report("Z", f"Unable to read controls: {exc} (#4.3.0)")
        except OSError as exc:
            return Report("Z", f"Temporary failure in qmail-lspawn: {exc.strerror}. (#4.3.0)")

    def _deliver(self, recipient: str, sender: str, message: str) -> str:
        rcpt = Address.parse(recipient)
        if not rcpt.has_at:
            raise AddressWithoutHost(recipient)
        local, host = rcpt.local, rcpt.domain
        if not local:
            return "did 0+0+0"
        directory = self.directory()
        config = directory.config
        found = directory.find_recipient(recipient)
        size = os.stat(message).st_size  # the queued size: mailSizeMax and quota use it
        default = default_delivery(self.ctl)
        if isinstance(found, Unavailable):
            raise found.error
        if isinstance(found, Ambiguous):
            raise found.failure
        if isinstance(found, Trash):
            return "did 0+0+0"
        if isinstance(found, NotFound):
            plan, acct = self._fallback(local, config, default, self._alias.get())
        else:
            assert isinstance(found, Found)
            # the alias user (two stats) only when the entry needs it: forward-only mode, no ids
            result = plan_ldap(found, config, local=local, default_delivery=default, message_size=size,
                               alias_home=self._alias_home)
            if isinstance(result, ClusterRelay):
                # qmail-local(8), QMAILUSER ATTRIBUTES: relay to the user's mailHost over QMQP (runs in a
                # worker thread).  Imported here: the QMQP client pulls in dnspython (≈ 60 ms of a
                # helper's start-up) and only clusters need it.
                from qldap.remote.cluster import cluster_forward

                return asyncio.run(
                    cluster_forward(self.ctl, result.mail_host, sender, recipient, Path(message)))
            plan = result
            if plan.uid is None or plan.gid is None:
                alias = self._alias.get()
                if alias is None:
                    raise TemporaryFailure(NO_ALIAS)
                acct = alias
            else:
                acct = Account(plan.user, plan.uid, plan.gid, plan.home)
        self._make_home(plan, acct)
        if plan.group_dn is not None:  # qmail-local(8) QMAILUSER ATTRIBUTES step 6: group expansion, no
        # maildir copy
            with _open_message(message) as mf:
                return self._run_group(plan, plan.group_dn, local, host, sender, mf, acct)
        r = Recipient(local, host, acct.name if plan.forward_only else plan.user, plan.home, sender=sender)
        with _open_message(message) as mf:
            tally = self._run_agent(plan, r, mf, acct)
        return self._send_outgoing(tally)

    def _alias_home(self) -> str | None:
        alias = self._alias.get()
        return alias.home if alias is not None else None

    def _fallback(
        self, local: str, config: LdapConfig, default: str, alias: Account | None
    ) -> tuple[Plan, Account]:
        """qmail-local(8), NO ENTRY: passwd (with ``ldaplocaldelivery``), else the alias user's `.qmail`
        files."""
        if config.local_delivery:
            try:
                cdb = self.users.current()
            except ConfigError:  # unreadable or corrupt: defer, never guess
                raise TemporaryFailure("Trouble reading users/cdb in qmail-lspawn.") from None
            assigned = users.lookup(cdb, local) if cdb is not None else None
            if assigned is not None:
                acct = Account(assigned.user, assigned.uid, assigned.gid, assigned.home)
                return self._plain_plan(acct, assigned.dash, assigned.ext, default), acct
            hit = passwd_account(local)
            if hit is not None:
                acct, dash, ext = hit
                return self._plain_plan(acct, dash, ext, default), acct
        if alias is None:
            raise TemporaryFailure(NO_ALIAS)
        return self._plain_plan(alias, "-", local, default, alias=True), alias

    @staticmethod
    def _plain_plan(acct: Account, dash: str, ext: str, default: str, *, alias: bool = False) -> Plan:
        return Plan(
            user=acct.name, uid=acct.uid, gid=acct.gid, home=acct.home, dash=dash, ext=ext,
            default_delivery=default, dot_mode=DotMode.DOTONLY, modes=parse_delivery_modes([]),
            from_ldap=False,
        )  # fmt: skip

    def _make_home(self, plan: Plan, acct: Account) -> None:
        """qmail-local(8), HOME DIRECTORY MAKER: run ``dirmaker`` (as the user) when HOME does not exist
        yet."""
        if not plan.from_ldap or os.path.lexists(plan.home):
            return
        maker = self.ctl.line("dirmaker")
        if not maker:
            return
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs = {"user": acct.uid, "group": acct.gid, "extra_groups": []}
        try:
            proc = subprocess.run([maker, plan.home, plan.default_delivery.split("\n", 1)[0]],
                                  stdin=subprocess.DEVNULL, capture_output=True, check=False,
                                  **kwargs)  # type: ignore[call-overload]
        except PermissionError:
            raise PermanentFailure("Permanent error in automatic homedir creation. (#5.3.0)") from None
        except OSError:
            raise PermanentFailure("Permanent error in automatic homedir creation. (#5.3.0)") from None
        if proc.returncode == 0:
            return
        if proc.returncode == 100:
            raise PermanentFailure("Permanent error in automatic homedir creation. (#5.3.0)")
        if proc.returncode < 0:
            raise TemporaryFailure("Automatic homedir creator crashed (#4.3.0)")
        raise TemporaryFailure("Temporary error in automatic homedir creation. (#4.3.0)")

    def _agent_config(self) -> AgentConfig:
        """``me`` and ``quotawarning`` as they are now (a ``stat`` each; re-read only when changed)."""
        # the raw file, as qmail-quotawarn reads it: its final newline decides the blank line after it
        text = self.ctl.text("quotawarning")
        warning = text if text and text.strip() else None
        me = self.ctl.me()
        cfg = self._cfg
        if cfg is None or cfg.me != me or cfg.quota_warning != warning:
            cfg = self._cfg = AgentConfig(me=me, quota_warning=warning)
        return cfg

    def _run_agent(self, plan: Plan, r: Recipient, message: MessageFile, acct: Account) -> Tally:
        cfg = self._agent_config()
        euid = os.geteuid()
        if euid == 0:
            if creds.available():
                # per-thread file-system identity: the user's rights, no process (see creds.py)
                with creds.fs_identity(acct.uid, acct.gid):
                    return deliver(plan, r, message, cfg)
            return run_child(Job(plan, r, cfg, acct.uid, acct.gid), message)
        if acct.uid != euid:
            raise TemporaryFailure(
                f"Unable to deliver as uid {acct.uid} while running as uid {euid}. (#4.3.0)")
        return deliver(plan, r, message, cfg)

    def _run_group(
        self, plan: Plan, dn: str, local: str, host: str, sender: str, message: MessageFile, acct: Account
    ) -> str:
        """qmail-group for a qmailGroup entry: as the group's uid in a child when root, else here."""
        # imported here: group expansion (policy, secretary) is a few ms of start-up most helpers never use
        from qldap.group.deliver import GroupJob, deliver_group, group_maildir, run_group_child

        maildir = group_maildir(plan.home, plan.default_delivery)
        euid = os.geteuid()
        if euid == 0:
            job = GroupJob(str(self.root), dn, local, host, plan.dash, plan.ext, sender, str(maildir),
                           acct.uid, acct.gid, self.directory().config)  # fmt: skip
            return run_group_child(job, message, self.inject)
        if acct.uid != euid:
            raise TemporaryFailure(
                f"Unable to deliver as uid {acct.uid} while running as uid {euid}. (#4.3.0)")
        return deliver_group(self.root, dn, local, host, plan.dash, plan.ext, sender, message, self.inject,
                             maildir=maildir)  # fmt: skip

    def _send_outgoing(self, tally: Tally) -> str:
        qp: int | None = None
        for out in tally.outgoing:
            try:
                got = self.inject(out.data, out.sender, out.recipients)
            except DeliveryFailure as exc:
                if out.is_reply:
                    tally.notes.append(f"Warning: auto-reply not sent: {exc.text}")
                    continue
                raise type(exc)(f"Unable to forward message: {exc.text}.") from None
            if not out.is_reply:
                qp = got
        return tally.text(qp)

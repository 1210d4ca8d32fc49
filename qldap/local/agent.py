"""The delivery agent (qmail-local's role): execute one recipient's plan against the message.

Builds the instruction list from the LDAP plan and the `.qmail` file as the dot-mode says
(qmail-local(8), DOT-MODES), then writes maildirs/mboxes, runs programs and finally injects forwards,
returning qmail-local's success text (``did F+W+P``) or raising the failure to report.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qldap.directory.schema import DotMode
from qldap.errors import PermanentFailure, TemporaryFailure, error_text
from qldap.fsutil import ensure_maildir
from qldap.local import dotqmail
from qldap.local.autoreply import (
    ReplyDb,
    compose_quota_warning,
    compose_reply,
    is_bulk_message,
    is_robot_sender,
    parse_headers,
)
from qldap.local.dotqmail import Instruction, Kind
from qldap.local.lines import Recipient, dtline, program_env, rpline
from qldap.local.maildir import deliver_maildir
from qldap.local.mbox import deliver_mbox
from qldap.local.program import Outcome, run_program
from qldap.local.quota import OverQuota, Quota, check_quota, record_delivery
from qldap.local.resolve import Plan
from qldap.queue.message import MessageFile

LOOP = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
NO_REPLY_TEXT = "Warning: Reply mode is on but there is no reply text."



@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the agent wants injected: a forward (failure matters) or an auto-reply (it does not)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    is_reply: bool = False


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What the agent reads from control/ (per daemon, not per message)."""

    me: str
    quota_warning: str | None = None
    reply_junk: tuple[str, ...] = ()


@dataclass(slots=True)
class Tally:
    """What the agent did: counts for ``did F+W+P``, report notes and the messages to inject.

    Why the agent does not inject itself: when qldap runs as root the agent runs in a child process
    under the mailbox's uid, which may not write the queue; the spawner injects ``outgoing`` after the
    agent returns (forward failures then become the result, as qmail-local's do).
    """

    files: int = 0
    forwards: int = 0
    programs: int = 0
    notes: list[str] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)

    def text(self, qp: int | None = None) -> str:
        """qmail-local's success text: notes, ``did F+W+P`` and ``qp N`` when a forward was injected."""
        parts = [*self.notes, f"did {self.files}+{self.forwards}+{self.programs}"]
        if qp is not None:
            parts.append(f"qp {qp}")
        return "\n".join(parts)


def check_home(home: str) -> None:
    """qmail-local(8), DELIVERY: HOME must exist, not be other-writable, not be sticky.

    Raises:
        TemporaryFailure: with qmail-local's texts.
    """
    if not home.startswith("/"):
        raise TemporaryFailure(f"Unable to switch to {home}: not an absolute path. (#4.3.0)")
    try:
        st = os.stat(home)
    except FileNotFoundError as exc:
        raise TemporaryFailure(f"Unable to switch to {home}: {error_text(exc)}. (#4.3.0)") from None
    except OSError as exc:
        raise TemporaryFailure(f"Unable to stat home directory: {exc.strerror}. (#4.3.0)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TemporaryFailure(f"Unable to switch to {home}: not a directory. (#4.3.0)")
    if st.st_mode & 0o002:
        raise TemporaryFailure("Uh-oh: home directory is writable. (#4.7.0)")
    if st.st_mode & stat.S_ISVTX:
        raise TemporaryFailure("Home directory is sticky: user is editing his .qmail file. (#4.2.1)")


def _read_dotqmail(home: str, name: str) -> dotqmail.DotQmail | None:
    path = os.path.join(home, name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TemporaryFailure(f"Unable to open {path}: {exc.strerror}. (#4.3.0)") from None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_mode & 0o002:
        raise TemporaryFailure("Uh-oh: .qmail file is writable. (#4.7.0)")
    try:
        text = Path(path).read_text("utf-8", "surrogateescape")
    except OSError as exc:
        raise TemporaryFailure(f"Unable to open {path}: {exc.strerror}. (#4.3.0)") from None
    return dotqmail.parse(text, executable=bool(st.st_mode & stat.S_IXUSR))


def instructions_for(
    plan: Plan,
    r: Recipient,
    *,
    exists: Callable[[str], bool],
    read: Callable[[str], dotqmail.DotQmail | None],
) -> tuple[list[Instruction], str, str | None]:
    """The instruction list, NEWSENDER and DEFAULT for *plan* (qmail-local(8), DOT-MODES and .QMAIL FILES).

    Raises:
        PermanentFailure: ``dotonly`` with a dash and no matching `.qmail` file.
        TemporaryFailure: a bad `.qmail` file.
    """
    mode = plan.dot_mode
    default = dotqmail.parse_default_delivery(plan.default_delivery)
    out: list[Instruction] = []
    newsender = r.sender
    default_part: str | None = None
    if mode is not DotMode.DOTONLY:
        if mode in (DotMode.LDAPWITHPROG, DotMode.BOTH):
            out += [Instruction(Kind.PROGRAM, p) for p in plan.programs]
        if mode is not DotMode.NONE:
            out += [Instruction(Kind.FORWARD, f) for f in plan.forwards]
        out += list(default)
    if mode in (DotMode.DOTONLY, DotMode.BOTH):
        choice = dotqmail.choose(plan.dash, plan.ext, exists)
        parsed = read(choice.name) if choice else None
        if parsed is None:
            if mode is DotMode.DOTONLY:
                if plan.dash:
                    raise PermanentFailure(NO_MAILBOX)
                out += list(default)
        else:
            assert choice is not None
            default_part = choice.default
            out += list(parsed.instructions) if parsed.instructions else list(default)
            newsender = dotqmail.owner_sender(r.sender, r.local, r.host, plan.dash, plan.ext, exists)
    m = plan.modes
    if mode is not DotMode.DOTONLY:
        out = [
            i for i in out
            if not (m.nolocal and i.kind in (Kind.MAILDIR, Kind.MBOX))
            and not (m.noforward and i.kind is Kind.FORWARD)
            and not (m.noprogram and i.kind is Kind.PROGRAM)
        ]  # fmt: skip
    return out, newsender, default_part


def deliver(
    plan: Plan,
    r: Recipient,
    message: MessageFile,
    cfg: AgentConfig,
    *,
    now: Callable[[], float] = time.time,
) -> Tally:
    """Deliver *message* (the queued file) for recipient *r* as *plan* says; returns what was done.

    Raises:
        TemporaryFailure / PermanentFailure: with the report text.
    """
    home = plan.home
    check_home(home)
    head = message.head()
    dt = dtline(r)
    mine = dt.encode("utf-8", "surrogateescape")[:-1]
    if mine in head and any(line == mine for line in head.split(b"\n")):
        raise PermanentFailure(LOOP)
    size = message.size
    tally = Tally(notes=list(plan.warnings))

    def exists(name: str) -> bool:
        return os.path.lexists(os.path.join(home, name))

    instructions, newsender, default_part = instructions_for(
        plan, r, exists=exists, read=lambda name: _read_dotqmail(home, name)
    )
    rr = Recipient(r.local, r.host, r.user, home, plan.dash, plan.ext, r.sender, newsender)

    if plan.modes.reply and r.sender and plan.dot_mode is not DotMode.DOTONLY:
        if plan.reply_text is None:
            tally.notes.append(NO_REPLY_TEXT)
        else:
            _auto_reply(plan, rr, head, cfg, now(), tally)

    env: dict[str, str] | None = None  # built for the first program only: most deliveries run none
    prefix = (rpline(r.sender) + dt).encode("utf-8", "surrogateescape")
    forwards: list[str] = []
    stop = False
    for ins in instructions:
        if stop:
            break  # exit 99: the lines after the program are ignored, forwards before it still go out
        if ins.kind is Kind.FORWARD:
            forwards.append(ins.target)
        elif ins.kind is Kind.PROGRAM:
            if env is None:
                env = {**_base_env(), **plan.env(), **program_env(rr, default=default_part, now=now())}
            res = run_program(ins.target, message, env=env, cwd=home, uid=plan.uid, gid=plan.gid)
            if res.output:
                tally.notes.append(res.output.rstrip("\n"))
            tally.programs += 1
            stop = res.outcome is Outcome.STOP
        elif ins.kind is Kind.MAILDIR:
            _maildir(os.path.join(home, ins.target), message, prefix, size, plan.quota, rr, cfg, now)
            tally.files += 1
        else:
            _mbox(Path(home, ins.target), message, prefix, size, plan.quota, r.sender)
            tally.files += 1
    if forwards:
        body = dt.encode("utf-8", "surrogateescape")
        if len(forwards) > 1:
            body += b"Precedence: bulk\n"
        body += message.read_all()
        tally.outgoing.append(Outgoing(newsender, tuple(forwards), body))
        tally.forwards += len(forwards)
    return tally


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}


def _maildir(md: str, message: MessageFile, prefix: bytes, size: int, quota: Quota, r: Recipient,
             cfg: AgentConfig, now: Callable[[], float]) -> None:
    """One maildir line; *md* is a str (pathlib only on the quota path, which walks directories anyway)."""
    if quota.active:
        path = Path(md)
        try:
            check = check_quota(path, quota, size)
        except OverQuota:
            _quota_warning(path, r, cfg, now())
            raise
        if check.warn:
            _quota_warning(path, r, cfg, now())
    d = deliver_maildir(md, message.chunks(), prefix=prefix)
    if quota.active:
        record_delivery(path, d.size)


def _quota_warning(md: Path, r: Recipient, cfg: AgentConfig, now: float) -> None:
    """Store one warning unless one is already there; failures never change the result."""
    if not cfg.quota_warning:
        return
    try:
        for sub in ("new", "cur"):
            for name in os.listdir(md / sub):
                if name.rsplit(".", 1)[-1].startswith("QUOTA_WARNING"):
                    return
        text = compose_quota_warning(cfg.quota_warning, user=r.user, host=r.host, recipient=r.address,
                                     dtline=dtline(r), me=cfg.me, now=now)
        deliver_maildir(md, [text], name=f"{int(now)}.{os.getpid()}.QUOTA_WARNING")
    except (OSError, TemporaryFailure):
        pass


def _mbox(path: Path, message: MessageFile, prefix: bytes, size: int, quota: Quota, sender: str) -> None:
    if quota.bytes:
        try:
            current = os.stat(path).st_size
        except OSError:
            current = 0
        if current + size > quota.bytes:
            raise PermanentFailure("The users mailbox is over the allowed quota (size). (#5.2.2)")
    deliver_mbox(path, message.chunks(), sender=sender, prefix=prefix)


def _auto_reply(plan: Plan, r: Recipient, head: bytes, cfg: AgentConfig, now: float, tally: Tally) -> None:
    """qmail-reply: answer once per sender and text; failures are noted, never fatal."""
    assert plan.reply_text is not None
    # qmail-local counts the reply as a forward as soon as it hands the message to qmail-reply, which
    # may then decide to stay silent (robot sender, bulk mail, answered recently): "did F+1+P" either way
    tally.forwards += 1
    if is_robot_sender(r.sender, cfg.reply_junk) or is_bulk_message(parse_headers(head)):
        return
    store = plan.default_delivery.split("\n", 1)[0]
    db: ReplyDb | None = None
    if store.startswith((".", "/")) and store.endswith("/"):
        replies_in = Path(plan.home, store)
        db = ReplyDb(replies_in)
        if db.answered_recently(r.sender, plan.reply_text, now):
            return
    msg = compose_reply(plan.reply_text, sender=r.sender, recipient=r.address, original=head,
                        dtline=dtline(r), me=cfg.me, now=now)
    tally.outgoing.append(Outgoing("", (r.sender,), msg, is_reply=True))
    if db is not None:
        try:
            ensure_maildir(replies_in)
            db.record(r.sender, plan.reply_text, now)
        except (TemporaryFailure, OSError) as exc:
            tally.notes.append(f"Warning: unable to record the auto-reply: {exc}")

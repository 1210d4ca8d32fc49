"""qmail-group: deliver one message addressed to a qmailGroup entry (qmail-group(8)).

The message is checked for the list's own ``Delivered-To`` line, the group entry is read with the
group credentials, and the address decides: a new posting (membersonly check, then the secretary if
the list wants confirmation or moderation, then distribution to every member), a secretary answer
(confirm/approve/reject), a resend to the moderators, or a bounce resent to the bounce admins.

When delivery runs as root the work is done by a child process under the group's uid (its Maildir
holds the waiting posts and must stay the group's).  Why the child asks the parent to inject instead
of collecting messages for later: a released post is deleted only after its copies are queued, so the
injection must happen at that point of the run; a tiny length-prefixed frame protocol over the
child's stdin/stdout carries those requests (no pickles travel from the unprivileged child).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from qldap.control.files import ControlDir
from qldap.directory.base import Found, NotFound, Unavailable
from qldap.directory.config import LdapConfig
from qldap.directory.errors import IllegalValue, MissingAttribute, NotUnique
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.directory.user import QmailGroup
from qldap.errors import ConfigError, DeliveryFailure, PermanentFailure, TemporaryFailure
from qldap.group import policy as p
from qldap.group.members import expand_members, expand_moderators, may_post
from qldap.group.secretary import Inject, Released, Secretary, SecretaryConfig, call_inject
from qldap.queue.codes import QueueError
from qldap.queue.message import MessageFile

USAGE = "qmail-group: usage: qmail-group Maildir"
CRASHED = "qmail-local crashed."


def group_maildir(home: str, default_delivery: str) -> Path:
    """The group's storage: the first default-delivery line, relative to HOME.

    Raises:
        PermanentFailure: the default delivery is not a path (qmail-local passes only ``.``/``/``
            paths to qmail-group, which then has no Maildir argument).
    """
    first = default_delivery.split("\n", 1)[0]
    if not first.startswith((".", "/")):
        raise PermanentFailure(USAGE)
    return Path(home) / first


def _store_maildir(root: Path, config: LdapConfig, group: QmailGroup) -> Path:
    """The Maildir of the group's mailMessageStore (``ldapmessagestore`` prefixes a relative one)."""
    store = group.message_store
    if store is None:
        raise MissingAttribute("mailMessageStore")
    if not store.startswith("/"):
        if not config.message_store:
            raise IllegalValue("mailMessageStore: relative and no ldapmessagestore")
        store = config.message_store + store
    ctl = ControlDir(root)
    lines = ctl.raw_lines("defaultdelivery") or ctl.raw_lines("aliasempty") or ["./Maildir/"]
    first = lines[0] if lines[0].startswith((".", "/")) else "./Maildir/"
    return group_maildir(store, first)


def load_group(directory: Directory, dn: str) -> QmailGroup:
    """The group entry at *dn* (base search).

    Raises:
        TemporaryFailure: ``get ldap group entry: …`` — missing entry, directory trouble, or several
            values in a single-valued attribute (all temporary, as in the original).
    """
    found = directory.find_group(dn)
    if isinstance(found, Unavailable):
        raise TemporaryFailure(f"get ldap group entry: {found.error.text}")
    if isinstance(found, NotFound) or not isinstance(found, Found):
        raise TemporaryFailure("get ldap group entry: no such object")
    try:
        return found.group()
    except NotUnique:
        raise TemporaryFailure("get ldap group entry: too many objects") from None


@dataclass
class _Run:
    """One qmail-group run: the address, the group and its expanded moderators."""

    directory: Directory
    addr: p.GroupAddress
    group: QmailGroup
    sender: str
    inject: Inject
    now: float

    def blast(self, rcpts: tuple[str, ...], message: MessageFile, env_sender: str) -> int:
        if not rcpts:
            raise PermanentFailure(p.NO_RECIPIENTS)
        data = p.distribution_head(self.addr) + message.read_all()
        return call_inject(self.inject, data, env_sender, rcpts, "Unable to blast message")

    def ok(self, qp: int) -> str:
        return f"qmail-group: ok {int(self.now)} qp {qp}."

    def distribute(self, message: MessageFile, sender: str) -> str:
        members = expand_members(self.directory, self.group)
        admins = bool(self.group.bounce_admins)
        env_sender = p.distribution_sender(self.addr, sender, has_bounce_admins=admins)
        return self.ok(self.blast(members, message, env_sender))

    def release(self, path: Path) -> str:
        """Distribute a stored post with its original sender, then delete it."""
        with MessageFile.open(path) as mf:
            sender = p.sender_from_return_path(mf.head()) or self.sender
            text = self.distribute(mf, sender)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return text


def deliver_group(
    root: Path, group_dn: str, recipient_local: str, recipient_host: str, dash: str, ext: str,
    sender: str, message: MessageFile, inject: Inject, *, maildir: Path | None = None,
    directory: Directory | None = None, now: float | None = None,
) -> str:  # fmt: skip
    """The whole of qmail-group for one message; the success report text.

    *dash* is accepted for symmetry with the agent (the list name comes from LOCAL and EXT).
    *maildir* defaults to the group's mailMessageStore plus the default delivery; *directory*
    defaults to a new one bound with the group credentials (closed again afterwards).

    Raises:
        PermanentFailure: looping message, unknown address, not allowed to post, no recipients, a
            failed secretary check, a permanent queue refusal.
        TemporaryFailure: directory or storage trouble, bad flag values, a temporary queue refusal.
    """
    addr = p.group_address(recipient_local, recipient_host, ext)
    if p.is_looping(message.head(), addr.dt_line):
        raise PermanentFailure(p.LOOPING)
    own = directory is None
    d = open_directory(ControlDir(Path(root)), group=True) if directory is None else directory
    try:
        group = load_group(d, group_dn)
        run = _Run(d, addr, group, sender, inject, time.time() if now is None else now)
        confirm = p.parse_flag(group.sender_confirm)
        members_only = p.parse_flag(group.members_only)
        moderators = expand_moderators(d, group)
        where = p.route(addr, moderated=bool(moderators), has_bounce_admins=bool(group.bounce_admins))
        if where is p.Route.MODERATORS:
            return run.ok(run.blast(moderators, message, sender))
        if where in (p.Route.RETURN, p.Route.BOUNCE_TO_ADMINS):
            return run.ok(run.blast(group.bounce_admins, message, sender))
        if where is p.Route.POST:
            if members_only and not may_post(d, group, sender):
                raise PermanentFailure(p.NOT_ALLOWED)
            if not (confirm or moderators):
                return run.distribute(message, sender)
        box = maildir if maildir is not None else _store_maildir(Path(root), d.config, group)
        cfg = SecretaryConfig.for_group(
            box, addr.base, addr.host, confirm=confirm, moderators=moderators,
            confirm_text=group.confirm_text, approve_text=group.moderator_text,
        )  # fmt: skip
        outcome = Secretary(cfg, inject, run.now).handle(recipient_local, recipient_host, sender, message)
        if isinstance(outcome, Released):
            return run.release(outcome.path)
        return outcome.text
    finally:
        if own:
            d.close()


# -- running as the group's uid -----------------------------------------------------------------------

_HEADER = struct.Struct(">I")
_MAX_FIELDS = 1 << 20


@dataclass(frozen=True, slots=True)
class GroupJob:
    """What the child needs: deliver_group's arguments, the ids to run as and the LDAP settings."""

    root: str
    group_dn: str
    local: str
    host: str
    dash: str
    ext: str
    sender: str
    maildir: str
    uid: int
    gid: int
    config: LdapConfig


def _write_frame(out: IO[bytes], *fields: bytes) -> None:
    out.write(_HEADER.pack(len(fields)))
    for f in fields:
        out.write(_HEADER.pack(len(f)))
        out.write(f)
    out.flush()


def _read_exact(inp: IO[bytes], n: int) -> bytes | None:
    data = inp.read(n)
    return data if data is not None and len(data) == n else None


def _read_frame(inp: IO[bytes]) -> list[bytes] | None:
    """One frame, or None at end of input or on a malformed frame."""
    head = _read_exact(inp, _HEADER.size)
    if head is None:
        return None
    (count,) = _HEADER.unpack(head)
    if count == 0 or count > _MAX_FIELDS:
        return None
    fields: list[bytes] = []
    for _ in range(count):
        size = _read_exact(inp, _HEADER.size)
        if size is None:
            return None
        data = _read_exact(inp, _HEADER.unpack(size)[0])
        if data is None:
            return None
        fields.append(data)
    return fields


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _serve(frame: list[bytes], inject: Inject) -> tuple[bytes, ...]:
    """The parent's answer to the child's ``inject`` request."""
    rcpts = tuple(_dec(r) for r in frame[3:])
    try:
        return (b"qp", str(inject(frame[1], _dec(frame[2]), rcpts)).encode())
    except QueueError as exc:
        failure = exc.failure()
    except DeliveryFailure as exc:
        failure = exc
    return (b"fail", failure.letter.encode(), _enc(failure.text))


def run_group_child(job: GroupJob, message: MessageFile, inject: Inject) -> str:
    """Run deliver_group in ``python -m qldap.group.deliver`` as ``job.uid``; injections go to *inject*.

    Raises:
        TemporaryFailure / PermanentFailure: the group delivery's failure, or ``qmail-local crashed.``.
    """
    portable = replace(job, config=replace(job.config, alias_domains=dict(job.config.alias_domains)))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "qldap.group.deliver"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, pass_fds=(message.fd,))  # fmt: skip
    except OSError:
        raise TemporaryFailure("Unable to run qmail-local.") from None
    assert proc.stdin is not None and proc.stdout is not None
    result: tuple[str, str] | None = None
    try:
        _write_frame(proc.stdin, b"job", pickle.dumps((portable, message.fd)))
        while (frame := _read_frame(proc.stdout)) is not None:
            if frame[0] == b"inject" and len(frame) >= 4:
                _write_frame(proc.stdin, *_serve(frame, inject))
            elif frame[0] == b"ok" and len(frame) == 2:
                result = ("K", _dec(frame[1]))
            elif frame[0] == b"failed" and len(frame) == 3:
                result = (_dec(frame[1]), _dec(frame[2]))
            else:
                break
    except (BrokenPipeError, OSError):
        result = None
    finally:
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        code = proc.wait()
    if result is None or code != 0:
        raise TemporaryFailure(CRASHED)
    letter, text = result
    if letter == "K":
        return text
    raise (PermanentFailure if letter == "D" else TemporaryFailure)(text)


def _child_main() -> int:
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the frames
    frame = _read_frame(inp)
    if frame is None or frame[0] != b"job":
        return 111
    job, fd = pickle.loads(frame[1])  # from the root parent, which started us
    assert isinstance(job, GroupJob) and isinstance(fd, int)

    def inject(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        _write_frame(out, b"inject", data, _enc(sender), *(_enc(r) for r in rcpts))
        reply = _read_frame(inp)
        if reply is None:
            raise TemporaryFailure("qq read error (#4.3.0)")
        if reply[0] == b"qp":
            return int(reply[1])
        cls = PermanentFailure if reply[1] == b"D" else TemporaryFailure
        raise cls(_dec(reply[2]))

    try:
        if job.uid == 0:
            raise TemporaryFailure("Not allowed to perform deliveries as root.")
        # opened (and its modules imported) before dropping privileges: the interpreter's own files
        # need not be readable by the group's uid
        directory = open_directory(ControlDir(Path(job.root)), group=True, config=job.config)
        import encodings.idna  # noqa: F401  (host names in LDAP server lines resolve through it)

        os.setgroups([])
        os.setgid(job.gid)
        os.setuid(job.uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise TemporaryFailure("Not allowed to perform deliveries as root.")
        try:
            text = deliver_group(
                Path(job.root), job.group_dn, job.local, job.host, job.dash, job.ext, job.sender,
                MessageFile(fd), inject, maildir=Path(job.maildir), directory=directory,
            )  # fmt: skip
        finally:
            directory.close()
        _write_frame(out, b"ok", _enc(text))
    except DeliveryFailure as exc:
        _write_frame(out, b"failed", exc.letter.encode(), _enc(exc.text))
    except ConfigError as exc:
        _write_frame(out, b"failed", b"Z", _enc(f"Unable to read controls: {exc} (#4.3.0)"))
    except OSError as exc:
        _write_frame(out, b"failed", b"Z", _enc(f"Temporary error in qmail-group: {exc.strerror}. (#4.3.0)"))
    return 0


if __name__ == "__main__":
    from qldap.group.deliver import _child_main as child_main

    sys.exit(child_main())

"""qmail-secretary: hold a group's posts in its Maildir until the sender confirms or a moderator approves.

A held post is stored as ``new/HASH`` (waiting for the sender) or ``cur/HASH`` (waiting for a
moderator), headed by ``Return-Path: <SENDER>`` so its sender survives the wait; the request mail
asks to be answered at ``LIST-confirm-HASH`` / ``LIST-approve-HASH``, and its envelope sender
(``LIST-reject-HASH`` / ``LIST-bounce-HASH``) catches bounces.  Whoever knows HASH may release the
post, so HASH carries 256 random bits; every run deletes storage older than a week.

Why the outcome is returned instead of distributing here: in group mode the caller (qmail-group)
expands the members and sends the released file itself, in ezmlm mode a program does; the secretary
only decides and stores.  **Decision:** a HASH that is not 40 hex digits is treated as unknown, so an
address can never name a file outside the storage directories.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qldap.dates import qmail_date
from qldap.errors import DeliveryFailure, PermanentFailure, TemporaryFailure
from qldap.fsutil import ensure_maildir, fsync_dir
from qldap.group import policy as p
from qldap.queue.codes import QueueError
from qldap.queue.message import MessageFile

WEEK = 604800
CONFIRM_ATTACH = 10 * 1024
MODERATION_ATTACH = 128 * 1024
STRIPPED = b"\n\n--- End of message stripped.\n"
X_MAILER = "qmail-secretary (by qmail-ldap)"
_HASH = re.compile(r"[0-9a-f]{40}")

# (message bytes, envelope sender, recipients) -> qp; the spawner's injection seam.
Inject = Callable[[bytes, str, tuple[str, ...]], int]

DEFAULT_CONFIRM = """Hello,

this is the mailgroup secretary of %LIST%, a program that
looks after the list.  A message from you to %LIST% is waiting; the start
of it is attached below.

The list accepts messages only from senders who confirm them.  Please
answer this notice to confirm that you sent the message yourself; what
you write does not matter, an empty reply will do.

Without your answer the message is dropped after a week and nobody on
the list will see it.

The mailgroup secretary
"""

DEFAULT_APPROVE = """Hello,

this is the mailgroup secretary of %LIST%.  The attached message
waits for a moderator's approval before it goes to the list.

To approve it, answer this notice; what you write does not matter.
To refuse it, do nothing: unapproved messages are dropped after a week.

The mailgroup secretary
"""


@dataclass(frozen=True, slots=True)
class SecretaryConfig:
    """One list as the secretary sees it (``in…`` parse incoming addresses, ``out…`` build replies)."""

    maildir: Path
    in_local: str
    in_host: str
    out_local: str
    out_host: str
    mailing_list: str
    confirm: bool
    moderators: tuple[str, ...]
    confirm_text: str = DEFAULT_CONFIRM
    approve_text: str = DEFAULT_APPROVE
    ezmlm: bool = False

    @classmethod
    def for_group(
        cls, maildir: Path, base: str, host: str, *, confirm: bool, moderators: tuple[str, ...],
        confirm_text: str | None = None, approve_text: str | None = None,
    ) -> SecretaryConfig:  # fmt: skip
        """Group mode: list BASE@HOST for both directions; None texts take the defaults."""
        return cls(
            maildir=maildir, in_local=base, in_host=host, out_local=base, out_host=host,
            mailing_list=f"{base}@{host}", confirm=confirm, moderators=moderators,
            confirm_text=DEFAULT_CONFIRM if confirm_text is None else confirm_text,
            approve_text=DEFAULT_APPROVE if approve_text is None else approve_text,
        )  # fmt: skip

    @property
    def list_address(self) -> str:
        """``OUTLOCAL@OUTHOST``: what ``%LIST%`` becomes."""
        return f"{self.out_local}@{self.out_host}"

    @property
    def dt_line(self) -> bytes:
        """The secretary's own ``Delivered-To`` line."""
        return p.secretary_dt_line(self.out_local, self.out_host)


@dataclass(frozen=True, slots=True)
class Held:
    """Nothing more to do now (exit 99): stored and asked, rejected, or nothing found."""

    text: str


@dataclass(frozen=True, slots=True)
class Released:
    """The stored post at *path* may go to the list (exit 99 after handing it on)."""

    path: Path
    text: str = ""


@dataclass(frozen=True, slots=True)
class Passed:
    """Not the secretary's business (exit 0): let the next delivery instruction have it."""

    text: str


Outcome = Held | Released | Passed


def call_inject(inject: Inject, data: bytes, sender: str, rcpts: tuple[str, ...], what: str) -> int:
    """Inject through the seam; a refusal becomes ``WHAT: TEXT.`` with the queue's letter.

    Raises:
        PermanentFailure / TemporaryFailure: the queue refused the message.
    """
    try:
        return inject(data, sender, rcpts)
    except QueueError as exc:
        failure = exc.failure()
    except DeliveryFailure as exc:
        failure = exc
    raise type(failure)(f"{what}: {failure.text}.")


# -- storage ------------------------------------------------------------------------------------------


def new_hash(message: MessageFile) -> str:
    """40 lowercase hex digits: SHA-1 of 32 random bytes and the message."""
    h = hashlib.sha1(os.urandom(32))
    for chunk in message.chunks():
        h.update(chunk)
    return h.hexdigest()


def store(maildir: Path, subdir: str, prefix: bytes, message: MessageFile) -> tuple[str, Path]:
    """Write *prefix* and the message to ``tmp/HASH``, fsync, link it as ``SUBDIR/HASH``; (HASH, path).

    Raises:
        TemporaryFailure: the file could not be created or written (the tmp file is removed).
    """
    for _ in range(3):
        name = new_hash(message)
        final, tmp = maildir / subdir / name, maildir / "tmp" / name
        if not os.path.lexists(final) and not os.path.lexists(tmp):
            break
    else:
        raise TemporaryFailure("Could not stat tmp file: name already in use.")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise TemporaryFailure(f"Unable to open tmp file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=1 << 16) as f:
            f.write(prefix)
            for chunk in message.chunks():
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise TemporaryFailure(f"Unable to store message: {exc.strerror}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return name, final


def stored(maildir: Path, subdir: str, hash_: str) -> Path | None:
    """The path of ``SUBDIR/HASH`` when HASH is well-formed and the file exists, else None."""
    if not _HASH.fullmatch(hash_):
        return None
    path = maildir / subdir / hash_
    return path if os.path.isfile(path) else None


def expire(maildir: Path, now: float, keep: Path | None = None) -> int:
    """Delete files in ``new``, ``cur`` and ``tmp`` last modified more than a week ago; the count.

    Failures are ignored (the next run tries again); *keep* is spared (a post being released).
    """
    removed = 0
    for sub in ("new", "cur", "tmp"):
        try:
            names = os.listdir(maildir / sub)
        except OSError:
            continue
        for name in names:
            path = maildir / sub / name
            if name.startswith(".") or path == keep:
                continue
            try:
                if now > os.lstat(path).st_mtime + WEEK:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue
    return removed


# -- notifications ------------------------------------------------------------------------------------

_MESSAGE_FORCED = ("to:", "from:", "mime-version:", "content-type:", "content-transfer-encoding:",
                   "x-mailer:", "precedence:")  # fmt: skip
_MESSAGE_ALLOWED = ("subject:", "x-")
_PART_ALLOWED = ("content-type:", "content-transfer-encoding:")


def split_text(text: str) -> tuple[list[str], list[str], str]:
    """A notification text: (message header lines, first-part header lines, body).

    A text starting with a ``%HEADER%`` line carries header lines up to an empty line: ``Subject:``
    and ``X-…`` go to the message (``X-Mailer:`` stays ours), ``Content-Type:`` and
    ``Content-Transfer-Encoding:`` to the text part; others are dropped.  Continuation lines follow
    the line they continue.
    """
    lines = text.split("\n")
    if not lines or lines[0].lower() != "%header%" or len(lines) < 2:
        return [], [], text
    message: list[str] = []
    part: list[str] = []
    target: list[str] | None = None
    i = 1
    while i < len(lines) and lines[i] != "":
        line = lines[i]
        i += 1
        if line[:1] in (" ", "\t"):
            if target is not None:
                target[-1] += "\n" + line
            continue
        lower = line.lower()
        target = None
        if lower.startswith(_MESSAGE_FORCED):
            pass
        elif lower.startswith(_MESSAGE_ALLOWED):
            target = message
        if lower.startswith(_PART_ALLOWED):
            target = part
        if target is not None:
            target.append(line)
    return message, part, "\n".join(lines[i + 1 :])


def _has(fields: list[str], name: str) -> bool:
    return any(f.lower().startswith(name) for f in fields)


def expand_list(body: str, list_address: str) -> str:
    """Replace every ``%LIST%`` (any case) with the list address."""
    return re.sub("%list%", lambda _m: list_address, body, flags=re.IGNORECASE)


def truncate(original: bytes, limit: int) -> bytes:
    """At most *limit* bytes of *original*, cut at a line end, marked when something was cut."""
    if len(original) <= limit:
        return original
    cut = original.rfind(b"\n", 0, limit) + 1
    return original[: cut or limit] + STRIPPED


def compose_notification(
    cfg: SecretaryConfig, *, to: str, reply_to: str, subject: str, text: str, boundary: str,
    original: bytes, limit: int, now: float, pid: int,
) -> bytes:  # fmt: skip
    """A confirmation or moderation request: the text part and the (truncated) original attached."""
    fields, part_fields, body = split_text(text)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    head = [f"Message-ID: <{stamp}.{pid}.qmail@{cfg.in_host}>", f"Date: {qmail_date(now)}"]
    if cfg.ezmlm:
        head.append(f"Mailing-List: {cfg.mailing_list}")
    head += fields
    head += [f"To: {p.one_line(to)}", f"From: The mailgroup secretary <{reply_to}>"]
    if not _has(fields, "subject:"):
        head.append(f"Subject: {subject}")
    head += ["MIME-Version: 1.0", f"X-Mailer: {X_MAILER}", "Precedence: junk",
             f'Content-Type: multipart/mixed; boundary="{boundary}"']  # fmt: skip
    if not _has(part_fields, "content-type:"):
        part_fields.append('Content-Type: text/plain; charset="iso-8859-1"')
    if not _has(part_fields, "content-transfer-encoding:"):
        part_fields.append("Content-Transfer-Encoding: 8bit")
    text_part = "\n".join(part_fields) + "\n\n" + expand_list(body, cfg.list_address)
    top = (
        "\n".join(head) + "\n\nThis is a multi-part message in MIME format.\n\n"
        f"--{boundary}\n{text_part}\n--{boundary}\nContent-Type: message/rfc822\n\n"
    )
    out = cfg.dt_line + top.encode("utf-8", "surrogateescape") + truncate(original, limit)
    return out + f"\n--{boundary}--\n".encode()


def _read_prefix(message: MessageFile, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in message.chunks():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)


# -- the secretary ------------------------------------------------------------------------------------


class Secretary:
    """One run of the secretary for one incoming message (the program's ``main`` as an object)."""

    def __init__(self, cfg: SecretaryConfig, inject: Inject, now: float | None = None) -> None:
        self.cfg = cfg
        self.inject = inject
        self.now = time.time() if now is None else now

    def _ask(self, *, confirm: bool, hash_: str, sender: str, original: MessageFile) -> int:
        """Send the confirmation (to SENDER) or moderation request (to the moderators); the qp."""
        c = self.cfg
        rcpts: tuple[str, ...]
        if confirm:
            to, rcpts, reply, env = sender, (sender,), "confirm", "reject"
            subject, text, limit = "Message sender confirmation", c.confirm_text, CONFIRM_ATTACH
            what = "Unable to send reply message"
        else:
            if not c.moderators:
                raise PermanentFailure(p.NO_MODERATORS)
            to = f"The moderators of {c.mailing_list} <{c.out_local}-moderators@{c.out_host}>"
            rcpts, reply, env = p.moderation_recipients(sender, c.moderators), "approve", "bounce"
            subject, text, limit = "Moderation request", c.approve_text, MODERATION_ATTACH
            what = "Unable to send approve message"
        data = compose_notification(
            c, to=to, reply_to=p.reply_address(c.out_local, reply, hash_, c.out_host), subject=subject,
            text=text, boundary=hash_, original=_read_prefix(original, limit), limit=limit, now=self.now,
            pid=os.getpid(),
        )  # fmt: skip
        env_sender = p.reply_address(c.out_local, env, hash_, c.out_host)
        return call_inject(self.inject, data, env_sender, rcpts, what)

    def _checks(self, sender: str, message: MessageFile) -> None:
        p.check_sender(sender)
        p.check_headers(message.head(), self.cfg.dt_line)

    def handle(self, local: str, host: str, sender: str, message: MessageFile) -> Outcome:
        """Act on one message to ``LOCAL@HOST`` from SENDER (qmail-secretary(8)'s table).

        Raises:
            PermanentFailure: a failed check, a bad address, no moderators when needed, a missing
                hash, a permanent queue refusal.
            TemporaryFailure: storage or queue trouble.
        """
        c = self.cfg
        req = p.secretary_request(local, host, c.in_local, c.in_host)
        if req is None:
            return Passed(f"qmail-secretary: warn: {p.BAD_EXTENSION}")
        ensure_maildir(c.maildir)
        A = p.Action
        if req.action is A.NONE:
            self._checks(sender, message)
            if not c.confirm and not c.moderators:
                raise PermanentFailure(p.NO_MODERATORS)
            prefix = p.return_path_line(sender) + c.dt_line
            hash_, _ = store(c.maildir, "new" if c.confirm else "cur", prefix, message)
            qp = self._ask(confirm=c.confirm, hash_=hash_, sender=sender, original=message)
            expire(c.maildir, self.now)
            return Held(f"qmail-secretary: info: qp {qp}")
        if req.action in (A.APPROVE, A.CONFIRM):
            self._checks(sender, message)
            if not req.hash:
                approve = req.action is A.APPROVE
                raise PermanentFailure(p.APPROVE_WITHOUT_ID if approve else p.CONFIRM_WITHOUT_ID)
            path = stored(c.maildir, "cur" if req.action is A.APPROVE else "new", req.hash.lower())
            if path is None:
                expire(c.maildir, self.now)
                return Held(f"qmail-secretary: warn: {p.NO_LONGER_STORED}")
            if req.action is A.APPROVE or not c.moderators:
                expire(c.maildir, self.now, keep=path)
                return Released(path)
            return self._to_moderators(path, sender)
        if req.action is A.REJECT:
            path = stored(c.maildir, "new", req.hash.lower())
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            expire(c.maildir, self.now)
            return Held(f"qmail-secretary: warn: {p.REJECTED}")
        expire(c.maildir, self.now)
        if req.action is A.BOUNCE:
            return Held(f"qmail-secretary: warn: {p.MODERATOR_BOUNCED}")
        if req.action is A.MODERATORS:
            raise PermanentFailure(p.BAD_ADDRESS)
        return Passed("")

    def _to_moderators(self, path: Path, sender: str) -> Outcome:
        """A confirmed post of a moderated list: move it to ``cur/NEWHASH`` and ask the moderators."""
        c = self.cfg
        with MessageFile.open(path) as mf:
            for _ in range(3):
                new = new_hash(mf)
                target = c.maildir / "cur" / new
                if not os.path.lexists(target):
                    break
            else:
                raise TemporaryFailure("Could not stat new file: name already in use.")
            try:
                os.rename(path, target)
            except OSError as exc:
                raise TemporaryFailure(f"Could not move file: {exc.strerror}") from None
            qp = self._ask(confirm=False, hash_=new, sender=sender, original=mf)
        expire(c.maildir, self.now)
        return Held(f"qmail-secretary: info: qp {qp}")

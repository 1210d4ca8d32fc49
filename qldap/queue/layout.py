"""Where every queue file lives, who owns it, and :func:`create_queue` to make the tree (qldap-queue(5)).

Ownership policy (:func:`resolve_ids`): when the process runs as root and the qmail users (``alias``,
``qmaild``, ``qmailq``, ``qmails``, ``qmailr``) and group ``qmail`` all exist, the tree gets qmail's
owners and modes so the privilege split works.  Otherwise — tests, ``qldap demo``, a root created by an
ordinary user — every role is the current user and nothing is chowned: the modes stay as qmail's, and
all programs simply run as that one user.  The two cases are told apart by :attr:`QmailIds.multiuser`.

Paths are plain ``str`` because the injector builds several per message on its hot path.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from qldap.errors import ConfigError

SPLIT = 23
TCPTO_BYTES = 1024

SPLIT_DIRS = ("mess", "info", "local", "remote")
FLAT_DIRS = ("pid", "intd", "todo", "bounce")


class Role(Enum):
    """The qmail users that own queue parts or are recognised by the injector."""

    ALIAS = "alias"
    QMAILD = "qmaild"
    QMAILQ = "qmailq"
    QMAILS = "qmails"
    QMAILR = "qmailr"


@dataclass(frozen=True, slots=True)
class QmailIds:
    """The uid of each role and the ``qmail`` gid; ``multiuser`` False = all roles are one user."""

    alias: int
    qmaild: int
    qmailq: int
    qmails: int
    qmailr: int
    gid: int
    multiuser: bool

    def uid(self, role: Role) -> int:
        """The uid playing *role*."""
        return {
            Role.ALIAS: self.alias,
            Role.QMAILD: self.qmaild,
            Role.QMAILQ: self.qmailq,
            Role.QMAILS: self.qmails,
            Role.QMAILR: self.qmailr,
        }[role]

    @property
    def chown(self) -> bool:
        """True when files must be given to their owners (multi-user and running as root)."""
        return self.multiuser and os.geteuid() == 0


def current_user_ids() -> QmailIds:
    """Single-user mode: every role is the effective user."""
    uid, gid = os.geteuid(), os.getegid()
    return QmailIds(uid, uid, uid, uid, uid, gid, multiuser=False)


def resolve_ids() -> QmailIds:
    """The qmail users when running as root and they all exist, else :func:`current_user_ids`."""
    if os.geteuid() != 0:
        return current_user_ids()
    try:
        uids = {role: pwd.getpwnam(role.value).pw_uid for role in Role}
        gid = grp.getgrnam("qmail").gr_gid
    except KeyError:
        return current_user_ids()
    return QmailIds(
        alias=uids[Role.ALIAS],
        qmaild=uids[Role.QMAILD],
        qmailq=uids[Role.QMAILQ],
        qmails=uids[Role.QMAILS],
        qmailr=uids[Role.QMAILR],
        gid=gid,
        multiuser=True,
    )


@dataclass(frozen=True, slots=True)
class Spec:
    """Owner role and mode of one queue directory or file."""

    owner: Role
    mode: int


# qldap-queue(5) (and qmail's install table for the directories it does not list)
DIR_SPECS: dict[str, Spec] = {
    "": Spec(Role.QMAILQ, 0o750),
    "pid": Spec(Role.QMAILQ, 0o700),
    "intd": Spec(Role.QMAILQ, 0o700),
    "todo": Spec(Role.QMAILQ, 0o750),
    "mess": Spec(Role.QMAILQ, 0o750),
    "info": Spec(Role.QMAILS, 0o700),
    "local": Spec(Role.QMAILS, 0o700),
    "remote": Spec(Role.QMAILS, 0o700),
    "bounce": Spec(Role.QMAILS, 0o700),
    "lock": Spec(Role.QMAILQ, 0o750),
}
SENDMUTEX_SPEC = Spec(Role.QMAILS, 0o600)
TRIGGER_SPEC = Spec(Role.QMAILS, 0o622)
TCPTO_SPEC = Spec(Role.QMAILR, 0o644)
MESSAGE_FILE_MODE = 0o644  # mess and intd/todo files (the injector's umask 033 on 0666)


def split_of(number: int) -> int:
    """The split subdirectory of message *number*."""
    return number % SPLIT


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Paths of one queue: ``ROOT/queue`` and everything in it."""

    root: str  # the qmail root (ROOT), holding control/ and queue/

    @classmethod
    def of(cls, root: str | os.PathLike[str] | QueueLayout) -> QueueLayout:
        """A layout for *root* (a qmail root path, or an existing layout)."""
        return root if isinstance(root, QueueLayout) else cls(os.fspath(root))

    @property
    def queue(self) -> str:
        """``ROOT/queue``."""
        return f"{self.root}/queue"

    @property
    def control(self) -> str:
        """``ROOT/control``."""
        return f"{self.root}/control"

    def dir(self, name: str) -> str:
        """A queue subdirectory: ``pid``, ``mess`` …"""
        return f"{self.root}/queue/{name}"

    def split_dir(self, name: str, number: int) -> str:
        """``queue/<name>/<number mod 23>``."""
        return f"{self.root}/queue/{name}/{number % SPLIT}"

    def pid(self, name: str) -> str:
        """``queue/pid/<name>``."""
        return f"{self.root}/queue/pid/{name}"

    def mess(self, number: int) -> str:
        """``queue/mess/S/N``."""
        return f"{self.root}/queue/mess/{number % SPLIT}/{number}"

    def intd(self, number: int) -> str:
        """``queue/intd/N``."""
        return f"{self.root}/queue/intd/{number}"

    def todo(self, number: int) -> str:
        """``queue/todo/N``."""
        return f"{self.root}/queue/todo/{number}"

    def info(self, number: int) -> str:
        """``queue/info/S/N``."""
        return f"{self.root}/queue/info/{number % SPLIT}/{number}"

    def local(self, number: int) -> str:
        """``queue/local/S/N``."""
        return f"{self.root}/queue/local/{number % SPLIT}/{number}"

    def remote(self, number: int) -> str:
        """``queue/remote/S/N``."""
        return f"{self.root}/queue/remote/{number % SPLIT}/{number}"

    def bounce(self, number: int) -> str:
        """``queue/bounce/N``."""
        return f"{self.root}/queue/bounce/{number}"

    @property
    def lock(self) -> str:
        """``queue/lock``."""
        return f"{self.root}/queue/lock"

    @property
    def sendmutex(self) -> str:
        """``queue/lock/sendmutex``: the manager's exclusive lock."""
        return f"{self.root}/queue/lock/sendmutex"

    @property
    def trigger(self) -> str:
        """``queue/lock/trigger``: the FIFO the injector pulls."""
        return f"{self.root}/queue/lock/trigger"

    @property
    def tcpto(self) -> str:
        """``queue/lock/tcpto``: remembered connect timeouts."""
        return f"{self.root}/queue/lock/tcpto"


def _own(path: str, spec: Spec, ids: QmailIds) -> None:
    os.chmod(path, spec.mode)
    if ids.chown:
        os.chown(path, ids.uid(spec.owner), ids.gid)


def _make_dir(path: str, spec: Spec, ids: QmailIds) -> None:
    try:
        os.mkdir(path, spec.mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise ConfigError(f"{path} exists and is not a directory") from None
    _own(path, spec, ids)


def create_queue(root: str | os.PathLike[str], ids: QmailIds | None = None) -> QueueLayout:
    """Create (or repair) the whole queue tree under ``ROOT/queue``; idempotent.

    Existing directories and files are kept with their content; owners and modes are (re)applied.

    Raises:
        ConfigError: a path that must be a directory, FIFO or regular file is something else, or the
            tree cannot be created.
    """
    ids = ids or resolve_ids()
    layout = QueueLayout.of(root)
    try:
        Path(layout.root).mkdir(parents=True, exist_ok=True)
        _make_dir(layout.queue, DIR_SPECS[""], ids)
        for name in (*FLAT_DIRS, *SPLIT_DIRS, "lock"):
            _make_dir(layout.dir(name), DIR_SPECS[name], ids)
        for name in SPLIT_DIRS:
            for i in range(SPLIT):
                _make_dir(f"{layout.dir(name)}/{i}", DIR_SPECS[name], ids)
        _make_lock_files(layout, ids)
    except OSError as exc:
        raise ConfigError(f"unable to create queue in {layout.queue}: {exc.strerror or exc}") from exc
    return layout


def _make_lock_files(layout: QueueLayout, ids: QmailIds) -> None:
    if not os.path.lexists(layout.sendmutex):
        os.close(os.open(layout.sendmutex, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elif not os.path.isfile(layout.sendmutex):
        raise ConfigError(f"{layout.sendmutex} is not a regular file")
    _own(layout.sendmutex, SENDMUTEX_SPEC, ids)

    if not os.path.lexists(layout.tcpto):
        tmp = layout.tcpto + ".new"
        with open(tmp, "wb") as fh:
            fh.write(b"\0" * TCPTO_BYTES)
        os.replace(tmp, layout.tcpto)
    elif not os.path.isfile(layout.tcpto):
        raise ConfigError(f"{layout.tcpto} is not a regular file")
    _own(layout.tcpto, TCPTO_SPEC, ids)

    if not os.path.lexists(layout.trigger):
        os.mkfifo(layout.trigger, 0o600)
    elif not stat.S_ISFIFO(os.lstat(layout.trigger).st_mode):
        raise ConfigError(f"{layout.trigger} is not a FIFO")
    _own(layout.trigger, TRIGGER_SPEC, ids)

"""The one exception tree of qldap, split by what the caller must do about it.

    QldapError
    ├── ConfigError                 a control file or services.yaml is wrong (exit 111 / defer)
    └── DeliveryFailure             carries the exact qmail text with its (#x.y.z) status
        ├── TemporaryFailure        defer: report Z, SMTP 4xx, exit 111
        │   └── DirectoryUnavailable    LDAP could not be asked (see qldap.directory.errors)
        └── PermanentFailure        bounce: report D, SMTP 5xx, exit 100

Why texts are carried whole: qmail's texts are part of the contract (users grep logs and bounces for
them) and their punctuation is irregular ("... (#4.4.3)." with a trailing dot in one case), so the
exception keeps the byte-exact text and derives the status from it instead of formatting it.
"""

from __future__ import annotations

import errno
import re

_STATUS = re.compile(r"\(#(\d\.\d{1,3}\.\d{1,3})\)")


class QldapError(Exception):
    """Base of every error qldap raises on purpose."""


class ConfigError(QldapError):
    """A configuration file is missing, unreadable or has an illegal value; always temporary."""


class DeliveryFailure(QldapError):
    """A failure whose text is shown to a remote party (report, bounce, SMTP reply)."""

    temporary: bool = True

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def status(self) -> str | None:
        """The enhanced status code inside the text (``4.4.3``), if the text has one."""
        m = _STATUS.search(self.text)
        return m.group(1) if m else None

    @property
    def letter(self) -> str:
        """The qmail report letter: ``Z`` temporary, ``D`` permanent."""
        return "Z" if self.temporary else "D"


class TemporaryFailure(DeliveryFailure):
    """Try again later: the message stays queued, SMTP answers 4xx, programs exit 111."""

    temporary = True


class PermanentFailure(DeliveryFailure):
    """Give up: the message bounces, SMTP answers 5xx, programs exit 100."""

    temporary = False


# qmail's own wording for the errno values a delivery meets (its error_str table): report texts
# such as "Unable to switch to HOME: file does not exist." are part of the contract, and the C
# library's strerror() says it differently ("No such file or directory").
_QMAIL_ERRNO_TEXT = {
    errno.ENOENT: "file does not exist", errno.EACCES: "access denied", errno.EPERM: "permission denied",
    errno.EEXIST: "file already exists", errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory",
    errno.ENOSPC: "out of disk space", errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system", errno.ELOOP: "symbolic link loop",
    errno.ENAMETOOLONG: "file name too long", errno.EIO: "input/output error", errno.ENOMEM: "out of memory",
    errno.EMFILE: "process cannot open more files", errno.ENFILE: "system cannot open more files",
    errno.EFBIG: "file too big", errno.ESTALE: "stale NFS file handle",
    errno.EINTR: "interrupted system call",
    errno.EAGAIN: "temporary failure", errno.ETIMEDOUT: "timed out",
}  # fmt: skip


def error_text(exc: OSError) -> str:
    """The text qmail prints for *exc* (its ``error_str``), else the lower-cased system message."""
    if exc.errno in _QMAIL_ERRNO_TEXT:
        return _QMAIL_ERRNO_TEXT[exc.errno]
    return (exc.strerror or str(exc)).lower()

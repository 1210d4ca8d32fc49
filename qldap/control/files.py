"""Read one qmail control file, with qmail's comment, blank-line and default rules.

Why a class with a stat-keyed cache: daemons consult control files on every connection (edits must
apply to the next session, as with the per-connection C programs) but must not re-parse unchanged
files; a ``stat`` per access is the cheap change detection.  An absent file means "use the default";
an existing but unreadable one is a temporary error (``ConfigError``), never silently the default.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from qldap.errors import ConfigError
from qldap.fsutil import read_small

if TYPE_CHECKING:
    from qldap.control.cdb import CdbReader

T = TypeVar("T")

DEFAULT_ROOT = "/var/qmail"

Signature = tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns); (0, -1, 0) for "absent"
_ABSENT: Signature = (0, -1, 0)
RACY_NS = 2_000_000_000
"""A directory changed less than this long ago may change again within the same timestamp tick (file
times come from a coarse clock), so its signature does not yet prove that no entry was added."""


def find_root(arg: str | os.PathLike[str] | None = None) -> Path:
    """The qmail root: ``--root`` if given, else ``$QLDAP_ROOT``, else ``/var/qmail``."""
    if arg:
        return Path(arg)
    env = os.environ.get("QLDAP_ROOT")
    return Path(env) if env else Path(DEFAULT_ROOT)


def path_signature(path: str | os.PathLike[str]) -> Signature:
    """The :data:`Signature` of any file; ``(0, -1, 0)`` when it does not exist.

    Raises:
        ConfigError: the file cannot be examined (permission on a parent directory, I/O error).
    """
    try:
        return _stat_signature(path)
    except OSError as exc:
        raise ConfigError(f"unable to stat {os.fspath(path)}: {exc.strerror}") from exc


def _stat_signature(path: str | os.PathLike[str]) -> Signature:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _ABSENT
    return (st.st_ino, st.st_size, st.st_mtime_ns)


_LOWER_TABLE = {ord(u): ord(u) + 32 for u in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def ascii_lower(text: str) -> str:
    """Lowercase A-Z only, as qmail's ``case_lowerb``: domain keys must match what qmail-cdb wrote."""
    return text.translate(_LOWER_TABLE)


def _leading_digits(first_line: str) -> int | None:
    """qmail's ``scan_ulong`` on a control line: the leading decimal digits, None when there are none."""
    end = 0
    while end < len(first_line) and first_line[end] in "0123456789":
        end += 1
    return int(first_line[:end]) if end else None


def _strip_lines(data: str) -> list[str]:
    """List-file rule: trailing blanks removed, empty and ``#`` lines skipped."""
    out = []
    for raw in data.split("\n"):
        line = raw.rstrip(" \t\r")
        if not line or line.startswith("#"):
            continue
        out.append(line)
    return out


class ControlDir:
    """``ROOT/control``: typed accessors over the control files, re-read only when they change.

    Thread-safe: daemons read controls from their thread pools.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / "control"
        self._prefix = os.path.join(self.dir, "")  # "ROOT/control/": a stat per access without pathlib
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[Signature, object]] = {}
        self._cdbs: dict[str, CdbReader] = {}
        # names with no entry in the directory while its signature stays _dir_sig (see checked())
        self._dir_sig: tuple[int, int, int] | None = None
        self._absent: set[str] = set()

    # -- raw access -----------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """Path of control file *name*."""
        return self.dir / name

    def signature(self, name: str) -> Signature:
        """A cheap fingerprint of the file; changes whenever the file is replaced or edited.

        Raises:
            ConfigError: the file cannot be examined.
        """
        try:
            return _stat_signature(self._prefix + name)
        except OSError as exc:
            raise ConfigError(f"unable to stat control/{name}: {exc.strerror}") from exc

    def checked(self) -> ControlDir:
        """A view for one burst of reads — one SMTP session's set-up — that stats only present files.

        Why: qmail-smtpd(8) checks its controls for every new connection, and most of the files it
        asks for are absent (``badmailfrom``, ``rbllist``, ``smtpgreeting`` …); a ``stat`` that fails
        for each of them on every connection costs more than all the rest of reading the controls.
        A name is remembered as absent only when it has no directory entry at all (``lstat`` fails,
        so no dangling symlink whose target might appear), and forgotten whenever the directory's
        own signature (inode, mtime, ctime) changes — creating, renaming or removing an entry always
        changes it.  A directory modified within :data:`RACY_NS` is not trusted (its next change
        might fall in the same timestamp tick): then every name is stat'ed, as without the view.
        Present files are stat'ed as always, so an edit in place applies to the next view.

        Only the view uses the remembered names; the ControlDir itself keeps one ``stat`` per read.
        """
        try:
            st = os.stat(self.dir)
        except OSError:
            return self  # the accessors report the trouble as they always did
        sig = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        trusted = time.time_ns() - st.st_mtime_ns >= RACY_NS  # a later change gets a later mtime
        with self._lock:
            if not trusted or sig != self._dir_sig:
                self._absent = set()
                self._dir_sig = sig if trusted else None
            if self._dir_sig is None:
                return self
            return _CheckedView(self, self._absent)

    def _note_absent(self, name: str, absent: set[str]) -> None:
        """Remember *name* as absent in *absent* (a view's set) if it has no directory entry."""
        if "/" in name:
            return  # an entry below a subdirectory does not change this directory's signature
        try:
            os.lstat(self._prefix + name)
        except FileNotFoundError:
            with self._lock:
                if absent is self._absent:  # not replaced by a newer checked() meanwhile
                    absent.add(name)
        except OSError:
            pass

    def snapshot(self, names: Iterable[str]) -> tuple[Signature, ...]:
        """The signatures of *names* in order: compare two snapshots to ask "did anything I use change?".

        Raises:
            ConfigError: one of the files cannot be examined.
        """
        return tuple(self.signature(name) for name in names)

    def exists(self, name: str) -> bool:
        """True when the control file is present (even if empty)."""
        return self.signature(name) != _ABSENT

    def read_text(self, name: str) -> str | None:
        """The whole file, or None when absent.

        Raises:
            ConfigError: the file exists but cannot be read.
        """
        try:
            data = read_small(self._prefix + name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"unable to read control/{name}: {exc.strerror}") from exc
        return data.decode("utf-8", "surrogateescape")

    def _cached(self, name: str, kind: str, parse: Callable[[str | None], T]) -> T:
        sig = self.signature(name)
        key = (name, kind)
        hit = self._cache.get(key)  # a dict read is atomic; only writers take the lock
        if hit is not None and hit[0] == sig:
            return hit[1]  # type: ignore[return-value]
        value = parse(self.read_text(name) if sig != _ABSENT else None)
        with self._lock:
            self._cache[key] = (sig, value)
        return value

    # -- typed accessors -----------------------------------------------------------------------

    def line(self, name: str, default: str | None = None) -> str | None:
        """One-line file: the first line with trailing blanks removed; *default* when absent.

        An existing empty file yields ``""`` (qmail treats it as set-but-empty).
        """

        def parse(text: str | None) -> str | None:
            if text is None:
                return None
            return text.split("\n", 1)[0].rstrip(" \t\r")

        value = self._cached(name, "line", parse)
        return default if value is None else value

    def lines(self, name: str, default: list[str] | None = None) -> list[str]:
        """List file: trailing blanks removed, empty and ``#`` lines skipped; *default* if absent."""
        value = self._cached(name, "lines", lambda t: None if t is None else _strip_lines(t))
        if value is None:
            return list(default or [])
        return list(value)

    def entry_set(self, name: str) -> frozenset[str] | None:
        """List file as a set of ASCII-lowercased entries (for case-insensitive lookups); None if absent.

        Cached like every accessor, so a per-RCPT membership test costs one ``stat``.
        """

        def parse(text: str | None) -> frozenset[str] | None:
            return None if text is None else frozenset(ascii_lower(x) for x in _strip_lines(text))

        return self._cached(name, "set", parse)

    def cdb(self, name: str) -> CdbReader:
        """The shared :class:`~qldap.control.cdb.CdbReader` of ``control/NAME`` (one per name).

        The reader re-reads the file only when its signature changes, so callers may ask for it on
        every lookup.
        """
        from qldap.control.cdb import CdbReader  # late: cdb.py imports this module

        with self._lock:
            reader = self._cdbs.get(name)
            if reader is None:
                reader = self._cdbs[name] = CdbReader(self.dir / name)
            return reader

    def raw_lines(self, name: str) -> list[str] | None:
        """Every line as written (only the final newline dropped), None when absent.

        For multi-line texts such as ``defaultdelivery`` or ``quotawarning`` where blank lines matter.
        """

        def parse(text: str | None) -> list[str] | None:
            if text is None:
                return None
            if text.endswith("\n"):
                text = text[:-1]
            return text.split("\n") if text else []

        return self._cached(name, "raw", parse)

    def text(self, name: str) -> str | None:
        """The whole file as :meth:`read_text` gives it, None when absent; re-read only when it changes.

        For texts used verbatim on every delivery (``quotawarning``): one ``stat`` instead of an open
        and a read each time.
        """
        return self._cached(name, "text", lambda t: t)

    def integer(self, name: str, default: int) -> int:
        """Integer file: the leading decimal digits of the first line, as qmail's ``control_readint``.

        Absent → *default*; an empty file or a first line not starting with a digit (``junk``, ``-5``,
        `` 7``) also keeps *default* ("no digits = absent", qldap-control(5) conventions); digits followed
        by junk count (``12abc`` → 12).
        """

        def parse(text: str | None) -> int | None:
            if text is None:
                return None
            return _leading_digits(text.split("\n", 1)[0])

        value = self._cached(name, "int", parse)
        return default if value is None else value

    def boolean(self, name: str, default: bool = False) -> bool:
        """Boolean file: an integer file where non-zero means on (``ldapcluster``, ``ldaprebind``)."""
        return self.integer(name, 1 if default else 0) != 0

    def mapping(self, name: str) -> dict[str, str]:
        """``key:value`` list file split at the first ``:``; keys lower-cased; later duplicates win.

        Lines without ``:`` are ignored (virtualdomains, smtproutes, bigbrother, aliasdomains).
        """

        def parse(text: str | None) -> dict[str, str]:
            out: dict[str, str] = {}
            if text is None:
                return out
            for line in _strip_lines(text):
                key, sep, value = line.partition(":")
                if sep:
                    out[key.lower()] = value
            return out

        return dict(self._cached(name, "map", parse))

    def me(self) -> str:
        """``control/me``: the host's identity; required.

        Raises:
            ConfigError: ``me`` is absent or empty.
        """
        value = self.line("me")
        if not value:
            raise ConfigError("unable to read control/me: missing or empty")
        return value

    def line_or_me(self, name: str) -> str:
        """A one-line file that defaults to ``me`` (defaulthost, idhost, bouncehost, helohost …)."""
        value = self.line(name)
        return value if value else self.me()


class _CheckedView(ControlDir):
    """:meth:`ControlDir.checked`'s view: the same caches, without a ``stat`` for a known absent name."""

    def __init__(self, base: ControlDir, absent: set[str]) -> None:  # shares base's state: no super()
        self.root, self.dir, self._prefix = base.root, base.dir, base._prefix
        self._lock, self._cache, self._cdbs = base._lock, base._cache, base._cdbs
        self._base, self._known = base, absent

    def checked(self) -> ControlDir:
        return self._base.checked()

    def signature(self, name: str) -> Signature:
        if name in self._known:
            return _ABSENT
        sig = super().signature(name)
        if sig == _ABSENT:
            self._base._note_absent(name, self._known)
        return sig

    def cdb(self, name: str) -> CdbReader:
        from qldap.control.cdb import ViewedReader  # late: cdb.py imports this module

        return ViewedReader(super().cdb(name), name in self._known,
                            lambda: self._base._note_absent(name, self._known))

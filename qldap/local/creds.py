"""Per-thread file-system identity (Linux ``setfsuid``/``setfsgid``) for deliveries made as root.

Why: a file delivery must happen with the mailbox owner's rights — files owned by the user, the
user's permissions applied to every path component, so a symlink planted by the user cannot make
root write elsewhere.  qmail gets that by forking qmail-local under the user's uid.  On Linux the
file-system uid and gid are per *thread* (the kernel keeps credentials per task and the C library
does not broadcast setfsuid to other threads), and while they are not 0 the thread has no
file-system capabilities (no DAC override).  So one delivery thread can act as the user for the
duration of a delivery without a new process, and other threads keep running as root.

Supplementary groups are process-wide: the daemon drops them once at start (``drop_groups``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from qldap.errors import TemporaryFailure

_libc: ctypes.CDLL | None = None
_lock = threading.Lock()
_warm = False


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is not None:
        return _libc
    with _lock:
        if _libc is None:
            # the interpreter's own symbols first: it is linked with the C library, and
            # ctypes.util.find_library runs ldconfig (a process) to find a name
            lib = ctypes.CDLL(None, use_errno=True)
            if not hasattr(lib, "setfsuid") or not hasattr(lib, "setfsgid"):
                from ctypes.util import find_library

                name = find_library("c")
                if name is None:
                    return None
                lib = ctypes.CDLL(name, use_errno=True)
                if not hasattr(lib, "setfsuid") or not hasattr(lib, "setfsgid"):
                    return None
            lib.setfsuid.argtypes = [ctypes.c_uint]
            lib.setfsuid.restype = ctypes.c_int
            lib.setfsgid.argtypes = [ctypes.c_uint]
            lib.setfsgid.restype = ctypes.c_int
            _libc = lib
        return _libc


def prewarm() -> None:
    """Load what a delivery may import lazily, while the thread can still read the interpreter's files.

    Under a user's file-system identity the interpreter's own directory may be unreadable (a Python
    installed under /root), so codecs and modules are looked up once beforehand — once per process:
    what is loaded stays loaded.
    """
    global _warm
    if _warm:
        return
    for name in ("utf-8", "latin-1", "ascii", "idna"):
        "".encode(name)
    import hashlib  # noqa: F401 - loaded for its side effect (the auto-reply database's digest)
    import subprocess  # noqa: F401

    _warm = True


def available() -> bool:
    """True when per-thread file-system ids can be used (Linux C library with setfsuid)."""
    return _lib() is not None


def current_fsids() -> tuple[int, int]:
    """This thread's (fsuid, fsgid): an invalid id (-1) changes nothing and returns the current one."""
    lib = _lib()
    if lib is None:
        return os.geteuid(), os.getegid()
    return lib.setfsuid(0xFFFFFFFF), lib.setfsgid(0xFFFFFFFF)


def drop_groups() -> None:
    """Drop supplementary groups process-wide (root keeps its capabilities; users get none)."""
    if os.geteuid() == 0:
        os.setgroups([])


@contextmanager
def fs_identity(uid: int, gid: int) -> Iterator[None]:
    """Act on the file system as *uid*/*gid* in this thread for the duration of the block.

    Raises:
        TemporaryFailure: uid 0 requested, the switch is unavailable or did not take effect.
    """
    if uid == 0:
        raise TemporaryFailure("Not allowed to perform deliveries as root.")
    prewarm()
    lib = _lib()
    if lib is None:
        raise TemporaryFailure("Unable to switch to the mailbox owner: setfsuid unavailable. (#4.3.0)")
    old_gid = lib.setfsgid(gid)  # each call returns the id it replaced: no query beforehand
    old_uid = lib.setfsuid(uid)
    try:
        if current_fsids() != (uid, gid):
            raise TemporaryFailure(f"Unable to switch to uid {uid}/gid {gid}. (#4.3.0)")
        yield
    finally:
        lib.setfsuid(old_uid)
        lib.setfsgid(old_gid)

"""The ``lock/tcpto`` table of remembered connect timeouts (qmail-tcpto(8)): a pure model plus locked file
access.

Why remember timeouts: a dead MX costs every delivery ``timeoutconnect`` seconds, so after two
timeouts (at least 120 s apart) an address is skipped for (60 + pid mod 32)·64 s — 64 to 97 minutes,
staggered by process id so that not every ``qmail-remote`` retries at once.  The file format is
qmail's, so ``qmail-tcpto``/``qmail-tcpok`` stay interchangeable: 64 records of 16 bytes in 1024
bytes; bytes 0–3 the IPv4 address, byte 4 the count of recent timeouts (0 = free), bytes 8–11 the
time of the last timeout, little-endian.  IPv6 addresses are not remembered (never marked down).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass

from qldap.fsutil import write_all

ENTRIES = 64
RECORD = 16
SIZE = ENTRIES * RECORD
MAX_COUNT = 10
RETIMEOUT = 120  # seconds between two counted timeouts


def _packed(ip: str) -> bytes | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return addr.packed if addr.version == 4 else None


def down_interval(pid: int) -> int:
    """How long an address with ≥2 timeouts stays down for process *pid*: (60 + pid mod 32)·64 s."""
    return (60 + (pid & 31)) << 6


@dataclass(frozen=True, slots=True)
class TcptoEntry:
    """One used record."""

    slot: int
    ip: str
    count: int
    when: int


@dataclass(frozen=True, slots=True)
class TcptoTable:
    """The 1024-byte table; every change returns a new table."""

    data: bytes = bytes(SIZE)

    @classmethod
    def from_bytes(cls, data: bytes) -> TcptoTable:
        """A table from file contents (short files are padded, long ones cut)."""
        return cls(data[:SIZE].ljust(SIZE, b"\0"))

    def _record(self, slot: int) -> bytes:
        return self.data[slot * RECORD : (slot + 1) * RECORD]

    def _find(self, packed: bytes) -> int | None:
        for slot in range(ENTRIES):
            if self.data[slot * RECORD : slot * RECORD + 4] == packed:
                return slot
        return None

    def _replace(self, slot: int, record: bytes) -> TcptoTable:
        return TcptoTable(self.data[: slot * RECORD] + record + self.data[(slot + 1) * RECORD :])

    @staticmethod
    def _make(packed: bytes, count: int, when: int) -> bytes:
        return packed + bytes([count, 0, 0, 0]) + (when & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)

    def entries(self) -> tuple[TcptoEntry, ...]:
        """The records with a non-zero count."""
        out = []
        for slot in range(ENTRIES):
            rec = self._record(slot)
            if rec[4]:
                ip = str(ipaddress.IPv4Address(rec[:4]))
                out.append(TcptoEntry(slot, ip, rec[4], int.from_bytes(rec[8:12], "little")))
        return tuple(out)

    def is_down(self, ip: str, now: int, pid: int) -> bool:
        """True when *ip* has ≥2 recent timeouts, the last younger than :func:`down_interval`."""
        packed = _packed(ip)
        slot = None if packed is None else self._find(packed)
        if slot is None:
            return False
        rec = self._record(slot)
        when = int.from_bytes(rec[8:12], "little")
        return rec[4] >= 2 and now - when < down_interval(pid)

    def record_timeout(self, ip: str, now: int) -> TcptoTable:
        """A connect timeout: count it (max 10) unless the previous one is under 120 s old.

        A new address takes a free slot, else the slot with the smallest ``when + 1024·count``.
        """
        packed = _packed(ip)
        if packed is None:
            return self
        slot = self._find(packed)
        if slot is not None:
            rec = self._record(slot)
            when = int.from_bytes(rec[8:12], "little")
            if rec[4] and now < when + RETIMEOUT:
                return self
            return self._replace(slot, self._make(packed, min(rec[4] + 1, MAX_COUNT), now))
        free = next((s for s in range(ENTRIES) if not self._record(s)[4]), None)
        if free is None:
            free = min(
                range(ENTRIES),
                key=lambda s: int.from_bytes(self._record(s)[8:12], "little") + (self._record(s)[4] << 10),
            )
        return self._replace(free, self._make(packed, 1, now))

    def record_success(self, ip: str) -> TcptoTable:
        """A connect that worked or failed otherwise: zero the count of an existing entry."""
        packed = _packed(ip)
        slot = None if packed is None else self._find(packed)
        if slot is None:
            return self
        rec = self._record(slot)
        return self._replace(slot, rec[:4] + b"\0" + rec[5:])

    def report(self, now: int) -> list[str]:
        """``qmail-tcpto`` lines: ``<ip> timed out <s> seconds ago; # recent timeouts: <n>``."""
        return [
            f"{e.ip} timed out {now - e.when} seconds ago; # recent timeouts: {e.count}"
            for e in self.entries()
        ]


# -- the file -----------------------------------------------------------------------------------


def read_table(path: str | os.PathLike[str]) -> TcptoTable:
    """The table in *path* under a shared lock; an absent file is an empty table.

    Raises:
        OSError: the file exists but cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return TcptoTable()
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return TcptoTable.from_bytes(_read_all(fd))
    finally:
        os.close(fd)


def update_table(path: str | os.PathLike[str], change: Callable[[TcptoTable], TcptoTable]) -> TcptoTable:
    """Read, change and write back the table under an exclusive lock; creates the file if needed.

    Raises:
        OSError: the file cannot be opened, locked, read or written.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = TcptoTable.from_bytes(_read_all(fd))
        new = change(old)
        if new.data != old.data or os.fstat(fd).st_size != SIZE:
            os.lseek(fd, 0, os.SEEK_SET)
            write_all(fd, new.data)
            os.ftruncate(fd, SIZE)
        return new
    finally:
        os.close(fd)


def clear_table(path: str | os.PathLike[str]) -> None:
    """Zero every record (``qmail-tcpok``; the remote spawner at start).

    Raises:
        OSError: the file cannot be written.
    """
    update_table(path, lambda _old: TcptoTable())


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    total = 0
    while total < SIZE:
        chunk = os.read(fd, SIZE - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


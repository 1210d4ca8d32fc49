"""Read and atomically write D. J. Bernstein's constant database (cdb) files.

Format (the one tinycdb, qmail and ucspi-tcp share): a 2048-byte header of 256 little-endian
``(position, slot count)`` pairs, then the records ``klen dlen key data``, then 256 open-addressing
hash tables of ``(hash, record position)`` slots.  Hash: h = 5381; h = ((h << 5) + h) ^ c, mod 2**32;
table = h mod 256, first slot = (h >> 8) mod slots.

Why read whole instead of mmap: a mapped file that somebody truncates in place (an editor, a ``cp``
over it) kills the daemon with SIGBUS; a private copy cannot.  The files are small (domain lists,
``users/cdb``) and are re-read only when their stat signature changes, so the copy costs little and
lookups, done per SMTP RCPT, need no system call beyond one ``stat``.

Why the writer fsyncs the file, renames it and fsyncs the directory: readers must see the old or
the new database, never a half-written one, and after a crash the rename must not point at an empty
file.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from qldap.control.files import Signature, path_signature
from qldap.errors import ConfigError
from qldap.fsutil import fsync_dir, write_all

_HEADER = 2048
_PAIR = struct.Struct("<II")
_MAX = 0xFFFFFFFF
_ABSENT_SIZE = -1


class CdbError(ConfigError):
    """A cdb file is unreadable, corrupt, too big, or could not be written; always temporary."""


def cdb_hash(key: bytes) -> int:
    """The cdb hash of *key*: h = 5381; h = ((h << 5) + h) ^ byte, modulo 2**32."""
    h = 5381
    for c in key:
        h = (((h << 5) + h) ^ c) & 0xFFFFFFFF
    return h


class Cdb:
    """One immutable version of a cdb file, held in memory; answers lookups and iterations.

    Raises (constructor):
        CdbError: *data* is not a structurally valid cdb.
    """

    __slots__ = ("_data", "_end", "_name", "_tables")

    def __init__(self, data: bytes, name: str = "cdb") -> None:
        self._data = data
        self._name = name
        if len(data) < _HEADER:
            raise CdbError(f"{name}: not a cdb file: {len(data)} bytes, shorter than its header")
        tables: list[tuple[int, int]] = []
        end = len(data)
        for i in range(256):
            pos, slots = _PAIR.unpack_from(data, i * 8)
            if slots:
                if pos < _HEADER or pos + slots * 8 > len(data):
                    raise CdbError(f"{name}: corrupt cdb: hash table {i} lies outside the file")
                end = min(end, pos)
            tables.append((pos, slots))
        self._tables = tuple(tables)
        self._end = end  # records live in [2048, end)

    @property
    def name(self) -> str:
        """The path or label the database was read from (used in error texts)."""
        return self._name

    def _corrupt(self, what: str) -> CdbError:
        return CdbError(f"{self._name}: corrupt cdb: {what}")

    def _values(self, key: bytes) -> Iterator[bytes]:
        """The data of every record whose key is *key*, in insertion order (linear probing keeps it)."""
        h = cdb_hash(key)
        tpos, slots = self._tables[h & 0xFF]
        data = self._data
        size = len(data)
        klen = len(key)
        start = (h >> 8) % slots if slots else 0
        for n in range(slots):
            shash, rpos = _PAIR.unpack_from(data, tpos + ((start + n) % slots) * 8)
            if rpos == 0:
                return
            if shash != h:
                continue
            if rpos + 8 > size:
                raise self._corrupt("record header outside the file")
            rklen, rdlen = _PAIR.unpack_from(data, rpos)
            dpos = rpos + 8 + rklen
            if dpos + rdlen > size:
                raise self._corrupt("record outside the file")
            if rklen == klen and data[rpos + 8 : dpos] == key:
                yield data[dpos : dpos + rdlen]

    def get(self, key: bytes) -> bytes | None:
        """The data of the first record for *key*, or None when there is none.

        Raises:
            CdbError: the file is corrupt along the lookup path.
        """
        for value in self._values(key):
            return value
        return None

    def get_all(self, key: bytes) -> list[bytes]:
        """The data of every record for *key*, in the order they were written.

        Raises:
            CdbError: the file is corrupt along the lookup path.
        """
        return list(self._values(key))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes | bytearray):
            return False
        return any(True for _ in self._values(bytes(key)))

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, data) record in file order, duplicates included.

        Raises:
            CdbError: a record runs past the start of the hash tables.
        """
        data = self._data
        pos = _HEADER
        while pos < self._end:
            if pos + 8 > self._end:
                raise self._corrupt("truncated record header")
            klen, dlen = _PAIR.unpack_from(data, pos)
            kend = pos + 8 + klen
            dend = kend + dlen
            if dend > self._end:
                raise self._corrupt("record runs into the hash tables")
            yield data[pos + 8 : kend], data[kend:dend]
            pos = dend

    def __len__(self) -> int:
        """The number of records, duplicates included (walks the records).

        Raises:
            CdbError: the records are corrupt.
        """
        return sum(1 for _ in self)


def open_cdb(path: str | os.PathLike[str]) -> Cdb:
    """Read the cdb file at *path* into memory.

    Raises:
        CdbError: the file is absent, unreadable or corrupt.
    """
    cdb, _sig = _load(Path(path))
    if cdb is None:
        raise CdbError(f"unable to read {os.fspath(path)}: file does not exist")
    return cdb


def _load(path: Path) -> tuple[Cdb | None, Signature]:
    """The database and the signature of exactly the bytes read (fstat of the open descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, (0, _ABSENT_SIZE, 0)
    except OSError as exc:
        raise CdbError(f"unable to read {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise CdbError(f"unable to read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    sig: Signature = (st.st_ino, st.st_size, st.st_mtime_ns)
    return Cdb(b"".join(chunks), str(path)), sig


class CdbReader:
    """A cdb file named by path, re-read only when its stat signature changes.

    Every lookup costs one ``stat``; the file is opened again only after it was replaced or edited,
    so ``qmail-cdb`` or ``cdb -c`` runs take effect at the next lookup without a restart.
    Thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._sig: Signature | None = None
        self._cdb: Cdb | None = None

    def current(self) -> Cdb | None:
        """The database as it is on disk now, or None when the file does not exist.

        Raises:
            CdbError: the file exists but is unreadable or corrupt.
        """
        try:
            sig = path_signature(self.path)
        except ConfigError as exc:
            raise CdbError(str(exc)) from exc
        with self._lock:
            if sig == self._sig:
                return self._cdb
        if sig[1] == _ABSENT_SIZE:
            cdb: Cdb | None = None
        else:
            cdb, sig = _load(self.path)
        with self._lock:
            self._sig, self._cdb = sig, cdb
        return cdb

    @property
    def exists(self) -> bool:
        """True when the file is present now.

        Raises:
            CdbError: the file exists but is unreadable or corrupt.
        """
        return self.current() is not None

    def _required(self) -> Cdb:
        cdb = self.current()
        if cdb is None:
            raise CdbError(f"unable to read {self.path}: file does not exist")
        return cdb

    def get(self, key: bytes) -> bytes | None:
        """The data of the first record for *key*, or None when the key is not there.

        Raises:
            CdbError: the file is absent, unreadable or corrupt.
        """
        return self._required().get(key)

    def get_all(self, key: bytes) -> list[bytes]:
        """The data of every record for *key*.

        Raises:
            CdbError: the file is absent, unreadable or corrupt.
        """
        return self._required().get_all(key)

    def __contains__(self, key: object) -> bool:
        return key in self._required()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._required())


class ViewedReader(CdbReader):
    """A shared :class:`CdbReader` as :meth:`ControlDir.checked`'s view sees it: no ``stat`` at all
    while the file is known absent, and *note_absent* called when the reader finds it absent."""

    def __init__(self, reader: CdbReader, known_absent: bool, note_absent: Callable[[], None]) -> None:
        self.path, self._reader = reader.path, reader  # the shared reader keeps the state: no super()
        self._known_absent, self._note_absent = known_absent, note_absent

    def current(self) -> Cdb | None:
        if self._known_absent:
            return None
        cdb = self._reader.current()
        if cdb is None:
            self._note_absent()
        return cdb


def write_cdb(
    path: str | os.PathLike[str],
    items: Iterable[tuple[bytes, bytes]],
    tmp: str | os.PathLike[str] | None = None,
    mode: int = 0o644,
) -> int:
    """Write *items* as a cdb to *tmp*, fsync it, rename it onto *path*, fsync the directory.

    Duplicate keys are kept (``get_all`` returns them in order).  *tmp* defaults to a name private to
    this process in the target's directory; it must be on the same filesystem as *path*.  On failure
    the temporary file is removed and *path* is left untouched.  Exceptions raised by *items* itself
    propagate unchanged.  Returns the number of records written.

    Raises:
        CdbError: ``unable to write to TMP: …`` (including a database over 4 GiB) or
            ``unable to move TMP to PATH: …`` — the texts qmail-cdb prints.
    """
    target = Path(path)
    tmp_path = Path(tmp) if tmp is not None else target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        raise CdbError(f"unable to write to {tmp_path}: {exc.strerror}") from exc
    try:
        try:
            count = _write_records(fd, tmp_path, items)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            closing, fd = fd, -1
            os.close(closing)
    except OSError as exc:
        _discard(tmp_path)
        raise CdbError(f"unable to write to {tmp_path}: {exc.strerror}") from exc
    except BaseException:
        _discard(tmp_path)
        raise
    try:
        os.rename(tmp_path, target)
    except OSError as exc:
        _discard(tmp_path)
        raise CdbError(f"unable to move {tmp_path} to {target}: {exc.strerror}") from exc
    _fsync_dir(target.parent)
    return count


def _discard(tmp_path: Path) -> None:
    try:
        os.unlink(tmp_path)
    except OSError:
        pass


def _write_records(fd: int, tmp_path: Path, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Stream the records after a zeroed header, then the tables, then the real header."""
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    out = bytearray()
    pos = _HEADER

    def flush(final: bool = False) -> None:
        if out and (final or len(out) >= 1 << 20):
            _write_all(fd, tmp_path, bytes(out))
            out.clear()

    _write_all(fd, tmp_path, bytes(_HEADER))
    count = 0
    for key, data in items:
        h = cdb_hash(key)
        buckets[h & 0xFF].append((h, pos))
        out += _PAIR.pack(len(key), len(data))
        out += key
        out += data
        pos += 8 + len(key) + len(data)
        if pos > _MAX:
            raise CdbError(f"unable to write to {tmp_path}: database would exceed 4 GiB")
        count += 1
        flush()
    header = bytearray()
    for bucket in buckets:
        slots = len(bucket) * 2
        table = [(0, 0)] * slots
        for h, rpos in bucket:
            i = (h >> 8) % slots
            while table[i][1] != 0:
                i = (i + 1) % slots
            table[i] = (h, rpos)
        header += _PAIR.pack(pos, slots)
        for h, rpos in table:
            out += _PAIR.pack(h, rpos)
        pos += slots * 8
        if pos > _MAX:
            raise CdbError(f"unable to write to {tmp_path}: database would exceed 4 GiB")
        flush()
    flush(final=True)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError as exc:
        raise CdbError(f"unable to write to {tmp_path}: {exc.strerror}") from exc
    _write_all(fd, tmp_path, bytes(header))
    return count


def _write_all(fd: int, tmp_path: Path, data: bytes) -> None:
    try:
        write_all(fd, data)
    except OSError as exc:
        raise CdbError(f"unable to write to {tmp_path}: {exc.strerror}") from exc


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; filesystems that cannot fsync a directory are tolerated."""
    try:
        fsync_dir(directory)
    except OSError:
        pass

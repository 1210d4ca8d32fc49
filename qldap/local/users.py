"""qmail-users: ``users/assign`` compiled into ``users/cdb`` (qmail-newu) and looked up by local delivery.

Format of the cdb (qmail-newu's, so existing files keep working): an ``=local:user:uid:gid:home:dash:ext:``
line becomes key ``!<local>\\0``; a ``+prefix:user:uid:gid:home:dash:pre:`` line becomes key
``!<prefix>`` (no NUL); the data is ``user\\0uid\\0gid\\0home\\0dash\\0ext-or-pre\\0``; the characters
that end a wildcard prefix are stored under the empty key, so a lookup only probes prefixes ending
in one of them.  Keys are lower-cased; the first of duplicate simple assignments wins; ``assign`` ends
with a line ``.``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from qldap.control.cdb import Cdb
from qldap.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who receives a local part: the account, its ids and home, and the `.qmail` dash/extension."""

    user: str
    uid: int
    gid: int
    home: str
    dash: str
    ext: str


def compile_assign(text: str) -> Iterator[tuple[bytes, bytes]]:
    """The cdb items of an ``assign`` file.

    Raises:
        ConfigError: a malformed line, or no final ``.`` line (a truncated file must not be installed).
    """
    seen: set[bytes] = set()
    wild = bytearray()
    ended = False
    for number, line in enumerate(text.split("\n"), 1):
        if line == ".":
            ended = True
            break
        if not line:
            continue
        kind, rest = line[0], line[1:]
        fields = rest.split(":")
        if kind not in "=+" or len(fields) < 8:
            raise ConfigError(f"users/assign line {number}: expected =local or +prefix with 7 fields")
        key_text, user, uid, gid, home, dash, ext = fields[:7]
        if not uid.isdigit() or not gid.isdigit():
            raise ConfigError(f"users/assign line {number}: uid and gid must be numbers")
        data = "\0".join((user, uid, gid, home, dash, ext)).encode("utf-8", "surrogateescape") + b"\0"
        key = b"!" + key_text.lower().encode("utf-8", "surrogateescape")
        if kind == "=":
            key += b"\0"
            if key in seen:
                continue
            seen.add(key)
        elif key_text and key[-1] not in wild:
            wild.append(key[-1])
        yield key, data
    if not ended:
        raise ConfigError("users/assign: missing the final line '.'")
    yield b"", bytes(wild)


def _assignment(data: bytes, rest: str | None) -> Assignment:
    parts = data.decode("utf-8", "surrogateescape").split("\0")
    if len(parts) < 6 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ConfigError("users/cdb: malformed entry")
    user, uid, gid, home, dash, ext = parts[:6]
    return Assignment(user, int(uid), int(gid), home, dash, ext + (rest if rest is not None else ""))


def lookup(cdb: Cdb, local: str) -> Assignment | None:
    """The users/cdb step (qmail-local(8), NO ENTRY): an exact ``=`` assignment for *local* wins,
    else the longest ``+`` prefix.

    A wildcard's extension is its ``pre`` field plus the rest of *local* after the prefix.

    Raises:
        ConfigError: a malformed entry.
    """
    key = b"!" + local.lower().encode("utf-8", "surrogateescape")
    exact = cdb.get(key + b"\0")
    if exact is not None:
        return _assignment(exact, None)
    wild = cdb.get(b"") or b""
    for i in range(len(key), 0, -1):
        if i == 1 or key[i - 1] in wild:
            data = cdb.get(key[:i])
            if data is not None:
                return _assignment(data, local[i - 1 :])
    return None

"""The real pipeline ``qmail-popup HOST auth_pop qmail-pop3d ./Maildir/`` over a socketpair."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import (
    GID,
    IS_ROOT,
    UID,
    entry_point,
    homes,
    joe_ldif,
    ldap_root,
    make_home,
    module_env,
    user_script,
)

__all__ = ["homes"]

POPUP = entry_point("pop3", "popup_main")
AUTH_POP = entry_point("auth", "auth_pop_main")
HOST = "pop.example.com"
RETR_FILE = b"Subject: x\n\n.b\nlast"


class Client:
    """A line-oriented POP3 client over any connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def until(self, end: bytes) -> bytes:
        while end not in self.buf:
            if not self._fill():
                raise EOFError(self.buf)
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def line(self) -> bytes:
        return self.until(b"\r\n")

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def multi(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        first = self.line()
        return first + self.until(b"\r\n.\r\n") if first.startswith(b"+OK") else first

    def rest(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def login(self) -> bytes:
        assert self.line().startswith(b"+OK ")
        assert self.cmd("USER joe") == b"+OK \r\n"
        return self.cmd("PASS secret")

    def close(self) -> None:
        self.sock.close()


Connect = Callable[[], Client]


def chown_tree(path: Path) -> None:
    if IS_ROOT:
        for p in [path, *path.rglob("*")]:
            os.lchown(p, UID, GID)


def maildir(home: Path, files: dict[str, bytes], name: str = "Maildir") -> Path:
    """HOME/NAME with tmp/cur/new and *files* (paths relative to the maildir), owned by the user."""
    md = home / name
    for sub in ("tmp", "cur", "new"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (md / rel).write_bytes(data)
    chown_tree(md)
    return md


@pytest.fixture
def joe_home(qroot: QRoot, ldap_base, slapd, homes: Path) -> Path:  # type: ignore[no-untyped-def]
    ldap_root(qroot, ldap_base, slapd)
    home = make_home(homes)
    ldap_base.load(joe_ldif(home))
    return home


@pytest.fixture
def pipeline(qroot: QRoot, homes: Path, joe_home: Path) -> Iterator[Connect]:
    """Start the pipeline per connection, as tcpserver would."""
    pop3d = user_script(homes, "qmail-pop3d", "pop3", "pop3d_main")
    procs: list[subprocess.Popen[bytes]] = []

    def connect() -> Client:
        ours, theirs = socket.socketpair()
        cmd = [*POPUP, HOST, *AUTH_POP, str(pop3d), "./Maildir/"]
        procs.append(subprocess.Popen(cmd, stdin=theirs, stdout=theirs, env=module_env(
            qroot, TCPREMOTEIP="127.0.0.1", POP3_LOGLEVEL="2")))
        theirs.close()
        return Client(ours)

    yield connect
    for p in procs:
        p.wait(30)


# -- the scenarios, shared with the daemon tests ---------------------------------------------------------


def check26_greeting_and_record(connect: Connect, homes: Path, qroot: QRoot) -> None:
    """Greeting shape; the login module reads LOGIN\\0PASSWORD\\0<PID.TIME@HOST>\\0 on fd 3."""
    c = connect()
    greeting = c.line()
    assert re.fullmatch(rb"\+OK <\d+\.\d+@" + re.escape(HOST.encode()) + rb">\r\n", greeting)
    c.close()


def check27_before_login(connect: Connect) -> None:
    c = connect()
    c.line()
    assert c.cmd("PASS x") == b"-ERR USER first\r\n"
    assert c.cmd("USER") == b"-ERR syntax error\r\n"
    assert c.cmd("STAT") == b"-ERR authorization first\r\n"
    assert c.cmd("NOOP") == b"+OK \r\n"
    assert c.cmd("QUIT") == b"+OK \r\n"
    assert c.rest() == b""


def check29_to_32_listing_and_marks(connect: Connect, home: Path) -> None:
    maildir(home, {"new/1000.1.h,S=10": b"x" * 10, "cur/2000.2.h,S=20:2,S": b"y" * 20})
    c = connect()
    assert c.login() == b"+OK \r\n"
    assert c.cmd("STAT") == b"+OK 2 30\r\n"
    assert c.multi("LIST") == b"+OK \r\n1 10\r\n2 20\r\n.\r\n"
    assert c.cmd("UIDL 2") == b"+OK 2 2000.2.h,S=20\r\n"
    assert c.cmd("DELE 1") == b"+OK \r\n"
    assert c.cmd("DELE 1") == b"-ERR already deleted\r\n"
    assert c.cmd("LIST 0") == b"-ERR messages are counted from 1\r\n"
    assert c.cmd("LIST 9") == b"-ERR not that many messages\r\n"
    assert c.cmd("LIST x") == b"-ERR syntax error\r\n"
    assert c.cmd("DELE 2") == b"+OK \r\n"
    assert c.cmd("LAST") == b"+OK 2\r\n"
    assert c.cmd("RSET") == b"+OK \r\n"
    assert c.cmd("LAST") == b"+OK 0\r\n"
    assert c.cmd("LIST 2") == b"+OK 2 20\r\n"
    assert c.cmd("XYZ") == b"-ERR unimplemented\r\n"
    c.sock.shutdown(socket.SHUT_WR)  # a dropped connection, no QUIT: the server reads end of file ...
    c.rest()  # ... and ends the session (what it writes to a gone client does not matter) ...
    c.close()  # ... having changed nothing: the deletions were not made
    assert sorted(p.name for p in (home / "Maildir" / "new").iterdir()) == ["1000.1.h,S=10"]


def check30_retr_top(connect: Connect, home: Path) -> None:
    maildir(home, {"new/1000.1.h": RETR_FILE})
    c = connect()
    c.login()
    assert c.multi("RETR 1") == b"+OK \r\nSubject: x\r\n\r\n..b\r\nlast\r\n\r\n.\r\n"
    assert c.multi("TOP 1 0") == b"+OK \r\nSubject: x\r\n\r\n\r\n.\r\n"
    assert c.cmd("QUIT") == b"+OK \r\n"


def check33_quit_applies(connect: Connect, home: Path) -> Path:
    md = maildir(home, {"new/1000.1.h,S=10": b"x" * 10, "new/2000.1.h,S=20": b"y" * 20,
                        "maildirsize": b"1000000S\n30 2\n"})
    c = connect()
    c.login()
    assert c.cmd("DELE 1") == b"+OK \r\n"
    assert c.cmd("QUIT") == b"+OK \r\n"
    assert c.rest() == b""
    assert not (md / "new" / "1000.1.h,S=10").exists()
    assert sorted(p.name for p in (md / "cur").iterdir()) == ["2000.1.h,S=20:2,"]
    assert (md / "maildirsize").read_bytes() == b"1000000S\n30 2\n-10 -1\n"
    return md


def check35_maildir_override_and_future(connect: Connect, home: Path, ldap_base) -> None:  # type: ignore[no-untyped-def]
    future = int(time.time()) + 3600
    maildir(home, {"new/1000.1.h": b"a\n", f"new/{future}.1.h": b"later\n"})
    maildir(home, {"new/1500.1.h": b"other\n"}, name="Other")
    c = connect()
    c.login()
    assert c.cmd("STAT") == b"+OK 1 2\r\n"  # the future-dated message is not listed
    c.cmd("QUIT")
    ldap_base.slapd.modify_ldif(f"dn: uid=joe,{ldap_base.dn}\nchangetype: modify\nreplace: mailMessageStore\n"
                                "mailMessageStore: ./Other/\n")
    c = connect()
    c.login()
    assert c.cmd("STAT") == b"+OK 1 6\r\n"
    c.cmd("QUIT")


def check36_capa(connect: Connect) -> None:
    c = connect()
    c.line()
    capa = c.multi("CAPA")
    lines = capa.split(b"\r\n")
    assert lines[0] == b"+OK Capability list follows" and capa.endswith(b"\r\n.\r\n")
    assert {b"TOP", b"UIDL", b"USER"} <= set(lines)
    c.cmd("QUIT")


# -- the pipeline ---------------------------------------------------------------------------------------


def test_check26_record_on_descriptor_3(qroot: QRoot, homes: Path) -> None:
    dump = homes / "h" / "record"
    grab = homes / "grab"
    grab.write_text(f"#!/bin/sh\ncat <&3 > {dump}\nexit 0\n")
    grab.chmod(0o755)
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*POPUP, HOST, str(grab)], stdin=theirs, stdout=theirs, env=module_env(qroot))
    theirs.close()
    c = Client(ours)
    greeting = c.line()
    assert re.fullmatch(rb"\+OK <\d+\.\d+@pop\.example\.com>\r\n", greeting)
    c.cmd("USER joe")
    c.sock.sendall(b"PASS secret\r\n")
    assert c.rest() == b""  # the module succeeded and wrote nothing: popup says nothing for PASS
    assert proc.wait(30) == 0
    assert dump.read_bytes() == b"joe\0secret\0" + greeting[4:-2] + b"\0"


def test_check27_before_login(pipeline: Connect) -> None:
    check27_before_login(pipeline)


@pytest.mark.parametrize("status,reply", [(4, b"-ERR account disabled\r\n"),
                                          (3, b"-ERR authorization failed\r\n"),
                                          (77, b"-ERR temporary error\r\n")])
def test_check28_module_failure_replies(qroot: QRoot, homes: Path, status: int, reply: bytes) -> None:
    fail = homes / "fail"
    fail.write_text(f"#!/bin/sh\nexit {status}\n")
    fail.chmod(0o755)
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*POPUP, HOST, str(fail)], stdin=theirs, stdout=theirs, env=module_env(qroot))
    theirs.close()
    c = Client(ours)
    c.line()
    c.cmd("USER joe")
    c.sock.sendall(b"PASS secret\r\n")
    assert c.rest() == reply  # the reply, then the connection is closed
    assert proc.wait(30) == 1


def test_popup_usage(qroot: QRoot) -> None:
    proc = subprocess.run([*POPUP, HOST], capture_output=True, env=module_env(qroot), timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (1, b"-ERR usage: popup hostname subprogram\r\n")


def test_wrong_password_through_the_chain(pipeline: Connect) -> None:
    c = pipeline()
    c.line()
    c.cmd("USER joe")
    assert c.cmd("PASS nope") == b"-ERR authorization failed\r\n"
    assert c.rest() == b""


def test_checks29_to_32_and_34(pipeline: Connect, joe_home: Path) -> None:
    check29_to_32_listing_and_marks(pipeline, joe_home)


def test_check30_retr_and_top(pipeline: Connect, joe_home: Path) -> None:
    check30_retr_top(pipeline, joe_home)


def test_check33_quit(pipeline: Connect, joe_home: Path) -> None:
    md = check33_quit_applies(pipeline, joe_home)
    assert (md / "cur" / "2000.1.h,S=20:2,").stat().st_uid == UID


def test_check35_override_and_future(pipeline: Connect, joe_home: Path, ldap_base) -> None:  # type: ignore[no-untyped-def]
    check35_maildir_override_and_future(pipeline, joe_home, ldap_base)


def test_check36_capa(pipeline: Connect) -> None:
    check36_capa(pipeline)


def test_no_maildir(pipeline: Connect) -> None:
    c = pipeline()
    assert c.login() == b"-ERR this user has no $HOME/Maildir\r\n"


def test_client_leaving_without_quit_ends_quietly(qroot: QRoot, homes: Path, joe_home: Path) -> None:
    """A client that goes away without QUIT (EOF after login) ends the session like qmail-pop3d: exit 0
    and no further reply — not ``-ERR error in server configuration`` written after the last answer."""
    maildir(joe_home, {"new/1000.1.h,S=10": b"x" * 10})
    pop3d = user_script(homes, "qmail-pop3d", "pop3", "pop3d_main")
    ours, theirs = socket.socketpair()
    cmd = [*POPUP, HOST, *AUTH_POP, str(pop3d), "./Maildir/"]
    proc = subprocess.Popen(cmd, stdin=theirs, stdout=theirs, env=module_env(
        qroot, TCPREMOTEIP="127.0.0.1", POP3_LOGLEVEL="2"))
    theirs.close()
    client = Client(ours)
    try:
        assert client.login().startswith(b"+OK")
        ours.shutdown(socket.SHUT_WR)  # EOF towards the server; we can still read what it says
        rest = client.buf
        while client._fill():
            rest = client.buf
        assert rest == b""
        assert proc.wait(60) == 0
    finally:
        ours.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

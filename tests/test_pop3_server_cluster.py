"""`qldap pop3d` forwards a cluster user's session to the mailHost (auth_pop(8)), as the
qmail-popup/auth_pop pipeline does: user/pass at the backend, then bytes relayed both ways."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import QRoot
from tests.test_auth_modules_chain import remote_backend, root
from tests.test_auth_modules_support import homes, joe_ldif, make_home
from tests.test_pop3_server import start_pop3d

__all__ = ["homes", "remote_backend", "root"]


def test_daemon_forwards_to_the_mail_host(root: QRoot, ldap_base, homes: Path,  # type: ignore[no-untyped-def]
                                          remote_backend: tuple[str, Path]) -> None:
    ip, transcript = remote_backend
    root.control("ldapcluster", "1")
    ldap_base.load(joe_ldif(make_home(homes), extra=f"mailHost: {ip}"))
    proc, port = start_pop3d(root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            f = sock.makefile("rwb")
            assert f.readline().startswith(b"+OK ")
            f.write(b"USER joe\r\n")
            f.flush()
            assert f.readline() == b"+OK \r\n"
            f.write(b"PASS secret\r\nSTAT\r\n")  # pipelined behind PASS: must reach the backend too
            f.flush()
            assert f.readline() == b"+OK welcome\r\n"
            assert f.readline() == b"got:STAT\r\n"
            f.write(b"QUIT\r\n")
            f.flush()
            assert f.readline() == b"got:QUIT\r\n"
        assert transcript.read_bytes().startswith(b"user joe\r\npass secret\r\nSTAT\r\nQUIT\r\n")
    finally:
        proc.terminate()
        proc.wait(30)


def test_wrong_password_never_reaches_the_backend(root: QRoot, ldap_base, homes: Path,  # type: ignore[no-untyped-def]
                                                  remote_backend: tuple[str, Path]) -> None:
    ip, transcript = remote_backend
    root.control("ldapcluster", "1")
    ldap_base.load(joe_ldif(make_home(homes), extra=f"mailHost: {ip}"))
    proc, port = start_pop3d(root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            f = sock.makefile("rwb")
            f.readline()
            f.write(b"USER joe\r\nPASS nope\r\n")
            f.flush()
            assert f.readline() == b"+OK \r\n"
            assert f.readline() == b"-ERR authorization failed\r\n"
        assert not transcript.exists() or transcript.read_bytes() == b""
    finally:
        proc.terminate()
        proc.wait(30)

"""auth_smtp, auth_imap's courier chain, the passwd fallback and cluster forwarding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qldap.auth.modules import imap_quote
from tests.conftest import QRoot
from tests.test_auth_modules_support import (
    IS_ROOT,
    UID,
    entry_point,
    homes,
    joe_ldif,
    ldap_root,
    make_home,
    module_env,
    parse_report,
    run_fd3,
)

__all__ = ["homes"]

AUTH_POP = entry_point("auth", "auth_pop_main")
AUTH_IMAP = entry_point("auth", "auth_imap_main")
AUTH_SMTP = entry_point("auth", "auth_smtp_main")


@pytest.fixture
def root(qroot: QRoot, ldap_base, slapd) -> QRoot:  # type: ignore[no-untyped-def]
    return ldap_root(qroot, ldap_base, slapd)


def smtp(root: QRoot, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*AUTH_SMTP, *args], input=data, capture_output=True, env=module_env(root),
                          check=False, timeout=60)


def test_check25_auth_smtp(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes)))
    ldap_base.load(joe_ldif(None, uid="locked", extra="accountStatus: noaccess"))
    ok = smtp(root, b"login\0am9l\0c2VjcmV0\0")
    assert (ok.stdout, ok.returncode) == (b"Kjoe\0", 0)
    assert (smtp(root, b"login\0am9l\0d3Jvbmc=\0").stdout, 0) == (b"D", 0)
    assert smtp(root, b"login\0bm9zdWNodXNlcg==\0c2VjcmV0\0").stdout == b"D"  # unknown user
    assert smtp(root, b"login\0@@@\0x\0").stdout == b"Z"
    plain = smtp(root, b"plain\0AGpvZQBzZWNyZXQ=\0")
    assert (plain.stdout, plain.returncode) == (b"Kjoe\0", 0)
    locked = smtp(root, b"login\0bG9ja2Vk\0c2VjcmV0\0")
    assert (locked.stdout, locked.returncode) == (b"", 111)
    assert smtp(root, b"cram-md5\0x\0").returncode == 111
    assert smtp(root, b"login\0am9l\0c2VjcmV0\0", "extra").returncode == 111
    root.control("ldapserver", "127.0.0.1:1")
    down = smtp(root, b"login\0am9l\0c2VjcmV0\0")
    assert (down.stdout, down.returncode) == (b"", 111)


# -- auth_imap: the courier chain ---------------------------------------------------------------


@pytest.fixture
def next_module(homes: Path) -> Path:
    """A "next module" that reports AUTHENTICATED and what it finds on descriptor 3."""
    p = homes / "next"
    p.write_text('#!/bin/sh\necho "authenticated=${AUTHENTICATED-unset}"\necho "uid=$(id -u)"\n'
                 'if [ -e /proc/$$/fd/3 ]; then echo "fd3=$(tr "\\n" "|" <&3)"; else echo fd3=closed; fi\n')
    p.chmod(0o755)
    return p


def imap(root: QRoot, record: bytes, nxt: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return run_fd3([*AUTH_IMAP, str(nxt), "./Maildir/"], record, module_env(root, **env))


def test_auth_imap_login_and_chain(root: QRoot, ldap_base, homes: Path, next_module: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_base.load(joe_ldif(make_home(homes)))
    ok = imap(root, b"imap\nlogin\njoe\nsecret\n", next_module)
    assert ok.returncode == 0, ok.stderr
    assert parse_report(ok.stdout) == {"authenticated": "joe", "uid": str(UID), "fd3": "closed"}
    # unknown user and other AUTHTYPEs: the record goes on to the next module, AUTHENTICATED unset
    for record in (b"imap\nlogin\nnosuchuser\nsecret\n", b"imap\ncram-md5\njoe\nsecret\n"):
        passed = imap(root, record, next_module, AUTHENTICATED="")
        r = parse_report(passed.stdout)
        assert r["authenticated"] == "unset" and r["fd3"] == record.decode().replace("\n", "|")
    # already authenticated by an earlier module: straight on, nothing checked
    done = imap(root, b"", next_module, AUTHENTICATED="alice")
    assert parse_report(done.stdout)["authenticated"] == "alice"


def test_auth_imap_failure_reexecs_the_login_program(root: QRoot, ldap_base, homes: Path,  # type: ignore[no-untyped-def]
                                                     next_module: Path) -> None:
    ldap_base.load(joe_ldif(make_home(homes)))
    argv = {"AUTHARGC": "2", "AUTHARGV0": "/bin/echo", "AUTHARGV1": "login-again"}
    failed = imap(root, b"imap\nlogin\njoe\nwrong\n", next_module, **argv)
    assert (failed.stdout, failed.returncode) == (b"login-again\n", 0)
    assert imap(root, b"imap\nlogin\njoe\nwrong\n", next_module).returncode == 111
    assert imap(root, b"imap\nlogin\njoe\n", next_module, **argv).stdout == b"login-again\n"


# -- the passwd fallback ---------------------------------------------------------------------------


@pytest.fixture
def system_user(homes: Path) -> Iterator[tuple[str, Path]]:
    """A real account in /etc/passwd and /etc/shadow (password ``s3cret``), removed afterwards."""
    if not IS_ROOT or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    name = f"qlt{os.getpid() % 100000}"
    home = homes / "h" / name
    home.mkdir()
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:s3cret\n", text=True, check=True)
        entry = subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True)
        uid, gid = (int(x) for x in entry.stdout.split(":")[2:4])
        os.chown(home, uid, gid)
        (home / ".qmail").write_text("# mailbox\n./Mail/\n")
        yield name, home
    finally:
        subprocess.run(["userdel", name], check=False)


def test_check21_passwd_fallback(root: QRoot, homes: Path, system_user: tuple[str, Path]) -> None:
    name, home = system_user
    record = name.encode() + b"\0s3cret\0\0"
    proc = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], record, module_env(root))
    assert proc.returncode == 0, proc.stderr
    r = parse_report(proc.stdout)
    assert r["cwd"] == str(home) and r["env:USER"] == name and r["env:MAILDIR"] == "./Mail/"
    assert r["uid"] == str(home.stat().st_uid)
    wrong = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], name.encode() + b"\0x\0\0",
                    module_env(root))
    assert wrong.returncode == 3
    root.control("ldaplocaldelivery", "0")
    off = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], record, module_env(root))
    assert off.returncode == 3


# -- cluster forwarding ------------------------------------------------------------------------------

BACKEND = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 110)); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
log = open(sys.argv[2], "w", newline="")
conn.sendall(b"+OK backend ready\r\n")
buf = b""
while True:
    data = conn.recv(4096)
    if not data:
        break
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        log.write(line.decode() + "\n"); log.flush()
        if line.startswith(b"pass"):
            conn.sendall(b"+OK welcome\r\n")
        elif not line.startswith(b"user"):
            conn.sendall(b"got:" + line + b"\n")
        else:
            conn.sendall(b"+OK \r\n")
conn.close()
"""


@pytest.fixture
def remote_backend(homes: Path) -> Iterator[tuple[str, Path]]:
    """A POP3 backend on port 110 of another host: a network namespace behind a veth pair."""
    if not IS_ROOT or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a network namespace")
    tag = os.getpid() % 10000
    ns, host_if, ns_if = f"qldap{tag}", f"qlh{tag}", f"qln{tag}"
    net = f"10.213.{tag % 250}"
    cmds = [["ip", "netns", "add", ns], ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
            ["ip", "link", "set", ns_if, "netns", ns], ["ip", "addr", "add", f"{net}.1/24", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", ns_if],
            ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"]]
    proc = None
    try:
        for cmd in cmds:
            if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
                pytest.skip(f"cannot set up a network namespace: {' '.join(cmd)}")
        transcript = homes / "backend.log"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", BACKEND, f"{net}.2",
                                 str(transcript)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield f"{net}.2", transcript
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_check24_cluster_forwarding(root: QRoot, ldap_base, homes: Path,  # type: ignore[no-untyped-def]
                                    remote_backend: tuple[str, Path]) -> None:
    ip, transcript = remote_backend
    root.control("ldapcluster", "1")
    ldap_base.load(joe_ldif(make_home(homes), extra=f"mailHost: {ip}"))
    start = time.monotonic()
    proc = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], b"joe\0secret\0\0", module_env(root),
                   stdin=b"stat\r\nquit\r\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"+OK welcome\r\ngot:stat\r\ngot:quit\r\n"
    assert transcript.read_bytes() == b"user joe\r\npass secret\r\nstat\r\nquit\r\n"
    assert time.monotonic() - start < 30
    # a wrong password is refused here, before any backend is contacted
    assert run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], b"joe\0nope\0\0",
                   module_env(root)).returncode == 3


def test_check24_own_mailhost_is_local_and_local_ip_is_refused(root: QRoot, ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    root.control("ldapcluster", "1")
    ldap_base.load(joe_ldif(make_home(homes), extra="mailHost: MX1.Example.COM"))
    ldap_base.load(joe_ldif(make_home(homes, "ann"), uid="ann", extra="mailHost: 127.0.0.5"))
    local = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], b"joe\0secret\0\0", module_env(root))
    assert local.returncode == 0 and parse_report(local.stdout)["env:USER"] == "joe"
    refused = run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], b"ann\0secret\0\0", module_env(root))
    assert refused.returncode == 5
    root.control("ldapclusterhosts", "127.0.0.5")
    assert run_fd3([*AUTH_POP, str(homes / "probe"), "./Maildir/"], b"ann\0secret\0\0",
                   module_env(root)).returncode == 0


def test_imap_quote() -> None:
    assert imap_quote("joe") == "joe"
    assert imap_quote('a b"c\\') == '"a b\\"c\\\\"'

"""Shared helpers for the access-service tests: the joe entry, world-traversable homes, fd-3 runs.

Why a helper for "a Python the mailbox owner can run": as root the auth modules exec the next
program as uid 1001, and a Python living under /root (pyenv) is not executable for that uid.  The
tests then run our code under the system interpreter of the same minor version with the repository
and the venv's site-packages on PYTHONPATH — the same code, started the way a packaged install
would start it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.conftest import QRoot

ROOT_DIR = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0
UID = 1001 if IS_ROOT else os.getuid()
GID = 1001 if IS_ROOT else os.getgid()
SSHA_SECRET = "{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk"  # "secret", salt "abcd"


def entry_point(module: str, function: str) -> list[str]:
    """argv running ``qldap.cli.MODULE.FUNCTION(argv)`` as a console script would."""
    code = f"import sys; from qldap.cli.{module} import {function}; sys.exit({function}(sys.argv[1:]))"
    return [sys.executable, "-c", code]


def _usable_as_user(python: str) -> bool:
    if not IS_ROOT:
        return True
    try:
        proc = subprocess.run(
            [python, "-c", "import dns, qldap"],
            preexec_fn=_become_user,
            env={"PYTHONPATH": _pythonpath(), "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0


def _become_user() -> None:
    os.setgroups([GID])
    os.setgid(GID)
    os.setuid(UID)


def _pythonpath() -> str:
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(str(ROOT_DIR))]
    return os.pathsep.join([str(ROOT_DIR), *site])


def user_python() -> tuple[str, dict[str, str]]:
    """(interpreter, extra environment) with which uid UID can run qldap code."""
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    for python in candidates:
        if os.path.exists(python) and _usable_as_user(python):
            return python, {"PYTHONPATH": _pythonpath()}
    pytest.skip(f"no Python interpreter executable by uid {UID}")


def user_script(directory: Path, name: str, module: str, function: str) -> Path:
    """An executable wrapper ``DIRECTORY/NAME`` that runs the entry point as whoever execs it."""
    python, extra = user_python()
    code = f"import sys; from qldap.cli.{module} import {function}; sys.exit({function}(sys.argv[1:]))"
    path = directory / name
    exports = "".join(f"export {k}='{v}'\n" for k, v in extra.items())
    path.write_text(f"#!/bin/sh\n{exports}exec {python} -c '{code}' \"$@\"\n")
    path.chmod(0o755)
    return path


def run_fd3(
    argv: Sequence[str], record: bytes, env: Mapping[str, str], stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* with *record* readable on descriptor 3 (a pipe), *stdin* on 0; capture 1 and 2."""
    rfd, wfd = os.pipe()
    os.write(wfd, record)
    os.close(wfd)

    def child_setup() -> None:
        os.dup2(rfd, 3)

    try:
        return subprocess.run(
            list(argv), input=stdin, capture_output=True, env=dict(env), timeout=timeout, check=False,
            preexec_fn=child_setup, pass_fds=(3,),  # kept open after preexec_fn made it
        )
    finally:
        os.close(rfd)


def parse_report(stdout: bytes) -> dict[str, str]:
    """The ``key=value`` lines the probe subprogram prints (``env:NAME=V`` for the environment)."""
    out: dict[str, str] = {}
    for line in stdout.decode().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, value)
    return out


PROBE = """#!/bin/sh
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "cwd=$(pwd)"
echo "args=$*"
if [ -e /proc/$$/fd/3 ]; then echo "fd3=open"; else echo "fd3=closed"; fi
env | sed 's/^/env:/'
"""


@pytest.fixture
def homes() -> Iterator[Path]:
    """A world-traversable directory for homes; ``homes/h`` is writable by the mailbox owner."""
    d = Path(tempfile.mkdtemp(prefix="qldap-homes-"))
    d.chmod(0o755)
    (d / "h").mkdir(mode=0o755)
    probe = d / "probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    if IS_ROOT:
        os.chown(d / "h", UID, GID)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_home(homes: Path, name: str = "joe") -> Path:
    """``homes/h/NAME`` owned by the mailbox owner."""
    home = homes / "h" / name
    home.mkdir(mode=0o755)
    if IS_ROOT:
        os.chown(home, UID, GID)
    return home


def joe_ldif(home: Path | str | None, *, uid: str = "joe", store: str | None = "./Maildir/",
             password: str = SSHA_SECRET, extra: str = "", rdn_parent: str = "{base}") -> str:
    """The auth_pop(8) fixture entry (ids are UID/GID); *extra* is appended LDIF lines."""
    lines = [f"dn: uid={uid},{rdn_parent}", "objectClass: inetOrgPerson", "objectClass: qmailUser",
             f"uid: {uid}", f"cn: {uid}", f"sn: {uid}", f"mail: {uid}@example.com",
             f"qmailUID: {UID}", f"qmailGID: {GID}", f"userPassword: {password}"]
    if home is not None:
        lines.append(f"homeDirectory: {home}")
    if store is not None:
        lines.append(f"mailMessageStore: {store}")
    return "\n".join(lines) + "\n" + extra.strip() + "\n"


def ldap_root(qroot: QRoot, ldap_base: object, slapd: object) -> QRoot:
    """Point *qroot* at the test's subtree of the shared slapd."""
    qroot.control("ldapserver", f"127.0.0.1:{slapd.port}")  # type: ignore[attr-defined]
    qroot.control("ldapbasedn", ldap_base.dn)  # type: ignore[attr-defined]
    qroot.control("ldaptimeout", "30")
    return qroot


def module_env(qroot: QRoot, **extra: str) -> dict[str, str]:
    """The environment of a module run: PATH, QLDAP_ROOT and *extra*."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QLDAP_ROOT": str(qroot.path)}
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

"""``qldap pop3d`` offers APOP only where it can succeed (issue 11).

The adversarial review found the greeting always carried an APOP timestamp, so clients that prefer
APOP (curl does) tried it against hashed passwords, failed, and the log said "wrong password".  APOP
needs the cleartext password, which the directory check uses only with ``control/cleartextpasswd``
(auth_pop(8)); without it the greeting has no timestamp and ``APOP`` is refused.  Real daemon, real
curl and poplib.
"""

from __future__ import annotations

import poplib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import homes, joe_ldif, ldap_root, make_home
from tests.test_cli_pop3 import joe_home, maildir
from tests.test_pop3_server import start_pop3d

__all__ = ["homes", "joe_home"]

STAMP = re.compile(rb"<[^<>@]+@[^<>]+>")


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    proc.wait(30)
    assert proc.stderr is not None
    return proc.stderr.read().decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_logs_in_when_passwords_are_hashed(qroot: QRoot, joe_home: Path) -> None:
    maildir(joe_home, {"new/1000.1.h": b"Subject: hi\n\nbody\n"})
    proc, port = start_pop3d(qroot)
    try:
        url = f"pop3://127.0.0.1:{port}/"
        out = subprocess.run(["curl", "-sS", "--max-time", "20", url, "-u", "joe:secret"],
                             capture_output=True, timeout=60)
    finally:
        log = stop(proc)
    assert out.returncode == 0, (out.stderr, log)
    assert out.stdout == b"1 18\r\n"
    assert "wrong password" not in log


def test_no_timestamp_and_no_apop_without_cleartext(qroot: QRoot, joe_home: Path) -> None:
    maildir(joe_home, {})
    proc, port = start_pop3d(qroot)
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        assert pop.getwelcome().startswith(b"+OK")
        assert STAMP.search(pop.getwelcome()) is None
        with pytest.raises(poplib.error_proto):
            pop._shortcmd("APOP joe 0123456789abcdef0123456789abcdef")
        pop.user("joe")
        pop.pass_("secret")
        assert pop.stat() == (0, 0)
        pop.quit()
    finally:
        stop(proc)


def test_apop_offered_and_working_with_cleartext(qroot: QRoot, ldap_base, slapd, homes: Path) -> None:  # type: ignore[no-untyped-def]
    ldap_root(qroot, ldap_base, slapd)
    qroot.control("cleartextpasswd", "1")
    home = make_home(homes)
    ldap_base.load(joe_ldif(home, password="plainsecret"))
    maildir(home, {"new/1000.1.h": b"Subject: hi\n\nbody\n"})
    proc, port = start_pop3d(qroot)
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        assert STAMP.search(pop.getwelcome()) is not None
        pop.apop("joe", "plainsecret")
        assert pop.stat() == (1, 18)
        pop.quit()
    finally:
        stop(proc)

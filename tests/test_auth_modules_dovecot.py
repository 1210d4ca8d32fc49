"""IMAP through a private Dovecot whose checkpassword passdb is our ``auth_checkpassword``.

See docs/imap-dovecot.md.  Nothing is installed here: the test uses the dovecot binary already on the
machine (CI installs it with tools/install-deps) and skips without it.  Dovecot runs from a generated
configuration in a temp dir on a free loopback port; a message delivered into joe's Maildir is read
back over IMAP with imaplib.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import (
    IS_ROOT,
    entry_point,
    free_port,
    homes,
    joe_ldif,
    ldap_root,
    make_home,
)
from tests.test_cli_pop3 import maildir

__all__ = ["homes"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
REPLY = "/usr/lib/dovecot/checkpassword-reply"
MESSAGE = b"From: a@example.org\nTo: joe@example.com\nSubject: over imap\n\nhello from qldap\n"

CONFIG = """\
base_dir = {run}
state_dir = {state}
log_path = {log}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 100
passdb {{
  driver = checkpassword
  args = {checkpassword}
}}
userdb {{
  driver = prefetch
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  user = root
}}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60  # a hang guard: dovecot starts slowly on a loaded machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("dovecot did not start listening")


@pytest.fixture
def dovecot(qroot: QRoot, ldap_base, slapd, homes: Path) -> Iterator[tuple[int, Path]]:  # type: ignore[no-untyped-def]
    if not IS_ROOT or not os.path.exists(DOVECOT) or not os.path.exists(REPLY):
        pytest.skip("needs root and dovecot-imapd (tools/install-deps installs it)")
    ldap_root(qroot, ldap_base, slapd)
    state = Path(tempfile.mkdtemp(prefix="qldap-dovecot-"))
    state.chmod(0o755)
    wrapper = state / "checkpassword"
    argv = " ".join(f"'{a}'" for a in entry_point("auth", "checkpassword_main"))
    wrapper.write_text(f"#!/bin/sh\nexport QLDAP_ROOT='{qroot.path}'\nexec {argv} \"$@\"\n")
    wrapper.chmod(0o755)
    port = free_port()
    log = state / "dovecot.log"
    (state / "run").mkdir()
    (state / "state").mkdir()
    conf = state / "dovecot.conf"
    conf.write_text(CONFIG.format(run=state / "run", state=state / "state", log=log, checkpassword=wrapper,
                                  port=port))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, log)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(state, ignore_errors=True)


def test_imap_reads_a_delivered_message(dovecot: tuple[int, Path], ldap_base, homes: Path) -> None:  # type: ignore[no-untyped-def]
    port, log = dovecot
    home = make_home(homes)
    ldap_base.load(joe_ldif(home))
    maildir(home, {f"new/{int(time.time()) - 60}.M1P1.mx1": MESSAGE})
    with imaplib.IMAP4("127.0.0.1", port) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("joe", "wrong")
        imap.login("joe", "secret")
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"1"]), log.read_text()
        typ, fetched = imap.fetch("1", "(RFC822)")
        assert typ == "OK"
        body = fetched[0][1]  # type: ignore[index]
        assert body == MESSAGE.replace(b"\n", b"\r\n")

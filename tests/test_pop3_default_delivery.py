"""POP3 reads the maildir that local delivery writes: both follow ``control/defaultdelivery`` (issue 11).

The adversarial review found ``qldap pop3d`` hard-coded ``./Maildir/`` while delivery honoured
``defaultdelivery``, so with ``./`` mail went where POP3 could not see it.  Here a message is really
delivered (LocalSpawner: LDAP lookup, agent as the user) and then read back over TCP with poplib from
the real daemon.  The entry has a homeDirectory and no mailMessageStore, so both sides must take the
default delivery.
"""

from __future__ import annotations

import os
import poplib
import shutil
from pathlib import Path

import pytest

from qldap.control.files import ControlDir
from qldap.local.spawn import LocalSpawner, default_maildir
from qldap.queue.layout import create_queue
from tests.conftest import QRoot
from tests.test_auth_modules_support import homes, joe_ldif, ldap_root, make_home
from tests.test_cli_pop3 import maildir
from tests.test_pop3_server import start_pop3d

__all__ = ["homes"]


@pytest.mark.parametrize(("default", "box"), [("./\n", "."), ("./Mail/\n", "Mail"),
                                             ("|/bin/true\n./Other/\n", "Other")])
def test_pop3d_reads_what_delivery_wrote(qroot: QRoot, ldap_base, slapd, homes: Path,  # type: ignore[no-untyped-def]
                                         tmp_path: Path, default: str, box: str) -> None:
    ldap_root(qroot, ldap_base, slapd)
    qroot.control("ldapobjectclass", "qmailUser")
    qroot.control("defaultdelivery", default)
    create_queue(qroot.path)
    home = make_home(homes)
    ldap_base.load(joe_ldif(home, store=None))
    maildir(home, {}, name=box)
    message = tmp_path / "mess"
    message.write_bytes(b"Subject: where\n\nfound it\n")
    if default.startswith("|") and shutil.which("true") is None:
        pytest.skip("no /bin/true")
    report = LocalSpawner(qroot.path, lambda data, sender, rcpts: 0).deliver(
        "joe@example.com", "bob@remote.example", message)
    assert report.letter == "K", report
    assert len(os.listdir(home / box / "new")) == 1
    proc, port = start_pop3d(qroot)
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        pop.user("joe")
        pop.pass_("secret")
        count, _size = pop.stat()
        assert count == 1
        _resp, lines, _octets = pop.retr(1)
        assert b"Subject: where" in lines and b"found it" in lines
        pop.quit()
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(("text", "box"), [
    (None, "./Maildir/"), ("./\n", "./"), ("./Mailbox\n", "./Maildir/"),
    ("|prog\n&fwd@x\n/var/mail/a/\n", "/var/mail/a/")])
def test_default_maildir_is_the_first_maildir_line(qroot: QRoot, text: str | None, box: str) -> None:
    if text is not None:
        qroot.control("defaultdelivery", text)
    assert default_maildir(ControlDir(qroot.path)) == box

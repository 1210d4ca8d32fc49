"""POP-before-SMTP across real daemons: POP3 login from 127.0.0.2 grants relaying to that address in
`qldap smtpd` (pbscheck in-process at connect), not to 127.0.0.3, and not after pbstimeout."""

from __future__ import annotations

import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import QRoot
from tests.test_auth_modules_support import entry_point, free_port, homes
from tests.test_cli_pop3 import joe_home, maildir
from tests.test_pbs_daemon import start_pbsdbd
from tests.test_pop3_server import PBS_TIMEOUT, POP3From, start_pop3d

__all__ = ["homes", "joe_home"]


def start_smtpd(qroot: QRoot) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([*entry_point("qldap", "main"), "smtpd", "--root", str(qroot.path),
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if line != f"qldap smtpd: listening on 127.0.0.1:{port}\n":
        proc.kill()
        proc.wait()
        pytest.fail(f"smtpd did not start: {line}")
    return proc, port


def relay_attempt(port: int, source: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as smtp:
        smtp.ehlo("roaming.client")
        smtp.mail("joe@example.com")
        code, _text = smtp.rcpt("friend@far-away.example")
        return code


def test_pop_login_grants_smtp_relay_to_that_address_only(qroot: QRoot, joe_home: Path) -> None:
    qroot.control("pbssecret", "popsecret")
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]")
    qroot.control("pbstimeout", str(PBS_TIMEOUT))
    qroot.control("rcpthosts", "example.com")
    pbsdbd, _ = start_pbsdbd(qroot)
    qroot.control("pbsservers", "127.0.0.1")
    maildir(joe_home, {})
    pop3d, pop_port = start_pop3d(qroot)
    smtpd, smtp_port = start_smtpd(qroot)
    try:
        assert relay_attempt(smtp_port, "127.0.0.2") == 553  # nobody logged in yet
        POP3From.source = "127.0.0.2"
        pop = POP3From("127.0.0.1", pop_port, timeout=30)
        pop.user("joe")
        pop.pass_("secret")
        pop.quit()
        assert relay_attempt(smtp_port, "127.0.0.2") == 250
        added_by = time.time()  # the login's add was done before the grant was seen
        assert relay_attempt(smtp_port, "127.0.0.3") == 553
        time.sleep(max(0.0, added_by + PBS_TIMEOUT + 0.5 - time.time()))  # certainly expired now
        assert relay_attempt(smtp_port, "127.0.0.2") == 553
    finally:
        for proc in (smtpd, pop3d, pbsdbd):
            proc.terminate()
            proc.wait(30)

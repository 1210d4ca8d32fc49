"""qmail-verify against the real slapd: its answers and the exit codes of qmail-verify(8)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase

CODE = "import sys; from qldap.cli.verify import main; sys.exit(main())"


def entry(uid: str, mail: str, *extra: str) -> str:
    lines = "".join(f"{x}\n" for x in extra)
    return (f"dn: uid={uid},{{base}}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\nuid: {uid}\n"
            f"cn: {uid}\nsn: {uid}\nmail: {mail}\n{lines}\n")


def verify(qroot: QRoot, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", CODE, "--root", str(qroot.path)], input=data,
                          capture_output=True, timeout=60, check=False)


def setup(qroot: QRoot, host: str, port: int, base: str) -> None:
    qroot.control("ldapserver", f"{host}:{port}")
    qroot.control("ldapbasedn", base)
    qroot.control("ldaptimeout", "30")
    qroot.control("ldaplocaldelivery", "0")


def test_check57(qroot: QRoot, ldap_base: LdapBase) -> None:
    ldap_base.load(entry("joe", "joe@example.com")
                   + entry("dis", "dis@example.com", "accountStatus: disabled")
                   + entry("na", "na@example.com", "accountStatus: noaccess"))
    setup(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)
    proc = verify(qroot, b"joe@example.com\0nobody@example.com\0dis@example.com\0joe\0na@example.com\0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (b"K" b"DSorry, no mailbox here by that name. (#5.1.1)\0"
                           b"DMailaddress is administratively disabled. (#5.2.1)\0"
                           b"DSorry, address must include host name. (#5.1.3)\0" b"K")
    ldap_base.load(entry("any", "catchall@example.com"))
    assert verify(qroot, b"whoever@example.com\0").stdout == b"K"


def test_duplicates_are_temporary(qroot: QRoot, ldap_base: LdapBase) -> None:
    ldap_base.load(entry("d1", "dup@example.com") + entry("d2", "dup@example.com"))
    setup(qroot, ldap_base.slapd.host, ldap_base.slapd.port, ldap_base.dn)
    assert verify(qroot, b"dup@example.com\0").stdout == b"Z\0"


def test_directory_down_exits_111_silently(qroot: QRoot, slapd_factory) -> None:  # type: ignore[no-untyped-def]
    server = slapd_factory()
    setup(qroot, server.host, server.port, server.suffix)
    server.stop()
    proc = verify(qroot, b"joe@example.com\0")
    assert (proc.returncode, proc.stdout) == (111, b"")


def test_bad_controls_exit_100(qroot: QRoot) -> None:
    qroot.control("me", None)
    assert verify(qroot, b"joe@example.com\0").returncode == 100

"""qmail-ldaplookup shows forward-only entries with the alias user local delivery uses (ROOT/alias)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import QRoot

LDIF = """dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: x
dc: example

dn: uid=carol,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: qmailUser
uid: carol
cn: carol
sn: carol
mail: carol@example.com
mailForwardingAddress: carol@elsewhere.example
"""


def test_forward_only_entry_names_the_alias_user(qroot: QRoot) -> None:
    (qroot.path / "directory.ldif").write_text(LDIF)
    qroot.control("ldapbasedn", "dc=example,dc=com")
    owner = 2000 if os.geteuid() == 0 else os.geteuid()
    if os.geteuid() == 0:
        os.chown(qroot.path / "alias", owner, owner)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from qldap.cli.ldaplookup import main; sys.exit(main())",
         "--root", str(qroot.path), "-m", "carol@example.com"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "forward only delivery via alias user" in lines
    assert f"alias user uid: {owner}" in lines
    assert f"alias user home: {qroot.path / 'alias'}" in lines
    assert "mailForwardingAddress: carol@elsewhere.example" in lines

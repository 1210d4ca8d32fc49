"""qmail-ldaplookup end to end as a subprocess against slapd and the embedded directory
(qmail-ldaplookup(8))."""

from __future__ import annotations

import base64
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from qldap.cli.ldaplookup import main
from tests.conftest import QRoot
from tests.fixtures_slapd import LdapBase
from tests.test_directory_ldap import person

TOOL = str(Path(sys.executable).with_name("qmail-ldaplookup"))
REPLY_B64 = base64.b64encode(b"I am away.\n Back on Monday.").decode()
JOE_PW = "{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk"  # "secret", salt "abcd"

TREE = "".join(
    [
        person("joe", "mail: joe@example.com", "qmailUID: 1001", "qmailGID: 1001",
               "homeDirectory: /tmp/h/joe", "mailMessageStore: ./Maildir/", f"userPassword: {JOE_PW}"),
        person("erin", "mail: erin@example.com", "mailAlternateAddress: e@example.com",
               "accountStatus: disabled", "mailHost: mx2.example.com", "mailMessageStore: erin/Maildir/",
               "qmailDotMode: Both",
               "mailQuotaSize: 1000000", "mailSizeMax: 5000", "deliveryMode: reply", "deliveryMode: sideways",
               "mailForwardingAddress: e@else.example", "deliveryProgramPath: /usr/bin/filter -q",
               f"mailReplyText:: {REPLY_B64}"),
        person("fwd", "mail: fwd@example.com", "mailForwardingAddress: carol@else.example"),
        person("catchall", "mail: catchall@example.com", "mailMessageStore: /var/mail/c/", "qmailUID: 2000",
               "qmailGID: 2000"),
        person("bad", "mail: bad@example.com", "mailMessageStore: /var/mail/b/", "qmailUID: 99"),
        person("twin", "mail: twin@example.net"),
        "dn: cn=twin2,{base}\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\ncn: twin2\nsn: t\n"
        "uid: twin\nmail: twin@example.net\n\n",
    ]
)  # fmt: skip


def run(qroot: QRoot, *args: str, env_root: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    argv = [TOOL, *args]
    if env_root:
        env["QLDAP_ROOT"] = str(qroot.path)
    else:
        argv = [TOOL, "--root", str(qroot.path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def root(qroot: QRoot, ldap_base: LdapBase) -> tuple[QRoot, str]:
    ldap_base.load(TREE)
    qroot.control("ldapserver", f"{ldap_base.slapd.host}:{ldap_base.slapd.port}")
    qroot.control("ldapbasedn", ldap_base.dn)
    qroot.control("ldapobjectclass", "qmailUser")
    return qroot, ldap_base.dn


def joe_block(base: str) -> str:
    return (
        f"Searching ldap for: (&(objectClass=qmailUser)(uid=joe))\nunder dn: {base}\nFound 1 entry:\n\n"
        f"dn: uid=joe,{base}\n{'-' * 55}\n"
        "objectClass: inetOrgPerson\nobjectClass: qmailUser\nmail: joe@example.com\nuid: joe\n"
        "accountStatus: undefined -> active\nmailHost: undefined\nhomeDirectory: /tmp/h/joe\n"
        "aliasEmpty: ./Maildir/\nqmailDotMode: ldaponly\nqmailUID: 1001\nqmailGID: 1001\n"
        "mailQuotaSize: 0 (unlimited)\nmailQuotaCount: 0 (unlimited)\nmailSizeMax: 0 (unlimited)\n"
        "mailReplyText: undefined\n"
    )


def test_check55_unknown_uid(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    p = run(qroot, "-u", "nobody")
    assert p.returncode == 111
    assert p.stdout == (
        f"Searching ldap for: (&(objectClass=qmailUser)(uid=nobody))\nunder dn: {base}\nNo entries found.\n\n"
    )
    assert p.stderr == "qmail-ldaplookup: fatal: qldap_first: no such object\n"


def test_check55_uid_as_delivery_reads_it(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    p = run(qroot, "-u", "joe", env_root=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == joe_block(base) + "\n\n"


def test_check55_password_compare_as_root(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    p = run(qroot, "-u", "joe", "-p", "secret")
    assert p.returncode == 0
    assert p.stdout == joe_block(base) + "\nPASSWORD COMPARE was successful.\n\n\n"
    p = run(qroot, "-u", "joe", "-p", "Secret")
    assert p.returncode == 0
    assert p.stdout.endswith(
        "\nPASSWORD COMPARE was NOT successful.\n\terror was: authorization failed, wrong password\n\n\n"
    )
    qroot.control("ldaprebind", "1")
    assert "PASSWORD COMPARE was successful." in run(qroot, "-u", "joe", "-p", "secret").stdout
    assert "PASSWORD COMPARE was NOT successful." in run(qroot, "-u", "joe", "-p", "x").stdout


def test_check55_password_compare_refused_for_non_root(
    qroot: QRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        assert main(["--root", str(qroot.path), "-u", "joe", "-p", "secret"]) == 1
    else:
        os.seteuid(65534)
        try:
            code = main(["--root", str(qroot.path), "-u", "joe", "-p", "secret"])
        finally:
            os.seteuid(0)
        assert code == 1
    assert capsys.readouterr().err == "qmail-ldaplookup: fatal: only the superuser may comapre passwords\n"


def test_full_entry_with_every_attribute(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    qroot.control("ldapmessagestore", "/srv/mail")
    qroot.control("ldapuid", "3000")
    qroot.control("ldapgid", "3001")
    p = run(qroot, "-m", "e@example.com")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n\n", 1)[1] == (
        f"dn: uid=erin,{base}\n{'-' * 55}\n"
        "objectClass: inetOrgPerson\nobjectClass: qmailUser\nmail: erin@example.com\n"
        "mailAlternateAddress: e@example.com\nuid: erin\naccountStatus: disabled\nmailHost: mx2.example.com\n"
        "homeDirectory: /srv/mail/erin/Maildir/\naliasEmpty: using default\nqmailDotMode: both\n"
        "qmailUID: 3000\nqmailGID: 3001\nmailQuotaSize: 1000000\nmailQuotaCount: 0 (unlimited)\n"
        "mailSizeMax: 5000\ndeliveryMode: reply\ndeliveryMode: sideways\n"
        "mailForwardingAddress: e@else.example\ndeliveryProgramPath: /usr/bin/filter -q\n"
        "mailReplyText:\n=== begin ===\nI am away.\n Back on Monday.\n=== end ===\n\n\n"
    )
    assert p.stderr == "qmail-ldaplookup: warning: undefined mail delivery mode: sideways (ignored).\n"


def test_mail_retries_catchall_candidates(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    p = run(qroot, "-m", "no-body@example.com")
    assert p.returncode == 0
    searches = [line for line in p.stdout.splitlines() if line.startswith("Searching ldap for: ")]
    assert searches == [
        "Searching ldap for: (&(objectClass=qmailUser)(|(mail=no-body@example.com)"
        "(mailAlternateAddress=no-body@example.com)))",
        "Searching ldap for: (&(objectClass=qmailUser)(|(mail=no-catchall@example.com)"
        "(mailAlternateAddress=no-catchall@example.com)))",
        "Searching ldap for: (&(objectClass=qmailUser)(|(mail=catchall@example.com)"
        "(mailAlternateAddress=catchall@example.com)))",
    ]
    assert p.stdout.count("No entries found.") == 2 and "Found 1 entry:" in p.stdout
    assert f"dn: uid=catchall,{base}" in p.stdout
    qroot.control("ldapbasedn", f"ou=people,{base}")
    p = run(qroot, "-m", "joe@example.com")
    assert p.returncode == 111 and "qldap_filter" in p.stderr


def test_mail_nothing_found_anywhere(root: tuple[QRoot, str]) -> None:
    qroot, _ = root
    p = run(qroot, "-m", "a@nowhere.example")
    assert p.returncode == 111
    assert p.stdout.count("No entries found.") == 2
    assert p.stderr == "qmail-ldaplookup: fatal: qldap_first: no such object\n"


def test_raw_filter_and_multiple_entries(root: tuple[QRoot, str]) -> None:
    qroot, base = root
    p = run(qroot, "-f", "(mail=joe@example.com)")
    assert p.returncode == 0 and f"dn: uid=joe,{base}" in p.stdout
    head = f"Searching ldap for: (mail=joe@example.com)\nunder dn: {base}\nFound 1 entry:\n"
    assert p.stdout.startswith(head)
    p = run(qroot, "-f", "mail=twin@example.net")
    assert "Found 2 entries:\n\n" in p.stdout and "Uh-oh" not in p.stdout
    p = run(qroot, "-u", "twin", "-p", "x")
    assert "Found 2 entries:\nUh-oh: multiple entries found but should be unique!\n" in p.stdout
    assert "PASSWORD COMPARE" not in p.stdout
    p = run(qroot, "-f", "(mail=joe")
    assert p.returncode == 111 and p.stderr.startswith("qmail-ldaplookup: fatal: qldap_filter: ")


def test_values_delivery_would_refuse_are_fatal(root: tuple[QRoot, str]) -> None:
    qroot, _ = root
    p = run(qroot, "-u", "bad")
    assert p.returncode == 111
    assert p.stderr == "qmail-ldaplookup: fatal: qldap_get_uid: illegal value\n"


def test_forward_only_account(root: tuple[QRoot, str]) -> None:
    qroot, _ = root
    p = run(qroot, "-u", "fwd")
    try:
        alias = pwd.getpwnam("alias")
    except KeyError:
        assert p.returncode == 111
        assert "forward only" not in p.stdout
        assert p.stderr == "qmail-ldaplookup: fatal: getpwnam: Unable to find alias user!\n"
        return
    assert p.returncode == 0
    assert (
        "mailHost: undefined\nforward only delivery via alias user\nalias user: alias\n"
        f"alias user uid: {alias.pw_uid}\nalias user gid: {alias.pw_gid}\nalias user home: {alias.pw_dir}\n"
        'alias user aliasempty: |echo "Unable to deliver mail: account incorrectly configured. (#5.3.5)"; '
        "exit 100\nmailForwardingAddress: carol@else.example\n\n\n"
    ) in p.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["-u", "a", "-m", "b"], ["-w", "pw", "-u", "joe"], ["-u", "joe", "extra"], ["-x"], ["-u"],
     ["-D", "cn=x"]],
)
def test_usage_errors(qroot: QRoot, args: list[str]) -> None:
    p = run(qroot, *args)
    assert p.returncode == 1
    assert p.stderr.startswith("usage:\tqmail-ldaplookup [-d level]")
    assert p.stdout == ""


def test_ldap_down_and_bind_dn(root: tuple[QRoot, str], ldap_base: LdapBase) -> None:
    qroot, base = root
    p = run(qroot, "-D", ldap_base.slapd.rootdn, "-w", "wrong", "-u", "joe")
    assert p.returncode == 111
    assert p.stderr == "qmail-ldaplookup: fatal: qldap_bind: wrong bind password for ldap server\n"
    assert p.stdout == ""  # the bind comes before any search is announced, as in qmail-ldap
    p = run(qroot, "-d", "3", "-D", ldap_base.slapd.rootdn, "-w", ldap_base.slapd.rootpw, "-u", "joe")
    assert p.returncode == 0 and p.stdout == joe_block(base) + "\n\n"
    qroot.control("ldapserver", "127.0.0.1:1")
    p = run(qroot, "-u", "joe")
    assert p.returncode == 111
    assert p.stderr == "qmail-ldaplookup: fatal: qldap_bind: ldap server down or unreachable\n"
    assert p.stdout == ""


def test_embedded_directory(qroot: QRoot) -> None:
    base = "dc=example,dc=com"
    qroot.control("ldapbasedn", base)
    qroot.control("ldapobjectclass", "qmailUser")
    (qroot.path / "directory.ldif").write_text(
        f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: E\ndc: example\n\n"
        + TREE.replace("{base}", base)
    )
    p = run(qroot, "-u", "joe", "-p", "secret")
    assert p.returncode == 0, p.stderr
    assert p.stdout == joe_block(base) + "\nPASSWORD COMPARE was successful.\n\n\n"

"""Hostile directory values against local delivery (issue 7): path tricks, symlinks, program injection.

Each case goes through :class:`LocalSpawner` (lookup in the real slapd → plan → agent as the user's
file-system identity → report): ``..`` components, relative stores without a prefix and relative
homes bounce with ``D Illegal value``; a Maildir symlinked to a root-owned directory outside the
home defers and nothing is written there; deliveryProgramPath values with shell metacharacters or
newlines bounce and run nothing (a marker file proves it), while a clean program does run.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from qldap.local.spawn import Report
from tests.test_local_spawn import GID, UID, mailbox, mailroot, msg, spawner, user_ldif

__all__ = ["mailroot", "spawner"]

ILLEGAL = Report("D", "Illegal value in LDAP attribute. (#5.3.5)")
IS_ROOT = os.geteuid() == 0


def entry(uid: str, *lines: str) -> str:
    head = [f"dn: uid={uid},{{base}}", "objectClass: inetOrgPerson", "objectClass: qmailUser", f"uid: {uid}",
            f"cn: {uid}", f"sn: {uid}", f"mail: {uid}@example.com", f"qmailUID: {UID}", f"qmailGID: {GID}"]
    return "\n".join([*head, *lines]) + "\n"


def files_under(d: Path) -> list[Path]:
    return [Path(r) / f for r, _, fs in os.walk(d) for f in fs]


@pytest.mark.parametrize("store", ["{root}/a/../../etc/", "{root}/a/..", "{root}/a/../b/", "../{root}/a/",
                                   "a", "a/", "./a/", "{root}/a/./../a/"])
def test_store_tricks_bounce_and_create_nothing(spawner, ldap_base, mailroot: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                store: str) -> None:
    sp, _ = spawner
    mailbox(mailroot, "a")
    ldap_base.load(entry("a", f"mailMessageStore: {store.format(root=mailroot)}"))
    before = files_under(mailroot)
    assert sp.deliver("a@example.com", "b@remote.example", msg(tmp_path)) == ILLEGAL
    assert files_under(mailroot) == before
    assert not (mailroot / "b").exists() and not (mailroot.parent / "etc" / "new").exists()


def test_relative_store_needs_the_prefix_and_stays_inside_it(spawner, ldap_base, mailroot: Path,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    sp, qroot = spawner
    mailbox(mailroot, "a")
    qroot.control("ldapmessagestore", str(mailroot))
    ldap_base.load(entry("a", "mailMessageStore: a/") + "\n" + entry("c", "mailMessageStore: ../c/"))
    assert sp.deliver("a@example.com", "b@remote.example", msg(tmp_path)).letter == "K"
    assert len(list((mailroot / "a" / "Maildir" / "new").iterdir())) == 1
    assert sp.deliver("c@example.com", "b@remote.example", msg(tmp_path)) == ILLEGAL
    assert not (mailroot.parent / "c").exists()


@pytest.mark.parametrize("home", ["home/a", "./home", "{root}/a/..", "{root}/../x", "-{root}/a"])
def test_home_tricks_bounce(spawner, ldap_base, mailroot: Path, tmp_path: Path, home: str) -> None:  # type: ignore[no-untyped-def]
    sp, _ = spawner
    mailbox(mailroot, "a")
    ldap_base.load(entry("a", f"homeDirectory: {home.format(root=mailroot)}", "mailMessageStore: ./Maildir/"))
    assert sp.deliver("a@example.com", "b@remote.example", msg(tmp_path)) == ILLEGAL


def _root_owned_maildir(d: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (d / sub).mkdir(parents=True, mode=0o755)
    d.chmod(0o755)
    return d


@pytest.mark.skipif(not IS_ROOT, reason="needs root to deliver under another file-system identity")
def test_symlinked_maildir_to_a_root_owned_dir_defers_and_writes_nothing(  # type: ignore[no-untyped-def]
        spawner, ldap_base, mailroot: Path, tmp_path: Path) -> None:
    sp, _ = spawner
    outside = _root_owned_maildir(mailroot / "outside")
    store = mailbox(mailroot, "a")
    (store / "Maildir").symlink_to(outside)
    ldap_base.load(user_ldif("a", store))
    rep = sp.deliver("a@example.com", "b@remote.example", msg(tmp_path))
    assert rep.letter == "Z", rep
    assert files_under(outside) == []


@pytest.mark.skipif(not IS_ROOT, reason="needs root to deliver under another file-system identity")
def test_symlinked_store_to_a_root_owned_dir_defers_and_writes_nothing(  # type: ignore[no-untyped-def]
        spawner, ldap_base, mailroot: Path, tmp_path: Path) -> None:
    sp, _ = spawner
    outside = mailroot / "system"
    _root_owned_maildir(outside / "Maildir")
    (mailroot / "evil").symlink_to(outside)
    ldap_base.load(user_ldif("evil", mailroot / "evil"))
    rep = sp.deliver("evil@example.com", "b@remote.example", msg(tmp_path))
    assert rep.letter == "Z", rep
    assert files_under(outside) == []


@pytest.fixture
def marker_dir(mailroot: Path) -> Path:
    d = mailbox(mailroot, "markers")
    d.chmod(0o777)
    return d


PROGRAMS = ["/bin/touch {m}/x; /bin/touch {m}/evil", "/bin/touch {m}/evil`id`", "/bin/touch $(echo {m}/evil)",
            "/bin/touch {m}/x|/bin/touch {m}/evil", "/bin/touch {m}/x&/bin/touch {m}/evil",
            "/bin/touch {m}/x>{m}/evil", "/bin/touch {m}/x\n/bin/touch {m}/evil",
            "/bin/touch {m}/x\r/bin/touch {m}/evil", "/bin/touch {m}/evil*", "/bin/touch ~/evil",
            "-/bin/touch {m}/evil", "/bin/touch {m}/x\n&evil@x.example"]


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_metacharacters_bounce_and_run_nothing(  # type: ignore[no-untyped-def]
        spawner, ldap_base, mailroot: Path, marker_dir: Path, tmp_path: Path, program: str) -> None:
    sp, qroot = spawner
    store = mailbox(mailroot, "p")
    value = program.format(m=marker_dir)
    ldif = entry("p", f"mailMessageStore: {store}/", "qmailDotMode: ldapwithprog")
    if "\n" in value or "\r" in value:
        ldif += f"deliveryProgramPath:: {base64.b64encode(value.encode()).decode()}\n"
    else:
        ldif += f"deliveryProgramPath: {value}\n"
    ldap_base.load(ldif)
    assert sp.deliver("p@example.com", "b@remote.example", msg(tmp_path)) == ILLEGAL
    assert list(marker_dir.iterdir()) == []
    assert files_under(store) == []
    assert list((qroot.path / "queue" / "todo").iterdir()) == []  # no forward to evil@x.example


def test_a_clean_program_does_run(  # type: ignore[no-untyped-def]
        spawner, ldap_base, mailroot: Path, marker_dir: Path, tmp_path: Path) -> None:
    """The control case: the same setup with a program without metacharacters runs it."""
    sp, _ = spawner
    store = mailbox(mailroot, "p")
    ldap_base.load(entry("p", f"mailMessageStore: {store}/", "qmailDotMode: ldapwithprog",
                         f"deliveryProgramPath: /bin/touch {marker_dir}/ran"))
    assert sp.deliver("p@example.com", "b@remote.example", msg(tmp_path)).letter == "K"
    assert (marker_dir / "ran").exists()

"""Locals, rcpthosts and address lists per qmail-smtpd(8) CONTROL FILES and ACCEPTED DOMAINS and
qmail-send(8), PREPROCESSING, on real files."""

from __future__ import annotations

import pytest

from qldap.control.cdb import write_cdb
from qldap.control.domains import (
    LOCALS_FILES,
    RCPTHOSTS_FILES,
    AddressList,
    Locals,
    RcptHosts,
    acceptable_rcpt_domain,
    address_in_list,
    catchall_forms,
    domain_suffixes,
    good_mail_addr,
)
from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from tests.conftest import QRoot


@pytest.fixture
def smtpd_root(qroot: QRoot) -> QRoot:
    """The fixture of qmail-smtpd(8)."""
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org\n.example.net\nbackup.test")
    return qroot


@pytest.fixture
def ctl(smtpd_root: QRoot) -> ControlDir:
    return ControlDir(smtpd_root.path)


def ok(ctl: ControlDir, address: str, *, nolocal: bool = False) -> bool:
    return acceptable_rcpt_domain(ctl, address, nolocal=nolocal)


def test_domain_suffixes() -> None:
    assert list(domain_suffixes("a.b.c")) == ["a.b.c", ".b.c", ".c"]
    assert list(domain_suffixes("example.com.")) == ["example.com.", ".com.", "."]
    assert list(domain_suffixes("")) == []


# -- qmail-smtpd(8), ACCEPTED DOMAINS on the pure decision ----------------------------------------


def test_check_8_listed_domains_and_subdomains(ctl: ControlDir) -> None:
    assert ok(ctl, "alice@example.org")
    assert ok(ctl, "u@a.example.net")
    assert not ok(ctl, "u@example.net")  # .example.net matches subdomains only


def test_check_9_and_13_foreign_domains_refused(ctl: ControlDir) -> None:
    assert not ok(ctl, "victim@elsewhere.test")
    assert not ok(ctl, "victim%elsewhere.test@relay2.test")


def test_check_16_domain_is_after_the_last_at(ctl: ControlDir) -> None:
    assert not ok(ctl, "victim@example.org@elsewhere.test")
    assert not ok(ctl, "alice@example.org@elsewhere.test")  # <"alice@example.org"@elsewhere.test> unquoted
    assert ok(ctl, "victim@elsewhere.test@example.org")


def test_check_17_trailing_dot_not_stripped(ctl: ControlDir) -> None:
    assert not ok(ctl, "victim@elsewhere.test.")
    assert not ok(ctl, "alice@example.org.")


def test_check_19_no_at_is_acceptable(ctl: ControlDir) -> None:
    assert ok(ctl, "postmaster")


def test_check_33_backup_domain_is_accepted_but_not_local(ctl: ControlDir) -> None:
    assert ok(ctl, "u@backup.test")
    assert not Locals(ctl).contains_address("u@backup.test")
    assert Locals(ctl).contains_address("nobody@example.org")


def test_case_insensitive(ctl: ControlDir) -> None:
    assert ok(ctl, "Alice@EXAMPLE.Org")
    assert ok(ctl, "u@A.Example.NET")
    assert Locals(ctl).contains("MX.Example.ORG")


def test_nolocal_ignores_locals_only_for_acceptance(ctl: ControlDir) -> None:
    assert ok(ctl, "u@mx.example.org")  # only in locals
    assert not ok(ctl, "u@mx.example.org", nolocal=True)
    assert ok(ctl, "u@example.org", nolocal=True)  # also in rcpthosts
    assert Locals(ctl).contains("mx.example.org")  # RCPTCHECK still sees it as local


def test_missing_rcpthosts_accepts_only_locals(smtpd_root: QRoot, ctl: ControlDir) -> None:
    smtpd_root.control("rcpthosts", None)
    assert ok(ctl, "u@example.org")
    assert not ok(ctl, "u@a.example.net")
    assert not ok(ctl, "u@example.org", nolocal=True)  # never an open relay


def test_empty_domain_is_not_acceptable(ctl: ControlDir) -> None:
    assert not ok(ctl, "u@")


# -- rcpthosts.cdb / morercpthosts.cdb ----------------------------------------------------------


def test_morercpthosts_cdb_consulted_after_rcpthosts(smtpd_root: QRoot, ctl: ControlDir) -> None:
    write_cdb(ctl.path("morercpthosts.cdb"), [(b"more.test", b""), (b".sub.test", b"")])
    assert ok(ctl, "u@more.test", nolocal=True)
    assert ok(ctl, "u@x.SUB.test", nolocal=True)
    assert not ok(ctl, "u@sub.test", nolocal=True)
    assert ok(ctl, "u@example.org", nolocal=True)


def test_rcpthosts_cdb_replaces_both_files(smtpd_root: QRoot, ctl: ControlDir) -> None:
    write_cdb(ctl.path("morercpthosts.cdb"), [(b"more.test", b"")])
    write_cdb(ctl.path("rcpthosts.cdb"), [(b"cdb.test", b""), (b".example.com", b"")])
    rh = RcptHosts(ctl)
    assert rh.accepts("cdb.test")
    assert rh.accepts("a.b.example.com")
    assert not rh.accepts("example.org")  # only in the text rcpthosts
    assert not rh.accepts("more.test")  # morercpthosts.cdb ignored too
    assert ok(ctl, "u@example.org")  # still local
    ctl.path("rcpthosts.cdb").unlink()
    assert rh.accepts("example.org") and rh.accepts("more.test")


def test_corrupt_rcpthosts_cdb_is_a_temporary_error(ctl: ControlDir) -> None:
    ctl.path("rcpthosts.cdb").write_bytes(b"garbage")
    with pytest.raises(ConfigError):
        ok(ctl, "u@elsewhere.test", nolocal=True)


# -- locals / locals.cdb (qmail-send(8) PREPROCESSING step 3) -----------------------------------


def test_queue_check_19_locals_cdb_replaces_locals(smtpd_root: QRoot, ctl: ControlDir) -> None:
    smtpd_root.control("locals", "only-in-text.test")
    write_cdb(ctl.path("locals.cdb"), [(b"example.org", b"")])
    loc = Locals(ctl)
    assert loc.contains_address("JOE@EXAMPLE.ORG")
    assert not loc.contains("only-in-text.test")
    assert not loc.contains("mx.example.org")


def test_locals_default_is_me(smtpd_root: QRoot, ctl: ControlDir) -> None:
    smtpd_root.control("locals", None)
    loc = Locals(ctl)
    assert loc.contains("MX.example.org")
    assert not loc.contains("example.org")
    smtpd_root.control("me", None)
    with pytest.raises(ConfigError):
        loc.contains("mx.example.org")


def test_empty_locals_file_means_no_local_domain(smtpd_root: QRoot, ctl: ControlDir) -> None:
    smtpd_root.control("locals", b"# nothing\n")
    assert not Locals(ctl).contains("mx.example.org")


def test_unreadable_locals_cdb_is_an_error_never_not_local(ctl: ControlDir) -> None:
    ctl.path("locals.cdb").mkdir()
    with pytest.raises(ConfigError):
        Locals(ctl).contains("example.org")
    ctl.path("locals.cdb").rmdir()
    ctl.path("locals.cdb").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError):
        Locals(ctl).contains("example.org")


def test_locals_address_without_at_is_not_local(ctl: ControlDir) -> None:
    assert not Locals(ctl).contains_address("example.org")


def test_changes_are_seen_and_snapshots_notice_them(smtpd_root: QRoot, ctl: ControlDir) -> None:
    loc = Locals(ctl)
    before = ctl.snapshot(LOCALS_FILES + RCPTHOSTS_FILES)
    assert not loc.contains("new.test")
    smtpd_root.control("locals", "example.org\nnew.test")
    assert loc.contains("new.test")
    write_cdb(ctl.path("locals.cdb"), [(b"cdb.test", b"")])
    assert loc.contains("cdb.test") and not loc.contains("new.test")
    write_cdb(ctl.path("locals.cdb"), [(b"cdb2.test", b"")])
    assert loc.contains("cdb2.test") and not loc.contains("cdb.test")
    assert ctl.snapshot(LOCALS_FILES + RCPTHOSTS_FILES) != before


# -- address lists (qmail-smtpd(8), CONTROL FILES) ------------------------------------------------


def test_check_20_badmailfrom_forms() -> None:
    bad = ["@spam.test", "joe@"]
    assert address_in_list("a@SPAM.test", bad)
    assert address_in_list("joe@any.test", bad)
    assert address_in_list("JOE@any.test", bad)
    assert not address_in_list("a@notspam.test", bad)
    assert not address_in_list("joey@any.test", bad)
    assert address_in_list("ok@spam.test", ["ok@spam.test"])


def test_check_26_badrcptto() -> None:
    lst = AddressList.of(["trap@example.org", "abuse@"])
    assert lst.matches("trap@example.org")
    assert lst.matches("Abuse@example.org")
    assert not lst.matches("trap@example.net")
    assert not lst.matches("trap")


def test_check_27_relaymailfrom_ignores_user_form() -> None:
    entries = ["@partner.test", "b@"]
    assert address_in_list("a@partner.test", entries, allow_user_form=False)
    assert not address_in_list("b@other.test", entries, allow_user_form=False)
    assert address_in_list("b@other.test", entries, allow_user_form=True)


def test_last_at_decides_domain_and_user_forms() -> None:
    assert address_in_list("a@b@c.test", ["@c.test"])
    assert address_in_list("a@b@c.test", ["a@b@"])
    assert not address_in_list("a@b@c.test", ["@b@c.test", "a@"])
    assert address_in_list("noat", ["NOAT"])
    assert not address_in_list("noat", ["@noat"])


def test_address_list_from_control(smtpd_root: QRoot, ctl: ControlDir) -> None:
    assert not AddressList.from_control(ctl, "badmailfrom")
    smtpd_root.control("badmailfrom", "# c\n@SPAM.test  \n")
    lst = AddressList.from_control(ctl, "badmailfrom")
    assert lst and lst.matches("x@spam.test")


def test_check_34_goodmailaddr_user_form_and_catchall() -> None:
    assert good_mail_addr("postmaster@example.org", ["postmaster@"])
    assert good_mail_addr("zz@example.org", ["catchall@example.org"])
    assert good_mail_addr("ZZ@Example.ORG", ["CatchAll@example.org"])
    assert not good_mail_addr("zz@example.net", ["catchall@example.org"])
    assert not good_mail_addr("zz", ["catchall@zz"])


def test_goodmailaddr_dash_extension_forms_behind_flag() -> None:
    entries = AddressList.of(["a-b-catchall@x.test"])
    assert not entries.matches_good("a-b-c@x.test")
    assert entries.matches_good("a-b-c@x.test", dash_ext=True)
    assert entries.matches_good("A-B-anything-else@X.test", dash_ext=True)
    assert not entries.matches_good("a-bc@x.test", dash_ext=True)
    deep = ["a-b-c-d-e-catchall@x.test"]
    assert not good_mail_addr("a-b-c-d-e-f@x.test", deep, dash_ext=True)  # beyond 4 levels
    assert good_mail_addr("a-b-c-d-e-f@x.test", ["a-b-c-d-catchall@x.test"], dash_ext=True)


def test_catchall_forms_order() -> None:
    assert catchall_forms("aaaa-bbbb-cccc@d.example", dash_ext=True) == [
        "aaaa-bbbb-catchall@d.example",
        "aaaa-catchall@d.example",
        "catchall@d.example",
    ]
    assert catchall_forms("a-b-c-d-e-f@x", dash_ext=True) == [
        "a-b-c-d-catchall@x",
        "a-b-c-catchall@x",
        "a-b-catchall@x",
        "a-catchall@x",
        "catchall@x",
    ]
    assert catchall_forms("-a@x", dash_ext=True) == ["catchall@x"]
    assert catchall_forms("a-b@x", dash_ext=False) == ["catchall@x"]
    assert catchall_forms("nobody", dash_ext=True) == []

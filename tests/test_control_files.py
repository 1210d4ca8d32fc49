"""ControlDir: qmail's line/list/integer/map rules, defaults, change detection, unreadable files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qldap.control.cdb import write_cdb
from qldap.control.files import ControlDir, ascii_lower, find_root, path_signature
from qldap.errors import ConfigError
from tests.conftest import QRoot


@pytest.fixture
def ctl(qroot: QRoot) -> ControlDir:
    return ControlDir(qroot.path)


def test_line_first_line_trailing_blanks_stripped(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("smtpgreeting", "  Hello there \t\r\nsecond line\n")
    assert ctl.line("smtpgreeting") == "  Hello there"


def test_line_absent_gives_default_and_empty_file_gives_empty(qroot: QRoot, ctl: ControlDir) -> None:
    assert ctl.line("smtpgreeting") is None
    assert ctl.line("smtpgreeting", "dflt") == "dflt"
    qroot.control("smtpgreeting", b"")
    assert ctl.exists("smtpgreeting")
    assert ctl.line("smtpgreeting", "dflt") == ""


def test_lines_skip_comments_and_blanks_keep_leading_space(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("rcpthosts", "# comment\nexample.org  \n\n \t\n  .example.net\n#x\nlast")
    assert ctl.lines("rcpthosts") == ["example.org", "  .example.net", "last"]


def test_lines_absent_default_and_empty_file(qroot: QRoot, ctl: ControlDir) -> None:
    assert ctl.lines("badmailfrom") == []
    assert ctl.lines("badmailfrom", ["x"]) == ["x"]
    qroot.control("badmailfrom", b"\n# only a comment\n")
    assert ctl.lines("badmailfrom", ["x"]) == []


def test_lines_result_is_a_copy(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("locals", "a.test")
    got = ctl.lines("locals")
    got.append("mutated")
    assert ctl.lines("locals") == ["a.test"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42\n", 42), ("42 seconds\n", 42), ("12abc", 12), ("007", 7), ("0", 0)],
)
def test_integer_leading_digits(qroot: QRoot, ctl: ControlDir, text: str, expected: int) -> None:
    qroot.control("timeoutsmtpd", text)
    assert ctl.integer("timeoutsmtpd", 120) == expected


@pytest.mark.parametrize("text", ["junk", "-5", " 7", "", "\n12"])
def test_integer_without_leading_digits_keeps_default(qroot: QRoot, ctl: ControlDir, text: str) -> None:
    # qldap-control(5) conventions: "Integer files: leading digits; no digits = absent" (control_readint).
    qroot.control("timeoutsmtpd", text.encode())
    assert ctl.integer("timeoutsmtpd", 120) == 120


def test_integer_absent_default(ctl: ControlDir) -> None:
    assert ctl.integer("queuelifetime", 604800) == 604800


def test_boolean(qroot: QRoot, ctl: ControlDir) -> None:
    assert ctl.boolean("ldapcluster") is False
    assert ctl.boolean("ldaplocaldelivery", True) is True
    qroot.control("ldapcluster", "1")
    qroot.control("ldaplocaldelivery", "0")
    assert ctl.boolean("ldapcluster") is True
    assert ctl.boolean("ldaplocaldelivery", True) is False


def test_mapping_first_colon_lowercase_keys_last_wins(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control(
        "smtproutes",
        "Example.NET:relay.test:2525\n# c\nno colon here\n:fallback.test\nexample.net:second.test\n",
    )
    assert ctl.mapping("smtproutes") == {"example.net": "second.test", "": "fallback.test"}
    qroot.control("virtualdomains", "a.test:x:y")
    assert ctl.mapping("virtualdomains") == {"a.test": "x:y"}
    assert ctl.mapping("bigbrother") == {}


def test_raw_lines_keep_blank_lines(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("defaultdelivery", "./Maildir/\n\n|prog  \n")
    assert ctl.raw_lines("defaultdelivery") == ["./Maildir/", "", "|prog  "]
    assert ctl.raw_lines("aliasempty") is None
    qroot.control("quotawarning", b"")
    assert ctl.raw_lines("quotawarning") == []


def test_edits_are_seen_without_restart(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("locals", "a.test")
    assert ctl.lines("locals") == ["a.test"]
    qroot.control("locals", "a.test\nb.test")  # replaced: new inode
    assert ctl.lines("locals") == ["a.test", "b.test"]
    qroot.control("locals", None)
    assert ctl.lines("locals", ["dflt"]) == ["dflt"]


def test_in_place_same_size_edit_is_seen(qroot: QRoot, ctl: ControlDir) -> None:
    path = qroot.control("databytes", "1000")
    assert ctl.integer("databytes", 0) == 1000
    st = os.stat(path)
    path.write_text("2000\n")  # same inode, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert ctl.integer("databytes", 0) == 2000


def test_unchanged_file_is_not_reparsed(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("locals", "a.test")
    first = ctl.entry_set("locals")
    assert ctl.entry_set("locals") is first
    qroot.control("locals", "b.test")
    assert ctl.entry_set("locals") == frozenset({"b.test"})


def test_unreadable_file_is_config_error_not_default(qroot: QRoot, ctl: ControlDir) -> None:
    (qroot.control_dir / "rcpthosts").mkdir()  # exists, cannot be read as a file
    with pytest.raises(ConfigError, match="unable to read control/rcpthosts"):
        ctl.lines("rcpthosts")
    with pytest.raises(ConfigError):
        ctl.integer("rcpthosts", 5)
    with pytest.raises(ConfigError):
        ctl.line("rcpthosts", "dflt")


def test_me_required(qroot: QRoot, ctl: ControlDir) -> None:
    assert ctl.me() == "mx1.example.com"
    assert ctl.line_or_me("bouncehost") == "mx1.example.com"
    qroot.control("bouncehost", "bounce.example.com")
    assert ctl.line_or_me("bouncehost") == "bounce.example.com"
    qroot.control("me", None)
    with pytest.raises(ConfigError):
        ctl.me()
    qroot.control("me", b"\n")
    with pytest.raises(ConfigError):
        ctl.me()


def test_entry_set_is_ascii_lowercased(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("badrcptto", "Trap@Example.ORG\n@SPAM.test\nÉtoile@x")
    assert ctl.entry_set("badrcptto") == frozenset({"trap@example.org", "@spam.test", "Étoile@x"})
    assert ctl.entry_set("goodmailfrom") is None


def test_ascii_lower_leaves_non_ascii() -> None:
    assert ascii_lower("ÄBC.Example") == "Äbc.example"


def test_signature_and_snapshot_track_changes(qroot: QRoot, ctl: ControlDir) -> None:
    names = ("locals", "locals.cdb", "rcpthosts")
    before = ctl.snapshot(names)
    assert len(before) == 3
    assert ctl.snapshot(names) == before
    assert not ctl.exists("locals.cdb")
    write_cdb(ctl.path("locals.cdb"), [(b"a.test", b"")])
    after = ctl.snapshot(names)
    assert after != before
    assert after[0] == before[0] and after[2] == before[2]
    assert ctl.exists("locals.cdb")
    assert ctl.signature("locals.cdb") == path_signature(ctl.path("locals.cdb"))


def test_cdb_reader_is_shared_per_name(ctl: ControlDir) -> None:
    assert ctl.cdb("locals.cdb") is ctl.cdb("locals.cdb")
    assert ctl.cdb("locals.cdb") is not ctl.cdb("rcpthosts.cdb")
    assert ctl.cdb("locals.cdb").path == ctl.path("locals.cdb")


def test_find_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QLDAP_ROOT", raising=False)
    assert find_root() == Path("/var/qmail")
    monkeypatch.setenv("QLDAP_ROOT", str(tmp_path))
    assert find_root() == tmp_path
    assert find_root("/srv/q") == Path("/srv/q")


def test_text_is_the_raw_file_and_follows_edits(qroot: QRoot, ctl: ControlDir) -> None:
    assert ctl.text("quotawarning") is None
    path = qroot.control("quotawarning", "Please\n\nclean up.\n")
    assert ctl.text("quotawarning") == "Please\n\nclean up.\n"
    st = os.stat(path)
    path.write_text("PLEASE\n\nclean up.\n")  # same inode, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert ctl.text("quotawarning") == "PLEASE\n\nclean up.\n"
    qroot.control("quotawarning", None)
    assert ctl.text("quotawarning") is None


def _age_dir(path: Path) -> None:
    """Set the directory's times 10 s back, as if nothing had changed in it for a while."""
    old = os.stat(path).st_mtime - 10
    os.utime(path, (old, old))


def test_checked_view_sees_a_created_file_at_the_next_check(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("me", "mx.example.org\n")
    _age_dir(ctl.dir)
    view = ctl.checked()
    assert view is not ctl  # the directory is old enough: absent names are remembered
    assert view.line("smtpgreeting") is None and not view.exists("badmailfrom")
    assert ctl.checked().line("smtpgreeting") is None  # remembered, still right
    qroot.control("smtpgreeting", "hello\n")  # a new entry changes the directory's signature
    assert ctl.checked().line("smtpgreeting") == "hello"
    assert ctl.line("smtpgreeting") == "hello"


def test_checked_view_sees_an_edit_in_place_and_a_removal(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("databytes", "100\n")
    _age_dir(ctl.dir)
    assert ctl.checked().integer("databytes", 0) == 100
    with open(ctl.path("databytes"), "r+") as fh:  # same inode, no directory change
        fh.write("250\n")
    os.utime(ctl.path("databytes"), ns=(1, 1))  # even with an old mtime: the size changed
    _age_dir(ctl.dir)
    assert ctl.checked().integer("databytes", 0) == 250
    os.unlink(ctl.path("databytes"))
    assert ctl.checked().integer("databytes", 7) == 7


def test_checked_view_stats_a_dangling_symlink_every_time(ctl: ControlDir, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    os.symlink(target, ctl.path("smtpgreeting"))
    _age_dir(ctl.dir)
    assert ctl.checked().line("smtpgreeting") is None
    target.write_text("from the target\n")  # the control directory itself does not change
    assert ctl.checked().line("smtpgreeting") == "from the target"


def test_checked_does_not_trust_a_directory_changed_just_now(qroot: QRoot, ctl: ControlDir) -> None:
    qroot.control("me", "mx.example.org\n")  # the directory's mtime is now: a later change might share it
    assert ctl.checked() is ctl


def test_checked_view_cdb_known_absent_then_created(qroot: QRoot, ctl: ControlDir) -> None:
    from qldap.control.domains import Locals

    qroot.control("me", "mx.example.org\n")
    _age_dir(ctl.dir)
    assert Locals(ctl.checked()).contains("mx.example.org")  # no locals.cdb, no locals: me
    assert not Locals(ctl.checked()).contains("example.net")
    write_cdb(ctl.path("locals.cdb"), [(b"example.net", b"")])
    assert Locals(ctl.checked()).contains("example.net")
    assert not Locals(ctl.checked()).contains("mx.example.org")  # locals.cdb replaces me

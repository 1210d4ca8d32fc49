"""`.qmail` parsing and the file search chain (qmail-local(8), .QMAIL FILES)."""

from __future__ import annotations

import pytest

from qldap.errors import TemporaryFailure
from qldap.local.dotqmail import (
    FILE_WITH_X,
    PROG_WITH_X,
    Choice,
    Instruction,
    Kind,
    candidates,
    choose,
    owner_sender,
    parse,
    parse_default_delivery,
)


def test_line_kinds() -> None:
    q = parse("# c\n|/usr/bin/logger x  \n./Maildir/\n/var/mail/a\n&c@x.example\nd@y.example\n\n")
    assert q.instructions == (
        Instruction(Kind.PROGRAM, "/usr/bin/logger x"),
        Instruction(Kind.MAILDIR, "./Maildir/"),
        Instruction(Kind.MBOX, "/var/mail/a"),
        Instruction(Kind.FORWARD, "c@x.example"),
        Instruction(Kind.FORWARD, "d@y.example"),
    )
    assert q.is_list is False


def test_blank_first_line_is_an_error() -> None:
    with pytest.raises(TemporaryFailure) as exc:
        parse("\n./Maildir/\n")
    assert exc.value.text == "Uh-oh: first line of .qmail file is blank. (#4.2.1)"


def test_x_bit_and_list_forbid_files_and_programs() -> None:
    with pytest.raises(TemporaryFailure) as exc:
        parse("./Maildir/\n", executable=True)
    assert exc.value.text == FILE_WITH_X
    with pytest.raises(TemporaryFailure) as exc2:
        parse("+list\n|prog\n")
    assert exc2.value.text == PROG_WITH_X
    assert parse("+list\n&a@b\n").is_list is True


def test_search_chain() -> None:
    assert [c.name for c in candidates("-", "foo-bar")] == [
        ".qmail-foo-bar",
        ".qmail-foo-default",
        ".qmail-default",
    ]
    assert candidates("", "") == [Choice(".qmail", None)]
    assert [c.name for c in candidates("-", "Foo.Bar")] == [".qmail-foo:bar", ".qmail-default"]


def test_choose_reports_default_part() -> None:
    files = {".qmail-foo-default", ".qmail-default"}
    c = choose("-", "foo-bar-baz", files.__contains__)
    assert c == Choice(".qmail-foo-default", "bar-baz")
    assert choose("-", "zzz", set().__contains__) is None


def test_owner_sender() -> None:
    files = {".qmail-list-owner"}
    assert owner_sender("s@y", "joe", "x.example", "-", "list", files.__contains__) == "joe-owner@x.example"
    files.add(".qmail-list-owner-default")
    got = owner_sender("s@y", "joe", "x.example", "-", "list", files.__contains__)
    assert got == "joe-owner-@x.example-@[]"
    assert owner_sender("", "joe", "x.example", "-", "list", files.__contains__) == ""
    assert owner_sender("#@[]", "joe", "x.example", "-", "list", files.__contains__) == "#@[]"


def test_default_delivery_multiline() -> None:
    assert parse_default_delivery("./Maildir/\n|echo hi\n") == (
        Instruction(Kind.MAILDIR, "./Maildir/"),
        Instruction(Kind.PROGRAM, "echo hi"),
    )

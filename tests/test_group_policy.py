"""The pure decisions of qmail-group / qmail-secretary (qmail-group(8)): addresses, routes, checks."""

from __future__ import annotations

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.group import policy as p
from qldap.group.members import dedupe


@pytest.mark.parametrize(("raw", "want"), [("TRUE", True), ("true", True), ("1", True), ("FALSE", False),
                                           ("False", False), ("0", False), (None, False)])
def test_flags(raw: str | None, want: bool) -> None:
    assert p.parse_flag(raw) is want


@pytest.mark.parametrize("raw", ["yes", "", "2", "TRUE "])
def test_other_flag_values_are_temporary(raw: str) -> None:
    with pytest.raises(TemporaryFailure) as exc:
        p.parse_flag(raw)
    assert exc.value.text == "get ldap group entry: bad value"


def test_group_address_forms() -> None:
    a = p.group_address("list", "example.com", "")
    assert (a.base, a.action, a.arg, a.list_address) == ("list", None, "", "list@example.com")
    assert a.dt_line == b"Delivered-To: list@example.com\n"
    b = p.group_address("my-list-confirm-abc-def", "example.com", "confirm-abc-def")
    assert (b.base, b.action, b.arg) == ("my-list", "confirm", "abc-def")
    c = p.group_address("list-return-a=x", "h", "return-a=x")
    assert (c.base, c.action, c.arg) == ("list", "return", "a=x")
    assert p.group_address("list", "evil\nhost", "").dt_line == b"Delivered-To: list@evil_host\n"


@pytest.mark.parametrize(("local", "ext"), [("foo", "foo"), ("x-foo", "bar"), ("-foo", "foo")])
def test_no_list_name_without_base(local: str, ext: str) -> None:
    with pytest.raises(PermanentFailure) as exc:
        p.group_address(local, "h", ext)
    assert exc.value.text == p.NO_MAILBOX


def test_loop_check_looks_at_header_lines_only() -> None:
    dt = b"Delivered-To: list@example.com\n"
    assert p.is_looping(b"Received: x\n" + dt + b"Subject: s\n", dt)
    assert not p.is_looping(b"Subject: s\n\n" + dt, dt)  # in the body
    assert not p.is_looping(b"Delivered-To: list@example.com.evil\n", dt)
    assert not p.is_looping(b"delivered-to: list@example.com\n", dt)  # byte for byte, as the original


R = p.Route


@pytest.mark.parametrize(
    ("ext", "moderated", "admins", "want"),
    [
        ("", False, False, R.POST),
        ("confirm-h", False, False, R.SECRETARY),
        ("APPROVE-h", False, False, R.SECRETARY),
        ("reject-h", False, False, R.SECRETARY),
        ("moderators", True, False, R.MODERATORS),
        ("return-a=x", False, False, R.RETURN),
        ("return-", False, True, R.RETURN),
        ("bounce-h", False, True, R.BOUNCE_TO_ADMINS),
        ("bounce-h", True, False, R.BOUNCE_TO_SECRETARY),
    ],
)
def test_routes(ext: str, moderated: bool, admins: bool, want: p.Route) -> None:
    addr = p.group_address(f"list-{ext}" if ext else "list", "h", ext)
    assert p.route(addr, moderated=moderated, has_bounce_admins=admins) is want


@pytest.mark.parametrize(("ext", "moderated"), [("foo", True), ("moderators", False), ("moderators-x", True),
                                                ("bounce", True)])
def test_other_addresses_have_no_mailbox(ext: str, moderated: bool) -> None:
    with pytest.raises(PermanentFailure) as exc:
        p.route(p.group_address(f"list-{ext}", "h", ext), moderated=moderated, has_bounce_admins=True)
    assert exc.value.text == "Sorry, no mailbox here by that name. (#5.1.1)"


def test_senders() -> None:
    addr = p.group_address("list", "example.com", "")
    assert p.return_sender("list", "example.com") == "list-return-@example.com-@[]"
    assert p.distribution_sender(addr, "s@y", has_bounce_admins=True) == "list-return-@example.com-@[]"
    assert p.distribution_sender(addr, "s@y", has_bounce_admins=False) == "s@y"
    assert p.distribution_head(addr) == b"Delivered-To: list@example.com\nPrecedence: bulk\n"
    assert p.reply_address("list", "confirm", "ab", "h") == "list-confirm-ab@h"


def test_return_path_of_a_stored_post() -> None:
    assert p.sender_from_return_path(b"Return-Path: <s@y>\nDelivered-To: x\n\nbody\n") == "s@y"
    assert p.sender_from_return_path(b"return-path: <>\n\n") == ""
    assert p.sender_from_return_path(b"Return-Path: broken\nReturn-Path: <t@z>\n\n") == "t@z"
    assert p.sender_from_return_path(b"Subject: x\n\nReturn-Path: <s@y>\n") is None


def test_secretary_request_parsing() -> None:
    A = p.Action
    assert p.secretary_request("list", "H", "list", "h") == p.Request(A.NONE, "")
    assert p.secretary_request("List-Approve-abc", "h", "list", "h") == p.Request(A.APPROVE, "abc", "Approve")
    assert p.secretary_request("list-confirm-a-b", "h", "list", "h") == p.Request(A.CONFIRM, "a-b", "confirm")
    mods = p.Request(A.MODERATORS, "", "moderators")
    assert p.secretary_request("list-moderators", "h", "list", "h") == mods
    assert p.secretary_request("list-subscribe", "h", "list", "h") == p.Request(A.OTHER, "", "subscribe")
    assert p.secretary_request("listx", "h", "list", "h") is None
    for local, host in (("list", "other"), ("lis", "h"), ("other-confirm-x", "h")):
        with pytest.raises(PermanentFailure) as exc:
            p.secretary_request(local, host, "list", "h")
        assert exc.value.text == "I do not accept messages at this address (#5.1.1)"


@pytest.mark.parametrize(("sender", "text"), [("", p.BOUNCE_SENDER), ("#@[]", p.BOUNCE_SENDER),
                                               ("joe", p.NO_HOST_SENDER)])
def test_secretary_answers_real_senders_only(sender: str, text: str) -> None:
    with pytest.raises(PermanentFailure) as exc:
        p.check_sender(sender)
    assert exc.value.text == text
    p.check_sender("joe@host")


DT = p.secretary_dt_line("list", "h")


@pytest.mark.parametrize(
    ("head", "text"),
    [
        (b"Precedence: junk\n", "incoming message has bad precedence. (#5.7.2)"),
        (b"precedence:\tBulk-ish\n", "incoming message has bad precedence. (#5.7.2)"),
        (b"Precedence: list\n", "incoming message has bad precedence. (#5.7.2)"),
        (b"MAILING-LIST: contact x\n", "incoming message has Mailing-List. (#5.7.2)"),
        (DT, "this message is looping: it already has my Delivered-To line. (#5.4.6)"),
    ],
)
def test_secretary_header_checks(head: bytes, text: str) -> None:
    with pytest.raises(PermanentFailure) as exc:
        p.check_headers(b"Subject: s\n" + head + b"\nbody\n", DT)
    assert exc.value.text == text


def test_secretary_header_checks_pass_ordinary_mail() -> None:
    p.check_headers(b"Precedence: first-class\nSubject: s\n\nPrecedence: bulk\nMailing-List: x\n", DT)
    assert DT == b"Delivered-To: secretary for list@h\n"
    assert p.return_path_line("a\nb@c") == b"Return-Path: <a_b@c>\n"


def test_moderation_recipients() -> None:
    mods = ("m@x", "n@x")
    assert p.moderation_recipients("s@y", mods) == mods
    assert p.moderation_recipients("N@X", mods) == ("n@x",)
    assert p.moderation_recipients("s@y", ()) == ()


def test_dedupe_keeps_first_spelling_and_order() -> None:
    assert dedupe(["A@x", "b@x", "a@X", "", "c@x", "B@X"]) == ("A@x", "b@x", "c@x")

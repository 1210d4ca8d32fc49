"""Recipient rewriting (qmail-send(8), PREPROCESSING): every rewriting case at the pure
level."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.errors import TemporaryFailure
from qldap.reports import starting_delivery_line
from qldap.send.config import SendConfig
from qldap.send.preprocess import Channel, Rewritten, display_recipient, rewrite_recipient
from tests.conftest import QRoot

LOCAL, REMOTE = Channel.LOCAL, Channel.REMOTE


def config(qroot: QRoot, **files: str) -> SendConfig:
    for name, text in files.items():
        qroot.control(name, text)
    return SendConfig.from_control(ControlDir(qroot.path))


@pytest.mark.parametrize(
    ("files", "recipient", "expected"),
    [
        (
            {"virtualdomains": "example.org:vuser"},
            "joe@example.org",
            Rewritten(LOCAL, "vuser-joe@example.org"),
        ),
        (
            {"virtualdomains": "example.org:vuser\njoe@example.org:jj"},
            "joe@example.org",
            Rewritten(LOCAL, "jj-joe@example.org"),
        ),
        ({"virtualdomains": ".example.org:sub"}, "a@x.example.org", Rewritten(LOCAL, "sub-a@x.example.org")),
        ({"virtualdomains": ".example.org:sub"}, "a@example.org", Rewritten(REMOTE, "a@example.org")),
        (
            {"virtualdomains": ".example.org:sub\nx.example.org:"},
            "a@x.example.org",
            Rewritten(REMOTE, "a@x.example.org"),
        ),
        (
            {"locals": "example.org", "virtualdomains": "example.org:vuser"},
            "joe@example.org",
            Rewritten(LOCAL, "joe@example.org"),
        ),
        ({"percenthack": "gw.example"}, "u%dest.net@gw.example", Rewritten(REMOTE, "u@dest.net")),
    ],
)
def test_spec_table(qroot: QRoot, files: dict[str, str], recipient: str, expected: Rewritten) -> None:
    assert rewrite_recipient(recipient, config(qroot, **files)) == expected


def test_check_14_logged_rewritten_address(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains="example.org:vuser")
    result = rewrite_recipient("joe@example.org", cfg)
    line = starting_delivery_line(7, 4242, result.channel.value, result.address)
    assert line == "starting delivery 7: msg 4242 to local vuser-joe@example.org"


def test_check_15_user_entry_only_for_that_address(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains="example.org:vuser\njoe@example.org:jj")
    assert rewrite_recipient("joe@example.org", cfg).address == "jj-joe@example.org"
    assert rewrite_recipient("ann@example.org", cfg).address == "vuser-ann@example.org"


def test_check_16_dot_suffix(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains=".example.org:sub")
    assert rewrite_recipient("a@deep.x.example.org", cfg) == Rewritten(LOCAL, "sub-a@deep.x.example.org")
    assert rewrite_recipient("a@example.org", cfg).channel is REMOTE
    cfg2 = config(qroot, virtualdomains=".example.org:sub\nx.example.org:")
    assert rewrite_recipient("a@x.example.org", cfg2).channel is REMOTE
    assert rewrite_recipient("a@y.example.org", cfg2).channel is LOCAL


def test_check_17_envnoathost(qroot: QRoot) -> None:
    assert rewrite_recipient("bob", config(qroot, envnoathost="mail.example")) == Rewritten(
        REMOTE, "bob@mail.example"
    )
    # default: me, which is local by default
    qroot.control("envnoathost", None)
    assert rewrite_recipient("bob", config(qroot)) == Rewritten(LOCAL, "bob@mx1.example.com")


def test_check_18_percent_hack_loops(qroot: QRoot) -> None:
    cfg = config(qroot, percenthack="gw.example\nhop.example")
    assert rewrite_recipient("u%dest.net@gw.example", cfg) == Rewritten(REMOTE, "u@dest.net")
    assert rewrite_recipient("u%dest.net%hop.example@GW.example", cfg) == Rewritten(REMOTE, "u@dest.net")
    # the hack stops at a domain that is not listed
    assert rewrite_recipient("u%a%b.net@gw.example", cfg) == Rewritten(REMOTE, "u%a@b.net")
    # without the domain listed nothing happens
    assert rewrite_recipient("u%dest.net@other.example", cfg).address == "u%dest.net@other.example"


def test_keys_are_case_insensitive_and_address_is_kept(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains="example.org:vuser", locals="Local.Example")
    assert rewrite_recipient("Joe@EXAMPLE.org", cfg) == Rewritten(LOCAL, "vuser-Joe@EXAMPLE.org")
    assert rewrite_recipient("x@LOCAL.example", cfg) == Rewritten(LOCAL, "x@LOCAL.example")


def test_catch_all_and_probe_order(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains=":all\n.org:org")
    assert rewrite_recipient("a@b.example.org", cfg).address == "org-a@b.example.org"
    assert rewrite_recipient("a@b.example.net", cfg).address == "all-a@b.example.net"


def test_locals_check_failures_propagate(qroot: QRoot) -> None:
    def broken(_domain: str) -> bool:
        raise TemporaryFailure("unable to read control/locals.cdb")

    cfg = SendConfig.from_control(ControlDir(qroot.path), is_local=broken)
    with pytest.raises(TemporaryFailure):
        rewrite_recipient("a@b.example", cfg)


def test_check_35_bounce_display_strips_domain_prepends() -> None:
    vd = {"example.org": "vuser", ".sub.example": "s", "joe@user.example": "jj", "": "all", "rem.example": ""}
    assert display_recipient("vuser-joe@example.org", vd) == "joe@example.org"
    assert display_recipient("s-a@x.sub.example", vd) == "a@x.sub.example"
    assert display_recipient("all-a@any.example", vd) == "a@any.example"
    # virtual-user entries are not undone; other prefixes stay
    assert display_recipient("jj-joe@user.example", vd) == "jj-joe@user.example"
    assert display_recipient("other-joe@example.org", vd) == "other-joe@example.org"
    assert display_recipient("x-a@rem.example", vd) == "x-a@rem.example"
    assert display_recipient("noat", vd) == "noat"

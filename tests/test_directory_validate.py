"""Validation of directory values (qmail-local(8), QMAILUSER ATTRIBUTES)."""

from __future__ import annotations

import pytest

from qldap.directory.errors import IllegalValue, MissingAttribute
from qldap.directory.schema import DotMode
from qldap.directory.validate import (
    check_forward,
    check_path,
    check_program,
    check_user,
    parse_delivery_modes,
    parse_dot_mode,
    parse_id,
    parse_number,
    require,
    resolve_id,
)

ILLEGAL = "Illegal value in LDAP attribute. (#5.3.5)"
MISSING = "LDAP attribute is not given but mandatory. (#5.3.5)"


@pytest.mark.parametrize("value", ["alice", "a.b_c@d-e", "A9"])
def test_user_check_accepts(value: str) -> None:
    assert check_user(value) == value


@pytest.mark.parametrize("value", ["al/ice", "-alice", "", "#x", "a b", "a\nb", "ä", "a:b"])
def test_check29_user_check_refuses(value: str) -> None:
    with pytest.raises(IllegalValue) as info:
        check_user(value)
    assert info.value.text == ILLEGAL
    assert info.value.letter == "D"


@pytest.mark.parametrize("value", ["/var/mail/alice/", "./Maildir/", "alice", "/a/b:c=d#e@f_g-h", "/x/.../y"])
def test_path_check_accepts(value: str) -> None:
    assert check_path(value) == value


@pytest.mark.parametrize(
    "value",
    ["/var/mail/../../etc/", "/var/mail/alice/..", "..", "../x", "-x", "/a b", "/a;b", "/a$b", "/a\x80b",
     "/é", ""],
)
def test_check25_26_path_check_refuses(value: str) -> None:
    with pytest.raises(IllegalValue) as info:
        check_path(value)
    assert info.value.text == ILLEGAL


@pytest.mark.parametrize(
    "value", ["/usr/local/bin/filter -q", "/bin/prog\t'a' \"b\" +,-./:=@\\_#", "/usr/bin/procmail"]
)
def test_program_check_accepts(value: str) -> None:
    assert check_program(value) == value


@pytest.mark.parametrize(
    "value",
    ["/bin/rm -rf ~", "`id`", "$(id)", "a|b", "a;b", "a>/etc/x", "a&b", "a\n&evil@x.example", "a\rb",
     "-x", "a!b", "a%b", "a*b", "a<b", "a?b", "a[b]", "a^b", "a{b}", "a(b)"],
)  # fmt: skip
def test_check34_35_program_check_refuses(value: str) -> None:
    with pytest.raises(IllegalValue):
        check_program(value)


def test_forward_check() -> None:
    assert check_forward("carol@else.example") == "carol@else.example"
    for bad in ["a b@x", "a\r\nb@x", "a\nb", "", "a\tb", "é@x", "a\x7fb"]:
        with pytest.raises(IllegalValue):
            check_forward(bad)


def test_check21_numbers() -> None:
    assert parse_number("1000", "mailSizeMax") == 1000
    assert parse_number("0") == 0
    for bad in ["10k", "-1", " 5", "", "1.5", "٣"]:
        with pytest.raises(IllegalValue):
            parse_number(bad)


def test_check30_ids() -> None:
    assert parse_id("2000") == 2000
    assert parse_id("100") == 100 and parse_id("65535") == 65535
    for bad in ["99", "0", "65536", "2k", ""]:
        with pytest.raises(IllegalValue):
            parse_id(bad)


def test_check31_id_defaults() -> None:
    assert resolve_id(None, 3000) == 3000
    assert resolve_id("2000", 3000) == 2000
    with pytest.raises(MissingAttribute) as info:
        resolve_id(None, None)
    assert info.value.text == MISSING
    with pytest.raises(IllegalValue):
        resolve_id("99", 3000)


def test_require() -> None:
    assert require("x", "uid") == "x"
    with pytest.raises(MissingAttribute):
        require(None, "uid")


def test_check44_dot_mode() -> None:
    assert parse_dot_mode("Both") is DotMode.BOTH
    assert parse_dot_mode("ldaponly") is DotMode.LDAPONLY
    assert parse_dot_mode("NONE") is DotMode.NONE
    with pytest.raises(IllegalValue):
        parse_dot_mode("bogus")


def test_delivery_modes() -> None:
    m = parse_delivery_modes(["nolocal,noforward"])
    assert (m.nolocal, m.noforward, m.noprogram, m.reply) == (True, True, False, False)
    assert m.words == ("nolocal", "noforward")
    m = parse_delivery_modes(["NoProgram", "Reply", "sideways", " normal "])
    assert m.noprogram and m.reply and not m.nolocal
    assert m.unknown == ("sideways",)
    assert m.words == ("noprogram", "reply", "sideways", "normal")
    m = parse_delivery_modes(["forwardonly"])
    assert m.nolocal and m.noprogram and not m.noforward
    assert parse_delivery_modes(["nombox"]).nolocal
    empty = parse_delivery_modes([])
    assert not empty.given and empty.unknown == ()
    assert parse_delivery_modes(["local", "forward", "program", "noreply", "localdelivery"]).unknown == ()

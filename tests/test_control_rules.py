"""Per-client-IP rules (qmail-smtpd(8), CLIENT RULES): matching, order, variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from qldap.control.rules import EMPTY, Rule, RulesError, RulesFile, match, parse_rules


def key(rules_text: str, ip: str, host: str | None = None, info: str | None = None) -> str | None:
    rule = match(parse_rules(rules_text), ip, host, info)
    return None if rule is None else rule.address


def test_example_file() -> None:
    rules = parse_rules('127.:allow,RELAYCLIENT=""\n10.9.8.7:deny\n:allow,RCPTCHECK="",BLOCKRELAYPROBE=""\n')
    local = match(rules, "127.0.0.1")
    assert local is not None and local.allow and local.env == (("RELAYCLIENT", ""),)
    denied = match(rules, "10.9.8.7")
    assert denied is not None and not denied.allow
    other = match(rules, "192.0.2.10")
    assert other is not None and other.allow and other.env == (("RCPTCHECK", ""), ("BLOCKRELAYPROBE", ""))


def test_acceptance_9_and_11() -> None:
    rule = match(parse_rules('192.0.2.:allow,RELAYCLIENT=""'), "192.0.2.10")
    assert rule is not None and rule.environment({"RELAYCLIENT": "x", "A": "1"}) == {
        "RELAYCLIENT": "",
        "A": "1",
    }
    rules = parse_rules("192.0.2.:deny\n192.0.2.10:allow\n")
    served, refused = match(rules, "192.0.2.10"), match(rules, "192.0.2.11")
    assert served is not None and served.allow
    assert refused is not None and not refused.allow


def test_other_quote_characters() -> None:
    rule = match(parse_rules("1.2.3.4:allow,RELAYCLIENT=/@fix.me/,X=''\n"), "1.2.3.4")
    assert rule is not None and rule.env == (("RELAYCLIENT", "@fix.me"), ("X", ""))
    rule = match(parse_rules('1.2.3.4:allow,GREETING="a,b:c"'), "1.2.3.4")
    assert rule is not None and rule.env == (("GREETING", "a,b:c"),)


def test_ranges() -> None:
    text = "1.2.3.4-9:deny\n10.2-3.:deny\n:allow\n"
    assert key(text, "1.2.3.4") == "1.2.3.4" and key(text, "1.2.3.9") == "1.2.3.9"
    assert key(text, "1.2.3.10") == ""
    assert key(text, "10.3.7.7") == "10.3." and key(text, "10.4.7.7") == ""


def test_order_of_specificity() -> None:
    text = "\n".join(
        [
            ':allow,N="8"',
            '=:allow,N="7"',
            '=.test:allow,N="6a"',
            '=.client.test:allow,N="6b"',
            '192.:allow,N="5a"',
            '192.0.2.:allow,N="5b"',
            '=mx.client.test:allow,N="4"',
            '192.0.2.10:allow,N="3"',
            'joe@=mx.client.test:allow,N="2"',
            'joe@192.0.2.10:allow,N="1"',
        ]
    )
    rules = parse_rules(text)
    lines = text.split("\n")

    def n(ip: str, host: str | None = None, info: str | None = None) -> str:
        rule = match(rules, ip, host, info)
        assert rule is not None
        return rule.env[0][1]

    assert n("192.0.2.10", "mx.client.test", "joe") == "1"
    assert n("192.0.2.11", "MX.Client.Test", "joe") == "2"
    assert n("192.0.2.10", "mx.client.test") == "3"
    assert n("192.0.2.11", "mx.client.test") == "4"
    assert n("192.0.2.11", "other.client.test") == "5b"
    assert n("192.7.7.7", "other.client.test") == "5a"
    assert n("10.0.0.1", "other.client.test") == "6b"
    assert n("10.0.0.1", "x.test") == "6a"
    assert n("10.0.0.1", "x.example") == "7"
    assert n("10.0.0.1") == "8"
    assert len(lines) == 10


def test_cidr_ranked_by_prefix_length() -> None:
    text = '10.:allow,N="8"\n10.1.0.0/16:allow,N="16"\n10.1.2.0/25:allow,N="25"\n10.1.2.:allow,N="24"\n'
    rules = parse_rules(text)

    def n(ip: str) -> str | None:
        rule = match(rules, ip)
        return None if rule is None else rule.env[0][1]

    assert n("10.1.2.3") == "25"
    assert n("10.1.2.200") == "24"
    assert n("10.1.9.9") == "16"
    assert n("10.9.9.9") == "8"
    assert n("11.0.0.1") is None


def test_ipv6() -> None:
    text = '2001:db8::1:allow,N="exact"\n2001:db8::/32:allow,N="cidr"\n2001:db8:::allow,N="text"\n'
    rules = parse_rules(text)
    exact = match(rules, "2001:DB8:0::1")
    assert exact is not None and exact.env[0][1] == "exact"
    textual = match(rules, "2001:db8::2")  # prefix "2001:db8::" covers 112 bits, beats the /32
    assert textual is not None and textual.env[0][1] == "text"
    wide = match(rules, "2001:db8:5::2")
    assert wide is not None and wide.env[0][1] == "cidr"
    assert match(rules, "2001:db9::1") is None
    # "2001:db8::allow" means the prefix "2001:db8:" (the last ':' before allow separates)
    short = match(parse_rules("2001:db8::allow"), "2001:db8:5::1")
    assert short is not None and short.address == "2001:db8:"


def test_first_rule_for_an_address_wins() -> None:
    assert key("1.2.3.4:deny\n1.2.3.4:allow", "1.2.3.4") == "1.2.3.4"
    rule = match(parse_rules("1.2.3.4:deny\n1.2.3.4:allow"), "1.2.3.4")
    assert rule is not None and not rule.allow and rule.line == 1


def test_comments_and_blank_lines() -> None:
    assert parse_rules("# only comments\n\n   \n") == EMPTY
    assert match(EMPTY, "1.2.3.4") is None


@pytest.mark.parametrize(
    "line",
    [
        "1.2.3.4",
        "1.2.3.4:permit",
        "1.2.3.4:allowx",
        '1.2.3.4:allow,RELAYCLIENT="x',
        "1.2.3.4:allow,=x",
        "1.2.3.4:allow RELAYCLIENT",
        "1.2.3.9-4:deny",
        "1.2.3.300:deny",
        "1.2.x.4:deny",
        "10.0.0.0/33:deny",
        "0-255.0-255.0-255.:deny",
    ],
)
def test_unparsable(line: str) -> None:
    with pytest.raises(RulesError):
        parse_rules(f":allow\n{line}\n")


def test_rules_file_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    rf = RulesFile(path)
    assert rf.match("192.0.2.10") is None  # absent file: no rule, everyone allowed
    path.write_text("192.0.2.:deny\n")
    denied = rf.match("192.0.2.10")
    assert isinstance(denied, Rule) and not denied.allow
    path.write_text('192.0.2.:allow,RELAYCLIENT=""\n# bigger now\n')
    allowed = rf.match("192.0.2.10")
    assert allowed is not None and allowed.allow
    path.write_text("garbage\n")
    with pytest.raises(RulesError):
        rf.current()
    with pytest.raises(RulesError):  # still refused until the file changes
        rf.current()
    path.write_text(":allow\n")
    assert rf.current() != EMPTY


def test_rules_file_remembered_answers_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    path.write_text("192.0.2.:deny\n=mx.example.org:allow,RELAYCLIENT=\"\"\n")
    rf = RulesFile(path)
    first = rf.match("192.0.2.10")
    assert first is not None and not first.allow
    assert rf.match("192.0.2.10") is first  # asked again: the remembered rule
    named = rf.match("198.51.100.1", "MX.example.org")
    assert named is not None and named.allow
    assert rf.match("198.51.100.1") is None  # the host is part of what is remembered
    path.write_text("192.0.2.:allow,RBL=\"\"\n# edited\n")
    edited = rf.match("192.0.2.10")
    assert edited is not None and edited.allow and edited.env == (("RBL", ""),)
    path.write_text("garbage\n")
    with pytest.raises(RulesError):  # a broken file refuses even a client it matched before
        rf.match("192.0.2.10")

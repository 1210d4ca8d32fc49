"""pbsenv rules: what pbsadd carries and what pbscheck sets (at the environment level)."""

from __future__ import annotations

from qldap.pbs.env import AddEntries, EnvRule, add_entries, check_environment, parse_rules
from qldap.pbs.packets import Response, add_budget

ADDR = bytes([192, 0, 2, 10])


def test_rule_forms() -> None:
    assert parse_rules(["USER", "USER=TCPREMOTEINFO", "USER=TCPREMOTEINFO=[pbs]", "A=B=c=d", "X="]) == (
        EnvRule("USER"),
        EnvRule("USER", "TCPREMOTEINFO"),
        EnvRule("USER", "TCPREMOTEINFO", "[pbs]"),
        EnvRule("A", "B", "c=d"),
        EnvRule("X", ""),
    )


def test_pbsadd_entries_use_the_name_before_the_first_equals_sign() -> None:
    rules = parse_rules(["USER=TCPREMOTEINFO=[pbs]", "HOME", "UNSET"])
    got = add_entries(rules, {"USER": "joe", "HOME": "/tmp/h/joe"}, add_budget(4, 14))
    assert got == AddEntries((b"USER=joe", b"HOME=/tmp/h/joe", b"UNSET="))


def test_oversize_entries_are_skipped_and_reported() -> None:
    rules = parse_rules(["BIG", "USER", "HUGE"])
    env = {"BIG": "x" * 300, "USER": "joe", "HUGE": "y" * 250}
    got = add_entries(rules, env, budget=20)
    assert got == AddEntries((b"USER=joe",), ("BIG", "HUGE"))
    exact = add_entries(parse_rules(["USER"]), {"USER": "joe"}, budget=9)  # 1 + len("USER=joe")
    assert exact.entries == (b"USER=joe",)
    assert add_entries(parse_rules(["USER"]), {"USER": "joe"}, budget=8).skipped == ("USER",)


def test_pbscheck_hit_sets_relayclient_and_renames_check_41() -> None:
    rules = parse_rules(["USER=TCPREMOTEINFO=[pbs]"])
    hit = Response(ADDR, True, (b"USER=joe",))
    assert check_environment(hit, rules) == (("RELAYCLIENT", ""), ("TCPREMOTEINFO", "[pbs]joe"))


def test_pbscheck_miss_sets_nothing() -> None:
    assert check_environment(Response(ADDR, False), parse_rules(["USER"])) == ()


def test_first_renaming_line_wins_and_plain_lines_keep_the_name() -> None:
    rules = parse_rules(["USER", "USER=WHO", "USER=OTHER=x", "HOME", "EMPTY="])
    hit = Response(ADDR, True, (b"USER=joe", b"HOME=/h", b"EMPTY=v"))
    assert check_environment(hit, rules) == (
        ("RELAYCLIENT", ""),
        ("WHO", "joe"),
        ("HOME", "/h"),
        ("EMPTY", "v"),  # empty NEW keeps the name
    )


def test_names_outside_pbsenv_and_malformed_entries_are_ignored() -> None:
    rules = parse_rules(["USER"])
    hit = Response(ADDR, True, (b"LD_PRELOAD=/tmp/x.so", b"USER", b"=v", b"USER=a\0b", b"USER=ok"))
    assert check_environment(hit, rules) == (("RELAYCLIENT", ""), ("USER", "ok"))


def test_values_keep_arbitrary_bytes() -> None:
    rules = parse_rules(["USER"])
    got = check_environment(Response(ADDR, True, (b"USER=j\xf6e=1",)), rules)
    assert got[1] == ("USER", "j\udcf6e=1")
    assert got[1][1].encode("utf-8", "surrogateescape") == b"j\xf6e=1"

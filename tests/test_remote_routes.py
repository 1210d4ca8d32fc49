"""smtproutes and MX choice from DNS answers given as data (qmail-send(8), REMOTE
DELIVERY)."""

from __future__ import annotations

import random

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.remote.routes import (
    MX_ROUTE,
    AddressAnswer,
    Credentials,
    DnsStatus,
    MxAnswer,
    MxRecord,
    Route,
    SmtpRoutes,
    Target,
    address_queries,
    ip_literal,
    needs_mx_query,
    order_exchanges,
    parse_route,
    select_relay_targets,
    select_targets,
)
from qldap.reports import Letter, Report

OK = DnsStatus.OK
ME = frozenset({"127.0.0.1", "192.0.2.1"})


def addrs(*ips: str) -> AddressAnswer:
    return AddressAnswer(OK, ips)


def test_check_36_route_with_port_needs_no_mx() -> None:
    routes = SmtpRoutes.from_mapping({"example.net": "relay.test:2525"})
    route = routes.lookup("EXAMPLE.net")
    assert route == Route("relay.test", 2525)
    assert not needs_mx_query("example.net", route)
    assert address_queries("example.net", route, None) == ("relay.test",)
    targets = select_relay_targets(route, addrs("198.51.100.5"))
    assert targets == (Target("198.51.100.5", 0, 2525),)


def test_route_probe_order() -> None:
    routes = SmtpRoutes.from_mapping(
        {".example.org": "sub-relay", "b.example.org": "b-relay", "": "catchall", "x.example.org": ""}
    )
    assert routes.lookup("b.example.org").host == "b-relay"
    assert routes.lookup("a.b.example.org").host == "sub-relay"  # .example.org beats the catch-all
    assert routes.lookup("example.org").host == "catchall"  # not a dot-suffix of itself
    assert routes.lookup("x.example.org") == MX_ROUTE  # empty value: normal MX, stop probing
    assert routes.lookup("other.net").host == "catchall"
    assert SmtpRoutes().lookup("any.net") == MX_ROUTE


def test_route_values() -> None:
    assert parse_route("relay.test") == Route("relay.test", 25)
    assert parse_route("[192.0.2.9]:26") == Route("[192.0.2.9]", 26)
    assert parse_route("relay.test:junk") == Route("relay.test", 25)
    assert parse_route("relay.test:587 user@x.net pass word") == Route(
        "relay.test", 587, Credentials("user@x.net", "pass word")
    )
    assert parse_route("") == MX_ROUTE
    assert parse_route(":2525") == MX_ROUTE


def test_relay_ip_literal_needs_no_lookup() -> None:
    route = parse_route("[192.0.2.9]:26")
    assert address_queries("x.net", route, None) == ()
    assert select_relay_targets(route, None) == (Target("192.0.2.9", 0, 26),)


def test_relay_may_be_me() -> None:
    """With a relay there is no self-MX test (a local smarthost on loopback is fine)."""
    assert select_relay_targets(parse_route("127.0.0.1:2525"), None) == (Target("127.0.0.1", 0, 2525),)


def test_relay_lookup_failures() -> None:
    route = parse_route("relay.test")
    with pytest.raises(PermanentFailure, match=r"any host named relay\.test\. \(#5\.1\.2\)"):
        select_relay_targets(route, AddressAnswer(DnsStatus.NXDOMAIN))
    with pytest.raises(TemporaryFailure, match=r"\(#4\.1\.2\)"):
        select_relay_targets(route, AddressAnswer(DnsStatus.TEMPFAIL))


def test_check_37_mx_order_by_preference() -> None:
    mx = MxAnswer(OK, (MxRecord(20, "mx20.example.net"), MxRecord(10, "mx10.example.net")))
    assert address_queries("example.net", MX_ROUTE, mx) == ("mx20.example.net", "mx10.example.net")
    answers = {
        "mx10.example.net": addrs("198.51.100.10"),
        "mx20.example.net": addrs("198.51.100.20", "198.51.100.21"),
    }
    targets = select_targets("example.net", mx, answers, ME, random.Random(1))
    assert targets == (
        Target("198.51.100.10", 10),
        Target("198.51.100.20", 20),
        Target("198.51.100.21", 20),
    )


def test_equal_preferences_are_shuffled_with_the_injected_rng() -> None:
    records = [MxRecord(10, f"mx{i}.example.net") for i in range(6)] + [MxRecord(5, "first.example.net")]
    orders = {tuple(r.exchange for r in order_exchanges(records, random.Random(seed))) for seed in range(20)}
    assert all(order[0] == "first.example.net" for order in orders)
    assert len(orders) > 1  # different seeds give different orders among the preference-10 hosts
    again = order_exchanges(records, random.Random(3))
    assert again == order_exchanges(records, random.Random(3))


def test_no_mx_falls_back_to_a_with_preference_0() -> None:
    mx = MxAnswer(OK, ())
    assert address_queries("example.net", MX_ROUTE, mx) == ("example.net",)
    targets = select_targets("example.net", mx, {"example.net": addrs("198.51.100.3")}, ME, random.Random(0))
    assert targets == (Target("198.51.100.3", 0),)


def test_check_38_best_mx_is_me() -> None:
    mx = MxAnswer(OK, (MxRecord(10, "me.example.com"), MxRecord(20, "backup.example.net")))
    answers = {"me.example.com": addrs("192.0.2.1"), "backup.example.net": addrs("198.51.100.9")}
    with pytest.raises(PermanentFailure) as err:
        select_targets("example.com", mx, answers, ME, random.Random(0))
    report = Report.from_failure(err.value)
    assert report.letter is Letter.PERMANENT
    assert report.text == (
        "Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
        "it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n"
    )


def test_only_mx_better_than_me_are_kept() -> None:
    mx = MxAnswer(
        OK, (MxRecord(5, "primary.example.net"), MxRecord(10, "me.example.com"), MxRecord(20, "z.net"))
    )
    answers = {
        "primary.example.net": addrs("198.51.100.1"),
        "me.example.com": addrs("192.0.2.1"),
        "z.net": addrs("198.51.100.2"),
    }
    assert select_targets("example.com", mx, answers, ME, random.Random(0)) == (Target("198.51.100.1", 5),)


def test_zero_address_counts_as_me() -> None:
    with pytest.raises(PermanentFailure, match=r"#5\.4\.6"):
        select_targets(
            "example.com", MxAnswer(OK, ()), {"example.com": addrs("0.0.0.0")}, frozenset(), random.Random()
        )


def test_check_47_nxdomain_and_servfail() -> None:
    nx = MxAnswer(DnsStatus.NXDOMAIN)
    assert address_queries("nowhere.invalid", MX_ROUTE, nx) == ("nowhere.invalid",)
    with pytest.raises(PermanentFailure) as perm:
        select_targets(
            "nowhere.invalid", nx, {"nowhere.invalid": AddressAnswer(DnsStatus.NXDOMAIN)}, ME, random.Random()
        )
    assert perm.value.text == "Sorry, I couldn't find any host named nowhere.invalid. (#5.1.2)"
    with pytest.raises(PermanentFailure, match=r"#5\.1\.2"):
        select_targets("nowhere.invalid", nx, {}, ME, random.Random())

    servfail = MxAnswer(DnsStatus.TEMPFAIL)
    assert address_queries("broken.test", MX_ROUTE, servfail) == ()
    with pytest.raises(TemporaryFailure) as temp:
        select_targets("broken.test", servfail, {}, ME, random.Random())
    assert Report.from_failure(temp.value) == Report(
        Letter.TEMPORARY, "Sorry, I couldn't find any host by that name. (#4.1.2)\n"
    )


def test_mx_names_without_addresses() -> None:
    mx = MxAnswer(OK, (MxRecord(10, "gone.example.net"),))
    with pytest.raises(PermanentFailure) as err:
        select_targets(
            "example.net", mx, {"gone.example.net": AddressAnswer(DnsStatus.NXDOMAIN)}, ME, random.Random()
        )
    assert err.value.text == "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)"


def test_soft_failure_of_one_mx_is_tolerated_when_another_has_addresses() -> None:
    mx = MxAnswer(OK, (MxRecord(10, "a.example.net"), MxRecord(20, "b.example.net")))
    answers = {"a.example.net": AddressAnswer(DnsStatus.TEMPFAIL), "b.example.net": addrs("198.51.100.7")}
    assert select_targets("example.net", mx, answers, ME, random.Random()) == (Target("198.51.100.7", 20),)
    with pytest.raises(TemporaryFailure, match=r"#4\.1\.2"):
        select_targets(
            "example.net", mx, {"a.example.net": AddressAnswer(DnsStatus.TEMPFAIL)}, ME, random.Random()
        )


def test_ip_literal_domains() -> None:
    assert ip_literal("[198.51.100.4]") == "198.51.100.4"
    assert ip_literal("198.51.100.4") == "198.51.100.4"
    assert ip_literal("[IPv6:2001:db8::1]") == "2001:db8::1"
    assert ip_literal("example.net") is None
    assert not needs_mx_query("[198.51.100.4]", MX_ROUTE)
    assert select_targets("[198.51.100.4]", None, {}, ME, random.Random()) == (Target("198.51.100.4", 0),)

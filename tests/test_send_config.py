"""SendConfig from real control files: defaults, overrides, limits and rejected values."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.errors import ConfigError, TemporaryFailure
from qldap.remote.routes import Route
from qldap.send.config import SendConfig
from tests.conftest import QRoot


def load(qroot: QRoot) -> SendConfig:
    return SendConfig.from_control(ControlDir(qroot.path))


def test_defaults(qroot: QRoot) -> None:
    cfg = load(qroot)
    assert cfg.me == "mx1.example.com"
    assert cfg.envnoathost == "mx1.example.com"
    assert (cfg.concurrencylocal, cfg.concurrencyremote) == (10, 20)
    assert (cfg.local_slots, cfg.remote_slots) == (10, 20)
    assert cfg.queuelifetime == 604800
    assert cfg.bouncefrom == "MAILER-DAEMON"
    assert cfg.bouncehost == cfg.doublebouncehost == cfg.helohost == "mx1.example.com"
    assert cfg.doublebounceto == "postmaster"
    assert cfg.doublebounce_recipient == "postmaster@mx1.example.com"
    assert cfg.bouncemaxbytes == 0
    assert cfg.custombouncetext is None
    assert (cfg.timeoutconnect, cfg.timeoutremote) == (60, 120)
    assert cfg.bind_address() == "0.0.0.0"
    assert cfg.smtpclustercookie == ""
    assert not cfg.ldapcluster
    assert cfg.cluster_hosts == frozenset({"mx1.example.com"})
    # locals defaults to me
    assert cfg.is_local("MX1.example.com")
    assert not cfg.is_local("example.org")


def test_overrides(qroot: QRoot) -> None:
    values = {
        "envnoathost": "mail.example",
        "percenthack": "GW.example\n# comment\n",
        "locals": "example.com\nlocalhost",
        "virtualdomains": "Example.ORG:vuser\n",
        "concurrencylocal": "2",
        "concurrencyremote": "900",
        "queuelifetime": "1000",
        "bouncefrom": "bounces",
        "bouncehost": "bh.example",
        "doublebouncehost": "dbh.example",
        "doublebounceto": "admin",
        "bouncemaxbytes": "100",
        "helohost": "helo.example",
        "timeoutconnect": "5",
        "timeoutremote": "7",
        "outgoingip": "127.0.0.2",
        "smtproutes": "example.net:relay.test:2525",
        "smtpclustercookie": "x" * 40 + "\nsecond line",
        "ldapcluster": "1",
        "ldapclusterhosts": "mx2.example.com\nMX3.example.com",
        "qmqpservers": "10.0.0.1\n10.0.0.2",
    }
    for name, text in values.items():
        qroot.control(name, text)
    cfg = load(qroot)
    assert cfg.envnoathost == "mail.example"
    assert cfg.percenthack == frozenset({"gw.example"})
    assert cfg.is_local("LOCALHOST") and not cfg.is_local("mx1.example.com")
    assert dict(cfg.virtualdomains) == {"example.org": "vuser"}
    assert (cfg.concurrencylocal, cfg.concurrencyremote) == (2, 500)  # capped by the spawner limit
    assert cfg.queuelifetime == 1000
    assert (cfg.bouncefrom, cfg.bouncehost, cfg.doublebouncehost) == ("bounces", "bh.example", "dbh.example")
    assert cfg.doublebounce_recipient == "admin@dbh.example"
    assert cfg.bouncemaxbytes == 100
    assert cfg.helohost == "helo.example"
    assert (cfg.timeoutconnect, cfg.timeoutremote) == (5, 7)
    assert cfg.bind_address() == "127.0.0.2"
    assert cfg.smtproutes.lookup("example.net") == Route("relay.test", 2525)
    assert cfg.smtpclustercookie == "x" * 32
    assert cfg.ldapcluster
    assert cfg.cluster_hosts == frozenset({"mx1.example.com", "mx2.example.com", "mx3.example.com"})
    assert cfg.qmqpservers == ("10.0.0.1", "10.0.0.2")


def test_hold_files_act_as_concurrency_zero(qroot: QRoot) -> None:
    qroot.control("holdremote", "1")
    cfg = load(qroot)
    assert (cfg.local_slots, cfg.remote_slots) == (10, 0)
    qroot.control("concurrencylocal", "0")
    assert load(qroot).local_slots == 0


def test_empty_doublebounceto_discards(qroot: QRoot) -> None:
    qroot.control("doublebounceto", "\n")
    assert load(qroot).doublebounce_recipient == "@mx1.example.com"


def test_custombouncetext(qroot: QRoot) -> None:
    qroot.control("custombouncetext", "Contact support@example.com\nor call 555")
    assert load(qroot).custombouncetext == "Contact support@example.com\nor call 555\n"
    qroot.control("custombouncetext", "para one\n\npara two\n")
    with pytest.raises(ConfigError, match="empty line"):
        load(qroot)


def test_bad_outgoingip_is_a_delivery_deferral(qroot: QRoot) -> None:
    qroot.control("outgoingip", "not-an-ip")
    with pytest.raises(TemporaryFailure) as err:
        load(qroot).bind_address()
    assert err.value.text == "invalid ipaddr in control/outgoingip (#4.3.0)"


def test_locals_cdb_needs_the_lookup_seam(qroot: QRoot) -> None:
    qroot.control("locals.cdb", b"\0" * 2048)
    with pytest.raises(ConfigError, match=r"locals\.cdb"):
        load(qroot)
    cfg = SendConfig.from_control(ControlDir(qroot.path), is_local=lambda d: d == "cdb.example")
    assert cfg.is_local("cdb.example")


def test_missing_me_is_a_config_error(qroot: QRoot) -> None:
    qroot.control("me", None)
    with pytest.raises(ConfigError):
        load(qroot)

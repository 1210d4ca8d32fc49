"""LdapConfig from control files (qldap-control(5), LDAP) and the backend choice of open_directory."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.directory.config import LdapConfig, ServerAddress, parse_server
from qldap.directory.ldif import LdifSearcher
from qldap.directory.open import open_directory
from qldap.errors import ConfigError
from tests.conftest import QRoot


def test_defaults(qroot: QRoot) -> None:
    cfg = LdapConfig.from_control(ControlDir(qroot.path))
    assert cfg.servers == ()
    assert (cfg.basedn, cfg.objectclass, cfg.login, cfg.password) == ("", "", "", "")
    assert cfg.timeout == 30 and not cfg.rebind and cfg.local_delivery and not cfg.cluster
    assert cfg.default_dot_mode == "ldaponly"
    assert cfg.message_store is None and cfg.ldap_uid is None and cfg.ldap_gid is None
    assert (cfg.quota_size, cfg.quota_count, cfg.cache_ttl) == (0, 0, 0)
    assert cfg.dash_ext and dict(cfg.alias_domains) == {}
    assert cfg.me == "mx1.example.com"


def test_every_file(qroot: QRoot) -> None:
    files = {
        "ldapserver": "ldap1.example.com\nldap2.example.com:3389\nldap://ldap3.example.com:1389\n[::1]:636\n",
        "ldapbasedn": "dc=example,dc=com",
        "ldapobjectclass": "qmailUser",
        "ldaplogin": "cn=mail,dc=example,dc=com",
        "ldappassword": "pw",
        "ldapgrouplogin": "cn=group,dc=example,dc=com",
        "ldapgrouppassword": "gpw",
        "ldaptimeout": "5",
        "ldaprebind": "1",
        "ldaplocaldelivery": "0",
        "ldapcluster": "1",
        "ldapclusterhosts": "MX2.example.com\nmx3.example.com\n",
        "ldapdefaultdotmode": "dotonly",
        "ldapmessagestore": "/var/mail",
        "ldapuid": "3000",
        "ldapgid": "3001",
        "defaultquotasize": "1000000",
        "defaultquotacount": "1000",
        "aliasdomains": "mail.example.org:example.org\n",
        "ldapcachettl": "60",
        "ldapdashext": "0",
    }
    for name, text in files.items():
        qroot.control(name, text)
    cfg = LdapConfig.from_control(ControlDir(qroot.path))
    assert cfg.servers == (
        ServerAddress("ldap1.example.com", 389),
        ServerAddress("ldap2.example.com", 3389),
        ServerAddress("ldap3.example.com", 1389),
        ServerAddress("::1", 636),
    )
    assert cfg.basedn == "dc=example,dc=com" and cfg.objectclass == "qmailUser"
    assert (cfg.login, cfg.password) == ("cn=mail,dc=example,dc=com", "pw")
    assert (cfg.group_login, cfg.group_password) == ("cn=group,dc=example,dc=com", "gpw")
    g = cfg.with_group_credentials()
    assert (g.login, g.password) == ("cn=group,dc=example,dc=com", "gpw")
    assert cfg.timeout == 5 and cfg.rebind and not cfg.local_delivery and cfg.cluster
    assert cfg.is_this_host("mx2.EXAMPLE.com") and cfg.is_this_host("MX1.example.com")
    assert not cfg.is_this_host("mx9.example.com")
    assert cfg.default_dot_mode == "dotonly"
    assert cfg.message_store == "/var/mail/"
    assert (cfg.ldap_uid, cfg.ldap_gid) == (3000, 3001)
    assert (cfg.quota_size, cfg.quota_count) == (1000000, 1000)
    assert dict(cfg.alias_domains) == {"mail.example.org": "example.org"}
    assert cfg.cache_ttl == 60 and not cfg.dash_ext
    assert "pw" not in repr(cfg).replace("password=", "")


def test_group_credentials_fall_back_to_ldaplogin(qroot: QRoot) -> None:
    qroot.control("ldaplogin", "cn=mail")
    qroot.control("ldappassword", "pw")
    cfg = LdapConfig.from_control(ControlDir(qroot.path))
    assert (cfg.group_login, cfg.group_password) == ("cn=mail", "pw")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ldapuid", "99"),
        ("ldapgid", "65536"),
        ("ldapmessagestore", "var/mail"),
        ("ldapserver", "host:notaport"),
        ("ldapserver", "http://host"),
        ("ldapserver", "ldapi://relative/path"),
        ("ldaptlscacert", "relative/ca.pem"),
        ("ldapserver", "host:0"),
    ],
)
def test_illegal_values_are_config_errors(qroot: QRoot, name: str, text: str) -> None:
    qroot.control(name, text)
    with pytest.raises(ConfigError):
        LdapConfig.from_control(ControlDir(qroot.path))


def test_parse_server_forms() -> None:
    assert parse_server("h") == ServerAddress("h", 389)
    assert parse_server("h:10389") == ServerAddress("h", 10389)
    assert parse_server("ldap://h") == ServerAddress("h", 389)
    assert str(parse_server("LDAP://h:7")) == "h:7"


def test_open_directory_picks_the_backend(qroot: QRoot) -> None:
    ctl = ControlDir(qroot.path)
    with pytest.raises(ConfigError, match="ldapserver"):
        open_directory(ctl)
    (qroot.path / "directory.ldif").write_text("dn: dc=example,dc=com\nobjectClass: top\n")
    d = open_directory(ctl)
    assert isinstance(d.searcher, LdifSearcher) and d.cache is None
    qroot.control("ldapserver", "127.0.0.1:1")
    qroot.control("ldapcachettl", "5")
    d = open_directory(ctl)
    assert type(d.searcher).__name__ == "WireSearcher"  # the lean client is the default
    assert d.cache is not None and d.cache.ttl == 5

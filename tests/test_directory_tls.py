"""LDAP over TLS and Unix sockets against the real slapd (docs/operations.md, "LDAP over TLS").

The server of the ``tls_lab`` fixture listens on ldap://, ldaps:// and ldapi:// with a certificate for
``localhost`` only, signed by a CA the fixture generated.  Each case configures a qmail root through
its control files and asks through ``open_directory`` as the daemons do: ldaps, StartTLS and ldapi
find alice; an unknown CA, a wrong host name, a server that refuses StartTLS, TLS against a plain
port and a missing client certificate are outages — Unavailable with a temporary (#4.x.x) text, a
log line saying why, and failover to the next server — never NotFound (which would bounce).  End to
end: qmail-smtpd with RCPTCHECK answers 451, and a local delivery defers (Z).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from qldap_slapd import Slapd

from qldap.control.files import ControlDir
from qldap.directory.base import Found, Unavailable
from qldap.directory.config import DEFAULT_LDAPI_PATH, Scheme, ServerAddress, TlsSettings, parse_server
from qldap.directory.errors import ServerUnreachable
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.directory.wire import WireSearcher
from qldap.errors import ConfigError
from qldap.local.spawn import LocalSpawner, Report
from qldap.queue.layout import create_queue
from qldap.smtpd.dns import StaticResolver
from tests.conftest import QRoot
from tests.e2e.smtpd import Client, ServerThread, options
from tests.fixtures_slapd import SlapdFactory, TlsLab

BASE = "dc=example,dc=com"


def configure(qroot: QRoot, *servers: str, ca: Path | None = None, starttls: bool = False,
              cert: Path | None = None, key: Path | None = None) -> ControlDir:
    qroot.control("ldapserver", "\n".join(servers))
    qroot.control("ldapbasedn", BASE)
    qroot.control("ldaptimeout", "30")
    qroot.control("ldaptlscacert", None if ca is None else str(ca))
    qroot.control("ldapstarttls", "1" if starttls else None)
    qroot.control("ldaptlscert", None if cert is None else str(cert))
    qroot.control("ldaptlskey", None if key is None else str(key))
    return ControlDir(qroot.path)


def lookup(ctl: ControlDir) -> tuple[object, list[str], Directory]:
    lines: list[str] = []
    d = open_directory(ctl, log=lines.append)
    return d.find_recipient("alice@example.com"), lines, d


def _sockets(d: Directory) -> list[object]:
    searcher = d.searcher
    assert isinstance(searcher, WireSearcher)
    return [c._sock for c in searcher._idle]


# -- what works --------------------------------------------------------------------------------------


def test_ldaps_with_the_test_ca(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldaps://localhost:{tls_lab.slapd.tls_port}", ca=tls_lab.files.ca)
    result, lines, d = lookup(ctl)
    assert isinstance(result, Found) and result.entry.dn == f"uid=alice,{BASE}"
    assert lines == []
    [sock] = _sockets(d)
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")


def test_starttls_upgrades_a_plain_port(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldap://localhost:{tls_lab.slapd.port}", ca=tls_lab.files.ca, starttls=True)
    result, lines, d = lookup(ctl)
    assert isinstance(result, Found) and lines == []
    [sock] = _sockets(d)
    assert isinstance(sock, ssl.SSLSocket)
    ctl = configure(qroot, f"localhost:{tls_lab.slapd.port}", ca=tls_lab.files.ca)  # no ldapstarttls
    result, _, d = lookup(ctl)
    assert isinstance(result, Found) and not isinstance(_sockets(d)[0], ssl.SSLSocket)


def test_ldapi_unix_socket(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, tls_lab.slapd.ldapi_url)
    result, lines, _ = lookup(ctl)
    assert isinstance(result, Found) and lines == []


def test_client_certificate_when_the_server_demands_one(
    qroot: QRoot, tls_lab: TlsLab, slapd_factory: SlapdFactory
) -> None:
    strict: Slapd = slapd_factory(tls=tls_lab.files, verify_client="demand")
    url = f"ldaps://localhost:{strict.tls_port}"
    result, lines, _ = lookup(configure(qroot, url, ca=tls_lab.files.ca))
    assert isinstance(result, Unavailable) and len(lines) == 1 and "TLS" in lines[0]
    ctl = configure(qroot, url, ca=tls_lab.files.ca, cert=tls_lab.client.cert, key=tls_lab.client.key)
    result, lines, _ = lookup(ctl)
    assert isinstance(result, Unavailable) is False and lines == []


# -- what must fail, temporarily ------------------------------------------------------------------------


def _assert_outage(result: object, lines: list[str], why: str) -> None:
    assert isinstance(result, Unavailable), result
    assert isinstance(result.error, ServerUnreachable)
    assert result.error.text == "Unable to contact LDAP server. (#4.4.3)"
    assert why in result.error.detail
    assert len(lines) == 1 and lines[0].startswith("warning: LDAP server ") and why in lines[0], lines


def test_unknown_ca_is_an_outage_with_a_clear_log_line(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldaps://localhost:{tls_lab.slapd.tls_port}", ca=tls_lab.other_ca)
    result, lines, _ = lookup(ctl)
    _assert_outage(result, lines, "TLS certificate verification failed")
    assert "ldaptlscacert" in lines[0]


def test_wrong_host_name_is_an_outage(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldaps://127.0.0.1:{tls_lab.slapd.tls_port}", ca=tls_lab.files.ca)
    result, lines, _ = lookup(ctl)
    _assert_outage(result, lines, "certificate is not valid for '127.0.0.1'")
    ctl = configure(qroot, f"127.0.0.1:{tls_lab.slapd.port}", ca=tls_lab.files.ca, starttls=True)
    result, lines, _ = lookup(ctl)
    _assert_outage(result, lines, "certificate is not valid for '127.0.0.1'")


def test_the_same_failure_is_logged_once_per_minute(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldaps://localhost:{tls_lab.slapd.tls_port}", ca=tls_lab.other_ca)
    _, lines, d = lookup(ctl)
    for _ in range(3):
        assert isinstance(d.find_recipient("alice@example.com"), Unavailable)
    assert len(lines) == 1


def test_starttls_refused_by_a_server_without_tls(qroot: QRoot, slapd: Slapd, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"localhost:{slapd.port}", ca=tls_lab.files.ca, starttls=True)
    result, lines, _ = lookup(ctl)
    _assert_outage(result, lines, "StartTLS refused")


def test_ldaps_against_a_plain_ldap_port(qroot: QRoot, tls_lab: TlsLab) -> None:
    ctl = configure(qroot, f"ldaps://localhost:{tls_lab.slapd.port}", ca=tls_lab.files.ca)
    result, lines, _ = lookup(ctl)
    _assert_outage(result, lines, "TLS handshake failed")


def test_failover_from_a_bad_tls_server_to_a_good_one(qroot: QRoot, tls_lab: TlsLab) -> None:
    port = tls_lab.slapd.tls_port
    ctl = configure(qroot, f"ldaps://127.0.0.1:{port}", f"ldaps://localhost:{port}", ca=tls_lab.files.ca)
    result, lines, _ = lookup(ctl)
    assert isinstance(result, Found)
    assert len(lines) == 1 and f"ldaps://127.0.0.1:{port}" in lines[0] and "not valid for" in lines[0]


def test_missing_ca_file_is_a_configuration_error(qroot: QRoot, tls_lab: TlsLab, tmp_path: Path) -> None:
    ctl = configure(qroot, f"ldaps://localhost:{tls_lab.slapd.tls_port}", ca=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="ldaptlscacert"):
        open_directory(ctl)
    qroot.control("ldaptlscacert", "relative/ca.pem")
    with pytest.raises(ConfigError, match="not an absolute path"):
        open_directory(ControlDir(qroot.path))
    # a CA file that only ldapi/ldap servers would not use is not even opened
    ctl = configure(qroot, tls_lab.slapd.ldapi_url, ca=tmp_path / "nope.pem")
    assert isinstance(open_directory(ctl).find_recipient("alice@example.com"), Found)


# -- end to end: never a bounce -------------------------------------------------------------------------


def test_smtpd_rcptcheck_answers_451_when_tls_fails(qroot: QRoot, tls_lab: TlsLab) -> None:
    qroot.control("me", "mx.example.com")
    qroot.control("locals", "example.com")
    qroot.control("rcpthosts", "example.com")
    create_queue(qroot.path)
    url = f"ldaps://localhost:{tls_lab.slapd.tls_port}"
    wrong_name = f"ldaps://127.0.0.1:{tls_lab.slapd.tls_port}"  # the certificate names localhost only
    for server, ca, expected in ((url, tls_lab.other_ca, "451 "), (wrong_name, tls_lab.files.ca, "451 "),
                                 (url, tls_lab.files.ca, "250 ")):  # fmt: skip
        configure(qroot, server, ca=ca)
        st = ServerThread(options(qroot.path, {"RCPTCHECK": "", "LOGLEVEL": "1"}), StaticResolver()).start()
        try:
            c = Client(st.addr, "127.0.0.2")
            assert c.reply().startswith("220 ")
            assert c.cmd("MAIL FROM:<someone@remote.test>").startswith("250 ")
            assert c.cmd("RCPT TO:<alice@example.com>").startswith(expected)
            c.close()
        finally:
            st.stop()
        if expected == "451 ":
            assert any("TLS certificate verification failed" in line for line in st.log), st.log


@pytest.mark.parametrize("case", ["wrong host name", "unknown CA"])
def test_local_delivery_defers_when_tls_fails(
    qroot: QRoot, tls_lab: TlsLab, tmp_path: Path, case: str
) -> None:
    if case == "wrong host name":  # the certificate names localhost only
        configure(qroot, f"ldaps://127.0.0.1:{tls_lab.slapd.tls_port}", ca=tls_lab.files.ca)
        why = "not valid for '127.0.0.1'"
    else:
        configure(qroot, f"ldaps://localhost:{tls_lab.slapd.tls_port}", ca=tls_lab.other_ca)
        why = "TLS certificate verification failed"
    create_queue(qroot.path)
    message = tmp_path / "mess"
    message.write_bytes(b"Subject: hi\n\nhello\n")
    lines: list[str] = []
    spawner = LocalSpawner(qroot.path, lambda d, s, r: 0, log=lines.append)
    assert spawner.deliver("alice@example.com", "b@r", message) == Report(
        "Z", "Unable to contact LDAP server. (#4.4.3)"
    )
    assert len(lines) == 1 and why in lines[0], lines


# -- ldapserver lines and TLS control files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("ldaps://ldap.example.com", ServerAddress("ldap.example.com", 636, Scheme.LDAPS)),
        ("LDAPS://ldap.example.com:1636/", ServerAddress("ldap.example.com", 1636, Scheme.LDAPS)),
        ("ldap://ldap.example.com/dc=example,dc=com", ServerAddress("ldap.example.com", 389)),
        ("ldaps://[::1]:1636", ServerAddress("::1", 1636, Scheme.LDAPS)),
        ("ldapi://%2Frun%2FSlapd%2Fldapi", ServerAddress("", 0, Scheme.LDAPI, "/run/Slapd/ldapi")),
        ("ldapi://", ServerAddress("", 0, Scheme.LDAPI, DEFAULT_LDAPI_PATH)),
        ("ldapi:///", ServerAddress("", 0, Scheme.LDAPI, DEFAULT_LDAPI_PATH)),
    ],
)
def test_server_lines(line: str, address: ServerAddress) -> None:
    assert parse_server(line) == address
    assert parse_server(str(address)) == address  # the logged form reads back


@pytest.mark.parametrize("line", ["ldaps://", "ldaps://h:99999", "ldapi://relative", "cldap://h", "http://h"])
def test_bad_server_lines(line: str) -> None:
    with pytest.raises(ConfigError):
        parse_server(line)


def test_tls_control_files(qroot: QRoot) -> None:
    assert TlsSettings.from_control(ControlDir(qroot.path)) == TlsSettings()
    qroot.control("ldaptlskey", "/etc/qldap/client.key")
    with pytest.raises(ConfigError, match="without control/ldaptlscert"):
        TlsSettings.from_control(ControlDir(qroot.path))
    qroot.control("ldaptlscert", "/etc/qldap/client.pem")
    qroot.control("ldapstarttls", "1")
    got = TlsSettings.from_control(ControlDir(qroot.path))
    assert got == TlsSettings(None, "/etc/qldap/client.pem", "/etc/qldap/client.key", True)
    ldap, ldaps, ldapi = (parse_server(x) for x in ("h", "ldaps://h", "ldapi://"))
    assert got.needed_by((ldap,)) and not TlsSettings().needed_by((ldap, ldapi))
    assert TlsSettings().needed_by((ldapi, ldaps))

"""pytest fixtures that give tests a real OpenLDAP slapd with the qmail schema.

- ``slapd`` (session): one shared server, suffix dc=example,dc=com, started once and stopped at the
  end of the session (also when tests fail).  Tests must not stop it.
- ``ldap_base`` (function): a fresh, empty ``ou=t<N>`` subtree on the shared server; deleted again
  afterwards.  Using its DN as the LDAP base keeps tests from seeing each other's entries.
- ``slapd_factory`` (function): private servers for tests that stop/restart slapd or need other
  settings (``tls=``, ``verify_client=``); all of them are stopped at teardown.
- ``tls_lab`` (session, opt-in): a private server listening on ``ldap://``, ``ldaps://`` and
  ``ldapi://`` with a certificate for ``localhost`` from a test CA made by the fixture (openssl),
  a second CA that did not sign it, and a client certificate from the first CA.

Without slapd the tests are skipped with the reason, except when ``QLDAP_REQUIRE_SLAPD=1`` (CI),
where a missing slapd is a failure: a silently skipped LDAP suite would look green.
Tests using these fixtures get the ``slapd`` marker, so ``-m "not slapd"`` deselects them.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

_TOOLS = str(Path(__file__).resolve().parent.parent / "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

from qldap_slapd import SchemaForm, Slapd, TlsFiles, make_test_ca, missing_programs  # noqa: E402

SLAPD_FIXTURES = frozenset({"slapd", "ldap_base", "slapd_factory", "tls_lab"})


def require_slapd() -> None:
    """Skip (or under QLDAP_REQUIRE_SLAPD=1 fail) the current test when slapd is not installed."""
    missing = missing_programs()
    if not missing:
        return
    reason = f"needs a real OpenLDAP slapd; not found: {', '.join(missing)} (install with tools/install-deps)"
    if os.environ.get("QLDAP_REQUIRE_SLAPD") == "1":
        pytest.fail(f"QLDAP_REQUIRE_SLAPD=1: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a slapd fixture with ``slapd``."""
    for item in items:
        if SLAPD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slapd)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The shared session server (suffix dc=example,dc=com, rootdn cn=admin,dc=example,dc=com)."""
    require_slapd()
    server = Slapd(tmp_path_factory.mktemp("slapd-session"), tie_to_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class LdapBase:
    """An empty subtree of the shared server reserved for one test."""

    dn: str
    slapd: Slapd

    def load(self, ldif: str) -> None:
        """ldapadd *ldif* as rootdn after replacing every ``{base}`` with :attr:`dn`.

        Raises:
            qldap_slapd.SlapdError: the server rejected the LDIF.
        """
        self.slapd.add_ldif(ldif.replace("{base}", self.dn))


@pytest.fixture(scope="session")
def _ldap_base_numbers() -> Iterator[int]:
    return itertools.count(1)


@pytest.fixture
def ldap_base(slapd: Slapd, _ldap_base_numbers: Iterator[int]) -> Iterator[LdapBase]:
    """A fresh ``ou=t<N>,<suffix>`` on the shared server, removed after the test."""
    name = f"t{next(_ldap_base_numbers)}"
    dn = f"ou={name},{slapd.suffix}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
    yield LdapBase(dn, slapd)
    if slapd.running:
        slapd.delete_tree(dn)


SlapdFactory = Callable[..., Slapd]


@pytest.fixture
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdFactory]:
    """Start private servers: ``slapd_factory(suffix=..., ldif=[...], ...)`` returns a started Slapd."""
    require_slapd()
    started: list[Slapd] = []

    def make(
        *,
        state_dir: Path | None = None,
        port: int | None = None,
        suffix: str = "dc=example,dc=com",
        rootdn: str = "cn=admin,dc=example,dc=com",
        rootpw: str = "rootsecret",
        ldif: Sequence[Path] = (),
        initial_ldif: str = "",
        schema_form: SchemaForm = "schema",
        qmail_schema: bool = True,
        ldapi: bool = False,
        tls: TlsFiles | None = None,
        verify_client: str = "never",
    ) -> Slapd:
        server = Slapd(
            state_dir if state_dir is not None else tmp_path_factory.mktemp("slapd-private"),
            port=port, suffix=suffix, rootdn=rootdn, rootpw=rootpw, ldif=ldif,
            initial_ldif=initial_ldif, schema_form=schema_form, qmail_schema=qmail_schema, ldapi=ldapi,
            tie_to_parent=True, tls=tls, verify_client=verify_client,
        )
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@dataclass(frozen=True)
class TlsLab:
    """A TLS-enabled server (certificate for ``localhost`` only) and the files to test it with."""

    slapd: Slapd
    files: TlsFiles  # the CA that signed the server certificate, the certificate and its key
    other_ca: Path  # a CA that signed nothing the server presents
    client: TlsFiles  # a client certificate from the same CA as the server's

    def ca_dir(self) -> Path:
        return self.files.ca.parent


TLS_LAB_LDIF = """dn: uid=alice,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: qmailUser
uid: alice
cn: alice
sn: alice
mail: alice@example.com
"""


@pytest.fixture(scope="session")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    """One TLS server for the session (ldap, ldaps and ldapi listeners), with alice@example.com."""
    require_slapd()
    base = tmp_path_factory.mktemp("tls-lab")
    files = make_test_ca(base / "ca", ["localhost"])
    client = make_test_ca(base / "ca", ["qldap-client"], client=True)
    other = make_test_ca(base / "other-ca", ["localhost"]).ca
    server = Slapd(base / "slapd", initial_ldif=TLS_LAB_LDIF, ldapi=True, tls=files, tie_to_parent=True)
    server.start()
    try:
        yield TlsLab(server, files, other, client)
    finally:
        server.stop()

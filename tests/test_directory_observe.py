"""The metrics hook: one SearchEvent per backend operation, for both backends, errors labelled."""

from __future__ import annotations

from pathlib import Path

import pytest
from qldap_slapd import free_port

from qldap.control.files import ControlDir
from qldap.directory.base import Found, NotFound, Unavailable
from qldap.directory.observe import ObservedSearcher, Operation, Outcome, SearchEvent
from qldap.directory.open import open_directory
from tests.conftest import QRoot
from tests.test_directory_ldap_errors import ScriptedLdap

LDIF = """dn: dc=example,dc=com
objectClass: dcObject
dc: example

dn: uid=alice,dc=example,dc=com
objectClass: qmailUser
uid: alice
mail: alice@example.com
userPassword: secret
"""


def _embedded(qroot: QRoot) -> ControlDir:
    (Path(qroot.path) / "directory.ldif").write_text(LDIF)
    qroot.control("ldapbasedn", "dc=example,dc=com")
    return ControlDir(qroot.path)


def test_embedded_backend_reports_each_search_and_bind(qroot: QRoot) -> None:
    events: list[SearchEvent] = []
    d = open_directory(_embedded(qroot), observer=events.append)
    assert isinstance(d.searcher, ObservedSearcher)
    assert isinstance(d.find_recipient("alice@example.com"), Found)
    assert isinstance(d.find_recipient("nobody@example.com"), NotFound)  # address, then catchall
    assert d.searcher.check_bind("uid=alice,dc=example,dc=com", "secret") is True
    got = [(e.operation, e.outcome, e.entries) for e in events]
    assert got == [
        (Operation.SEARCH, Outcome.OK, 1),
        (Operation.SEARCH, Outcome.OK, 0),
        (Operation.SEARCH, Outcome.OK, 0),
        (Operation.BIND, Outcome.OK, 0),
    ]
    assert all(e.seconds >= 0 for e in events)


def test_no_observer_no_wrapper(qroot: QRoot) -> None:
    assert not isinstance(open_directory(_embedded(qroot)).searcher, ObservedSearcher)


@pytest.mark.parametrize(("code", "outcome"), [(3, Outcome.TIMEOUT), (80, Outcome.ERROR)])
def test_ldap_errors_are_labelled(qroot: QRoot, code: int, outcome: Outcome) -> None:
    server = ScriptedLdap([code])
    try:
        qroot.control("ldapserver", f"127.0.0.1:{server.port}")
        qroot.control("ldaptimeout", "30")
        events: list[SearchEvent] = []
        d = open_directory(ControlDir(qroot.path), observer=events.append)
        assert isinstance(d.find_recipient("alice@example.com"), Unavailable)
    finally:
        server.close()
    assert [(e.operation, e.outcome) for e in events] == [(Operation.SEARCH, outcome)]


def test_unreachable_is_labelled(qroot: QRoot) -> None:
    qroot.control("ldapserver", f"127.0.0.1:{free_port()}")
    events: list[SearchEvent] = []
    d = open_directory(ControlDir(qroot.path), observer=events.append)
    assert isinstance(d.find_recipient("alice@example.com"), Unavailable)
    assert [e.outcome for e in events] == [Outcome.UNREACHABLE]

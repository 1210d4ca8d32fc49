"""Which checks a session runs and what they may refuse: control/mailauth, MAILAUTH, NOMAILAUTH,
control/mailauthdomains and control/authservid read into an InboundPolicy."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.mailauth.inbound import Actions, load_policy
from tests.conftest import QRoot


def policy(qroot: QRoot, env: dict[str, str]):  # type: ignore[no-untyped-def]
    qroot.control("me", "mx.example.org")
    return load_policy(ControlDir(qroot.path), env)


def test_off_unless_configured(qroot: QRoot) -> None:
    assert policy(qroot, {}) is None
    qroot.control("mailauth", "")
    found = policy(qroot, {})
    assert found is not None and found.actions == Actions() and found.authserv_id == "mx.example.org"
    assert policy(qroot, {"NOMAILAUTH": ""}) is None


def test_environment_words_override_the_control_file(qroot: QRoot) -> None:
    qroot.control("mailauth", "dmarcreject, spfreject")
    assert policy(qroot, {}).actions == Actions(dmarc_reject=True, spf_reject=True)
    assert policy(qroot, {"MAILAUTH": ""}).actions == Actions(dmarc_reject=True, spf_reject=True)
    assert policy(qroot, {"MAILAUTH": "tag"}).actions == Actions()
    assert policy(qroot, {"MAILAUTH": "TempFail"}).actions == Actions(tempfail=True)


def test_domain_words_and_authservid(qroot: QRoot) -> None:
    qroot.control("authservid", "auth.example.org")
    qroot.control(
        "mailauthdomains", "example.org:dmarcreject\n.example.net:dmarcreject,tempfail\nshop.example:"
    )
    found = policy(qroot, {"MAILAUTH": ""})
    assert found.authserv_id == "auth.example.org"
    assert found.reject_dmarc(["a@example.org", "b@Example.ORG"])
    assert found.reject_dmarc(["a@x.example.net"]) and found.tempfail_dmarc(["a@y.x.example.net"])
    assert not found.reject_dmarc(["a@example.org", "c@shop.example"])  # one reply answers all
    assert not found.reject_dmarc(["a@example.net"])  # .example.net is for subdomains only
    assert not found.reject_dmarc([])


@pytest.mark.parametrize(("name", "text"), [("mailauth", "reject"), ("mailauthdomains", "example.org:tagg")])
def test_unknown_words_are_a_configuration_error(qroot: QRoot, name: str, text: str) -> None:
    """A typo must not silently turn rejection off: the session answers 421 (unable to read controls)."""
    qroot.control(name, text)
    with pytest.raises(ConfigError):
        policy(qroot, {"MAILAUTH": ""})

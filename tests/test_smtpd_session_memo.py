"""Per-session memo of locals/rcpthosts answers (qldap.smtpd.config.per_session): answers are reused
within one session, errors are not, and the memo is bounded."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.smtpd.config import SESSION_MEMO, SmtpdConfig, per_session
from tests.conftest import QRoot


def test_answers_are_asked_once_per_domain() -> None:
    asked: list[str] = []

    def answer(domain: str) -> bool:
        asked.append(domain)
        return domain == "local.example"

    memo = per_session(answer)
    assert [memo("local.example"), memo("other.example"), memo("local.example")] == [True, False, True]
    assert asked == ["local.example", "other.example"]
    fresh = per_session(answer)  # the next session reads the files again
    assert fresh("local.example") is True
    assert asked[-1] == "local.example" and len(asked) == 3


def test_an_error_is_not_remembered() -> None:
    calls = 0

    def answer(domain: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConfigError("unable to read control/locals: Permission denied")
        return True

    memo = per_session(answer)
    with pytest.raises(ConfigError):
        memo("local.example")
    assert memo("local.example") is True


def test_the_memo_is_bounded() -> None:
    asked: list[str] = []

    def answer(domain: str) -> bool:
        asked.append(domain)
        return False

    memo = per_session(answer)
    for i in range(SESSION_MEMO + 10):
        memo(f"d{i}.example")
    for i in range(SESSION_MEMO + 10):
        memo(f"d{i}.example")
    assert len(asked) == SESSION_MEMO + 10 + 10  # only the last ten are asked twice


def test_session_controls_follow_every_edit(qroot: QRoot) -> None:
    """The parsed controls shared between sessions (qldap.smtpd.config._controls) are replaced as soon
    as one of their files changes: created, edited in place, removed (qmail-smtpd(8): next session)."""
    ctl = ControlDir(qroot.path)
    qroot.control("me", "mx.example.org")

    def session() -> SmtpdConfig:
        return SmtpdConfig.load(ctl.checked(), {"TCPREMOTEIP": "192.0.2.9"})

    first = session()
    assert first.me == "mx.example.org" and not first.badmailfrom and first.timeout == 120
    assert session().badmailfrom == first.badmailfrom
    qroot.control("badmailfrom", "spam@example.net")
    assert session().badmailfrom.matches("spam@example.net")
    with open(ctl.path("badmailfrom"), "a") as fh:  # edited in place: no directory change
        fh.write("@example.com\n")
    assert session().badmailfrom.matches("anyone@example.com")
    qroot.control("timeoutsmtpd", "30")
    qroot.control("me", "mx2.example.org")
    again = session()
    assert again.timeout == 30 and again.me == "mx2.example.org" and again.localiphost == "mx2.example.org"
    qroot.control("badmailfrom", None)
    assert not session().badmailfrom
    qroot.control("me", None)
    with pytest.raises(ConfigError):
        session()

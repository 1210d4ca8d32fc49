"""Entry, QmailUser, QmailGroup, AccountStatus, results, errors and the result cache."""

from __future__ import annotations

import pytest

from qldap.directory.base import Ambiguous, Found, NotFound, Trash, Unavailable
from qldap.directory.cache import ResultCache
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    BadCredentials,
    LookupFailed,
    NoSuchObject,
    NotUnique,
    SearchTimeout,
    ServerUnreachable,
)
from qldap.directory.filters import Candidate
from qldap.directory.schema import AccountStatus
from qldap.directory.user import QmailGroup, QmailUser
from qldap.errors import TemporaryFailure


def test_entry_names_are_case_insensitive_and_values_tuples() -> None:
    e = Entry.build("uid=a,o=t", [("Mail", ["a@x"]), ("MAIL", ["b@x"]), ("uid", ["a"]), ("empty", [])])
    assert e.values("mail") == ("a@x", "b@x")
    assert e.values("mAiL") == ("a@x", "b@x")
    assert e.single("UID") == "a"
    assert e.single("nothing") is None
    assert not e.has("empty")
    with pytest.raises(NotUnique) as info:
        e.single("mail")
    assert info.value.text == "Too many results returned but needs to be unique. (#5.3.5)"
    assert e.has_value("mail", "A@X")


def _user_entry(**extra: list[str]) -> Entry:
    base: dict[str, list[str]] = {
        "objectClass": ["top", "qmailUser"],
        "mail": ["alice@example.com"],
        "mailAlternateAddress": ["al@example.com", "a.smith@example.com"],
        "uid": ["alice"],
        "qmailUID": ["2000"],
        "qmailGID": ["2000"],
        "mailMessageStore": ["/var/mail/alice/"],
        "userPassword": ["{SSHA}x"],
    }
    base.update(extra)
    return Entry.build("uid=alice,o=t", base.items())


def test_qmail_user_carries_every_attribute() -> None:
    u = QmailUser.from_entry(
        _user_entry(
            accountStatus=["NoAccess"], mailHost=["mx2"], homeDirectory=["/home/a"], mailQuotaSize=["10"],
            mailQuotaCount=["5"], mailSizeMax=["100"], mailForwardingAddress=["f@x", "g@x"],
            deliveryProgramPath=["/bin/p"], deliveryMode=["reply"], mailReplyText=["away"],
            qmailDotMode=["both"], qmailAccountPurge=["123"],
        )
    )  # fmt: skip
    assert u.mail == "alice@example.com"
    assert u.mail_alternate == ("al@example.com", "a.smith@example.com")
    assert (u.uid, u.qmail_uid, u.qmail_gid) == ("alice", "2000", "2000")
    assert u.status is AccountStatus.NOACCESS and u.status_raw == "NoAccess"
    assert (u.mail_host, u.home_directory, u.message_store) == ("mx2", "/home/a", "/var/mail/alice/")
    assert (u.quota_size, u.quota_count, u.size_max) == ("10", "5", "100")
    assert u.forwards == ("f@x", "g@x") and u.programs == ("/bin/p",)
    assert u.delivery_modes == ("reply",) and u.reply_text == "away"
    assert u.dot_mode == "both" and u.account_purge == "123"
    assert u.has_password and "SSHA" not in repr(u)
    assert not u.is_group


def test_qmail_user_single_valued_with_two_values_is_not_unique() -> None:
    for name in ("qmailUID", "uid", "homeDirectory", "accountStatus", "mailQuotaSize"):
        with pytest.raises(NotUnique):
            QmailUser.from_entry(_user_entry(**{name: ["1", "2"]}))


def test_group_flag_and_group_record() -> None:
    e = Entry.build(
        "cn=list,o=t",
        {
            "objectClass": ["qmailUser", "QMAILGROUP"],
            "mail": ["list@example.com"],
            "mailAlternateAddress": ["list-catchall@example.com"],
            "mailMessageStore": ["/var/mail/list/"],
            "dnmember": ["uid=b,o=t"],
            "rfc822member": ["a@x"],
            "filtermember": ["(mail=c@x)"],
            "dnsender": ["uid=s,o=t"],
            "rfc822sender": ["s@y"],
            "filtersender": ["(mail=t@y)"],
            "membersonly": ["TRUE"],
            "senderconfirm": ["FALSE"],
            "confirmtext": ["please"],
            "dnmoderator": ["uid=m,o=t"],
            "rfc822moderator": ["m@x"],
            "moderatortext": ["approve"],
            "bounceadmin": ["adm@x"],
        }.items(),
    )
    assert QmailUser.from_entry(e).is_group
    g = QmailGroup.from_entry(e)
    assert g.mail == "list@example.com" and g.message_store == "/var/mail/list/"
    assert g.dn_members == ("uid=b,o=t",) and g.rfc822_members == ("a@x",)
    assert g.filter_members == ("(mail=c@x)",)
    assert (g.dn_senders, g.rfc822_senders, g.filter_senders) == (("uid=s,o=t",), ("s@y",), ("(mail=t@y)",))
    assert (g.members_only, g.sender_confirm) == ("TRUE", "FALSE")
    assert (g.confirm_text, g.moderator_text) == ("please", "approve")
    assert (g.dn_moderators, g.rfc822_moderators, g.bounce_admins) == (("uid=m,o=t",), ("m@x",), ("adm@x",))
    assert g.has_sender_lists and g.moderated
    assert Found(e, Candidate("list@example.com", "", "", "list@example.com")).group() == g


@pytest.mark.parametrize(
    ("raw", "status", "receives", "login"),
    [
        (None, AccountStatus.UNDEFINED, True, True),
        ("active", AccountStatus.ACTIVE, True, True),
        ("DISABLED", AccountStatus.DISABLED, False, False),
        ("deleted", AccountStatus.DELETED, False, False),
        ("noaccess", AccountStatus.NOACCESS, True, False),
        ("nopop", AccountStatus.ACTIVE, True, True),
        ("holiday", AccountStatus.ACTIVE, True, True),
    ],
)
def test_account_status(raw: str | None, status: AccountStatus, receives: bool, login: bool) -> None:
    got = AccountStatus.parse(raw)
    assert got is status
    assert got.receives_mail is receives
    assert got.may_login is login


def test_error_texts_are_exact_and_temporary() -> None:
    texts = {
        ServerUnreachable: "Unable to contact LDAP server. (#4.4.3)",
        BadCredentials: "Unable to login into LDAP server, bad credentials. (#4.4.3)",
        LookupFailed: "Temporary failure in LDAP lookup. (#4.4.3).",
        NoSuchObject: "Temporary failure in LDAP lookup. (#4.4.3).",
        SearchTimeout: "Timeout while performing search on LDAP server. (#4.4.3)",
    }
    for cls, text in texts.items():
        exc = cls("detail")
        assert isinstance(exc, TemporaryFailure)
        assert exc.text == text and exc.detail == "detail" and exc.letter == "Z" and exc.status == "4.4.3"


def test_ambiguous_carries_the_permanent_failure() -> None:
    failure = Ambiguous(2, "dup@example.com").failure
    assert failure.text == "Too many results returned but needs to be unique. (#5.3.5)"
    assert failure.letter == "D"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_ttl_and_what_is_cached() -> None:
    clock = Clock()
    cache = ResultCache(10, clock=clock)
    found = Found(_user_entry(), Candidate("a@x", "", "", "a@x"))
    cache.put("a", found)
    cache.put("b", NotFound(("b@x",)))
    cache.put("c", Unavailable(LookupFailed()))
    cache.put("d", Ambiguous(2, "d@x"))
    cache.put("e", Trash())
    assert cache.get("a") == found
    assert cache.get("b") == NotFound(("b@x",))
    assert cache.get("c") is None and cache.get("d") is None and cache.get("e") is None
    clock.now += 9.9
    assert cache.get("a") == found
    clock.now += 0.2
    assert cache.get("a") is None and cache.get("b") is None
    assert len(cache) == 0


def test_cache_is_bounded_lru() -> None:
    cache = ResultCache(100, maxsize=3, clock=Clock())
    for key in "abc":
        cache.put(key, NotFound((key,)))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", NotFound(("d",)))
    assert cache.get("b") is None
    assert [k for k in "acd" if cache.get(k) is not None] == ["a", "c", "d"]
    assert len(cache) == 3

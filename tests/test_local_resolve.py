"""qmail-local(8), QMAILUSER ATTRIBUTES: a matched entry → delivery plan, checks in the man page's order
(pure)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qldap.directory.base import Found
from qldap.directory.config import LdapConfig
from qldap.directory.entry import Entry
from qldap.directory.filters import Candidate
from qldap.directory.schema import DotMode
from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.local.quota import Quota
from qldap.local.resolve import ClusterRelay, Plan, join_values, plan_ldap, split_values

ILLEGAL = "Illegal value in LDAP attribute. (#5.3.5)"
MISSING = "LDAP attribute is not given but mandatory. (#5.3.5)"
NOT_UNIQUE = "Too many results returned but needs to be unique. (#5.3.5)"
CFG = LdapConfig(me="mx1.example.com")

ALICE = {
    "objectClass": ["top", "qmailUser"], "mail": ["alice@example.com"], "uid": ["alice"],
    "qmailUID": ["2000"], "qmailGID": ["2000"], "mailMessageStore": ["/var/mail/alice/"],
}  # fmt: skip


def found(cand: Candidate | None = None, **changes: list[str] | None) -> Found:
    attrs = dict(ALICE)
    for k, v in changes.items():
        if v is None:
            attrs.pop(k, None)
        else:
            attrs[k] = v
    c = cand or Candidate("alice@example.com", "", "", "alice@example.com")
    return Found(Entry.build("uid=alice,dc=example,dc=com", attrs.items()), c)


def plan(f: Found, cfg: LdapConfig = CFG, size: int = 100) -> Plan | ClusterRelay:
    return plan_ldap(f, cfg, local="alice", default_delivery="./Maildir/", message_size=size,
                     alias_home="/var/qmail/alias")


def text_of(f: Found, cfg: LdapConfig = CFG, size: int = 100) -> str:
    with pytest.raises(PermanentFailure) as exc:
        plan(f, cfg, size)
    return exc.value.text


def test_plain_user() -> None:
    p = plan(found())
    assert isinstance(p, Plan)
    assert (p.user, p.uid, p.gid, p.home, p.default_delivery) == ("alice", 2000, 2000, "/var/mail/alice/",
                                                                   "./Maildir/")
    assert p.dot_mode is DotMode.LDAPONLY
    assert p.env() == {"QMAILDOTMODE": "ldaponly"}


def test_account_status() -> None:
    assert text_of(found(accountStatus=["DISABLED"])) == "Mailaddress is administratively disabled. (#5.2.1)"
    assert text_of(found(accountStatus=["deleted"])) == "Sorry, no mailbox here by that name. (#5.1.1)"
    for ok in ("noaccess", "nopop", "holiday", "active"):
        assert isinstance(plan(found(accountStatus=[ok])), Plan)


def test_status_is_checked_before_numbers() -> None:
    assert text_of(found(accountStatus=["disabled"], mailSizeMax=["10k"])).startswith("Mailaddress")


def test_size_max() -> None:
    assert text_of(found(mailSizeMax=["1000"]), size=1001) == (
        "The message exeeded the maximum size the user accepts. (#5.2.3)")
    assert isinstance(plan(found(mailSizeMax=["1000"]), size=1000), Plan)
    assert isinstance(plan(found(mailSizeMax=["0"]), size=10**9), Plan)
    assert text_of(found(mailSizeMax=["10k"])) == ILLEGAL


def test_relative_store_needs_prefix() -> None:
    p = plan(found(mailMessageStore=["alice"]), LdapConfig(me="m", message_store="/srv/mail/"))
    assert isinstance(p, Plan) and p.home == "/srv/mail/alice"
    assert text_of(found(mailMessageStore=["alice"])) == ILLEGAL


def test_home_and_store() -> None:
    p = plan(found(homeDirectory=["/home/alice"], mailMessageStore=["./Mail/"]))
    assert isinstance(p, Plan) and (p.home, p.default_delivery) == ("/home/alice", "./Mail/")
    p2 = plan(found(homeDirectory=["/home/alice"], mailMessageStore=None))
    assert isinstance(p2, Plan) and (p2.home, p2.default_delivery) == ("/home/alice", "./Maildir/")
    p3 = plan(found(homeDirectory=["/home/alice"], mailMessageStore=["Mail/"]))
    assert isinstance(p3, Plan) and p3.default_delivery == "./Mail/"
    assert text_of(found(homeDirectory=["home/alice"])) == ILLEGAL


@pytest.mark.parametrize("store", ["/var/mail/../../etc/", "/var/mail/alice/..", "/var/mail/a b/",
                                   "/var/mail/a;b/", "/var/mail/$x/", "/var/mail/é/", "-x/"])
def test_bad_paths(store: str) -> None:
    assert text_of(found(mailMessageStore=[store])) == ILLEGAL


def test_forward_only() -> None:
    p = plan(found(mailMessageStore=None, mailForwardingAddress=["carol@else.example"],
                   deliveryProgramPath=["/bin/prog"]))
    assert isinstance(p, Plan)
    assert p.forward_only and p.home == "/var/qmail/alias" and p.ext == "alice" and p.dash == "-"
    assert p.forwards == ("carol@else.example",) and p.programs == ()
    assert p.env()["QMAILMODE"] == "forwardonly" and p.env()["QMAILFORWARDS"] == "carol@else.example"
    assert text_of(found(mailMessageStore=None)) == MISSING


def test_alias_home_is_asked_only_in_forward_only_mode() -> None:
    # the spawner passes a function (the alias user costs two stats): an ordinary entry never calls it
    asked: list[int] = []

    def alias_home() -> str | None:
        asked.append(1)
        return "/var/qmail/alias"

    def plan_with(f: Found, home: Callable[[], str | None] = alias_home) -> Plan | ClusterRelay:
        return plan_ldap(f, CFG, local="alice", default_delivery="./Maildir/", message_size=100,
                         alias_home=home)

    assert isinstance(plan_with(found()), Plan) and asked == []
    p = plan_with(found(mailMessageStore=None, mailForwardingAddress=["carol@else.example"]))
    assert isinstance(p, Plan) and p.forward_only and p.home == "/var/qmail/alias" and asked == [1]
    with pytest.raises(TemporaryFailure) as exc:
        plan_with(found(mailMessageStore=None, mailForwardingAddress=["carol@else.example"]), lambda: None)
    assert exc.value.text == "Unable to find alias user!"


def test_identity() -> None:
    assert text_of(found(uid=None)) == MISSING
    assert text_of(found(uid=["al/ice"])) == ILLEGAL
    assert text_of(found(uid=["-alice"])) == ILLEGAL
    for bad in ("99", "0", "65536", "2k"):
        assert text_of(found(qmailUID=[bad])) == ILLEGAL
    assert text_of(found(qmailUID=["2000", "2001"])) == NOT_UNIQUE
    p = plan(found(qmailUID=None, qmailGID=None), LdapConfig(me="m", ldap_uid=3000, ldap_gid=3000))
    assert isinstance(p, Plan) and (p.uid, p.gid) == (3000, 3000)
    assert text_of(found(qmailUID=None)) == MISSING


@pytest.mark.parametrize("prog", ["/bin/rm -rf ~", "`id`", "$(id)", "a|b", "a;b", "a>/etc/x", "a&b",
                                  "/bin/x\n&evil@x.example"])
def test_bad_programs(prog: str) -> None:
    assert text_of(found(deliveryProgramPath=[prog])) == ILLEGAL


def test_bad_forward() -> None:
    assert text_of(found(mailForwardingAddress=["a@b\r\nBcc: x"])) == ILLEGAL


def test_modes_and_env() -> None:
    p = plan(found(deliveryMode=["sideways", "nolocal,noforward"], mailQuotaSize=["1000000"],
                   mailQuotaCount=["1000"], mailReplyText=["away"]))
    assert isinstance(p, Plan)
    assert p.warnings == ("Warning: undefined mail delivery mode: sideways (ignored).",)
    assert p.modes.nolocal and p.modes.noforward
    env = p.env()
    assert env["MAILDIRQUOTA"] == "1000000S,1000C"
    assert env["QMAILREPLYTEXT"] == "away"
    assert env["QMAILMODE"] == "sideways:nolocal:noforward"
    p2 = plan(found(mailQuotaSize=["1000000"], mailReplyText=["away"]))
    assert isinstance(p2, Plan)
    assert p2.env()["MAILDIRQUOTA"] == "1000000S" and "QMAILREPLYTEXT" not in p2.env()
    p3 = plan(found(), LdapConfig(me="m", quota_count=5))
    assert isinstance(p3, Plan) and p3.quota == Quota(0, 5)


def test_dot_modes() -> None:
    p = plan(found(qmailDotMode=["Both"]))
    assert isinstance(p, Plan) and p.dot_mode is DotMode.BOTH
    assert text_of(found(qmailDotMode=["bogus"])) == ILLEGAL
    with pytest.raises(TemporaryFailure) as exc:
        plan(found(), LdapConfig(me="m", default_dot_mode="weird"))
    assert exc.value.text == "Temporary failure in qmail-lspawn."


def test_cluster() -> None:
    cfg = LdapConfig(me="mx1.example.com", cluster=True, cluster_hosts=("mx3.example.com",))
    assert plan(found(mailHost=["mx2.example.com"]), cfg) == ClusterRelay("mx2.example.com")
    assert isinstance(plan(found(mailHost=["MX1.example.com"]), cfg), Plan)
    assert isinstance(plan(found(mailHost=["mx3.example.com"]), cfg), Plan)
    assert isinstance(plan(found(mailHost=["mx2.example.com"])), Plan)  # cluster off
    disabled = found(mailHost=["mx2.example.com"], accountStatus=["disabled"])
    assert text_of(disabled, cfg).startswith("Mailaddr")


def test_group_and_catchall_extension() -> None:
    g = plan(found(objectClass=["qmailUser", "qmailGroup"]))
    assert isinstance(g, Plan) and g.env()["QLDAPGROUP"] == "uid=alice,dc=example,dc=com"
    c = plan(found(Candidate("catchall@example.com", "-", "nobody", "catchall@example.com")))
    assert isinstance(c, Plan) and (c.dash, c.ext) == ("-", "nobody")


def test_value_lists_escape_colons() -> None:
    assert join_values(("a:b", "c")) == "a\\:b:c"
    assert split_values("a\\:b:c") == ["a:b", "c"]
    assert text_of(found(mailForwardingAddress=["x@y\\"])) == ILLEGAL

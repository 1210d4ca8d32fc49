"""MAIL/RCPT/DATA verdicts in spec order (qmail-smtpd(8), MAIL CHECKS and DATA and CONTROL FILES and ADDRESS
VERIFICATION) on real control files.

The configuration comes from a real qmail root (the ``qroot`` fixture) through ``SmtpdConfig.load``
with the real ``Locals``/``RcptHosts``; lookups are answered by feeding ``Facts`` back, as the glue does.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from qldap.control.domains import Locals, RcptHosts
from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.smtpd import replies
from qldap.smtpd.config import RblAction, SenderCheck, SmtpdConfig, SmtpdEnv, parse_rbllist
from qldap.smtpd.policy import (
    NO_FACTS,
    Client,
    Facts,
    Invalid,
    Lookup,
    MxAnswer,
    MxQuery,
    RblAnswer,
    RblQuery,
    Soft,
    Transaction,
    Valid,
    Verdict,
    VerifyAnswer,
    VerifyQuery,
    data_end_verdict,
    data_start_verdict,
    mail_verdict,
    rbl_query_name,
    rcpt_verdict,
)
from qldap.smtpd.reader import DataEnd
from tests.conftest import QRoot

IP = "192.0.2.10"
REL = replies.relay_denied(IP)
PROBE = replies.relay_probe(IP)
CLIENT = Client(IP, "client.test", None)
TXN = Transaction("x@remote.test")


@pytest.fixture
def root(qroot: QRoot) -> QRoot:
    qroot.control("me", "mx.example.org")
    qroot.control("locals", "example.org\nmx.example.org")
    qroot.control("rcpthosts", "example.org\n.example.net\nbackup.test")
    return qroot


def load(root: QRoot, env: Mapping[str, str] | None = None) -> SmtpdConfig:
    ctl = ControlDir(root.path)
    environ = {"TCPREMOTEIP": IP, "TCPREMOTEHOST": "client.test", **(env or {})}
    return SmtpdConfig.load(
        ctl,
        environ,
        own_ips={"192.0.2.1"},
        is_local=Locals(ctl).contains,
        rcpthosts_accepts=RcptHosts(ctl).accepts,
    )


def final(result: Verdict | Lookup) -> Verdict:
    assert isinstance(result, Verdict), result
    return result


def rcpt(cfg: SmtpdConfig, addr: str, txn: Transaction = TXN, client: Client = CLIENT) -> Verdict:
    return final(rcpt_verdict(cfg, client, txn, f"TO:{addr}"))


def mail(cfg: SmtpdConfig, arg: str, client: Client = CLIENT, facts: Facts = NO_FACTS) -> Verdict:
    return final(mail_verdict(cfg, client, arg, facts))


# -- RCPT: relay and address cases ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("addr", "reply", "stored"),
    [
        ("<alice@example.org>", replies.OK, "alice@example.org"),
        ("<u@a.example.net>", replies.OK, "u@a.example.net"),
        ("<u@example.net>", REL, None),
        ("<victim@elsewhere.test>", REL, None),
        ("<@example.org:victim@elsewhere.test>", REL, None),
        ("<@a.test,@b.test:alice@example.org>", replies.OK, "alice@example.org"),
        ("<victim%elsewhere.test@relay2.test>", REL, None),
        ("<victim%elsewhere.test@example.org>", replies.OK, "victim%elsewhere.test@example.org"),
        ("<victim@example.org@elsewhere.test>", REL, None),
        ('<"alice@example.org"@elsewhere.test>', REL, None),
        ("<victim@elsewhere.test.>", REL, None),
        ("<alice@example.org.>", REL, None),
        ("<postmaster@[192.0.2.1]>", replies.OK, "postmaster@mx.example.org"),
        ("<u@[198.51.100.7]>", REL, None),
        ("<postmaster>", replies.OK, "postmaster"),
        ("<ALICE@EXAMPLE.ORG>", replies.OK, "ALICE@EXAMPLE.ORG"),
        ("<>", replies.SYNTAX_ERROR, None),
        ("<" + "a" * 888 + "@example.org>", replies.SYNTAX_ERROR, None),
    ],
)
def test_rcpt_addresses(root: QRoot, addr: str, reply: replies.Reply, stored: str | None) -> None:
    v = rcpt(load(root), addr)
    assert v.reply == reply
    assert v.recipient == stored


def test_relayclient_empty_and_suffix(root: QRoot) -> None:
    """Relay permission skips the domain check and appends its value."""
    cfg = load(root)
    assert rcpt(cfg, "<victim@elsewhere.test>", Transaction("x@r.test", relay="")).recipient == (
        "victim@elsewhere.test"
    )
    v = rcpt(cfg, "<u@far.test>", Transaction("x@r.test", relay="@hub.test"))
    assert v.reply == replies.OK and v.recipient == "u@far.test@hub.test"


def test_blockrelayprobe(root: QRoot) -> None:
    """A percent or bang in the local part is refused, also for relay clients."""
    cfg = load(root, {"BLOCKRELAYPROBE": ""})
    for addr in (
        "<victim%elsewhere.test@example.org>",
        "<elsewhere.test!victim@example.org>",
        "<victim@elsewhere.test@example.org>",
        '<"victim@elsewhere.test"@example.org>',
    ):
        assert rcpt(cfg, addr).reply == PROBE
        assert rcpt(cfg, addr, Transaction("x@r.test", relay="")).reply == PROBE
    assert rcpt(cfg, "<alice@example.org>").reply == replies.OK


def test_rcpt_before_mail_and_counting(root: QRoot) -> None:
    cfg = load(root)
    assert rcpt(cfg, "<alice@example.org>", Transaction(None)).reply == replies.MAIL_FIRST
    assert rcpt(cfg, "<alice@example.org>", Transaction(None)).counted is False
    assert rcpt(cfg, "<alice@example.org>").counted is True
    assert rcpt(cfg, "<u@example.net>").counted is False  # rejected before step 6


def test_badrcptto(root: QRoot) -> None:
    """A recipient listed in control/badrcptto is refused."""
    root.control("badrcptto", "trap@example.org\nabuse@")
    cfg = load(root)
    assert rcpt(cfg, "<trap@example.org>").reply == replies.BAD_RCPTTO
    assert rcpt(cfg, "<Abuse@example.org>").reply == replies.BAD_RCPTTO
    assert rcpt(cfg, "<alice@example.org>").reply == replies.OK


def test_maxrcptcount(root: QRoot) -> None:
    """The third RCPT is refused, and it still counts."""
    cfg = load(root, {"MAXRCPTCOUNT": "2"})
    assert rcpt(cfg, "<a@example.org>", Transaction("x@r.test", rcpt_count=1)).reply == replies.OK
    v = rcpt(cfg, "<a@example.org>", Transaction("x@r.test", rcpt_count=2))
    assert v.reply == replies.TOO_MANY_RECIPIENTS and v.counted


@pytest.mark.parametrize("sender", ["", "#@[]"])
def test_bounce_with_two_recipients(root: QRoot, sender: str) -> None:
    """Bounce with two recipients."""
    cfg = load(root)
    assert rcpt(cfg, "<a@example.org>", Transaction(sender)).reply == replies.OK
    v = rcpt(cfg, "<b@example.org>", Transaction(sender, rcpt_count=1))
    assert v.reply == replies.BOUNCE_MANY_RECIPIENTS


def test_tarpit(root: QRoot) -> None:
    """Tarpit, at verdict level: RCPT 1 immediate, RCPT 2 delayed TARPITDELAY seconds."""
    cfg = load(root, {"TARPITCOUNT": "2", "TARPITDELAY": "1"})
    assert rcpt(cfg, "<a@example.org>").delay == 0
    assert rcpt(cfg, "<a@example.org>", Transaction("x@r.test", rcpt_count=1)).delay == 1
    assert load(root, {"TARPITCOUNT": "1"}).env.tarpitdelay == 5


def rcpt_with(cfg: SmtpdConfig, addr: str, answer: VerifyAnswer | None) -> Verdict | Lookup:
    facts = NO_FACTS if answer is None else NO_FACTS.add(answer)
    return rcpt_verdict(cfg, CLIENT, TXN, f"TO:{addr}", facts)


def test_rcptcheck_asks_only_for_local_domains(root: QRoot) -> None:
    """RCPTCHECK asks only for local domains: local addresses are verified, backup.test is not."""
    root.control("goodmailaddr", "postmaster@")
    cfg = load(root, {"RCPTCHECK": "", "BADRCPTDELAY": "2"})
    assert rcpt_with(cfg, "<nobody@example.org>", None) == VerifyQuery("nobody@example.org")
    text = "Sorry, no mailbox here by that name. (#5.1.1)"
    v = final(rcpt_with(cfg, "<nobody@example.org>", Invalid(text)))
    assert v.reply.render() == f"554 {text}\r\n" and v.delay == 2 and v.counted
    assert final(rcpt_with(cfg, "<alice@example.org>", Valid())).reply == replies.OK
    assert final(rcpt_with(cfg, "<u@backup.test>", None)).reply == replies.OK
    assert final(rcpt_with(cfg, "<postmaster@example.org>", None)).reply == replies.OK


def test_rcptcheck_soft(root: QRoot) -> None:
    """Rcptcheck soft, at verdict level."""
    v = final(rcpt_with(load(root, {"RCPTCHECK": ""}), "<a@example.org>", Soft()))
    assert v.reply.render().startswith("451 ") and v.delay == 0
    v = final(rcpt_with(load(root, {"RCPTCHECK": "", "LDAPSOFTOK": ""}), "<a@example.org>", Soft("x")))
    assert v.reply == replies.OK


def test_goodmailaddr_catchall(root: QRoot) -> None:
    root.control("goodmailaddr", "catchall@example.org")
    cfg = load(root, {"RCPTCHECK": ""})
    assert final(rcpt_with(cfg, "<zz@example.org>", None)).reply == replies.OK


# -- MAIL ------------------------------------------------------------------------------------------
def test_mail_syntax(root: QRoot) -> None:
    cfg = load(root)
    assert mail(cfg, "alice").reply == replies.SYNTAX_ERROR
    v = mail(cfg, "FROM:<x@remote.test>")
    assert v.reply == replies.OK and v.sender == "x@remote.test" and v.relay is None


def test_badmailfrom_and_goodmailfrom(root: QRoot) -> None:
    """badmailfrom and goodmailfrom."""
    root.control("badmailfrom", "@spam.test\njoe@")
    cfg = load(root)
    assert mail(cfg, "FROM:<a@SPAM.test>").reply == replies.BAD_MAILFROM
    assert mail(cfg, "FROM:<joe@any.test>").reply == replies.BAD_MAILFROM
    root.control("goodmailfrom", "ok@spam.test")
    assert mail(load(root), "FROM:<ok@spam.test>").reply == replies.OK


def test_badmailfrom_unknown(root: QRoot) -> None:
    """control/badmailfrom-unknown applies only to clients without a PTR name."""
    root.control("badmailfrom-unknown", "@hot.test")
    cfg = load(root)
    v = mail(cfg, "FROM:<a@hot.test>", Client(IP, None, None))
    assert v.reply == replies.bad_mailfrom_unknown(IP)
    assert "[192.0.2.10]" in v.reply.text
    assert mail(cfg, "FROM:<a@hot.test>").reply == replies.OK


def test_nobounce(root: QRoot) -> None:
    """NOBOUNCE refuses the empty sender, even for goodmailfrom."""
    root.control("goodmailfrom", "@")
    assert mail(load(root, {"NOBOUNCE": ""}), "FROM:<>").reply == replies.NO_BOUNCES
    assert mail(load(root), "FROM:<>").reply == replies.OK


def test_sanitycheck(root: QRoot) -> None:
    """SANITYCHECK: a sender needs a user, an @ and a dot in the domain."""
    cfg = load(root, {"SANITYCHECK": ""})
    assert mail(cfg, "FROM:<joe>").reply == replies.SANITY_NO_AT
    assert mail(cfg, "FROM:<joe@>").reply == replies.SANITY_NO_USER_OR_DOMAIN
    assert mail(cfg, "FROM:<@x.test:@x.test>").reply == replies.SANITY_NO_USER_OR_DOMAIN
    assert mail(cfg, "FROM:<joe@localhost>").reply == replies.SANITY_NO_DOT
    assert mail(cfg, "FROM:<>").reply == replies.OK


def test_relaymailfrom(root: QRoot) -> None:
    """Relay granted for that transaction; the user@ form is ignored."""
    root.control("relaymailfrom", "@partner.test\nbob@")
    cfg = load(root)
    v = mail(cfg, "FROM:<a@partner.test>")
    assert v.relay == ""
    assert rcpt(cfg, "<victim@elsewhere.test>", Transaction(v.sender, v.relay)).reply == replies.OK
    assert mail(cfg, "FROM:<b@other.test>").relay is None
    assert mail(cfg, "FROM:<bob@other.test>").relay is None


def test_authrequired(root: QRoot) -> None:
    """AUTHREQUIRED refuses an unauthenticated MAIL; authentication grants relay (MAIL CHECKS step 3)."""
    cfg = load(root, {"AUTHREQUIRED": ""})
    assert mail(cfg, "FROM:<a@b.test>").reply == replies.AUTH_NEEDED
    assert mail(load(root, {"AUTHREQUIRED": "", "AUTHORIZED": ""}), "FROM:<a@b.test>").relay is None
    v = mail(cfg, "FROM:<a@b.test>", Client(IP, "client.test", "@hub.test", authenticated=True))
    assert v.reply == replies.OK and v.relay == ""


def test_size_parameter(root: QRoot) -> None:
    """A SIZE parameter above databytes is refused at MAIL."""
    root.control("databytes", "1000")
    cfg = load(root)
    assert mail(cfg, "FROM:<a@b.test> SIZE=2000").reply == replies.SIZE_EXCEEDED
    assert mail(cfg, "FROM:<a@b.test> SIZE=1000").reply == replies.OK
    assert mail(load(root, {"DATABYTES": "5000"}), "FROM:<a@b.test> SIZE=2000").reply == replies.OK


def test_rbl(root: QRoot) -> None:
    """RBL, at verdict level: the query name, reject, RBLONLYHEADER, no query for relay."""
    root.control("rbllist", "bl.test reject any Listed here")
    cfg = load(root, {"RBL": ""})
    first = mail_verdict(cfg, CLIENT, "FROM:<a@b.test>")
    assert isinstance(first, RblQuery) and first.name == "10.2.0.192.bl.test"
    listed = Facts().add(RblAnswer(("127.0.0.2",)))
    assert mail(cfg, "FROM:<a@b.test>", facts=listed).reply.render() == (
        "553 sorry, your mailserver [192.0.2.10] is rejected by Listed here\r\n"
    )
    assert mail(cfg, "FROM:<a@b.test>", facts=Facts().add(RblAnswer())).reply == replies.OK
    assert mail(cfg, "FROM:<a@b.test>", facts=Facts().add(RblAnswer(soft=True))).reply == replies.OK
    tag = mail(load(root, {"RBL": "", "RBLONLYHEADER": ""}), "FROM:<a@b.test>", facts=listed)
    assert tag.reply == replies.OK and tag.rbl_headers == ("X-RBL: (bl.test) tells us Listed here\n",)
    relayed = mail_verdict(cfg, Client(IP, "client.test", ""), "FROM:<a@b.test>")
    assert isinstance(relayed, Verdict) and relayed.accepted
    assert mail(cfg, "FROM:<a@b.test>", Client("2001:db8::1", None, None)).reply == replies.OK


def test_rbl_lists_in_order(root: QRoot) -> None:
    root.control("rbllist", "one.test addheader 127.0.0.3 First\ntwo.test reject 127.0.0.2 Second list")
    cfg = load(root, {"RBL": ""})
    facts = Facts().add(RblAnswer(("127.0.0.3",)))
    second = mail_verdict(cfg, CLIENT, "FROM:<a@b.test>", facts)
    assert isinstance(second, RblQuery) and second.name == "10.2.0.192.two.test"
    v = mail(cfg, "FROM:<a@b.test>", facts=facts.add(RblAnswer(("127.0.0.4",))))
    assert v.rbl_headers == ("X-RBL: (one.test) matches with 127.0.0.3 and tells us First\n",)
    assert mail(cfg, "FROM:<a@b.test>", facts=facts.add(RblAnswer(("127.0.0.2",)))).reply.code == 553


def test_rbllist_parse_errors() -> None:
    assert parse_rbllist(["bl.test AddHeader any a message"])[0].action is RblAction.ADDHEADER
    with pytest.raises(ConfigError):
        parse_rbllist(["bl.test reject any"])
    with pytest.raises(ConfigError):
        parse_rbllist(["bl.test drop any text"])
    assert rbl_query_name("unknown", "bl.test") is None


def test_bad_rbllist_only_fatal_with_rbl(root: QRoot) -> None:
    root.control("rbllist", "broken")
    assert load(root).rbllist == ()
    with pytest.raises(ConfigError):
        load(root, {"RBL": ""})


def test_returnmxcheck(root: QRoot) -> None:
    """Returnmxcheck, at verdict level."""
    cfg = load(root, {"RETURNMXCHECK": ""})
    assert mail_verdict(cfg, CLIENT, "FROM:<a@nx.test>") == MxQuery("nx.test")
    missing = Facts().add(MxAnswer.MISSING)
    assert mail(cfg, "FROM:<a@nx.test>", facts=missing).reply == replies.RETURN_MX_MISSING
    temp = mail(cfg, "FROM:<a@nx.test>", facts=Facts().add(MxAnswer.TEMPFAIL))
    assert temp.reply == replies.RETURN_MX_TEMPFAIL and temp.close
    assert mail(cfg, "FROM:<a@ok.test>", facts=Facts().add(MxAnswer.EXISTS)).reply == replies.OK
    assert mail(cfg, "FROM:<>").reply == replies.OK
    assert mail(cfg, "FROM:<a@[192.0.2.9]>").reply == replies.OK
    assert mail(cfg, "FROM:<a@>").reply == replies.RETURN_MX_MISSING


def test_sendercheck_modes(root: QRoot) -> None:
    """Sendercheck modes, at verdict level."""
    cfg = load(root, {"SENDERCHECK": ""})
    assert cfg.env.sendercheck is SenderCheck.NORMAL
    assert mail_verdict(cfg, CLIENT, "FROM:<nobody@example.org>") == VerifyQuery("nobody@example.org")
    text = "Sorry, no mailbox here by that name. (#5.1.1)"
    invalid = Facts().add(Invalid(text))
    assert mail(cfg, "FROM:<nobody@example.org>", facts=invalid).reply == replies.verify_invalid(text)
    assert mail(cfg, "FROM:<x@remote.test>").reply == replies.OK
    strict = load(root, {"SENDERCHECK": "Strict"})
    assert mail(strict, "FROM:<x@remote.test>").reply == replies.LOCAL_SENDER_REQUIRED
    loose = load(root, {"SENDERCHECK": "LOOSE"})
    assert mail(loose, "FROM:<x@backup.test>").reply == replies.OK
    assert mail(loose, "FROM:<x@remote.test>").reply == replies.LOCAL_SENDER_REQUIRED
    root.control("goodmailaddr", "@remote.test")
    assert mail(load(root, {"SENDERCHECK": "STRICT"}), "FROM:<x@remote.test>").reply == replies.OK


def test_checks_run_in_order(root: QRoot) -> None:
    """Syntax before AUTHREQUIRED before size before badmailfrom before sanity."""
    root.control("badmailfrom", "joe")
    root.control("databytes", "10")
    cfg = load(root, {"AUTHREQUIRED": "", "SANITYCHECK": ""})
    assert mail(cfg, "alice").reply == replies.SYNTAX_ERROR
    assert mail(cfg, "FROM:<joe> SIZE=20").reply == replies.AUTH_NEEDED
    authed = Client(IP, "client.test", None, authenticated=True)
    assert mail(cfg, "FROM:<joe> SIZE=20", authed).reply == replies.SIZE_EXCEEDED
    assert mail(cfg, "FROM:<joe>", authed).reply == replies.BAD_MAILFROM
    assert mail(cfg, "FROM:<jim>", authed).reply == replies.SANITY_NO_AT


# -- DATA ------------------------------------------------------------------------------------------
def test_data_start() -> None:
    assert final_or_none(data_start_verdict(Transaction(None), 0)) == replies.MAIL_FIRST
    assert final_or_none(data_start_verdict(Transaction("a@b"), 0)) == replies.RCPT_FIRST
    assert data_start_verdict(Transaction(""), 1) is None


def final_or_none(v: Verdict | None) -> replies.Reply | None:
    return None if v is None else v.reply


def test_data_end_order(root: QRoot) -> None:
    root.control("signatures", "TVqQ")
    cfg = load(root, {"REJECTEXEC": ""})
    assert final_or_none(data_end_verdict(cfg, DataEnd(10, 100, True), True)) == replies.TOO_MANY_HOPS
    assert final_or_none(data_end_verdict(cfg, DataEnd(10, 99, True), True)) == replies.SIZE_EXCEEDED
    assert final_or_none(data_end_verdict(cfg, DataEnd(10, 99, False), True)) == replies.EXEC_REJECTED
    assert data_end_verdict(cfg, DataEnd(10, 99, False), False) is None
    assert data_end_verdict(load(root), DataEnd(10, 0, False), True) is None  # REJECTEXEC unset


# -- configuration (qmail-smtpd(8), SESSION START and CONTROL FILES and ENVIRONMENT) -------------
def test_config_defaults_and_limits(root: QRoot) -> None:
    root.control("smtpclustercookie", "c" * 40)
    root.control("timeoutsmtpd", "0")
    cfg = load(root)
    assert cfg.me == "mx.example.org" and cfg.localiphost == "mx.example.org"
    assert cfg.cookie == "c" * 32 and cfg.timeout == 1 and cfg.databytes == 0
    assert cfg.cert_path is None and cfg.tlsciphers == "compat"
    root.control("timeoutsmtpd", None)
    root.control("smtpcert", "PEM")
    cfg = load(root, {"DATABYTES": "12junk"})
    assert cfg.timeout == 120 and cfg.databytes == 12 and cfg.cert_path == root.control_dir / "smtpcert"
    root.control("me", None)
    with pytest.raises(ConfigError):
        load(root)


def test_env_parsing() -> None:
    env = SmtpdEnv.from_environ(
        {
            "RELAYCLIENT": "",
            "MAXRCPTCOUNT": "x",
            "LOGLEVEL": "9",
            "SMTPAUTH": "tlsrequired",
            "550GREETING": "",
        }
    )
    assert env.relayclient == "" and env.maxrcptcount == 0 and env.loglevel == 4
    assert env.smtpauth and env.auth_tls_required and env.greeting550 == ""
    assert env.greeting421 is None and env.remote_ip == "unknown" and env.remote_host is None
    assert SmtpdEnv.from_environ({"SMTPAUTH": ""}).auth_tls_required is False
    assert SmtpdEnv.from_environ({"SENDERCHECK": "other"}).sendercheck is SenderCheck.NORMAL


def test_nolocal(root: QRoot) -> None:
    root.control("rcpthosts", "backup.test")
    assert rcpt(load(root), "<a@example.org>").reply == replies.OK
    assert rcpt(load(root, {"NOLOCAL": ""}), "<a@example.org>").reply == REL

"""qmail-inject's header completion and envelope, as a pure function (qmail-inject(1))."""

from __future__ import annotations

import pytest

from qldap.errors import PermanentFailure
from qldap.inject.headers import Completer, Prepared, message_id, prepare, split_message
from qldap.inject.options import Controls, InjectEnv, controls_from, parse_inject

NOW = 1700000000.0  # 14 Nov 2023 22:13:20 UTC
PID = 4242
CONTROLS = Controls(defaultdomain="example.com", defaulthost="mx1.example.com", plusdomain="plus.example",
                    idhost="id.example.net")  # fmt: skip
DATE = "Date: 14 Nov 2023 22:13:20 -0000\n"
MSGID = "Message-ID: <20231114221320.4242.qmail@id.example.net>\n"


def run(message: str | bytes, *argv: str, environ: dict[str, str] | None = None,
        followup: frozenset[str] | None = None) -> Prepared:  # fmt: skip
    env = InjectEnv.from_environ({"USER": "joe"} if environ is None else environ, followup)
    raw = message.encode() if isinstance(message, str) else message
    return prepare(raw, parse_inject(list(argv)), env, CONTROLS, NOW, PID)


def text(p: Prepared) -> str:
    return p.message.decode()


# -- completion rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "want"),
    [
        ("bob", "bob@mx1.example.com"),  # no @ → @defaulthost
        ("bob@host", "bob@host.example.com"),  # no dot → .defaultdomain
        ("bob@host+", "bob@host.plus.example"),  # trailing + → .plusdomain
        ("bob@a.b", "bob@a.b"),
        ("bob@[192.0.2.1]", "bob@[192.0.2.1]"),  # literal: no defaultdomain
        ("bob@host.", "bob@host.example.com"),  # trailing dot dropped
        ("bob@", "bob@mx1.example.com"),  # trailing @ dropped
        ("<@r1,@r2:bob@a.b>", "bob@a.b"),  # source route dropped
        ("<>", ""),
        ("owner-@list.example-@[]", "owner-@list.example-@[]"),  # VERP form stays
        ('"a b"@x.y', "a b@x.y"),
    ],
)
def test_completion_rules(addr: str, want: str) -> None:
    p = run(f"To: {addr}\n\n")
    assert p.recipients == ((want,) if want else ())


def test_completion_of_arguments_and_f_uses_the_same_rules() -> None:
    c = Completer(CONTROLS)
    assert c.address("bob") == "bob@mx1.example.com"
    assert c.address("a b@h") == "a b@h.example.com"
    assert c.address("") == ""


def test_address_headers_are_rewritten_and_refolded() -> None:
    p = run("From: me\nReply-To: you@there+\nSender: (x) s\nSubject: bob\nTo:a,b\n\n")
    assert "From: me@mx1.example.com\n" in text(p)
    assert "Reply-To: you@there.plus.example\n" in text(p)
    assert "Sender: s@mx1.example.com (x)\n" in text(p)  # the comment follows its address
    assert "Subject: bob\n" in text(p)  # not an address field
    assert "To: a@mx1.example.com, b@mx1.example.com\n" in text(p)


# -- fields added and dropped -------------------------------------------------------------------


def test_check51_date_message_id_from_added_bcc_removed() -> None:
    p = run("To: a@b.example\nBcc: hidden@c.example\n\nhi\n")
    assert text(p) == DATE + MSGID + "From: joe@mx1.example.com\nTo: a@b.example\n\nhi\n"
    assert p.recipients == ("a@b.example", "hidden@c.example")


def test_present_fields_are_kept_not_added() -> None:
    head = "Date: yesterday\nMessage-ID: <x@y>\nFrom: f@g.h\nCc: c@d.e\n"
    assert text(run(head + "\nb\n")) == head + "\nb\n"


@pytest.mark.parametrize(
    "name", ["Bcc", "Resent-Bcc", "Return-Path", "Content-Length", "BCC", "content-length "]
)
def test_dropped_fields(name: str) -> None:
    p = run(f"To: t@u.v\n{name}: 42@x.y\nX: y\n\n")
    assert f"{name}:" not in text(p)
    assert "X: y\n" in text(p)


def test_without_to_or_cc_the_recipient_list_is_not_shown() -> None:
    p = run("Subject: s\n\nb\n", "r@s.t")
    assert "Cc: recipient list not shown: ;\n" in text(p)
    assert "Cc: recipient" not in text(run("Cc: c@d.e\n\n"))


def test_resent_fields_get_the_resent_forms() -> None:
    p = run("Resent-To: r@x.y\nTo: t@u.v\nFrom: f@g.h\nDate: d\nMessage-ID: <m@i>\n\nb\n")
    assert text(p).startswith(
        "Resent-Date: 14 Nov 2023 22:13:20 -0000\n"
        "Resent-Message-ID: <20231114221320.4242.qmail@id.example.net>\n"
        "Resent-From: joe@mx1.example.com\nResent-To: r@x.y\n"
    )
    assert p.recipients == ("r@x.y",)  # the Resent- recipients replace To/Cc/Bcc
    p = run("Resent-From: f@g.h\nTo: t@u.v\n\n")
    assert "Resent-Cc: recipient list not shown: ;\n" in text(p)
    assert "Resent-From: f@g.h\n" in text(p) and "Resent-From: joe" not in text(p)
    assert p.recipients == ()


def test_message_id_format() -> None:
    assert message_id("h.example", 0.0, 7) == "Message-ID: <19700101000000.7.qmail@h.example>\n"


# -- From ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "want"),
    [
        ({}, "From: anonymous@mx1.example.com"),
        ({"LOGNAME": "l", "USER": "u"}, "From: u@mx1.example.com"),
        ({"LOGNAME": "l"}, "From: l@mx1.example.com"),
        ({"MAILUSER": "m", "USER": "u"}, "From: m@mx1.example.com"),
        ({"QMAILUSER": "q", "MAILUSER": "m"}, "From: q@mx1.example.com"),
        ({"USER": "u", "MAILHOST": "mh.example", "QMAILHOST": "qh.example"}, "From: u@qh.example"),
        ({"USER": "u", "MAILHOST": "mh"}, "From: u@mh.example.com"),
        ({"USER": "u", "NAME": "N", "MAILNAME": "M"}, 'From: "M" <u@mx1.example.com>'),
        ({"USER": "u", "NAME": "N", "QMAILNAME": 'Q "x"'}, 'From: "Q \\"x\\"" <u@mx1.example.com>'),
        ({"USER": "u", "NAME": "Joe Q", "QMAILINJECT": "c"}, "From: u@mx1.example.com (Joe Q)"),
        ({"USER": "j smith"}, 'From: "j smith"@mx1.example.com'),
    ],
)
def test_default_from(environ: dict[str, str], want: str) -> None:
    assert want + "\n" in text(run("To: t@u.v\n\n", environ=environ))


def test_qmailinject_f_and_i_replace_from_and_message_id() -> None:
    p = run("From: old@x.y\nMessage-ID: <old@x>\nTo: t@u.v\n\n", environ={"USER": "joe", "QMAILINJECT": "fi"})
    assert "old" not in text(p)
    assert MSGID in text(p) and "From: joe@mx1.example.com\n" in text(p)


# -- sender --------------------------------------------------------------------------------------


def test_sender_from_f_then_return_path_then_default() -> None:
    msg = "Return-Path: <rp@x.y>\nReturn-Path: <second@x.y>\nTo: t@u.v\n\n"
    assert run(msg, "-f", "s@x.example").sender == "s@x.example"
    assert run(msg, "-f", "s").sender == "s@mx1.example.com"
    assert run(msg, "-f", "").sender == ""
    assert run(msg).sender == "rp@x.y"
    assert run("Return-Path: <>\n\n").sender == ""
    assert run(msg, environ={"USER": "joe", "QMAILINJECT": "s"}).sender == "joe@mx1.example.com"
    env = {"USER": "joe", "QMAILSUSER": "bounces", "QMAILSHOST": "b.example"}
    assert run("To: t@u.v\n\n", environ=env).sender == "bounces@b.example"
    assert run("To: t@u.v\n\n", environ={"QMAILHOST": "h.example", "QMAILSUSER": "b"}).sender == "b@h.example"


def test_verp_letters() -> None:
    assert run("\n", environ={"USER": "list", "QMAILINJECT": "r"}).sender == "list-@mx1.example.com-@[]"
    assert (
        run("\n", environ={"USER": "list", "QMAILINJECT": "m"}).sender
        == "list-1700000000.4242@mx1.example.com"
    )
    both = run("\n", environ={"USER": "l", "QMAILINJECT": "mr"}).sender
    assert both == "l-1700000000.4242-@mx1.example.com-@[]"
    assert run("Return-Path: <o@l.x>\n\n", environ={"QMAILINJECT": "r"}).sender == "o@l.x-@[]"
    assert run("\n", "-f", "o@l.x", environ={"QMAILINJECT": "r"}).sender == "o@l.x"


def test_n_prints_the_return_path_first() -> None:
    p = run("To: t@u.v\n\nb\n", "-n", "-f", "a b@c.d")
    assert text(p).startswith('Return-Path: <"a b"@c.d>\n' + DATE)
    assert run("\n", "-n", "-f", "").message.startswith(b"Return-Path: <>\n")


# -- recipients ----------------------------------------------------------------------------------

MSG = "To: t@u.v, t2\nCc: c@d.e\nBcc: b@x.y\nApparently-To: ap@x.y\nResent-Bcc-Not: z\n\n"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ((), ("t@u.v", "t2@mx1.example.com", "c@d.e", "b@x.y", "ap@x.y")),  # -A without args: header
        (("arg",), ("arg@mx1.example.com",)),  # -A with args: args
        (("-a", "arg"), ("arg@mx1.example.com",)),
        (("-a",), ()),
        (("-h", "arg"), ("t@u.v", "t2@mx1.example.com", "c@d.e", "b@x.y", "ap@x.y")),
        (("-H", "arg"), ("arg@mx1.example.com", "t@u.v", "t2@mx1.example.com", "c@d.e", "b@x.y", "ap@x.y")),
        (("-h", "-A", "arg"), ("arg@mx1.example.com",)),  # the last choice counts
    ],
)
def test_recipient_modes(argv: tuple[str, ...], want: tuple[str, ...]) -> None:
    assert run(MSG, *argv).recipients == want


def test_bad_argument_and_bad_field_are_permanent() -> None:
    with pytest.raises(PermanentFailure, match=r"^unable to parse address: a@\)x$"):
        run("\n", "a@)x")
    with pytest.raises(PermanentFailure, match=r"^unable to parse this line:\nTo: a: b\n  c$"):
        run("To: a: b\n  c\n\n")
    with pytest.raises(PermanentFailure, match="unable to parse this line"):
        run("\n", "-f", "a@]b")
    run("Subject: a: b)\n\n")  # not an address field: left alone


def test_mail_followup_to_from_qmailmftfile() -> None:
    lists = frozenset({"list@lists.example"})
    p = run("To: List@Lists.Example, a@b.c\nCc: d@e.f\n\n", followup=lists)
    assert "Mail-Followup-To: List@Lists.Example,\n  a@b.c,\n  d@e.f\n" in text(p)
    assert "Mail-Followup-To" not in text(run("To: a@b.c\n\n", followup=lists))
    kept = run("To: list@lists.example\nMail-Followup-To: x@y.z\n\n", followup=lists)
    assert text(kept).count("Mail-Followup-To") == 1


# -- splitting header and body --------------------------------------------------------------------


def test_split_message_rules() -> None:
    s = split_message(b"From joe Mon\nSubject: a\n b\nno header here\nbody")
    assert s.fields == ("MBOX-Line: From joe Mon\n", "Subject: a\n b\n")
    assert s.body == b"\nno header here\nbody\n"  # blank line inserted, final LF added
    assert split_message(b"Subject: a\n").body == b""  # no blank line when the header runs to EOF
    assert split_message(b" indented\n").fields == ()


def test_eight_bit_bytes_survive() -> None:
    raw = b"Subject: caf\xe9 \xff\nTo: t@u.v\n\n\x00\xfe\n"
    p = run(raw)
    assert b"Subject: caf\xe9 \xff\n" in p.message and p.message.endswith(b"\n\n\x00\xfe\n")


# -- controls -------------------------------------------------------------------------------------


def test_controls_fall_back_to_me_then_their_names_and_env_overrides() -> None:
    files: dict[str, str | None] = {"me": "me.example", "defaulthost": "dh.example", "idhost": ""}
    c = controls_from(files, {})
    assert c == Controls("me.example", "dh.example", "me.example", "me.example")
    env = {"QMAILDEFAULTDOMAIN": "dd", "QMAILDEFAULTHOST": "h", "QMAILPLUSDOMAIN": "p", "QMAILIDHOST": "i"}
    assert controls_from(files, env) == Controls("dd", "h", "p", "i")
    assert controls_from({}, {}) == Controls("defaultdomain", "defaulthost", "plusdomain", "idhost")

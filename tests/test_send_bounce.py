"""Bounce paragraphs and the QSBMF message (qmail-send(8), BOUNCES) at the composition level."""

from __future__ import annotations

import calendar

from qldap.control.files import ControlDir
from qldap.dates import qmail_date
from qldap.remote.dialogue import DialogueSettings, Finished, Send, SmtpDialogue
from qldap.reports import Letter, fold_remote_output, triple_bounce_line
from qldap.send.bounce import (
    STRIPPED_MARKER,
    BouncePlan,
    Discard,
    bounce_paragraph,
    plan_bounce,
)
from qldap.send.config import SendConfig
from qldap.send.preprocess import display_recipient, rewrite_recipient
from qldap.send.schedule import verp_sender
from tests.conftest import QRoot

NOW = calendar.timegm((2022, 3, 6, 16, 59, 46))
MESS = b"Received: (qmail 4242 invoked by uid 1000); 6 Mar 2022 16:59:40 -0000\nSubject: test\n\nbody line\n"

# qmail-send(8) BOUNCES verbatim, with the "rest of the queued message" filled in by MESS.
SPEC_BOUNCE = (
    b"Date: 6 Mar 2022 16:59:46 -0000\n"
    b"From: MAILER-DAEMON@mx.example.com\n"
    b"To: alice@example.com\n"
    b"Subject: failure notice\n"
    b"\n"
    b"Hi. This is the qmail-send program at mx.example.com.\n"
    b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
    b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
    b"\n"
    b"<joe@example.net>:\n"
    b"192.0.2.7 does not like recipient.\n"
    b"Remote host said: 550 5.1.1 no such user\n"
    b"Giving up on 192.0.2.7.\n"
    b"\n"
    b"--- Below this line is a copy of the message.\n"
    b"\n"
    b"Return-Path: <alice@example.com>\n"
) + MESS


def config(qroot: QRoot, **files: str) -> SendConfig:
    qroot.control("me", "mx.example.com")
    for name, text in files.items():
        qroot.control(name, text)
    return SendConfig.from_control(ControlDir(qroot.path))


def rcpt_550_report() -> str:
    """Run the SMTP client against a server refusing the recipient; return the folded D text."""
    dlg = SmtpDialogue(
        "192.0.2.7", "alice@example.com", ("joe@example.net",), MESS, DialogueSettings("mx.example.com")
    )
    end = None
    for reply in (b"220 hi\r\n", b"250 hello\r\n", b"250 ok\r\n", b"550 5.1.1 no such user\r\n"):
        for action in dlg.feed(reply):
            if isinstance(action, Finished):
                end = action
            else:
                assert isinstance(action, Send)
    assert end is not None
    report = fold_remote_output(end.outcome.encode())
    assert report.letter is Letter.PERMANENT
    return report.text


def render(plan: BouncePlan | Discard, message: bytes = MESS) -> bytes:
    assert isinstance(plan, BouncePlan)
    return plan.render(message)


def test_date_format() -> None:
    assert qmail_date(NOW) == "6 Mar 2022 16:59:46 -0000"
    assert qmail_date(calendar.timegm((2023, 12, 25, 1, 2, 3))) == "25 Dec 2023 01:02:03 -0000"


def test_check_29_bounce_text_equals_the_spec(qroot: QRoot) -> None:
    cfg = config(qroot)
    paragraph = bounce_paragraph("joe@example.net", rcpt_550_report())
    plan = plan_bounce(cfg, "alice@example.com", paragraph, NOW)
    assert isinstance(plan, BouncePlan)
    assert (plan.sender, plan.recipient) == ("", "alice@example.com")
    assert plan.render(MESS) == SPEC_BOUNCE


def test_check_30_two_failures_one_bounce_two_paragraphs(qroot: QRoot) -> None:
    cfg = config(qroot)
    paragraphs = bounce_paragraph("a@x.net", "first failure\n") + bounce_paragraph(
        "b@y.net", "second failure"
    )
    text = render(plan_bounce(cfg, "alice@example.com", paragraphs, NOW))
    assert text.count(b"Hi. This is the qmail-send program") == 1
    assert b"\n\n<a@x.net>:\nfirst failure\n\n<b@y.net>:\nsecond failure\n\n--- Below this line" in text


def test_paragraph_rules() -> None:
    assert bounce_paragraph("a@b", "x") == "<a@b>:\nx\n\n"
    assert bounce_paragraph("a@b", "x\n") == "<a@b>:\nx\n\n"
    assert bounce_paragraph("a@b", "x\n\n\ny\n") == "<a@b>:\nx\n//y\n\n"  # no empty line inside
    assert bounce_paragraph("a\nb@c", "x\n") == "<a_b@c>:\nx\n\n"
    assert bounce_paragraph("a@b", "") == "<a@b>:\n\n"


def test_check_31_bouncemaxbytes(qroot: QRoot) -> None:
    cfg = config(qroot, bouncemaxbytes="100")
    big = bytes(range(32, 127)) * 110  # about 10 kB
    plan = plan_bounce(cfg, "alice@example.com", bounce_paragraph("joe@x.net", "no\n"), NOW)
    text = render(plan, big)
    head = text.index(b"Return-Path: <alice@example.com>\n") + len(b"Return-Path: <alice@example.com>\n")
    assert text[head:] == big[:100] + b"\n\n--- End of message stripped.\n"
    assert STRIPPED_MARKER == b"\n\n--- End of message stripped.\n"
    small = b"x" * 49 + b"\n"
    assert render(plan, small).endswith(b"Return-Path: <alice@example.com>\n" + small)
    exact = b"y" * 99 + b"\n"  # exactly the limit: copied whole, no marker
    assert render(plan, exact).endswith(b">\n" + exact)


def test_unlimited_by_default(qroot: QRoot) -> None:
    big = b"z" * 50000 + b"\n"
    assert render(plan_bounce(config(qroot), "a@b.c", "", NOW), big).endswith(b"\n" + big)


def test_check_32_double_bounce(qroot: QRoot) -> None:
    cfg = config(qroot)
    plan = plan_bounce(cfg, "", bounce_paragraph("alice@example.com", "no mailbox\n"), NOW)
    assert isinstance(plan, BouncePlan)
    assert (plan.sender, plan.recipient) == ("#@[]", "postmaster@mx.example.com")
    text = plan.render(MESS).decode()
    assert text.startswith(
        "Date: 6 Mar 2022 16:59:46 -0000\n"
        "From: MAILER-DAEMON@mx.example.com\n"
        "To: postmaster@mx.example.com\n"
        "Subject: failure notice\n"
        "\n"
        "Hi. This is the qmail-send program at mx.example.com.\n"
        "I tried to deliver a bounce message to this address, but the bounce bounced!\n"
        "\n"
        "<alice@example.com>:\n"
    )
    assert "--- Below this line is the original bounce.\n\nReturn-Path: <>\n" in text
    assert "I'm afraid" not in text


def test_check_33_triple_bounce_is_discarded(qroot: QRoot) -> None:
    assert isinstance(plan_bounce(config(qroot), "#@[]", "<x@y>:\nno\n\n", NOW), Discard)
    assert triple_bounce_line(4711) == "triple bounce: discarding bounce/4711"


def test_check_34_empty_doublebounceto_goes_to_at_host(qroot: QRoot) -> None:
    cfg = config(qroot, doublebounceto="\n")
    plan = plan_bounce(cfg, "", "", NOW)
    assert isinstance(plan, BouncePlan)
    assert plan.recipient == "@mx.example.com"
    # the preprocessor sees a local recipient at me: the local channel accepts it silently
    assert rewrite_recipient(plan.recipient, cfg).channel.value == "local"


def test_check_35_virtual_user_shown_without_prepend(qroot: QRoot) -> None:
    cfg = config(qroot, virtualdomains="example.org:vuser")
    rewritten = rewrite_recipient("joe@example.org", cfg).address
    shown = display_recipient(rewritten, cfg.virtualdomains)
    text = render(plan_bounce(cfg, "a@b.c", bounce_paragraph(shown, "no\n"), NOW))
    assert b"\n<joe@example.org>:\nno\n" in text
    assert b"vuser-" not in text


def test_check_28_verp_bounce_goes_to_the_list_owner(qroot: QRoot) -> None:
    sender = "owner-@list.example-@[]"
    assert verp_sender(sender, "joe@x.net") == "owner-joe=x.net@list.example"
    plan = plan_bounce(config(qroot), sender, bounce_paragraph("joe@x.net", "no\n"), NOW)
    assert isinstance(plan, BouncePlan)
    assert (plan.sender, plan.recipient) == ("", "owner-@list.example")
    assert b"\nTo: owner-@list.example\n" in plan.head
    assert plan.head.endswith(b"Return-Path: <owner-@list.example>\n")


def test_custombouncetext_and_bouncefrom(qroot: QRoot) -> None:
    cfg = config(
        qroot,
        custombouncetext="Questions? Write to help@example.com.\nThank you.",
        bouncefrom="mail daemon",
        bouncehost="bounces.example.com",
    )
    text = render(plan_bounce(cfg, "alice@example.com", bounce_paragraph("joe@x.net", "no\n"), NOW)).decode()
    assert 'From: "mail daemon"@bounces.example.com\n' in text
    assert (
        "Hi. This is the qmail-send program at bounces.example.com.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n"
        "Questions? Write to help@example.com.\n"
        "Thank you.\n"
        "\n"
        "<joe@x.net>:\n"
    ) in text
    # double bounces go to the postmaster: no custom text there
    assert b"Questions?" not in render(plan_bounce(cfg, "", "", NOW))


def test_sender_with_spaces_is_quoted(qroot: QRoot) -> None:
    plan = plan_bounce(config(qroot), "john smith@example.com", "", NOW)
    assert isinstance(plan, BouncePlan)
    assert plan.recipient == "john smith@example.com"  # the envelope keeps the raw address
    assert b'\nTo: "john smith"@example.com\n' in plan.head
    assert plan.head.endswith(b'Return-Path: <"john smith"@example.com>\n')

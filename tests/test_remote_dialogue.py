"""The sans-I/O SMTP client (qmail-send(8), REMOTE DELIVERY) driven by scripted server
transcripts."""

from __future__ import annotations

import base64

import pytest

from qldap.address import quote_address
from qldap.remote.dialogue import (
    DialogueSettings,
    Finished,
    NextAddress,
    RemoteOutcome,
    ReplyReader,
    Send,
    SmtpDialogue,
    StartTls,
    encode_body,
    no_connection,
    xtext,
)
from qldap.remote.routes import Credentials
from qldap.reports import Letter, fold_remote_output

IP = "192.0.2.7"
MSG = b"Subject: hi\n\nhello\n"
EHLO_PLAIN = b"250-mx.example\r\n250 8BITMIME\r\n"


def dialogue(
    message: bytes = MSG,
    recipients: tuple[str, ...] = ("joe@example.net",),
    sender: str = "alice@example.com",
    **settings: object,
) -> SmtpDialogue:
    opts = DialogueSettings(helohost=str(settings.pop("helohost", "mx1.example.com")), **settings)  # type: ignore[arg-type]
    return SmtpDialogue(IP, sender, recipients, message, opts)


def converse(dlg: SmtpDialogue, replies: list[bytes]) -> tuple[list[bytes], Finished | NextAddress]:
    """Feed server replies one by one; collect what the client sent until it finished."""
    sent: list[bytes] = []
    for reply in replies:
        for action in dlg.feed(reply):
            if isinstance(action, Send):
                sent.append(action.data)
            elif isinstance(action, Finished | NextAddress):
                return sent, action
            else:
                raise AssertionError(f"unexpected action {action}")
    raise AssertionError(f"dialogue unfinished; sent {sent}")


def outcome(end: Finished | NextAddress) -> RemoteOutcome:
    assert isinstance(end, Finished)
    return end.outcome


HAPPY = [
    b"220 mx ESMTP\r\n",
    EHLO_PLAIN,
    b"250 ok\r\n",
    b"250 ok\r\n",
    b"354 go\r\n",
    b"250 ok 1646585986 qp 777\r\n",
]


def test_full_transcript_and_success_text() -> None:
    sent, end = converse(dialogue(), HAPPY)
    assert sent == [
        b"EHLO mx1.example.com\r\n",
        b"MAIL FROM:<alice@example.com>\r\n",
        b"RCPT TO:<joe@example.net>\r\n",
        b"DATA\r\n",
        b"Subject: hi\r\n\r\nhello\r\n.\r\n",
        b"QUIT\r\n",
    ]
    out = outcome(end)
    assert out.encode() == b"r\0K192.0.2.7 accepted message.\nRemote host said: 250 ok 1646585986 qp 777\n\0"
    report = fold_remote_output(out.encode())
    assert report.letter is Letter.SUCCESS
    assert report.text == "192.0.2.7 accepted message.\nRemote host said: 250 ok 1646585986 qp 777\n"


def test_bytes_may_arrive_split_anywhere() -> None:
    dlg = dialogue()
    stream = b"".join(HAPPY)
    sent: list[bytes] = []
    end = None
    # feed one byte at a time: replies are only acted on once complete
    pos = 0
    for reply in HAPPY:
        for i in range(len(reply)):
            for action in dlg.feed(stream[pos + i : pos + i + 1]):
                if isinstance(action, Send):
                    sent.append(action.data)
                else:
                    end = action
        pos += len(reply)
    assert isinstance(end, Finished)
    assert end.outcome.message.letter == "K"
    assert sent[1] == b"MAIL FROM:<alice@example.com>\r\n"


def test_check_44_dot_stuffing_and_crlf() -> None:
    body = b"a\n.x\n..y\nb.\n"
    assert encode_body(body) == b"a\r\n..x\r\n...y\r\nb.\r\n.\r\n"
    sent, _ = converse(dialogue(message=body), HAPPY)
    assert sent[4] == b"a\r\n..x\r\n...y\r\nb.\r\n.\r\n"


def test_check_43_partial_final_line_fails_permanently_without_sending_body() -> None:
    sent, end = converse(dialogue(message=b"no newline"), HAPPY)
    assert sent[-1] == b"DATA\r\n"  # neither the body nor QUIT goes out in the middle of DATA
    out = outcome(end)
    assert out.message.letter == "D"
    assert out.message.text == "SMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
    assert fold_remote_output(out.encode()).letter is Letter.PERMANENT


def test_check_45_size_when_advertised() -> None:
    message = b"x" * 999 + b"\n"  # 1000 bytes: 1000 + 1000 // 32 + 1 = 1032
    ehlo = b"250-mx.example\r\n250-SIZE 10240000\r\n250 HELP\r\n"
    sent, _ = converse(dialogue(message=message), [HAPPY[0], ehlo, *HAPPY[2:]])
    assert sent[1] == b"MAIL FROM:<alice@example.com> SIZE=1032\r\n"


def test_no_size_parameter_when_not_advertised_and_empty_sender() -> None:
    sent, _ = converse(dialogue(sender=""), HAPPY)
    assert sent[1] == b"MAIL FROM:<>\r\n"


def test_check_39_cookie_in_greeting_is_a_loop() -> None:
    sent, end = converse(dialogue(cookie="C00kie"), [b"220 mx ESMTP hi C00kie\r\n"])
    assert sent == [b"QUIT\r\n"]
    assert outcome(end).message.letter == "D"
    assert outcome(end).message.text == "Sorry. Message is looping within cluster, giving up. (#5.4.6)\n"


def test_other_cookie_is_no_loop() -> None:
    _, end = converse(dialogue(cookie="mine"), HAPPY)
    assert outcome(end).message.letter == "K"


def test_check_40_4xx_greeting_asks_for_next_address() -> None:
    sent, end = converse(dialogue(), [b"421 busy\r\n"])
    assert isinstance(end, NextAddress)
    assert sent == []


@pytest.mark.parametrize(
    ("greeting", "letter"),
    [(b"554 go away\r\n", "D"), (b"300 odd\r\n", "Z")],
)
def test_greeting_failures(greeting: bytes, letter: str) -> None:
    sent, end = converse(dialogue(), [greeting])
    assert sent == [b"QUIT\r\n"]
    code_line = greeting.decode().strip()
    msg = outcome(end).message
    assert (msg.letter, msg.text) == (
        letter,
        f"Connected to {IP} but greeting failed.\nRemote host said: {code_line}\n",
    )


def test_check_37_first_mx_refuses_second_accepts() -> None:
    """MX 10 answers 421, the same attempt continues with MX 20 and delivers there."""
    first = dialogue()
    _, end = converse(first, [b"421 mx10 overloaded\r\n"])
    assert isinstance(end, NextAddress)
    second = SmtpDialogue("192.0.2.20", "alice@example.com", ("joe@example.net",), MSG, first.settings)
    _, end2 = converse(second, HAPPY)
    assert outcome(end2).message.text.startswith("192.0.2.20 accepted message.\n")


def test_ehlo_rejected_falls_back_to_helo() -> None:
    sent, end = converse(
        dialogue(),
        [b"220 old\r\n", b"502 what\r\n", b"250 hi\r\n", *HAPPY[2:]],
    )
    assert sent[:2] == [b"EHLO mx1.example.com\r\n", b"HELO mx1.example.com\r\n"]
    assert outcome(end).message.letter == "K"


@pytest.mark.parametrize(("code", "letter"), [(b"550", "D"), (b"350", "Z")])
def test_helo_rejected(code: bytes, letter: str) -> None:
    _, end = converse(dialogue(), [b"220 x\r\n", b"502 no\r\n", code + b" no\r\n"])
    msg = outcome(end).message
    assert (msg.letter, msg.text) == (
        letter,
        f"Connected to {IP} but my name was rejected.\nRemote host said: {code.decode()} no\n",
    )


def test_helo_4xx_next_address() -> None:
    _, end = converse(dialogue(), [b"220 x\r\n", b"502 no\r\n", b"421 later\r\n"])
    assert isinstance(end, NextAddress)


@pytest.mark.parametrize(("code", "letter"), [(b"553", "D"), (b"451", "Z")])
def test_sender_rejected(code: bytes, letter: str) -> None:
    sent, end = converse(dialogue(), [HAPPY[0], EHLO_PLAIN, code + b" bad sender\r\n"])
    assert sent[-1] == b"QUIT\r\n"
    msg = outcome(end).message
    assert msg.letter == letter
    assert (
        msg.text
        == f"Connected to {IP} but sender was rejected.\nRemote host said: {code.decode()} bad sender\n"
    )


def test_recipient_refused_permanently_gives_up() -> None:
    sent, end = converse(dialogue(), [HAPPY[0], EHLO_PLAIN, b"250 ok\r\n", b"550 5.1.1 no such user\r\n"])
    assert sent[-1] == b"QUIT\r\n"
    assert b"DATA\r\n" not in sent
    out = outcome(end)
    assert out.encode() == (
        b"h192.0.2.7 does not like recipient.\nRemote host said: 550 5.1.1 no such user\n\0"
        b"DGiving up on 192.0.2.7.\n\0"
    )
    report = fold_remote_output(out.encode())
    assert report.letter is Letter.PERMANENT
    assert report.text == (
        "192.0.2.7 does not like recipient.\n"
        "Remote host said: 550 5.1.1 no such user\n"
        "Giving up on 192.0.2.7.\n"
    )


def test_one_of_two_recipients_refused_temporarily() -> None:
    dlg = dialogue(recipients=("a@example.net", "b@example.net"))
    sent, end = converse(
        dlg,
        [HAPPY[0], EHLO_PLAIN, b"250 ok\r\n", b"451 later\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n"],
    )
    assert sent[2:4] == [b"RCPT TO:<a@example.net>\r\n", b"RCPT TO:<b@example.net>\r\n"]
    out = outcome(end)
    assert [r.letter for r in out.recipients] == ["s", "r"]
    assert out.message.letter == "K"


@pytest.mark.parametrize(("code", "letter"), [(b"554", "D"), (b"451", "Z")])
def test_data_refused(code: bytes, letter: str) -> None:
    _, end = converse(dialogue(), [*HAPPY[:4], code + b" nope\r\n"])
    msg = outcome(end).message
    assert (msg.letter, msg.text) == (
        letter,
        f"{IP} failed on DATA command.\nRemote host said: {code.decode()} nope\n",
    )


def test_check_41_451_after_dot_is_a_deferral() -> None:
    _, end = converse(dialogue(), [*HAPPY[:5], b"451 4.3.0 try later\r\n"])
    report = fold_remote_output(outcome(end).encode())
    assert report.letter is Letter.TEMPORARY
    assert report.text == f"{IP} failed after I sent the message.\nRemote host said: 451 4.3.0 try later\n"


def test_554_after_dot_is_permanent() -> None:
    _, end = converse(dialogue(), [*HAPPY[:5], b"554 spam\r\n"])
    assert fold_remote_output(outcome(end).encode()).letter is Letter.PERMANENT


def test_check_42_connection_lost_after_dot_is_possible_duplicate() -> None:
    dlg = dialogue()
    sent, _ = [], None
    for reply in HAPPY[:5]:
        sent.extend(a.data for a in dlg.feed(reply) if isinstance(a, Send))
    assert sent[-1].endswith(b"\r\n.\r\n")
    actions = dlg.connection_lost()
    assert len(actions) == 1 and isinstance(actions[0], Finished)  # no QUIT on a dead connection
    report = fold_remote_output(actions[0].outcome.encode())
    assert report.letter is Letter.TEMPORARY
    assert report.text == f"Connected to {IP} but connection died. Possible duplicate! (#4.4.2)\n"


def test_connection_lost_before_dot_is_no_duplicate() -> None:
    dlg = dialogue()
    dlg.feed(HAPPY[0])
    (end,) = dlg.connection_lost()
    assert isinstance(end, Finished)
    assert end.outcome.message.text == f"Connected to {IP} but connection died. (#4.4.2)\n"
    assert dlg.connection_lost() == []  # already finished


def test_multiline_replies_are_reported_whole() -> None:
    _, end = converse(
        dialogue(),
        [*HAPPY[:2], b"250 ok\r\n", b"550-5.1.1 first line\r\n550-second\0line\r\n550 third\r\n"],
    )
    rcpt = outcome(end).recipients[0]
    assert (
        rcpt.text == f"{IP} does not like recipient.\nRemote host said: 550-5.1.1 first line\n"
        "550-second?line\n550 third\n"
    )


def test_remote_text_is_cut_at_5000_bytes() -> None:
    long_reply = b"".join(b"550-" + b"x" * 96 + b"\r\n" for _ in range(60)) + b"550 end\r\n"
    _, end = converse(dialogue(), [*HAPPY[:2], b"250 ok\r\n", long_reply])
    said = outcome(end).recipients[0].text.split("Remote host said: ", 1)[1]
    assert len(said.encode()) == 5000


def test_starttls_offer_is_taken_and_reported() -> None:
    dlg = dialogue()
    assert dlg.feed(b"220 mx\r\n") == [Send(b"EHLO mx1.example.com\r\n")]
    assert dlg.feed(b"250-mx\r\n250-STARTTLS\r\n250 SIZE\r\n") == [Send(b"STARTTLS\r\n")]
    assert dlg.feed(b"220 go ahead\r\n") == [StartTls()]
    assert dlg.tls_established("TLSv1.3", "TLS_AES_256_GCM_SHA384", "ab:cd") == [
        Send(b"EHLO mx1.example.com\r\n")
    ]
    sent, end = converse(
        dlg, [b"250-mx\r\n250 SIZE\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n"]
    )
    assert sent[0].startswith(b"MAIL FROM:<alice@example.com> SIZE=")
    report = fold_remote_output(outcome(end).encode())
    assert report.letter is Letter.SUCCESS
    assert "STARTTLS proto=TLSv1.3; cipher=TLS_AES_256_GCM_SHA384; fingerprint=ab:cd;" in report.text


def test_starttls_refused_continues_in_clear() -> None:
    ehlo = b"250-mx\r\n250 STARTTLS\r\n"
    sent, end = converse(dialogue(), [HAPPY[0], ehlo, b"454 not now\r\n", *HAPPY[2:]])
    assert sent[1:3] == [b"STARTTLS\r\n", b"MAIL FROM:<alice@example.com>\r\n"]
    assert "STARTTLS proto" not in outcome(end).message.text


def test_starttls_not_wanted() -> None:
    ehlo = b"250-mx\r\n250 STARTTLS\r\n"
    sent, _ = converse(dialogue(use_tls=False), [HAPPY[0], ehlo, *HAPPY[2:]])
    assert b"STARTTLS\r\n" not in sent


def test_tls_failures() -> None:
    dlg = dialogue()
    dlg.feed(b"220 mx\r\n")
    dlg.feed(b"250-mx\r\n250 STARTTLS\r\n")
    assert dlg.feed(b"220 go\r\n") == [StartTls()]
    (end,) = dlg.tls_failed("handshake failure")
    assert isinstance(end, Finished)
    assert (end.outcome.message.letter, end.outcome.message.text) == (
        "Z",
        "TLS not available: handshake failure\n",
    )

    dlg = dialogue()
    for reply in (b"220 mx\r\n", b"250-mx\r\n250 STARTTLS\r\n", b"220 go\r\n"):
        dlg.feed(reply)
    dlg.tls_established("TLSv1.2", "C", "F")
    _, end2 = converse(dlg, [b"550 who\r\n"])
    assert outcome(end2).message.text.startswith(f"TLS connected to {IP} but my name was rejected.\n")

    dlg = dialogue()
    for reply in (b"220 mx\r\n", b"250-mx\r\n250 STARTTLS\r\n", b"220 go\r\n"):
        dlg.feed(reply)
    dlg.tls_established("TLSv1.2", "C", "F")
    (end3,) = dlg.connection_lost("bad record mac")
    assert isinstance(end3, Finished)
    assert end3.outcome.message.text.startswith(
        f"Connected to {IP} but TLS connection died: bad record mac (#4.4.2)\n"
    )


def test_plaintext_after_starttls_is_discarded() -> None:
    dlg = dialogue()
    dlg.feed(b"220 mx\r\n")
    dlg.feed(b"250-mx\r\n250 STARTTLS\r\n")
    assert dlg.feed(b"220 go\r\n250 injected\r\n") == [StartTls()]
    dlg.tls_established("TLSv1.3", "C", "F")
    assert dlg.feed(b"250 mx\r\n") == [Send(b"MAIL FROM:<alice@example.com>\r\n")]


def test_auth_login_with_route_credentials() -> None:
    creds = Credentials("user@example.com", "s3cret pw")
    ehlo = b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n"
    sent, end = converse(
        dialogue(credentials=creds),
        [HAPPY[0], ehlo, b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n", *HAPPY[2:]],
    )
    assert sent[1:4] == [
        b"AUTH LOGIN\r\n",
        base64.b64encode(b"user@example.com") + b"\r\n",
        base64.b64encode(b"s3cret pw") + b"\r\n",
    ]
    assert sent[4] == b"MAIL FROM:<alice@example.com> AUTH=<alice@example.com>\r\n"
    assert outcome(end).message.letter == "K"


def test_auth_needed_but_not_offered() -> None:
    sent, end = converse(dialogue(credentials=Credentials("u", "p")), [HAPPY[0], EHLO_PLAIN])
    assert sent[-1] == b"QUIT\r\n"
    assert outcome(end).message.text == f"Connected to {IP} but no SMTP AUTH support detected but needed.\n"


@pytest.mark.parametrize(
    ("replies", "stage", "letter"),
    [
        ([b"504 no\r\n"], "AUTH LOGIN", "D"),
        ([b"334 x\r\n", b"454 later\r\n"], "username", "Z"),
        ([b"334 x\r\n", b"334 y\r\n", b"535 bad\r\n"], "password", "D"),
    ],
)
def test_auth_rejections(replies: list[bytes], stage: str, letter: str) -> None:
    ehlo = b"250-mx\r\n250 AUTH=LOGIN\r\n"
    _, end = converse(dialogue(credentials=Credentials("u", "p")), [HAPPY[0], ehlo, *replies])
    msg = outcome(end).message
    assert msg.letter == letter
    assert msg.text.startswith(
        f"Connected to {IP} but authentication was rejected ({stage}).\nRemote host said: "
    )


def test_addresses_are_quoted_when_needed() -> None:
    assert quote_address("joe@x.net") == "joe@x.net"
    assert quote_address("") == ""
    assert quote_address("john smith@x.net") == '"john smith"@x.net'
    assert quote_address('a"b@x.net') == '"a\\"b"@x.net'
    assert quote_address(".joe@x.net") == '".joe"@x.net'
    assert quote_address("a..b@x.net") == '"a..b"@x.net'
    assert quote_address("#@[]") == "#@[]"
    sent, _ = converse(dialogue(recipients=("john smith@x.net",)), HAPPY)
    assert sent[2] == b'RCPT TO:<"john smith"@x.net>\r\n'


def test_xtext() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


def test_unparsable_reply_never_counts_as_acceptance() -> None:
    _, end = converse(dialogue(), [*HAPPY[:3], b"ok fine\r\n"])
    assert outcome(end).recipients[0].letter == "s"


def test_reply_reader_joins_continuations() -> None:
    reader = ReplyReader()
    assert reader.feed(b"250-a\r\n250-b") == []
    (reply,) = reader.feed(b"\r\n250 c\r\n")
    assert reply.code == 250
    assert reply.lines == (b"250-a", b"250-b", b"250 c")
    assert reply.keywords == {"B": (), "C": ()}


def test_no_address_connected() -> None:
    report = fold_remote_output(no_connection().encode())
    assert report.letter is Letter.TEMPORARY
    assert report.text == "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"

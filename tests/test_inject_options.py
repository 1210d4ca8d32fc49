"""Command lines of qmail-inject and sendmail, and qmail-inject's environment, as frozen records."""

from __future__ import annotations

import pytest

from qldap.inject.options import (
    InjectEnv,
    InjectOptions,
    RecipientMode,
    SendmailAction,
    SendmailOptions,
    UsageError,
    followup_addresses,
    inject_argv,
    inject_environ,
    parse_inject,
    parse_sendmail,
    smtpd_environ,
)


def test_parse_inject_flags_and_arguments() -> None:
    assert parse_inject([]) == InjectOptions()
    o = parse_inject(["-nH", "-fjoe@x", "a", "-b"])
    assert o == InjectOptions(RecipientMode.BOTH, False, "joe@x", ("a", "-b"))
    assert parse_inject(["-n", "-N", "-f", "s", "--", "-a"]) == InjectOptions(sender="s", args=("-a",))
    assert parse_inject(["-", "x"]).args == ("-", "x")
    assert parse_inject(["-h", "-a"]).mode is RecipientMode.ARGS  # the last one counts


@pytest.mark.parametrize(
    ("argv", "mode", "args", "headers"),
    [
        ([], RecipientMode.HEADERS, False, True),
        (["x"], RecipientMode.ARGS, True, False),
        (["-a"], RecipientMode.ARGS, True, False),
        (["-h", "x"], RecipientMode.HEADERS, False, True),
        (["-H"], RecipientMode.BOTH, True, True),
    ],
)
def test_effective_recipient_mode(argv: list[str], mode: RecipientMode, args: bool, headers: bool) -> None:
    o = parse_inject(argv)
    assert (o.effective_mode, o.from_args, o.from_headers) == (mode, args, headers)


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["-x"], "qmail-inject: illegal option -- x"),
        (["-f"], "qmail-inject: option requires an argument -- f"),
    ],
)
def test_parse_inject_usage_errors(argv: list[str], text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_inject(argv)
    assert str(err.value) == text


def test_sendmail_maps_to_inject_command_lines() -> None:
    o = parse_sendmail("/usr/sbin/sendmail", ["-t", "-f", "s@x.example", "-FJoe", "r@y"])
    assert o == SendmailOptions(SendmailAction.INJECT, True, "s@x.example", "Joe", ("r@y",))
    assert inject_argv(o) == ("-H", "-f", "s@x.example", "--", "r@y")
    assert inject_argv(parse_sendmail("sendmail", ["-x", "--", "-odd"])) == ("-a", "--", "-odd")


def test_sendmail_ignores_the_usual_flags() -> None:
    argv = ["-bm", "-B8BITMIME", "-psmtp", "-v", "-i", "-x", "-m", "-e", "q", "-oi", "-odb", "-Efoo", "-J",
            "-oem", "r@y"]  # fmt: skip
    assert parse_sendmail("sendmail", argv) == SendmailOptions(SendmailAction.INJECT, args=("r@y",))


def test_sendmail_modes() -> None:
    assert parse_sendmail("sendmail", ["-bp", "-Z"]).action is SendmailAction.MAILQ  # acts at once
    assert parse_sendmail("sendmail", ["-bs"]).action is SendmailAction.SMTPD
    assert parse_sendmail("/usr/bin/mailq", ["-v"]).action is SendmailAction.MAILQ
    assert parse_sendmail("newaliases", []).action is SendmailAction.NEWALIASES
    assert parse_sendmail("mailq", ["-bs"]).action is SendmailAction.SMTPD


@pytest.mark.parametrize("argv", [["-bx"], ["-Z"], ["-f"], ["-b"]])
def test_sendmail_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_sendmail("sendmail", argv)


def test_sendmail_environment_for_inject() -> None:
    base = {"QMAILHOST": "old", "MAILHOST": "old2", "NAME": "N"}
    env = inject_environ(parse_sendmail("sendmail", ["-f", "a.b@c.d", "-F", "Al"]), base)
    assert (env["QMAILUSER"], env["QMAILHOST"], env["MAILNAME"], env["NAME"]) == ("a.b", "c.d", "Al", "N")
    env = inject_environ(parse_sendmail("sendmail", ["-f", "local"]), base)
    assert env["QMAILUSER"] == "local" and "QMAILHOST" not in env and "MAILHOST" not in env
    assert inject_environ(parse_sendmail("sendmail", ["-f", ""]), base) == base
    assert base == {"QMAILHOST": "old", "MAILHOST": "old2", "NAME": "N"}  # the input is not changed


def test_smtpd_environment_unless_proto_is_set() -> None:
    env = smtpd_environ({"PATH": "/bin"})
    assert env["RELAYCLIENT"] == "" and env["PROTO"] == "TCP" and env["TCPREMOTEIP"] == "127.0.0.1"
    assert env["TCPREMOTEINFO"] == "sendmail-bs" and env["PATH"] == "/bin"
    assert smtpd_environ({"PROTO": "SSL"}) == {"PROTO": "SSL"}


def test_inject_env_from_environ() -> None:
    e = InjectEnv.from_environ({"USER": "u", "QMAILSUSER": "su", "MAILHOST": "mh", "QMAILINJECT": "csfirm"})
    assert (e.user, e.host, e.return_user, e.return_host, e.fullname) == ("u", "mh", "su", "mh", None)
    assert e.name_comment and e.drop_return_path and e.drop_from and e.drop_message_id
    assert e.verp_recipient and e.verp_message
    e = InjectEnv.from_environ({"QMAILSHOST": "sh"})
    assert (e.user, e.return_user, e.host, e.return_host) == ("anonymous", "anonymous", None, "sh")
    assert not (e.name_comment or e.drop_from or e.verp_message)


def test_followup_file_lines() -> None:
    assert followup_addresses("# lists\nList@X.example  \n\n  \nb@y\n") == frozenset(
        {"list@x.example", "b@y"}
    )

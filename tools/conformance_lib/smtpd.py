"""qmail-smtpd sessions on stdin/stdout: the same commands, environment and controls on both sides.

Observed: the exit status, every reply line, and what reached the queue (``QMAILQUEUE`` points both
sides at the reference home's ``bin/capture-queue``, which keeps the message and the envelope).
Masked: the ``qp <pid>`` and the time in ``250 ok <time> qp <pid>`` and the date of the
``Received:`` line, which differ between any two runs.  SMTP AUTH runs the C side as
``qmail-smtpd auth_smtp /bin/true`` (its checkpassword chain); qldap checks AUTH in-process and
ignores those arguments.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .core import Case, Decision, Observed, mask, show
from .world import ME, World

REMOTE_IP = "10.0.0.1"
LOCAL_IP = "10.0.0.2"

# -- decisions ---------------------------------------------------------------------------------
TRAILING_SPACE = Decision(
    "smtp-trailing-space", "no trailing space after the greeting and HELO/EHLO host",
    # only the greeting and the first HELO/EHLO line: a trailing blank anywhere else still fails
    lambda t: re.sub(rf"^(220 {re.escape(ME)} ESMTP|250[ -]{re.escape(ME)}) \\r$", r"\1\\r", t, flags=re.M),
)

EXIT_STATUS = Decision(
    "smtp-exit-status", "stdio qmail-smtpd exits 0 after any orderly end of the session",
    lambda t: re.sub(r"^exit [01]\n", "exit 0|1\n", t),
)
RCPT_NULL = Decision(
    "smtp-rcpt-null", "RCPT TO:<> is a syntax error",
    lambda t: t.replace("555 syntax error (#5.5.4)\\r", "250 ok\\r"),
)
VERIFY_SOFT_TEXT = Decision(
    "smtp-verify-soft-text", "a failed recipient verification says why in its 451",
    lambda t: re.sub(r"\n451\b[^\n]*", "\n451 <text>", t),
)
ROUTE_WITHOUT_COLON = Decision(
    "smtp-route-without-colon", "MAIL FROM:<@host> is a syntax error, not the null sender",
    lambda t: t.replace("555 syntax error (#5.5.4)\\r\n503 MAIL first (#5.5.1)\\r", "250 ok\\r\n250 ok\\r"),
)
AUTH_EXCHANGE = Decision(
    "smtp-auth-exchange", "an AUTH exchange cancelled with * or sent in bad base64 is refused at once (501)",
    lambda t: re.sub(r"(?s)^exit \d\n(.*?334 VXNlcm5hbWU6\\r\n).*", r"\1<rest>", t),
)
AUTH_DISABLED = Decision(
    "smtp-auth-disabled", "AUTH for a disabled or no-access account is 535, not 454",
    lambda t: t.replace("454 temporary authentication failure (#4.3.0)", "535 authentication failure"),
)


def _observe(world: World, argv: Sequence[str], session: bytes, env: Mapping[str, str], tag: str) -> str:
    queue, cap = world.private_capture(tag)
    res = world.run(argv, session, {**env, "QMAILQUEUE": queue}, timeout=20)
    lines = [f"exit {res.rc}", show(res.out)]
    for msg, envelope in world.read_captures(cap):
        if not envelope:
            continue  # the queue program was started and then aborted: nothing was queued
        lines.append("-- queued envelope: " + show(envelope).replace("\\x00", " | "))
        lines.append("-- queued message:")
        lines.append(show(msg))
    text = "\n".join(lines)
    return mask(
        text,
        (r"250 ok \d+ qp \d+", "250 ok <time> qp <pid>"),
        (r"; \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}", "; <date>"),
    )


def smtp(name: str, commands: str | bytes, env: Mapping[str, str] | None = None,
         controls: Mapping[str, str | None] | None = None, auth: bool = False,
         decisions: Sequence[Decision] = (TRAILING_SPACE,)) -> Case:  # fmt: skip
    """A session case: *commands* are lines joined with CRLF (bytes are sent as given)."""
    if isinstance(commands, bytes):
        session = commands
    else:
        session = "".join(c + "\r\n" for c in commands.split("|")).encode()

    def run(world: World) -> Observed:
        world.controls(controls)
        base = {"TCPREMOTEIP": REMOTE_IP, "TCPLOCALIP": LOCAL_IP}
        full = world.env({**base, **(env or {})})
        args = [world.c("auth_smtp"), "/bin/true"] if auth else []
        # both sides at once: each has its own capture directory, and the 5 s pause qmail-smtpd makes
        # after a failed AUTH is then paid once per case
        with ThreadPoolExecutor(2) as pool:
            c = pool.submit(_observe, world, [world.c("qmail-smtpd"), *args], session, full, f"{name}-c")
            q = pool.submit(_observe, world, [world.q("qmail-smtpd"), *args], session, full, f"{name}-q")
            return Observed(c.result(), q.result())

    return Case("smtpd", name, run, decisions, parallel=True, controls=controls)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


H = "HELO c|MAIL FROM:<a@b.example>|"
MSG = "DATA|Subject: hello|To: someone|| body line|.|QUIT"
ALICE = "HELO client.example.net|MAIL FROM:<sender@remote.example.com>|RCPT TO:<alice@example.org>"
PLAIN_OK = b64("\0alice\0alicepw")
PLAIN_BAD = b64("\0alice\0wrong")


def cases() -> list[Case]:
    """Every smtpd case."""
    rc = {"RCPTCHECK": ""}
    nocatch = {"locals": "example.org\nmx.example.org\nsub.example.org",
               "rcpthosts": "example.org\nmx.example.org\nsub.example.org"}  # fmt: skip
    out = [
        # greeting, HELO/EHLO and simple commands
        smtp("greeting-quit", "QUIT"),
        smtp("helo", "HELO client.example.net|QUIT"),
        smtp("helo-empty", "HELO|QUIT"),
        smtp("ehlo", "EHLO client.example.net|QUIT"),
        smtp("ehlo-databytes", "EHLO c|QUIT", env={"DATABYTES": "1000"}),
        smtp("ehlo-databytes-control", "EHLO c|QUIT", controls={"databytes": "2000"}),
        smtp("ehlo-smtpauth", "EHLO c|QUIT", env={"SMTPAUTH": ""}),
        smtp("smtpgreeting", "HELO c|QUIT", controls={"smtpgreeting": "mail.example.org welcome here"}),
        smtp("noop-rset-vrfy", "NOOP|RSET|VRFY alice|QUIT"),
        smtp("help", "HELP|QUIT"),
        smtp("unknown-command", "FOO bar|QUIT"),
        smtp("lowercase-commands", "helo c|mail from:<a@b.example>|rcpt to:<alice@example.org>|quit"),
        smtp("550greeting", H + "QUIT", env={"550GREETING": ""}),
        smtp("550greeting-text", "HELO c|QUIT", env={"550GREETING": "go away"}),
        smtp("421greeting", "HELO c|QUIT", env={"421GREETING": ""}),
        smtp("421greeting-text", "HELO c|QUIT", env={"421GREETING": "try later"}),
        # sequence errors
        smtp("rcpt-before-mail", "HELO c|RCPT TO:<alice@example.org>|QUIT"),
        smtp("data-before-rcpt", H + "DATA|QUIT"),
        smtp("mail-without-helo", "MAIL FROM:<a@b.example>|RCPT TO:<alice@example.org>|QUIT"),
        smtp("mail-twice", H + "MAIL FROM:<c@d.example>|QUIT"),
        # MAIL/RCPT syntax
        smtp("mail-space-before-bracket", "HELO c|MAIL FROM: <a@b.example>|RCPT TO: <alice@example.org>|QUIT"),
        smtp("mail-no-brackets", "HELO c|MAIL FROM:a@b.example|RCPT TO:alice@example.org|QUIT"),
        smtp("mail-null-sender", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|QUIT"),
        smtp("mail-size-param", "EHLO c|MAIL FROM:<a@b.example> SIZE=100|RCPT TO:<alice@example.org>|QUIT"),
        smtp("mail-size-too-big", "EHLO c|MAIL FROM:<a@b.example> SIZE=5000|QUIT", env={"DATABYTES": "1000"}),
        smtp("rcpt-null", H + "RCPT TO:<>|QUIT", decisions=(TRAILING_SPACE, RCPT_NULL)),
        smtp("rcpt-source-route", H + "RCPT TO:<@x.example:alice@example.org>|QUIT"),
        # rcpthosts / relaying
        smtp("relay-denied", H + "RCPT TO:<x@remote.example.com>|QUIT"),
        smtp("relay-relayclient", H + "RCPT TO:<x@remote.example.com>|QUIT",
             env={"RELAYCLIENT": ""}),
        smtp("relay-relayclient-suffix", H + "RCPT TO:<x@remote.example.com>|"
             + MSG, env={"RELAYCLIENT": "@relay.example.net"}),
        smtp("rcpthosts-listed-relay-domain", H + "RCPT TO:<x@relay.example.net>|QUIT"),
        smtp("rcpthosts-wildcard", H + "RCPT TO:<x@deep.sub.example.org>|QUIT",
             controls={"rcpthosts": ".example.org\nexample.org"}),
        smtp("rcpthosts-case", H + "RCPT TO:<Alice@EXAMPLE.ORG>|QUIT"),
        smtp("rcpthosts-missing", H + "RCPT TO:<alice@example.org>|QUIT",
             controls={"rcpthosts": None}),
        smtp("rcpt-ip-literal-own", H + "RCPT TO:<alice@[127.0.0.1]>|" + MSG),
        smtp("rcpt-ip-literal-foreign", H + "RCPT TO:<alice@[192.0.2.9]>|QUIT"),
        # badmailfrom / badrcptto
        smtp("badmailfrom-exact", "HELO c|MAIL FROM:<spam@bad.example>|RCPT TO:<alice@example.org>|QUIT",
             controls={"badmailfrom": "spam@bad.example"}),
        smtp("badmailfrom-domain", "HELO c|MAIL FROM:<x@bad.example>|RCPT TO:<alice@example.org>|QUIT",
             controls={"badmailfrom": "@bad.example"}),
        smtp("badmailfrom-nomatch", "HELO c|MAIL FROM:<x@good.example>|RCPT TO:<alice@example.org>|QUIT",
             controls={"badmailfrom": "@bad.example"}),
        smtp("badmailfrom-unknown", "HELO c|MAIL FROM:<x@spammy.example>|RCPT TO:<alice@example.org>|QUIT",
             controls={"badmailfrom-unknown": "@spammy.example"}),
        smtp("badmailfrom-unknown-known-host", "HELO c|MAIL FROM:<x@spammy.example>|RCPT TO:<alice@example.org>|QUIT",
             env={"TCPREMOTEHOST": "client.example.net"}, controls={"badmailfrom-unknown": "@spammy.example"}),
        smtp("badrcptto-exact", H + "RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|QUIT",
             controls={"badrcptto": "alice@example.org"}),
        smtp("badrcptto-domain", H + "RCPT TO:<alice@example.org>|QUIT",
             controls={"badrcptto": "@example.org"}),
        # RCPTCHECK
        smtp("rcptcheck-known", ALICE + "|QUIT", env=rc),
        smtp("rcptcheck-alternate", H + "RCPT TO:<alice.alt@example.org>|QUIT", env=rc),
        smtp("rcptcheck-unknown", H + "RCPT TO:<nobody@sub.example.org>|QUIT",
             env=rc, controls=nocatch),
        smtp("rcptcheck-catchall", H + "RCPT TO:<nobody@example.org>|QUIT", env=rc),
        smtp("rcptcheck-disabled", H + "RCPT TO:<dave@example.org>|QUIT", env=rc),
        smtp("rcptcheck-deleted", H + "RCPT TO:<gina@example.org>|QUIT", env=rc),
        smtp("rcptcheck-noaccess", H + "RCPT TO:<erin@example.org>|QUIT", env=rc),
        smtp("rcptcheck-remote-relay", H + "RCPT TO:<x@remote.example.com>|QUIT",
             env={**rc, "RELAYCLIENT": ""}),
        smtp("rcptcheck-goodmailaddr", H + "RCPT TO:<nobody@sub.example.org>|QUIT",
             env=rc, controls={**nocatch, "goodmailaddr": "nobody@sub.example.org"}),
        smtp("rcptcheck-goodmailaddr-domain", H + "RCPT TO:<x@sub.example.org>|QUIT",
             env=rc, controls={**nocatch, "goodmailaddr": "@sub.example.org"}),
        smtp("rcptcheck-ldap-down", H + "RCPT TO:<alice@example.org>|QUIT",
             env=rc, controls={"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"},
             decisions=(TRAILING_SPACE, VERIFY_SOFT_TEXT)),
        smtp("rcptcheck-ldap-down-softok", H + "RCPT TO:<alice@example.org>|QUIT",
             env={**rc, "LDAPSOFTOK": ""}, controls={"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"}),
        smtp("rcptcheck-badrcptdelay", H + "RCPT TO:<dave@example.org>|QUIT",
             env={**rc, "BADRCPTDELAY": "0"}),
        smtp("rcptcheck-550disconnect", H + "RCPT TO:<dave@example.org>|QUIT",
             env={**rc, "SMTP550DISCONNECT": ""}),
        # SENDERCHECK
        smtp("sendercheck-local-known", "HELO c|MAIL FROM:<alice@example.org>|RCPT TO:<ivan@example.org>|QUIT",
             env={"SENDERCHECK": ""}),
        smtp("sendercheck-local-unknown", "HELO c|MAIL FROM:<nobody@sub.example.org>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": ""}, controls=nocatch),
        smtp("sendercheck-local-disabled", "HELO c|MAIL FROM:<dave@example.org>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": ""}),
        smtp("sendercheck-remote", "HELO c|MAIL FROM:<x@remote.example.com>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": ""}),
        smtp("sendercheck-loose-remote", "HELO c|MAIL FROM:<x@remote.example.com>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "LOOSE"}),
        smtp("sendercheck-loose-relayclient", "HELO c|MAIL FROM:<x@remote.example.com>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "LOOSE", "RELAYCLIENT": ""}),
        smtp("sendercheck-strict-remote", "HELO c|MAIL FROM:<x@remote.example.com>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "STRICT"}),
        smtp("sendercheck-strict-relayclient-remote", "HELO c|MAIL FROM:<x@remote.example.com>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "STRICT", "RELAYCLIENT": ""}),
        smtp("sendercheck-strict-local", "HELO c|MAIL FROM:<alice@example.org>|RCPT TO:<ivan@example.org>|QUIT",
             env={"SENDERCHECK": "STRICT", "RELAYCLIENT": ""}),
        smtp("sendercheck-null-sender", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "STRICT"}),
        smtp("sendercheck-goodmailaddr", "HELO c|MAIL FROM:<nobody@sub.example.org>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": ""}, controls={**nocatch, "goodmailaddr": "nobody@sub.example.org"}),
        # SANITYCHECK, NOBOUNCE, BLOCKRELAYPROBE, MAXRCPTCOUNT, TARPIT
        smtp("sanity-no-at", "HELO c|MAIL FROM:<nobody>|RCPT TO:<alice@example.org>|QUIT", env={"SANITYCHECK": ""}),
        smtp("sanity-no-dot", "HELO c|MAIL FROM:<a@localhost>|RCPT TO:<alice@example.org>|QUIT",
             env={"SANITYCHECK": ""}),
        smtp("sanity-route-without-colon", "HELO c|MAIL FROM:<@b.example>|RCPT TO:<alice@example.org>|QUIT",
             env={"SANITYCHECK": ""}, decisions=(TRAILING_SPACE, ROUTE_WITHOUT_COLON)),
        smtp("sanity-no-domain", "HELO c|MAIL FROM:<a@>|RCPT TO:<alice@example.org>|QUIT", env={"SANITYCHECK": ""}),
        smtp("sanity-ok", H + "RCPT TO:<alice@example.org>|QUIT", env={"SANITYCHECK": ""}),
        smtp("sanity-null-sender", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|QUIT", env={"SANITYCHECK": ""}),
        smtp("nobounce", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|QUIT", env={"NOBOUNCE": ""}),
        smtp("bounce-two-recipients", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|QUIT"),
        smtp("bounce-hash-two-recipients",
             "HELO c|MAIL FROM:<#@[]>|RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|QUIT"),
        smtp("blockrelayprobe-percent", H + "RCPT TO:<x%remote.example.com@example.org>|QUIT",
             env={"BLOCKRELAYPROBE": ""}),
        smtp("blockrelayprobe-bang", H + "RCPT TO:<remote!x@example.org>|QUIT",
             env={"BLOCKRELAYPROBE": ""}),
        smtp("blockrelayprobe-at", H + "RCPT TO:<x@remote@example.org>|QUIT",
             env={"BLOCKRELAYPROBE": ""}),
        smtp("blockrelayprobe-off", H + "RCPT TO:<x%remote.example.com@example.org>|QUIT"),
        smtp("maxrcptcount", H + "RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|"
             "RCPT TO:<bob@example.org>|QUIT", env={"MAXRCPTCOUNT": "2"}),
        smtp("tarpit", H + "RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|"
             "RCPT TO:<bob@example.org>|QUIT", env={"TARPITCOUNT": "1", "TARPITDELAY": "0"}),
        # AUTHREQUIRED / SMTPAUTH
        smtp("authrequired-mail", "EHLO c|MAIL FROM:<a@b.example>|QUIT", env={"AUTHREQUIRED": "", "SMTPAUTH": ""},
             auth=True),
        smtp("auth-plain-ok", f"EHLO c|AUTH PLAIN {PLAIN_OK}|MAIL FROM:<alice@example.org>|"
             "RCPT TO:<x@remote.example.com>|" + MSG, env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-plain-bad", f"EHLO c|AUTH PLAIN {PLAIN_BAD}|QUIT", env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-plain-continuation", f"EHLO c|AUTH PLAIN|{PLAIN_OK}|QUIT", env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-login-ok", f"EHLO c|AUTH LOGIN|{b64('alice')}|{b64('alicepw')}|MAIL FROM:<alice@example.org>|"
             "RCPT TO:<x@remote.example.com>|QUIT", env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-login-initial", f"EHLO c|AUTH LOGIN {b64('alice')}|{b64('alicepw')}|QUIT",
             env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-login-bad", f"EHLO c|AUTH LOGIN|{b64('alice')}|{b64('nope')}|QUIT", env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-login-unknown-user", f"EHLO c|AUTH LOGIN|{b64('zed')}|{b64('nope')}|QUIT",
             env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-disabled-user", f"EHLO c|AUTH PLAIN {b64(chr(0) + 'dave' + chr(0) + 'davepw')}|QUIT",
             env={"SMTPAUTH": ""}, auth=True, decisions=(TRAILING_SPACE, AUTH_DISABLED)),
        smtp("auth-cancel", "EHLO c|AUTH LOGIN|*|QUIT", env={"SMTPAUTH": ""}, auth=True,
             decisions=(TRAILING_SPACE, AUTH_EXCHANGE)),
        smtp("auth-bad-base64", "EHLO c|AUTH LOGIN|!!!|QUIT", env={"SMTPAUTH": ""}, auth=True,
             decisions=(TRAILING_SPACE, AUTH_EXCHANGE)),
        smtp("auth-unknown-mechanism", "EHLO c|AUTH CRAM-MD5|QUIT", env={"SMTPAUTH": ""}, auth=True),
        smtp("auth-twice", f"EHLO c|AUTH PLAIN {PLAIN_OK}|AUTH PLAIN {PLAIN_OK}|QUIT", env={"SMTPAUTH": ""},
             auth=True),
        smtp("auth-not-offered", f"EHLO c|AUTH PLAIN {PLAIN_OK}|QUIT", auth=True),
        smtp("authrequired-after-auth", f"EHLO c|AUTH PLAIN {PLAIN_OK}|MAIL FROM:<alice@example.org>|"
             "RCPT TO:<ivan@example.org>|QUIT", env={"AUTHREQUIRED": "", "SMTPAUTH": ""}, auth=True),
        smtp("auth-relay-denied-without", "EHLO c|MAIL FROM:<alice@example.org>|RCPT TO:<x@remote.example.com>|QUIT",
             env={"SMTPAUTH": ""}, auth=True),
        # DATA, databytes, bare LF, envelope
        smtp("data-simple", ALICE + "|" + MSG),
        smtp("data-two-recipients", ALICE + "|RCPT TO:<ivan@example.org>|" + MSG),
        smtp("data-null-sender", "HELO c|MAIL FROM:<>|RCPT TO:<alice@example.org>|" + MSG),
        smtp("data-dot-stuffing", ALICE + "|DATA|Subject: dots||..leading dot|...|.|QUIT"),
        smtp("data-empty-body", ALICE + "|DATA|.|QUIT"),
        smtp("data-databytes-exceeded", ALICE + "|DATA|Subject: big||" + "x" * 300 + "|" + "y" * 300 + "|.|QUIT",
             env={"DATABYTES": "200"}),
        smtp("data-databytes-fits", ALICE + "|DATA|Subject: small||tiny|.|QUIT", env={"DATABYTES": "200"}),
        smtp("data-bare-lf", ALICE.replace("|", "\r\n").encode() + b"\r\nDATA\r\nSubject: lf\nbody\r\n.\r\nQUIT\r\n",
             decisions=(TRAILING_SPACE, EXIT_STATUS)),
        smtp("eof-without-quit", "HELO c|MAIL FROM:<a@b.example>", decisions=(TRAILING_SPACE, EXIT_STATUS)),
        smtp("data-bare-lf-command", b"HELO c\nMAIL FROM:<a@b.example>\nQUIT\n"),
        smtp("data-rcpt-case-kept", "HELO c|MAIL FROM:<Sender@Remote.Example.COM>|RCPT TO:<Alice@Example.ORG>|" + MSG),
        smtp("data-relayclient-suffix-envelope", H + "RCPT TO:<x@remote.example.com>|" + MSG,
             env={"RELAYCLIENT": ""}),
        smtp("data-remotehost-received", ALICE + "|" + MSG, env={"TCPREMOTEHOST": "client.example.net",
                                                                   "TCPREMOTEINFO": "ident"}),
        smtp("data-localhost-received", ALICE + "|" + MSG, env={"TCPLOCALHOST": "mx.example.org"}),
        smtp("data-ehlo-received", "EHLO client.example.net|MAIL FROM:<a@b.example>|RCPT TO:<alice@example.org>|"
             + MSG),
        smtp("data-auth-received", f"EHLO c|AUTH PLAIN {PLAIN_OK}|MAIL FROM:<alice@example.org>|"
             "RCPT TO:<ivan@example.org>|" + MSG, env={"SMTPAUTH": ""}, auth=True),
        smtp("data-loop", ALICE + "|DATA|" + "Delivered-To: x\r\n" * 0 + "|".join(["Received: x"] * 101)
             + "||body|.|QUIT"),
        smtp("rejectexec", ALICE + "|DATA|Subject: exe|MIME-Version: 1.0|"
             "Content-Type: multipart/mixed; boundary=\"BB\"||--BB|Content-Type: text/plain||hi|--BB|"
             "Content-Type: application/octet-stream|Content-Transfer-Encoding: base64|"
             "Content-Disposition: attachment; filename=\"x.exe\"||TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA|"
             "--BB--|.|QUIT", env={"REJECTEXEC": ""}),
        smtp("rejectexec-off", ALICE + "|DATA|Subject: exe|MIME-Version: 1.0|"
             "Content-Type: multipart/mixed; boundary=\"BB\"||--BB|Content-Type: text/plain||hi|--BB|"
             "Content-Type: application/octet-stream|Content-Transfer-Encoding: base64|"
             "Content-Disposition: attachment; filename=\"x.exe\"||TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA|"
             "--BB--|.|QUIT"),
        # more combinations
        smtp("rcptcheck-dash-catchall", H + "RCPT TO:<list-foo@example.org>|RCPT TO:<vera-x-y@example.org>|QUIT", env=rc),
        smtp("rcptcheck-status-values", H + "RCPT TO:<nora@example.org>|RCPT TO:<hugo@example.org>|"
             "RCPT TO:<ada@example.org>|RCPT TO:<otto@example.org>|QUIT", env=rc),
        smtp("rcptcheck-case-and-alternate", H + "RCPT TO:<AL@EXAMPLE.ORG>|RCPT TO:<Uma-Catchall@example.org>|QUIT", env=rc),
        smtp("rcptcheck-domain-not-in-locals", H + "RCPT TO:<nobody@relay.example.net>|QUIT", env=rc),
        smtp("rcptcheck-locals-missing", H + "RCPT TO:<nobody@sub.example.org>|QUIT", env=rc,
             controls={"locals": None, "rcpthosts": "example.org\nsub.example.org"}),
        smtp("maxrcptcount-relayclient", H + "RCPT TO:<x@remote.example.com>|RCPT TO:<y@remote.example.com>|QUIT",
             env={"MAXRCPTCOUNT": "1", "RELAYCLIENT": ""}),
        smtp("tarpit-count-two", H + "RCPT TO:<alice@example.org>|RCPT TO:<ivan@example.org>|"
             "RCPT TO:<bob@example.org>|RCPT TO:<carol@example.org>|QUIT", env={"TARPITCOUNT": "2", "TARPITDELAY": "0"}),
        smtp("data-databytes-at-limit", ALICE + "|DATA|" + "x" * 20 + "|.|QUIT", env={"DATABYTES": "22"}),
        smtp("mail-body-8bitmime", "EHLO c|MAIL FROM:<a@b.example> BODY=8BITMIME|RCPT TO:<alice@example.org>|QUIT"),
        smtp("rcpt-duplicate", ALICE + "|RCPT TO:<alice@example.org>|" + MSG),
        smtp("helo-twice", "HELO a|HELO b|MAIL FROM:<a@b.example>|RCPT TO:<alice@example.org>|" + MSG),
        smtp("rset-then-mail", H + "RCPT TO:<alice@example.org>|RSET|MAIL FROM:<c@d.example>|RCPT TO:<ivan@example.org>|"
             + MSG),
        smtp("badmailfrom-relayclient", "HELO c|MAIL FROM:<spam@bad.example>|RCPT TO:<alice@example.org>|QUIT",
             env={"RELAYCLIENT": ""}, controls={"badmailfrom": "spam@bad.example"}),
        smtp("badrcptto-relayclient", H + "RCPT TO:<alice@example.org>|QUIT", env={"RELAYCLIENT": ""},
             controls={"badrcptto": "alice@example.org"}),
        smtp("sendercheck-loose-local-unknown", "HELO c|MAIL FROM:<nobody@sub.example.org>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "LOOSE"}, controls=nocatch),
        smtp("sendercheck-strict-local-unknown", "HELO c|MAIL FROM:<nobody@sub.example.org>|RCPT TO:<alice@example.org>|QUIT",
             env={"SENDERCHECK": "STRICT"}, controls=nocatch),
        smtp("nolocal", H + "RCPT TO:<alice@example.org>|QUIT", env={"NOLOCAL": ""}),
        smtp("nolocal-relay", H + "RCPT TO:<x@remote.example.com>|QUIT",
             env={"NOLOCAL": "", "RELAYCLIENT": ""}),
    ]
    return out

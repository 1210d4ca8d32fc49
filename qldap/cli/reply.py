"""`qmail-reply [-f textfile] [-j junkfile] [maildir]`: the auto-responder for `.qmail` files (qmail-local(8),
AUTO-REPLY).

Run by the delivery agent as a program, with the message on stdin and SENDER, RECIPIENT, DTLINE (and
QMAILREPLYTEXT for LDAP-driven replies) in the environment.  The reply goes to SENDER with the null
envelope sender, built by the same code the LDAP ``reply`` mode uses, and at most once per sender
and text within 14 days when *maildir* (ending in ``/``) is given for the reply database.

Never makes the delivery fail for a reply's sake: exit 0 when no reply is due or it was queued;
exit 111 only when there is no reply text or the queue refused temporarily (the agent defers, as for
any program); exit 100 for bad usage.
"""

from __future__ import annotations

import getopt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qldap.cli._run import fatal, run
from qldap.cli.inject import queue_message
from qldap.control.files import ControlDir, find_root
from qldap.errors import PermanentFailure
from qldap.exitcodes import ExitCode
from qldap.inject.headers import Prepared
from qldap.local.autoreply import ReplyDb, compose_reply, is_bulk_message, is_robot_sender, parse_headers

PROG = "qmail-reply"


def _body(args: Sequence[str]) -> int:
    try:
        opts, rest = getopt.getopt(list(args), "f:j:")
    except getopt.GetoptError as exc:
        fatal(PROG, f"usage: qmail-reply [-f textfile] [-j junkfile] [maildir] ({exc.msg})")
        return ExitCode.PERMANENT
    if len(rest) > 1:
        fatal(PROG, "usage: qmail-reply [-f textfile] [-j junkfile] [maildir]")
        return ExitCode.PERMANENT
    got = dict(opts)
    env = os.environ
    text = Path(got["-f"]).read_text(errors="replace") if "-f" in got else env.get("QMAILREPLYTEXT")
    if not text:
        fatal(PROG, "no reply text (-f file or QMAILREPLYTEXT)")
        return ExitCode.TEMPORARY
    junk = Path(got["-j"]).read_text(errors="replace").split("\n") if "-j" in got else []
    sender, recipient = env.get("SENDER", ""), env.get("RECIPIENT", "")
    head = sys.stdin.buffer.read(1 << 20)
    end = head.find(b"\n\n")
    head = head if end < 0 else head[: end + 1]
    if is_robot_sender(sender, junk) or is_bulk_message(parse_headers(head)):
        return ExitCode.OK
    now = time.time()
    db: ReplyDb | None = None
    if rest and rest[0].endswith("/"):
        db = ReplyDb(Path(rest[0]))
        if db.answered_recently(sender, text, now):
            return ExitCode.OK
    root = find_root(None)
    me = ControlDir(root).line_or_me("me")
    message = compose_reply(text, sender=sender, recipient=recipient, original=head,
                            dtline=env.get("DTLINE", f"Delivered-To: {recipient}\n"), me=me, now=now)
    try:
        queue_message(root, Prepared(message, "", (sender,)), env)
    except PermanentFailure as exc:
        fatal(PROG, f"reply not sent: {exc.text}")  # a refused reply never bounces the delivery
        return ExitCode.OK
    if db is not None:
        db.record(sender, text, now)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qmail-reply``."""
    return run(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())

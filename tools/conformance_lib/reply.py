"""qmail-reply as a program: the auto-responder a ``.qmail`` line or the LDAP ``reply`` mode runs.

Both programs get the same environment qmail-local would set (SENDER, RECIPIENT, HOST, DTLINE and
QMAILREPLYTEXT or ``-f`` with a text file), the same message on stdin, a reply database directory of
their own, and a private copy of the reference's capture-queue as ``QMAILQUEUE``.  Observed: the exit
status, the reply handed to the queue (envelope and message, with qmail's Message-ID and Date
masked) and the reply database left behind (answer times masked).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .core import Case, Decision, Observed, show
from .world import World

MESSAGE = b"From: Bob <bob@remote.example>\nSubject: Lunch plans\nTo: alice@example.org\n\nhi\n"
AUTO_SUBMITTED = Decision(
    "reply-auto-submitted", "qldap's auto-reply carries Auto-Submitted: auto-replied (RFC 3834)",
    lambda t: t.replace("\nAuto-Submitted: auto-replied\n", "\n"),
)


NO_TEXT = Decision(
    "reply-no-text-defers", "qmail-reply without a reply text exits 111 (defer), not 100 (bounce)",
    lambda t: re.sub(r"\Aexit 1(00|11)\Z", "exit <no text: 100 or 111>", t),
)
NULL_SENDER = Decision(
    "reply-null-sender", "qmail-reply for the null sender exits 0 without replying instead of 111",
    lambda t: re.sub(r"\Aexit (0|111)\Z", "exit <null sender: 0 or 111>", t),
)
LIST_HEADERS = Decision(
    "reply-list-headers", "no auto-reply to mail with List-Id:, Mailing-List:, Auto-Submitted:, X-RBL: or spam marks",
    lambda t: re.sub(r"(?s)\Aexit 0\n-- queued: .*\Z", "exit 0", t),
)


def _db_tidy(text: str) -> str:
    """The database section without empty and repeated lines (the C qmail-reply leaves both)."""
    head, sep, db = text.partition("-- qmail-reply.db\n")
    if not sep:
        return text
    seen: list[str] = []
    for line in db.split("\n"):
        if line and line not in seen:
            seen.append(line)
    return head + sep + "\n".join(seen)


DB_TIDY = Decision("reply-db-rewrite", "qldap rewrites qmail-reply.db without empty or repeated lines", _db_tidy)


def _side(world: World, exe: str, tag: str, args: Sequence[str], env: Mapping[str, str], message: bytes,
          db: str | None) -> str:  # fmt: skip
    d = world.scratch(f"reply-{tag}")
    if db is not None:
        for sub in ("tmp", "new", "cur"):
            (d / "Maildir" / sub).mkdir(parents=True)
        if db:
            (d / "Maildir" / "qmail-reply.db").write_text(db)
    (d / "text").write_text("I am away.\nBack on Monday.\n")
    queue, cap = world.private_capture(f"reply-{tag}")
    full = world.env({"QMAILQUEUE": queue, **env})
    (d / "message").write_bytes(message)
    with (d / "message").open("rb") as stdin:  # a file, as qmail-local gives it: qmail-reply rewinds it
        proc = subprocess.run([exe, *args], stdin=stdin, capture_output=True, env=full, cwd=d, timeout=30)
    lines = [f"exit {proc.returncode}"]
    for msg, envelope in world.read_captures(cap):
        if envelope:
            lines.append("-- queued: " + show(envelope).replace("\\x00", " | "))
            lines.append(show(msg))
    dbf = d / "Maildir" / "qmail-reply.db"
    if dbf.exists():
        lines.append("-- qmail-reply.db\n" + dbf.read_text())
    text = "\n".join(lines)
    text = re.sub(r"<\d{14}\.\d+\.qmail@", "<<time>.<pid>.qmail@", text)
    text = re.sub(r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000", "<date>", text)
    return re.sub(r"^([^\s:]+@[^\s:]+):[0-9a-f]{8}$", r"\1:<time>", text, flags=re.M)


def reply(name: str, args: Sequence[str] = ("./Maildir/",), *, sender: str = "bob@remote.example",
          text: str | None = "I am away.", message: bytes = MESSAGE, db: str | None = "",
          decisions: Sequence[Decision] = (AUTO_SUBMITTED,)) -> Case:  # fmt: skip
    """One qmail-reply run; *db* None = no Maildir, "" = an empty one, else the database's content."""
    env = {"SENDER": sender, "RECIPIENT": "alice@example.org", "HOST": "example.org", "LOCAL": "alice",
           "USER": "alice", "DTLINE": "Delivered-To: alice@example.org\n"}  # fmt: skip
    if text is not None:
        env["QMAILREPLYTEXT"] = text

    def run(world: World) -> Observed:
        world.controls()
        with ThreadPoolExecutor(2) as pool:
            c = pool.submit(_side, world, world.c("qmail-reply"), f"{name}-c", args, env, message, db)
            q = pool.submit(_side, world, world.q("qmail-reply"), f"{name}-q", args, env, message, db)
            return Observed(c.result(), q.result())

    return Case("qmail-reply", name, run, decisions, parallel=True)


def cases() -> list[Case]:
    """Every qmail-reply case."""
    import hashlib

    tag = hashlib.md5(b"I am away.").hexdigest()
    recent = f"QRDBv1:{tag}\nbob@remote.example:{int(time.time()) - 60:08x}\n"
    old = f"QRDBv1:{tag}\nbob@remote.example:{int(time.time()) - 40 * 86400:08x}\n"
    other_text = f"QRDBv1:{hashlib.md5(b'Gone.').hexdigest()}\nbob@remote.example:{int(time.time()) - 60:08x}\n"
    return [
        reply("plain"),
        reply("no-database", args=(), db=None),
        reply("header-section", text="%HEADER%\nSubject: Re: %SUBJECT%\nX-Trace: kept\nBcc: x@y.example\n\nAway."),
        reply("no-text", text=None, decisions=(NO_TEXT,)),
        reply("robot-sender", sender="MAILER-DAEMON@remote.example", decisions=()),
        reply("request-sender", sender="list-request@remote.example", decisions=()),
        reply("null-sender", sender="", decisions=(NULL_SENDER,)),
        reply("bulk-message", message=b"Precedence: bulk\n" + MESSAGE, decisions=()),
        reply("list-message", message=b"List-Id: <l.example>\n" + MESSAGE, decisions=(LIST_HEADERS,)),
        reply("answered-recently", db=recent, decisions=()),
        reply("answered-long-ago", db=old),
        reply("answered-other-text", db=other_text, decisions=(AUTO_SUBMITTED, DB_TIDY)),
        reply("no-subject", message=b"From: bob@remote.example\n\nhi\n"),
        reply("usage", args=("-x",), decisions=()),
    ]

"""Auto-reply (qmail-reply) and quota-warning messages: when to answer, and what the answer says.

Pure composition plus the small reply database.  Why so many "don't reply" rules: an auto-responder
that answers lists, bounces or other robots creates mail loops and backscatter; the rules of
qmail-local(8) AUTO-REPLY are the accumulated defence and are kept exactly.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qldap.address import Address
from qldap.dates import qmail_date

REPLY_INTERVAL = 1_209_600  # 14 days
DB_LIMIT = 128 * 1024
LOCK_STALE = 900

_ROBOT_NAMES = ("-request", "daemon", "-daemon", "uucp", "mailer-daemon", "mailer", "postmaster", "root",
                "-relay")


def parse_headers(message: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) pairs of the header block (up to the first empty line)."""
    end = message.find(b"\n\n")
    block = message if end < 0 else message[: end + 1]
    if message.startswith(b"\n"):
        return []
    out: list[tuple[str, str]] = []
    for raw in block.decode("utf-8", "replace").split("\n"):
        if not raw:
            continue
        if raw[0] in " \t" and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + raw.strip())
            continue
        name, sep, value = raw.partition(":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def is_robot_sender(sender: str, junk: Iterable[str] = ()) -> bool:
    """True when the sender looks automated (qmail-local(8) AUTO-REPLY name rules, plus junk-file lines)."""
    if not sender or sender == "#@[]":
        return True
    s = sender.lower()
    parsed = Address.parse(s)
    local, domain = parsed.local, parsed.domain
    names = set(_ROBOT_NAMES) | {j.strip().lower() for j in junk if j.strip()}
    forms = {s, local}
    if domain:
        forms.add("@" + domain)
    i = local.find("-")
    while i >= 0:
        forms.add(local[i:])
        i = local.find("-", i + 1)
    return bool(forms & names)


def is_bulk_message(headers: list[tuple[str, str]]) -> bool:
    """True for lists, bulk, spam-flagged and auto-submitted messages."""
    for name, value in headers:
        n = name.lower()
        v = value.strip().lower()
        if n in ("mailing-list", "x-rbl", "list-id"):
            return True
        if n == "precedence" and v.startswith(("junk", "bulk", "list")):
            return True
        if n == "x-spam-status" and v.startswith("yes"):
            return True
        if n == "auto-submitted" and v != "no":
            return True
    return False


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How a header field of a reply text is treated: allowed with a default, or forced."""

    name: str
    forced: bool
    default: str | None


def split_text(text: str) -> tuple[list[tuple[str, str]], str]:
    """Split a reply text into its ``%HEADER%`` section (fields) and the body."""
    lines = text.split("\n")
    if not lines or lines[0].strip().lower() != "%header%":
        return [], text
    fields: list[tuple[str, str]] = []
    i = 1
    while i < len(lines) and lines[i].strip() != "":
        line = lines[i]
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line)
        else:
            name, _sep, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
        i += 1
    return fields, "\n".join(lines[i + 1 :])


def build_header(fields: list[tuple[str, str]], rules: list[FieldRule]) -> list[str]:
    """Header lines as qmail-reply(1) orders them: first the text's own fields in the text's order
    (those a rule allows, and other ``X-`` fields), then every rule field the text did not give, in
    rule order, forced ones always with their value; everything else in the text is dropped."""
    by_name = {r.name.lower(): r for r in rules}
    out: list[str] = []
    done: set[str] = set()
    for n, v in fields:
        key = n.lower()
        rule = by_name.get(key)
        if rule is None:
            if key.startswith("x-"):
                out.append(f"{n}: {v}")
        elif not rule.forced and key not in done:
            out.append(f"{rule.name}: {v}")
            done.add(key)
    for r in rules:
        if r.name.lower() not in done and r.default is not None:
            out.append(f"{r.name}: {r.default}")
    return out


def reply_rules(sender: str, recipient: str) -> list[FieldRule]:
    """The field table of qmail-local(8), AUTO-REPLY."""
    return [
        FieldRule("From", False, recipient),
        FieldRule("To", True, sender),
        FieldRule("Subject", False, "[Auto-Reply] %SUBJECT%"),
        FieldRule("MIME-Version", True, "1.0"),
        FieldRule("Content-Type", False, "text/plain; charset=utf-8"),
        FieldRule("Content-Transfer-Encoding", False, "8bit"),
        FieldRule("X-Mailer", True, "qmail-reply (by qmail-ldap)"),
        FieldRule("Precedence", True, "junk"),
        FieldRule("Auto-Submitted", True, "auto-replied"),
    ]


def _qmail_message_id(host: str, now: float) -> str:
    """qmail's own Message-ID shape, ``<YYYYMMDDHHMMSS.PID.qmail@HOST>``, as qmail-reply writes it."""
    return f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}.{os.getpid()}.qmail@{host}>"


def compose_reply(
    text: str, *, sender: str, recipient: str, original: bytes, dtline: str, me: str, now: float | None = None
) -> bytes:
    """The reply message (to be injected with the null sender to *sender*)."""
    t = time.time() if now is None else now
    fields, body = split_text(text)
    subject = (_header(parse_headers(original), "Subject") or "").split("\n")[0].strip() or "Your Mail"
    lines = [line.replace("%SUBJECT%", subject) if line.startswith("Subject:") else line
             for line in build_header(fields, reply_rules(sender, recipient))]
    # qmail-reply(1): Message-ID and Date (qldap.dates.qmail_date: GMT, no weekday) as qmail-ldap's
    # qmail-reply makes them, for the recipient's domain
    host = Address.parse(recipient).domain or me
    ids = f"Message-ID: {_qmail_message_id(host, t)}\nDate: {qmail_date(t)}\n"
    head = dtline + ids + "\n".join(lines) + "\n"
    return (head + "\n" + body + "\n").encode("utf-8", "surrogateescape")


def compose_quota_warning(
    text: str, *, user: str, host: str, recipient: str, dtline: str, me: str, now: float | None = None
) -> bytes:
    """The quota warning of qmail-local(8) AUTO-REPLY (stored straight into the mailbox)."""
    t = time.time() if now is None else now
    fields, body = split_text(text)
    rules = [
        FieldRule("From", False, f"Qmail-QUOTAGUARD <MAILER-DAEMON@{me}>"),
        FieldRule("To", True, recipient),
        FieldRule("Subject", False, "QUOTA-WARNING!"),
        FieldRule("MIME-Version", True, "1.0"),
        FieldRule("Content-Type", False, 'text/plain; charset="iso-8859-1"'),
        FieldRule("Content-Transfer-Encoding", False, "8bit"),
    ]
    date = qmail_date(t)
    head = (
        "Return-Path: <>\n" + dtline + f"Qmail-QuotaWarning: {user}@{host}\n"
        "Received: (directly through the qmail-quotawarning program);\n"
        f"\t{date}\n"
        f"Message-ID: {_qmail_message_id(me, t)}\nDate: {qmail_date(t)}\n"
        + "\n".join(build_header(fields, rules))
        + "\n"
    )
    # qmail-quotawarn: the text as it is in the file, and one empty line more when it ends in a newline
    return (head + "\n" + body + ("\n" if body.endswith("\n") else "")).encode("utf-8", "surrogateescape")


class ReplyDb:
    """``qmail-reply.db`` inside a maildir: who was answered when, for which text."""

    def __init__(self, maildir: Path) -> None:
        self.path = maildir / "qmail-reply.db"

    @staticmethod
    def _tag(text: str) -> str:
        return "QRDBv1:" + hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _load(self, text: str, now: float) -> dict[str, int]:
        try:
            lines = self.path.read_text(errors="replace").split("\n")
        except OSError:
            return {}
        if not lines or lines[0] != self._tag(text):
            return {}  # another text: everybody gets one new reply
        out: dict[str, int] = {}
        for line in lines[1:]:
            addr, sep, stamp = line.rpartition(":")
            if not sep:
                continue
            try:
                when = int(stamp, 16)
            except ValueError:
                continue
            if now - when < REPLY_INTERVAL:
                out[addr.lower()] = when
        return out

    def answered_recently(self, sender: str, text: str, now: float) -> bool:
        """True when *sender* got this text within the last 14 days."""
        return sender.lower() in self._load(text, now)

    def record(self, sender: str, text: str, now: float) -> None:
        """Remember that *sender* was answered now (expired lines dropped, size capped)."""
        entries = self._load(text, now)
        entries[sender.lower()] = int(now)
        body = [f"{a}:{w:08x}" for a, w in sorted(entries.items(), key=lambda kv: -kv[1])]
        out = self._tag(text) + "\n"
        for line in body:
            if len(out) + len(line) + 1 > DB_LIMIT:
                break
            out += line + "\n"
        tmp = self.path.with_name(f"qmail-reply.db.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # qmail-local's umask 077
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(out)
        os.replace(tmp, self.path)

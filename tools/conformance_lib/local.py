"""Local delivery decisions: one message and one entry through C qmail-lspawn+qmail-local and qldap.

The C side runs ``qmail-lspawn ALIASEMPTY`` as root, exactly as qmail-start would, speaking qmail-send's
protocol on its stdin (delivery number, message id, sender, recipient) with the message in
``<home>/queue/mess/0/`` owned by qmailq (the reference build maps qmailq to nobody).  qmail-lspawn
does the LDAP lookup, changes to the entry's uid and runs the real ``bin/qmail-local``, which writes
the mailbox, runs programs and ``qmail-reply`` and hands forwards to ``QMAILQUEUE`` (the reference's
capture-queue).  The qldap side calls :class:`qldap.local.spawn.LocalSpawner` — what ``qldap send``
calls for every local recipient — in a worker thread, with qldap's own queue writer
(:func:`qldap.queue.inject.inject`) injecting forwards and replies into a private queue that is read
back afterwards.

Observed: the report (``K``/``Z``/``D`` and its text), every file below the message stores (path with
the unique part of Maildir names masked, owner, content with the date of an mbox ``From `` line
masked) and every message injected (envelope and content).  The first line of a message qldap's queue
writer stored is its own ``Received: (qmail N invoked by …)`` line, which C's capture-queue never
sees (the real qmail-queue would add the same line): it is dropped before comparing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .core import Case, Decision, Observed, show
from .world import GID, UID, World

QMAILQ = 65534  # auto_uidq of the reference build (qmail users mapped to nobody)
SENDER = "sender@remote.example.com"
MESSAGE = (
    b"Received: (qmail 4242 invoked from network); 6 Dec 2026 12:00:00 -0000\n"
    b"From: Sender <sender@remote.example.com>\n"
    b"To: someone@example.org\n"
    b"Subject: conformance\n"
    b"Message-ID: <conformance@remote.example.com>\n"
    b"\n"
    b"body line\n"
)
# a delivery program that records what it was given: stdin and the environment qmail-local sets
RECORDER = """#!/bin/sh
{ echo "-- program run, args: $*"
  for v in USER HOME LOCAL HOST HOST2 HOST3 HOST4 RECIPIENT SENDER NEWSENDER EXT EXT2 EXT3 EXT4 DEFAULT DTLINE RPLINE; do
    eval "printf '%s=%s\\n' $v \\"\\$$v\\""
  done
  cat
} >> "$HOME/prog.out"
case "$1" in [0-9]*) echo "program says: exit $1"; exit "$1";; esac
exit 0
"""

Setup = Callable[[World], None]

MAILDIR_MAKE = Decision(
    "local-maildir-make", "a missing Maildir is created (as qmail-ldap built with AUTOMAILDIRMAKE)",
    lambda t: re.sub(r"\Areport K: did 1\+0\+0\n== \w+/Maildir/new/<unique> \(user, mode 600\)\n[^=]*\Z",
                     "report Z: Unable to chdir to maildir. (#4.2.1)", t),
)

AUTO_SUBMITTED = Decision(
    "reply-auto-submitted", "qldap's auto-reply carries Auto-Submitted: auto-replied (RFC 3834)",
    lambda t: t.replace("\nAuto-Submitted: auto-replied\n", "\n"),
)


def _mask_files(text: str) -> str:
    text = re.sub(r"(/(?:new|tmp|cur))/[^/\s]+", r"\1/<unique>", text)
    text = re.sub(r"^([^\s:]+@[^\s:]+):[0-9a-f]{8}$", r"\1:<time>", text, flags=re.M)  # qmail-reply.db
    return re.sub(r"^From (\S+) \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$", r"From \1 <date>", text, flags=re.M)


def stores(world: World) -> str:
    """Every file below the message stores: path, owner and content, sorted."""
    items = []
    for dirpath, dirs, files in os.walk(world.mail):
        if Path(dirpath) == world.mail and "bin" in dirs:
            dirs.remove("bin")  # the recording program
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(world.mail)
            st = p.stat()
            owner = "user" if (st.st_uid, st.st_gid) == (UID, GID) else f"{st.st_uid}:{st.st_gid}"
            items.append(_mask_files(f"== {rel} ({owner}, mode {st.st_mode & 0o777:o})\n{show(p.read_bytes())}"))
    return "\n".join(sorted(items))


def _render_injected(envelope: list[tuple[str, str]], message: bytes) -> str:
    env = " | ".join(code + value for code, value in envelope)
    return f"-- injected: {env}\n{show(message)}"


def _parse_input(data: bytes) -> list[tuple[str, str]]:
    """capture-queue's fd 1 (``F…\\0T…\\0\\0``) as (letter, address) pairs."""
    return [(r[:1].decode(), r[1:].decode("latin-1")) for r in data.split(b"\0") if r]


def run_c(world: World, recipient: str, sender: str, message: bytes, aliasempty: str) -> str:
    """qmail-lspawn with qmail-send's protocol on stdin; its report, then what it injected."""
    mess = world.home / "queue" / "mess" / "0"
    mess.mkdir(parents=True, exist_ok=True)
    f = mess / "4242"
    f.write_bytes(message)
    os.chown(f, QMAILQ, QMAILQ)
    f.chmod(0o644)
    world.clear_captures()
    cmd = b"\0\0" + b"0/4242\0" + sender.encode() + b"\0" + recipient.encode() + b"\0"
    full = world.env({"QMAILQUEUE": world.c("capture-queue"), "PATH": f"{world.cbin}:/usr/bin:/bin"})
    res = world.run([world.c("qmail-lspawn"), aliasempty], cmd, full)
    out = res.out[2:]  # auto_spawn, two bytes
    report = out[2:].split(b"\0", 1)[0] if len(out) >= 2 else b"<no report> " + res.out
    text = report.decode("latin-1")
    lines = [f"report {text[:1]}: {text[1:].rstrip()}" if text else "report <none>"]
    for msg, envelope in world.captures():
        if envelope:
            lines.append(_render_injected(_parse_input(envelope), msg))
    return "\n".join(lines)


def run_q(world: World, recipient: str, sender: str, message: bytes) -> str:
    """LocalSpawner.deliver in a worker thread; its report, then what it injected into qldap's queue."""
    from qldap.local.spawn import LocalSpawner
    from qldap.queue.envelope import Envelope
    from qldap.queue.inject import inject
    from qldap.queue.layout import QueueLayout, create_queue

    queue = world.qroot / "queue"
    shutil.rmtree(queue, ignore_errors=True)
    layout = create_queue(world.qroot)
    path = world.base / "qmess"
    path.write_bytes(message)
    pid = iter(range(1000, 2000))

    def injector(data: bytes, s: str, rcpts: tuple[str, ...]) -> int:
        return inject(layout, data, Envelope(s, rcpts), how="by uid 0", uid=0, pid=next(pid),
                      bigbrother={}, trigger=False).qp  # fmt: skip

    spawner = LocalSpawner(world.qroot, injector)
    try:
        with ThreadPoolExecutor(1) as pool:
            rep = pool.submit(spawner.deliver, recipient, sender, path).result()
    finally:
        spawner.reload()
    lines = [f"report {rep.letter}: {rep.text.rstrip()}"]
    lay = QueueLayout.of(world.qroot)
    queued = [(todo, _parse_input(todo.read_bytes())) for todo in Path(lay.dir("todo")).iterdir()]
    # in the order they were injected (the ``p`` record is the pid given above; file names are inodes)
    queued.sort(key=lambda tr: int(next((v for c, v in tr[1] if c == "p"), "0")))
    for todo, records in queued:
        envelope = [(c, v) for c, v in records if c in "FT"]
        data = Path(lay.mess(int(todo.name))).read_bytes()
        data = re.sub(rb"\AReceived: \(qmail \d+ invoked [^\n]*\n", b"", data)
        lines.append(_render_injected(envelope, data))
    return "\n".join(lines)


def _normalise(text: str) -> str:
    """Mask the queue ids (``qp N``) and the dates both sides put in their output."""
    text = re.sub(r"\bqp \d+", "qp <n>", text)
    text = re.sub(r"<\d{14}\.\d+\.qmail@", "<<time>.<pid>.qmail@", text)
    return re.sub(r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}", "<date>", text)


def delivery(name: str, recipient: str, *, sender: str = SENDER, message: bytes = MESSAGE,
             controls: Mapping[str, str | None] | None = None, setup: Setup | None = None,
             aliasempty: str = "./Maildir/",
             decisions: Sequence[Decision] = ()) -> Case:  # fmt: skip
    """One delivery case: the same message, sender, recipient, controls and home on both sides."""

    def run(world: World) -> Observed:
        ctl = {"defaultdelivery": aliasempty, **(controls or {})}
        ctl = {k: v.replace("{mail}", str(world.mail)) if v else v for k, v in ctl.items()}
        world.controls(ctl)
        seen = []
        recorder(world)
        for side in ("c", "q"):
            world.mailboxes()
            if setup is not None:
                setup(world)
            if side == "c":
                got = run_c(world, recipient, sender, message, aliasempty)
            else:
                got = run_q(world, recipient, sender, message)
            seen.append(_normalise("\n".join(x for x in (got, stores(world)) if x)))
        return Observed(seen[0], seen[1])

    return Case("local", name, run, decisions, needs_root=True)


# -- set-ups -----------------------------------------------------------------------------------
def home_file(user: str, name: str, text: str, mode: int = 0o644) -> Setup:
    """Write *name* (a .qmail file, a maildirsize …) into *user*'s home, owned by the user."""

    def setup(world: World) -> None:
        p = world.mail / user / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text.replace("{mail}", str(world.mail)).replace("{bin}", str(world.base / "bin")))
        p.chmod(mode)
        os.chown(p, UID, GID)

    return setup


def both(*steps: Setup) -> Setup:
    def setup(world: World) -> None:
        for s in steps:
            s(world)

    return setup


def recorder(world: World) -> None:
    """Install the recording delivery program at ``<mail>/bin/record``."""
    b = world.mail / "bin"
    b.mkdir(exist_ok=True)
    p = b / "record"
    p.write_text(RECORDER)
    p.chmod(0o755)


def chmod(user: str, mode: int, sub: str = "") -> Setup:
    def setup(world: World) -> None:
        (world.mail / user / sub).chmod(mode)

    return setup


def remove(user: str, sub: str) -> Setup:
    def setup(world: World) -> None:
        shutil.rmtree(world.mail / user / sub)

    return setup


def fill(user: str, count: int, size: int) -> Setup:
    """*count* messages of *size* bytes already in *user*'s Maildir/cur (for quota)."""

    def setup(world: World) -> None:
        cur = world.mail / user / "Maildir" / "cur"
        for i in range(count):
            p = cur / f"100000000{i}.1.host:2,S"
            p.write_bytes(b"x" * size)
            os.chown(p, UID, GID)

    return setup


def reply_db(user: str, text: str, when: int) -> Setup:
    """A ``qmail-reply.db`` saying the sender was answered at *when* (seconds since the epoch)."""
    import hashlib

    tag = hashlib.md5(text.encode()).hexdigest()
    return home_file(user, "Maildir/qmail-reply.db", f"QRDBv1:{tag}\n{SENDER}:{when:08x}\n", 0o600)


def message(*headers: str, body: str = "body line\n") -> bytes:
    """A message with *headers* in front of the standard ones."""
    return ("".join(h + "\n" for h in headers)).encode() + MESSAGE.replace(b"\n\nbody line\n", b"\n\n" + body.encode())


def cases() -> list[Case]:
    """Every local delivery case."""
    import time

    down = {"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"}
    recent = int(time.time()) - 3600
    old = int(time.time()) - 30 * 86400
    return [
        # mailbox kinds and addresses
        delivery("maildir", "alice@example.org"),
        delivery("maildir-alternate", "alice.alt@example.org"),
        delivery("maildir-case", "ALICE@Example.ORG"),
        delivery("null-sender", "alice@example.org", sender=""),
        delivery("bounce-sender-hash", "alice@example.org", sender="#@[]"),
        delivery("sender-quoted", "alice@example.org", sender="first last@remote.example.com"),
        delivery("mbox", "rita@example.org"),
        delivery("mbox-null-sender", "rita@example.org", sender=""),
        delivery("mbox-from-quoting", "rita@example.org",
                 message=message(body="From the start\n>From quoted\nbody\n")),
        delivery("homedir-and-store", "sam@example.org"),
        delivery("relative-store-with-ldapmessagestore", "kim@example.org", controls={"ldapmessagestore": "{mail}/"}),
        delivery("relative-store-without-ldapmessagestore", "kim@example.org"),
        delivery("defaultquota-size", "alice@example.org", controls={"defaultquotasize": "100"}),
        delivery("defaultquota-count", "alice@example.org", controls={"defaultquotacount": "1"}, setup=fill("alice", 1, 10)),
        delivery("defaultquota-entry-wins", "carol@example.org", controls={"defaultquotasize": "100"}),
        delivery("mbox-quota-ok", "rosa@example.org"),
        delivery("mbox-quota-over", "rosa@example.org", setup=home_file("rosa", "Mailbox", "From x\n" + "y" * 400 + "\n\n", 0o600)),
        delivery("no-final-newline-maildir", "alice@example.org", message=MESSAGE.rstrip(b"\n")),
        delivery("no-final-newline-mbox", "rita@example.org", message=MESSAGE.rstrip(b"\n")),
        delivery("defaultdelivery-mbox", "alice@example.org", aliasempty="./Mailbox"),
        delivery("catchall", "nobody@example.org"),
        delivery("dash-exact", "list-info@example.org"),
        delivery("dash-catchall", "list-foo@example.org"),
        delivery("dash-catchall-deeper", "list-foo-bar@example.org"),
        delivery("cluster-off", "jack@example.org"),
        delivery("loop-delivered-to", "alice@example.org", message=message("Delivered-To: alice@example.org")),
        delivery("delivered-to-other", "alice@example.org", message=message("Delivered-To: ivan@example.org")),
        # home and mailbox trouble
        delivery("home-missing", "xavier@example.org"),
        delivery("home-writable", "alice@example.org", setup=chmod("alice", 0o777)),
        delivery("home-sticky", "alice@example.org", setup=chmod("alice", 0o1755)),
        delivery("maildir-missing", "alice@example.org", setup=remove("alice", "Maildir"), decisions=(MAILDIR_MAKE,)),
        delivery("ldap-down", "alice@example.org", controls=down),
        # entries to refuse or handle with care
        delivery("program-shell-metacharacters", "ivy@example.org"),
        delivery("store-with-dotdot", "pat@example.org"),
        delivery("uid-0", "otto@example.org"),
        delivery("dotmode-invalid", "gus@example.org"),
        delivery("deliverymode-unknown-value", "lex@example.org"),
        # accountStatus and mailSizeMax
        delivery("disabled", "dave@example.org"),
        delivery("noaccess", "erin@example.org"),
        delivery("deleted", "gina@example.org"),
        delivery("status-nopop", "nora@example.org"),
        delivery("status-unknown-value", "hugo@example.org"),
        delivery("status-active-uppercase", "ada@example.org"),
        delivery("sizemax-exceeded", "xena@example.org"),
        delivery("sizemax-fits", "yves@example.org"),
        # deliveryMode combinations
        delivery("forwardonly", "bob@example.org"),
        delivery("forward-and-local", "ivan@example.org"),
        delivery("noforward", "kate@example.org"),
        delivery("nolocal", "leo@example.org"),
        delivery("nombox-program", "mona@example.org"),
        delivery("noprogram", "nick@example.org"),
        delivery("forwardonly-reply", "zara@example.org", decisions=(AUTO_SUBMITTED,)),
        delivery("nolocal-reply-header", "zoe@example.org", decisions=(AUTO_SUBMITTED,)),
        delivery("reply", "frank@example.org", decisions=(AUTO_SUBMITTED,)),
        delivery("reply-null-sender", "frank@example.org", sender=""),
        delivery("reply-header-section", "fay@example.org", decisions=(AUTO_SUBMITTED,)),
        delivery("reply-header-no-subject", "fay@example.org", decisions=(AUTO_SUBMITTED,),
                 message=MESSAGE.replace(b"Subject: conformance\n", b"")),
        delivery("reply-mailer-daemon", "frank@example.org", sender="MAILER-DAEMON@remote.example.com"),
        delivery("reply-precedence-bulk", "frank@example.org", message=message("Precedence: bulk")),
        delivery("reply-already-answered", "frank@example.org", setup=reply_db("frank", "I am away until Monday.", recent)),
        delivery("reply-answered-long-ago", "frank@example.org", setup=reply_db("frank", "I am away until Monday.", old),
                 decisions=(AUTO_SUBMITTED,)),
        # programs (qmailDotMode ldapwithprog / both)
        delivery("program-ldaponly", "hank@example.org"),
        delivery("program-ldapwithprog", "walt@example.org"),
        delivery("program-exit-100", "wade@example.org"),
        delivery("program-exit-111", "wynn@example.org"),
        delivery("program-exit-99", "wren@example.org"),
        # quota
        delivery("quota-ok", "carol@example.org"),
        delivery("quota-count", "olga@example.org"),
        delivery("quota-size-over", "carol@example.org", setup=fill("carol", 1, 900)),
        delivery("quota-count-over", "olga@example.org", setup=fill("olga", 1, 10)),
        delivery("quota-warning", "carol@example.org", setup=fill("carol", 1, 600),
                 controls={"quotawarning": "Your mailbox is almost full.\nPlease clean up."}),
        delivery("quota-warning-not-configured", "carol@example.org", setup=fill("carol", 1, 600)),
        delivery("quota-over-with-warning", "carol@example.org", setup=fill("carol", 1, 900),
                 controls={"quotawarning": "Your mailbox is almost full."}),
        delivery("quota-stale-maildirsize", "carol@example.org",
                 setup=both(fill("carol", 1, 100), home_file("carol", "Maildir/maildirsize", "1000S,100C\n0 0\n", 0o600))),
        # .qmail files (qmailDotMode dotonly / both, ldapdefaultdotmode)
        delivery("dotonly-no-dotqmail", "uma@example.org"),
        delivery("dotonly-dotqmail", "uma@example.org",
                 setup=home_file("uma", ".qmail", "# comment\n./Maildir/\n&copy@elsewhere.net\nplain@elsewhere.net\n")),
        delivery("dotonly-dotqmail-mbox", "uma@example.org", setup=home_file("uma", ".qmail", "./Mailbox\n")),
        delivery("dotonly-dotqmail-program", "uma@example.org",
                 setup=home_file("uma", ".qmail", "|{mail}/bin/record dot\n./Maildir/\n")),
        delivery("dotonly-dotqmail-program-100", "uma@example.org",
                 setup=home_file("uma", ".qmail", "|{mail}/bin/record 100\n./Maildir/\n")),
        delivery("dotonly-dotqmail-program-99", "uma@example.org",
                 setup=home_file("uma", ".qmail", "|{mail}/bin/record 99\n./Maildir/\n")),
        delivery("dotonly-dotqmail-forward-only-bit", "uma@example.org",
                 setup=home_file("uma", ".qmail", "&copy@elsewhere.net\n", 0o755)),
        delivery("dotonly-dotqmail-forward-only-bit-file", "uma@example.org",
                 setup=home_file("uma", ".qmail", "./Maildir/\n", 0o755)),
        delivery("dotonly-dotqmail-blank-first", "uma@example.org", setup=home_file("uma", ".qmail", "\n./Maildir/\n")),
        delivery("dotonly-dotqmail-writable", "uma@example.org", setup=home_file("uma", ".qmail", "./Maildir/\n", 0o666)),
        delivery("dotonly-ext", "uma-foo@example.org", setup=home_file("uma", ".qmail-foo", "./Maildir/\n")),
        delivery("dotonly-ext-default", "uma-foo@example.org", setup=home_file("uma", ".qmail-default", "./Mailbox\n")),
        delivery("dotonly-ext-missing", "uma-foo@example.org"),
        delivery("both-ldap-and-dotqmail", "tina@example.org", setup=home_file("tina", ".qmail", "&dot@elsewhere.net\n")),
        delivery("both-no-dotqmail", "tina@example.org"),
        delivery("both-ext", "vera-foo-bar@example.org", setup=home_file("vera", ".qmail-foo-bar", "&ext@elsewhere.net\n")),
        delivery("both-ext-default", "vera-foo-bar@example.org",
                 setup=home_file("vera", ".qmail-foo-default", "&extdefault@elsewhere.net\n")),
        delivery("both-ext-missing", "vera-foo@example.org"),
        delivery("both-ext-default-program", "vera-foo-bar@example.org",
                 setup=home_file("vera", ".qmail-foo-default", "|{mail}/bin/record ext\n")),
        delivery("dotonly-owner-newsender", "uma@example.org",
                 setup=both(home_file("uma", ".qmail", "&copy@elsewhere.net\n"), home_file("uma", ".qmail-owner", "&boss@elsewhere.net\n"))),
        delivery("dotonly-owner-default-newsender", "uma@example.org",
                 setup=both(home_file("uma", ".qmail", "&copy@elsewhere.net\n"), home_file("uma", ".qmail-owner-default", "&boss@elsewhere.net\n"))),
        delivery("defaultdotmode-dotonly", "alice@example.org", controls={"ldapdefaultdotmode": "dotonly"},
                 setup=home_file("alice", ".qmail", "&copy@elsewhere.net\n./Maildir/\n")),
        delivery("defaultdotmode-ldaponly-ignores-dotqmail", "alice@example.org",
                 setup=home_file("alice", ".qmail", "&copy@elsewhere.net\n")),
        delivery("defaultdotmode-both-program", "hank@example.org", controls={"ldapdefaultdotmode": "both"}),
    ]

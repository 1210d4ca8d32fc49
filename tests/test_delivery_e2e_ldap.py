"""Lookup and entry checks of qmail-local(8) end to end: an entry in the real slapd → ``LocalSpawner``
→ files and report.

Each test loads its entries into a fresh subtree of the shared slapd, delivers one queued message through
``LocalSpawner(root, inject)`` with the real queue injector, and asserts the exact report text and what
was (or was not) written.  When the tests run as root the agent runs as the entry's qmailUID (2000), so
the root, the mailboxes and the helper scripts live in a world-traversable temporary directory owned by
that uid.  Programs that must not run are given a marker file they would create.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qldap.local.spawn import LocalSpawner, Report
from qldap.queue.envelope import Envelope
from qldap.queue.inject import inject
from qldap.queue.layout import create_queue
from tests.conftest import QRoot

pytestmark = [pytest.mark.slapd]

IS_ROOT = os.geteuid() == 0
UID = 2000 if IS_ROOT else os.geteuid()
GID = 2000 if IS_ROOT else os.getegid()
SENDER = "bob@remote.example"
BODY = b"Subject: hi\n\nhello\n"
ILLEGAL = Report("D", "Illegal value in LDAP attribute. (#5.3.5)")
MANDATORY = Report("D", "LDAP attribute is not given but mandatory. (#5.3.5)")
NOT_UNIQUE = Report("D", "Too many results returned but needs to be unique. (#5.3.5)")
NO_MAILBOX = Report("D", "Sorry, no mailbox here by that name. (#5.1.1)")
DUMP = '#!/bin/sh\nenv > "$HOME/prog.env"\ncat > "$HOME/prog.in"\nid -u > "$HOME/prog.uid"\n' \
       'ls Maildir/new 2>/dev/null | wc -l > "$HOME/prog.count"\n'


@dataclass
class E:
    """One test's world: spawner over a root in *mail*, the LDAP subtree, captured injections."""

    sp: LocalSpawner
    q: QRoot
    base: object
    mail: Path
    tmp: Path
    injected: list[tuple[bytes, str, tuple[str, ...]]] = field(default_factory=list)
    n: int = 0

    def box(self, name: str, uid: int = UID, maildir: bool = False) -> Path:
        p = self.mail / name
        p.mkdir(mode=0o700)
        if maildir:
            for sub in ("tmp", "new", "cur"):
                (p / "Maildir" / sub).mkdir(parents=True, mode=0o700)
        if IS_ROOT:
            for d in (p, *p.rglob("*")):
                os.chown(d, uid, GID)
        return p

    def load(self, ldif: str) -> None:
        self.base.load(ldif)  # type: ignore[attr-defined]

    def send(self, rcpt: str, body: bytes = BODY, sender: str = SENDER) -> Report:
        self.n += 1
        p = self.tmp / f"mess{self.n}"
        p.write_bytes(body)
        return self.sp.deliver(rcpt, sender, p)

    def script(self, name: str, text: str = DUMP) -> Path:
        p = self.mail / name
        p.write_text(text)
        p.chmod(0o755)
        return p

    def marker_prog(self, name: str) -> tuple[Path, str]:
        """A marker path and a program line creating it."""
        m = self.mail / f"{name}.ran"
        return m, f"/usr/bin/touch {m}"


def make_env(ldap_base, slapd, mailroot: Path, tmp_path: Path) -> E:  # type: ignore[no-untyped-def]
    q = QRoot(mailroot / "qmail")
    q.control("me", "mx1.example.com")
    q.control("ldapserver", f"127.0.0.1:{slapd.port}")
    q.control("ldapbasedn", ldap_base.dn)
    q.control("ldapobjectclass", "qmailUser")
    q.control("ldaptimeout", "30")
    create_queue(q.path)
    if IS_ROOT:
        os.chown(q.path / "alias", UID, GID)  # the alias user: the owner of ROOT/alias
    e = E(LocalSpawner(q.path, lambda d, s, r: 0), q, ldap_base, mailroot, tmp_path)

    def injector(data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        e.injected.append((data, sender, rcpts))
        return inject(q.path, data, Envelope(sender, rcpts), how="by uid 0", uid=os.getuid(),
                      pid=os.getpid(), trigger=False).qp

    e.sp = LocalSpawner(q.path, injector)
    return e


@pytest.fixture
def mailroot() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qldap-dv-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def e(ldap_base, slapd, mailroot: Path, tmp_path: Path) -> E:  # type: ignore[no-untyped-def]
    return make_env(ldap_base, slapd, mailroot, tmp_path)


def attr(name: str, value: str) -> str:
    """One LDIF line, base64 when the value needs it."""
    raw = value.encode("utf-8", "surrogateescape")
    if value != value.strip() or any(b < 0x20 or b > 0x7E for b in raw) or value[:1] in (":", "<"):
        return f"{name}:: {base64.b64encode(raw).decode()}"
    return f"{name}: {value}"


def user(uid: str, store: Path | str | None, *extra: str, mail: str | None = None,
         ids: bool = True, rdn: str | None = None) -> str:
    lines = [f"dn: {rdn or 'uid=' + uid},{{base}}", "objectClass: inetOrgPerson", "objectClass: qmailUser",
             f"cn: {uid}", f"sn: {uid}", f"mail: {mail or uid + '@example.com'}"]
    if rdn is None:
        lines.append(f"uid: {uid}")
    if ids:
        lines += [f"qmailUID: {UID}", f"qmailGID: {GID}"]
    if store is not None:
        text = f"{store}/" if isinstance(store, Path) else store
        lines.append(attr("mailMessageStore", text))
    lines += list(extra)
    return "\n".join(lines) + "\n\n"


def new_files(store: Path, sub: str = "Maildir") -> list[Path]:
    d = store / sub / "new"
    return sorted(d.iterdir()) if d.is_dir() else []


def prog_env(home: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (home / "prog.env").read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def with_prog(e: E, store: Path) -> list[str]:
    return ["qmailDotMode: ldapwithprog", f"deliveryProgramPath: {e.script('dump-' + store.name)}"]


def test_check06_alternate_address(e: E) -> None:
    store = e.box("alice")
    e.load(user("alice", store, "mailAlternateAddress: al@example.com", *with_prog(e, store)))
    assert e.send("al@example.com") == Report("K", "did 1+0+1")
    [f] = new_files(store)
    assert f.read_bytes() == b"Return-Path: <bob@remote.example>\nDelivered-To: al@example.com\n" + BODY
    assert prog_env(store)["RECIPIENT"] == "al@example.com"


def catchall(e: E, name: str, mail: str) -> Path:
    store = e.box(name)
    e.load(user(name, store, *with_prog(e, store), mail=mail))
    return store


def test_check07_dash_candidates_in_order_then_fallback(e: E) -> None:
    assert e.send("aaaa-bbbb-cccc@d.example") == NO_MAILBOX  # alias user, no .qmail-default
    first = catchall(e, "c1", "aaaa-catchall@d.example")
    last = catchall(e, "c2", "catchall@d.example")
    assert e.send("aaaa-bbbb-cccc@d.example") == Report("K", "did 1+0+1")
    assert prog_env(first)["EXT"] == "bbbb-cccc"
    assert not new_files(last)


def test_check08_level_limit_four(e: E) -> None:
    never = catchall(e, "c1", "a-b-c-d-e-catchall@x.example")
    hit = catchall(e, "c2", "catchall@x.example")
    assert e.send("a-b-c-d-e-f@x.example") == Report("K", "did 1+0+1")
    assert not new_files(never)
    assert prog_env(hit)["EXT"] == "a-b-c-d-e-f"


def test_check09_longest_dash_candidate_wins(e: E) -> None:
    first = catchall(e, "c1", "aaaa-bbbb-catchall@d.example")
    last = catchall(e, "c2", "catchall@d.example")
    assert e.send("aaaa-bbbb-cccc@d.example") == Report("K", "did 1+0+1")
    env = prog_env(first)
    assert (env["EXT"], env["RECIPIENT"]) == ("cccc", "aaaa-bbbb-cccc@d.example")
    assert not new_files(last)


def test_check10_catchall_gets_ext(e: E) -> None:
    store = catchall(e, "c", "catchall@example.com")
    assert e.send("nobody@example.com") == Report("K", "did 1+0+1")
    assert prog_env(store)["EXT"] == "nobody"
    [f] = new_files(store)
    assert b"\nDelivered-To: nobody@example.com\n" in f.read_bytes()


def test_check11_dash_extensions_off(e: E) -> None:
    e.q.control("ldapdashext", "0")
    e.sp.reload()
    skipped = catchall(e, "c1", "a-catchall@x.example")
    hit = catchall(e, "c2", "catchall@x.example")
    assert e.send("a-b@x.example") == Report("K", "did 1+0+1")
    assert not new_files(skipped)
    assert prog_env(hit)["EXT"] == "a-b"


def test_check12_duplicate_mail_no_catchall(e: E) -> None:
    s1, s2, c = e.box("d1"), e.box("d2"), e.box("c")
    e.load(user("d1", s1, mail="dup@example.com") + user("d2", s2, mail="dup@example.com")
           + user("c", c, mail="catchall@example.com"))
    assert e.send("dup@example.com") == NOT_UNIQUE
    assert not new_files(s1) and not new_files(s2) and not new_files(c)


def test_check13_alias_domain_only_in_filters(e: E) -> None:
    e.q.control("aliasdomains", "mail.example.org:example.org")
    e.sp.reload()
    store = e.box("alice")
    e.load(user("alice", store, *with_prog(e, store), mail="alice@example.org"))
    assert e.send("alice@mail.example.org") == Report("K", "did 1+0+1")
    assert prog_env(store)["HOST"] == "mail.example.org"
    [f] = new_files(store)
    assert b"\nDelivered-To: alice@mail.example.org\n" in f.read_bytes()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check15_failover_to_second_server(e: E, slapd) -> None:  # type: ignore[no-untyped-def]
    e.q.control("ldapserver", f"127.0.0.1:{closed_port()}\n127.0.0.1:{slapd.port}")
    e.sp.reload()
    store = e.box("alice")
    e.load(user("alice", store))
    assert e.send("alice@example.com") == Report("K", "did 1+0+0")
    assert len(new_files(store)) == 1


def test_check17_bad_credentials_defer(e: E, slapd) -> None:  # type: ignore[no-untyped-def]
    e.q.control("ldaplogin", slapd.rootdn)
    e.q.control("ldappassword", "wrong")
    e.sp.reload()
    store = e.box("alice")
    e.load(user("alice", store))
    assert e.send("alice@example.com") == Report(
        "Z", "Unable to login into LDAP server, bad credentials. (#4.4.3)")
    assert not new_files(store)


def test_check19_missing_base_dn_defers(e: E, slapd) -> None:  # type: ignore[no-untyped-def]
    e.q.control("ldapbasedn", f"ou=nope,{slapd.suffix}")
    e.sp.reload()
    assert e.send("alice@example.com") == Report("Z", "Temporary failure in LDAP lookup. (#4.4.3).")


@pytest.mark.parametrize(("status", "report"), [
    ("DISABLED", Report("D", "Mailaddress is administratively disabled. (#5.2.1)")),
    ("deleted", NO_MAILBOX),
    ("noaccess", Report("K", "did 1+0+0")),
    ("nopop", Report("K", "did 1+0+0")),
    ("holiday", Report("K", "did 1+0+0")),
])
def test_check20_account_status(e: E, status: str, report: Report) -> None:
    store = e.box("alice")
    e.load(user("alice", store, f"accountStatus: {status}"))
    assert e.send("alice@example.com") == report
    assert len(new_files(store)) == (1 if report.letter == "K" else 0)


def sized(n: int) -> bytes:
    head = b"Subject: size\n\n"
    return head + b"x" * (n - len(head) - 1) + b"\n"


def load_or_skip(e: E, ldif: str, why: str) -> None:
    try:
        e.load(ldif)
    except Exception as exc:  # the schema's syntax refuses it: the value cannot reach delivery at all
        if "invalid per syntax" not in str(exc) and "multiple values" not in str(exc):
            raise
        pytest.skip(f"slapd refuses {why}")


def test_check21_mail_size_max(e: E) -> None:
    stores = {v: e.box(f"u{i}") for i, v in enumerate(("1000", "0"))}
    e.load("".join(user(f"u{i}", s, f"mailSizeMax: {v}") for i, (v, s) in enumerate(stores.items())))
    assert e.send("u0@example.com", sized(1001)) == Report(
        "D", "The message exeeded the maximum size the user accepts. (#5.2.3)")
    assert not new_files(stores["1000"])
    assert e.send("u0@example.com", sized(1000)) == Report("K", "did 1+0+0")
    assert len(new_files(stores["1000"])) == 1
    assert e.send("u1@example.com", sized(50000)) == Report("K", "did 1+0+0")


def test_check21_mail_size_max_not_digits(e: E) -> None:
    store = e.box("alice")
    load_or_skip(e, user("alice", store, "mailSizeMax: 10k"), "mailSizeMax: 10k (Integer syntax)")
    assert e.send("alice@example.com", sized(10)) == ILLEGAL
    assert not new_files(store)


def test_check22_relative_store_with_prefix(e: E) -> None:
    srv = e.mail / "srv"
    srv.mkdir()
    srv.chmod(0o755)
    e.q.control("ldapmessagestore", str(srv))
    e.sp.reload()
    e.box("srv/alice")
    e.load(user("alice", "alice"))
    assert e.send("alice@example.com") == Report("K", "did 1+0+0")
    assert len(new_files(srv / "alice")) == 1


def test_check22_relative_store_without_prefix(e: E) -> None:
    e.load(user("alice", "alice"))
    assert e.send("alice@example.com") == ILLEGAL


def test_check23_home_directory_and_relative_store(e: E) -> None:
    h1, h2 = e.box("h1"), e.box("h2")
    e.load(user("h1", None, f"homeDirectory: {h1}", "mailMessageStore: ./Mail/", *with_prog(e, h1))
           + user("h2", None, f"homeDirectory: {h2}"))
    assert e.send("h1@example.com") == Report("K", "did 1+0+1")
    assert prog_env(h1)["HOME"] == str(h1)
    assert len(new_files(h1, "Mail")) == 1
    assert not (h1 / "Maildir").exists()
    assert e.send("h2@example.com") == Report("K", "did 1+0+0")
    assert len(new_files(h2)) == 1


def test_check24_relative_home_directory(e: E) -> None:
    e.load(user("alice", None, "homeDirectory: home/alice"))
    assert e.send("alice@example.com") == ILLEGAL


@pytest.mark.parametrize("tail", ["../../etc/", "alice/.."])
def test_check25_dot_dot_in_store(e: E, tail: str) -> None:
    e.box("alice")
    e.load(user("alice", f"{e.mail}/{tail}"))
    before = sorted(e.mail.rglob("*"))
    assert e.send("alice@example.com") == ILLEGAL
    assert sorted(e.mail.rglob("*")) == before


@pytest.mark.parametrize("bad", ["a b", "a;b", "a$b", "a\u00e9b"])
def test_check26_bad_bytes_in_store(e: E, bad: str) -> None:
    load_or_skip(e, user("alice", f"{e.mail}/{bad}/"), f"mailMessageStore {bad!r}")
    before = sorted(e.mail.rglob("*"))
    assert e.send("alice@example.com") == ILLEGAL
    assert sorted(e.mail.rglob("*")) == before


def test_check27_forward_only_mode(e: E) -> None:
    marker, prog = e.marker_prog("fwdonly")
    e.load(user("alice", None, "mailForwardingAddress: carol@else.example", f"deliveryProgramPath: {prog}",
                "qmailDotMode: ldapwithprog"))
    rep = e.send("alice@example.com")
    assert rep.letter == "K", rep
    assert rep.text.startswith("did 0+1+0\nqp ")
    [(data, sender, rcpts)] = e.injected
    assert (sender, rcpts) == (SENDER, ("carol@else.example",))
    assert data == b"Delivered-To: alice@example.com\n" + BODY
    assert not marker.exists()
    assert not list((e.q.path / "alias").iterdir())


def test_check28_no_store_no_forward(e: E) -> None:
    e.load(user("alice", None))
    assert e.send("alice@example.com") == MANDATORY


def test_check29_uid(e: E) -> None:
    stores = [e.box(n) for n in ("n1", "n2", "n3")]
    e.load(user("n1", stores[0], rdn="cn=n1") + user("n2", stores[1], "uid: al/ice", rdn="cn=n2")
           + user("n3", stores[2], "uid: -alice", rdn="cn=n3"))
    assert e.send("n1@example.com") == MANDATORY
    assert e.send("n2@example.com") == ILLEGAL
    assert e.send("n3@example.com") == ILLEGAL
    assert not any(new_files(s) for s in stores)


def user_ids(uid: str, store: Path, *ids: str) -> str:
    return user(uid, store, *[f"qmailUID: {i}" for i in ids], f"qmailGID: {GID}", ids=False)


@pytest.mark.parametrize("value", ["99", "0", "65536", "2k"])
def test_check30_bad_qmail_uid(e: E, value: str) -> None:
    store = e.box("alice")
    load_or_skip(e, user_ids("alice", store, value), f"qmailUID {value!r}")
    assert e.send("alice@example.com") == ILLEGAL
    assert not new_files(store)


def test_check30_two_qmail_uids(e: E) -> None:
    store = e.box("alice")
    load_or_skip(e, user_ids("alice", store, str(UID), "3000"), "a second qmailUID")
    assert e.send("alice@example.com") == NOT_UNIQUE


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run as uid 3000")
def test_check31_ldapuid_default(e: E) -> None:
    e.q.control("ldapuid", "3000")
    e.q.control("ldapgid", str(GID))
    e.sp.reload()
    store = e.box("alice", uid=3000)
    e.load(user("alice", store, *with_prog(e, store), ids=False))
    assert e.send("alice@example.com") == Report("K", "did 1+0+1")
    assert (store / "prog.uid").read_text() == "3000\n"


def test_check31_no_uid_no_default(e: E) -> None:
    store = e.box("alice")
    e.load(user("alice", store, ids=False))
    assert e.send("alice@example.com") == MANDATORY


def test_check32_program_dropped_in_ldaponly(e: E) -> None:
    store = e.box("alice")
    marker, prog = e.marker_prog("ldaponly")
    e.load(user("alice", store, f"deliveryProgramPath: {prog}", "qmailDotMode: ldaponly"))
    assert e.send("alice@example.com") == Report("K", "did 1+0+0")
    assert not marker.exists()
    assert len(new_files(store)) == 1


def test_check33_program_in_ldapwithprog(e: E) -> None:
    store = e.box("alice", maildir=True)
    e.load(user("alice", store, *with_prog(e, store)))
    assert e.send("alice@example.com") == Report("K", "did 1+0+1")
    env = prog_env(store)
    assert (env["SENDER"], env["RECIPIENT"], env["USER"], env["PWD"]) == (
        SENDER, "alice@example.com", "alice", str(store))
    assert (store / "prog.in").read_bytes() == BODY
    assert (store / "prog.count").read_text().strip() == "0"  # ran before the maildir write
    assert len(new_files(store)) == 1


@pytest.mark.parametrize("value", ["/bin/rm -rf ~", "`id`", "$(id)", "a|b", "a;b", "a>/etc/x", "a&b"])
def test_check34_program_path_refused(e: E, value: str) -> None:
    store = e.box("alice")
    marker = e.mail / "id.ran"
    value = value.replace("id", f"touch {marker}").replace("a", f"touch {marker}", 1) \
        if value.startswith(("a", "`", "$")) else value
    e.load(user("alice", store, attr("deliveryProgramPath", value), "qmailDotMode: ldapwithprog"))
    assert e.send("alice@example.com") == ILLEGAL
    assert not marker.exists()
    assert not new_files(store)


@pytest.mark.parametrize(("name", "value"), [
    ("deliveryProgramPath", "/bin/true\n&evil@x.example"),
    ("mailForwardingAddress", "carol@else.example\r\n&evil@x.example"),
    ("mailForwardingAddress", "carol@else.example\n&evil@x.example"),
])
def test_check35_line_breaks_refused(e: E, name: str, value: str) -> None:
    store = e.box("alice")
    e.load(user("alice", store, attr(name, value), "qmailDotMode: ldapwithprog"))
    assert e.send("alice@example.com") == ILLEGAL
    assert e.injected == []
    assert not new_files(store)

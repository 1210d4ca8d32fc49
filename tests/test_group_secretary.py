"""qmail-secretary's storage, expiry and request mails on real files (no directory needed)."""

from __future__ import annotations

import email
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from qldap.errors import PermanentFailure, TemporaryFailure
from qldap.group import policy as p
from qldap.group.secretary import (
    CONFIRM_ATTACH,
    STRIPPED,
    Held,
    Passed,
    Released,
    Secretary,
    SecretaryConfig,
    compose_notification,
    expire,
    split_text,
    store,
    truncate,
)
from qldap.queue.message import MessageFile

POST = b"From: s@y\nSubject: hi\n\nhello\n"


class Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, tuple[str, ...]]] = []
        self.fail: Exception | None = None

    def __call__(self, data: bytes, sender: str, rcpts: tuple[str, ...]) -> int:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, sender, rcpts))
        return 4242


def cfg(tmp_path: Path, *, confirm: bool = True, moderators: tuple[str, ...] = ()) -> SecretaryConfig:
    return SecretaryConfig.for_group(tmp_path / "Maildir", "list", "example.com", confirm=confirm,
                                     moderators=moderators)


def run(tmp_path: Path, c: SecretaryConfig, local: str, sender: str, body: bytes = POST,
        cap: Capture | None = None, now: float | None = None) -> object:
    f = tmp_path / f"in{time.monotonic_ns()}"
    f.write_bytes(body)
    with MessageFile.open(f) as mf:
        return Secretary(c, cap or Capture(), now).handle(local, "example.com", sender, mf)


def test_store_links_a_complete_file_under_its_hash(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    f = tmp_path / "m"
    f.write_bytes(POST)
    with MessageFile.open(f) as mf:
        h1, path = store(box, "new", b"Return-Path: <s@y>\n", mf)
        h2, _ = store(box, "new", b"", mf)
    assert re.fullmatch(r"[0-9a-f]{40}", h1) and h1 != h2  # random part: same message, new hash
    assert path == box / "new" / h1 and path.read_bytes() == b"Return-Path: <s@y>\n" + POST
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert list((box / "tmp").iterdir()) == []


def test_expire_removes_week_old_files_everywhere_but_the_kept_one(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    now = float(int(time.time()))
    old = now - 604800 - 5
    files = {}
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
        for age in ("old", "fresh"):
            f = box / sub / age
            f.write_bytes(b"x")
            if age == "old":
                os.utime(f, (old, old))
            files[sub, age] = f
    assert expire(box, now, keep=files["cur", "old"]) == 2
    left = sorted(str(f.relative_to(box)) for f in box.rglob("*") if f.is_file())
    assert left == ["cur/fresh", "cur/old", "new/fresh", "tmp/fresh"]
    exactly = now - 604800
    os.utime(files["new", "fresh"], (exactly, exactly))
    assert expire(box, now) == 1  # the spared one goes now; exactly a week old is not "older"
    assert files["new", "fresh"].exists() and not files["cur", "old"].exists()


def test_confirmation_request_is_a_two_part_mime_message(tmp_path: Path) -> None:
    c = replace(cfg(tmp_path), confirm_text="Hi,\nplease confirm your mail to %list% (%LIST%), 100% sure.\n")
    cap = Capture()
    now = 1_700_000_000.0
    out = run(tmp_path, c, "list", "s@y", cap=cap, now=now)
    assert out == Held("qmail-secretary: info: qp 4242")
    [(data, sender, rcpts)] = cap.sent
    [held] = (tmp_path / "Maildir" / "new").iterdir()
    assert sender == f"list-reject-{held.name}@example.com" and rcpts == ("s@y",)
    head, _, _ = data.partition(b"\n\n")
    assert head.split(b"\n")[:3] == [
        b"Delivered-To: secretary for list@example.com",
        f"Message-ID: <20231114221320.{os.getpid()}.qmail@example.com>".encode(),
        b"Date: 14 Nov 2023 22:13:20 -0000",
    ]
    msg = email.message_from_bytes(data)
    assert msg["To"] == "s@y" and msg["Subject"] == "Message sender confirmation"
    assert msg["From"] == f"The mailgroup secretary <list-confirm-{held.name}@example.com>"
    assert msg["X-Mailer"] == "qmail-secretary (by qmail-ldap)" and msg["Precedence"] == "junk"
    assert msg["MIME-Version"] == "1.0" and msg.get_boundary() == held.name
    text, attached = msg.get_payload()
    assert text.get_content_type() == "text/plain" and text["Content-Transfer-Encoding"] == "8bit"
    assert text.get_payload() == ("Hi,\nplease confirm your mail to list@example.com (list@example.com), "
                                  "100% sure.\n")
    assert attached.get_content_type() == "message/rfc822"
    assert attached.get_payload()[0]["Subject"] == "hi"


def test_header_directives_in_texts(tmp_path: Path) -> None:
    text = ("%HEADER%\nSubject: Bitte bestaetigen\nX-List: list\n  continued\nTo: evil@z\nX-Mailer: mine\n"
            "Content-Type: text/plain; charset=utf-8\nReply-To: nobody@z\n\nBody %LIST%\n")
    msg_fields, part_fields, body = split_text(text)
    assert msg_fields == ["Subject: Bitte bestaetigen", "X-List: list\n  continued"]
    assert part_fields == ["Content-Type: text/plain; charset=utf-8"]
    assert body == "Body %LIST%\n"
    c = replace(cfg(tmp_path), confirm_text=text)
    data = compose_notification(c, to="s@y", reply_to="r@h", subject="Default subject", text=text,
                                boundary="b" * 40, original=POST, limit=CONFIRM_ATTACH, now=0, pid=1)
    msg = email.message_from_bytes(data)
    assert msg.get_all("Subject") == ["Bitte bestaetigen"] and msg.get_all("To") == ["s@y"]
    assert msg.get_all("X-Mailer") == ["qmail-secretary (by qmail-ldap)"] and msg["Reply-To"] is None
    part = msg.get_payload()[0]
    assert part.get_content_charset() == "utf-8" and part.get_payload() == "Body list@example.com\n"
    assert split_text("no header\n") == ([], [], "no header\n")


def test_attachment_is_truncated_at_a_line_end(tmp_path: Path) -> None:
    big = b"Subject: big\n\n" + b"0123456789\n" * 2000
    cut = truncate(big, CONFIRM_ATTACH)
    assert cut.endswith(STRIPPED) and len(cut) - len(STRIPPED) <= CONFIRM_ATTACH
    assert cut[: -len(STRIPPED)].endswith(b"\n") and big.startswith(cut[: -len(STRIPPED)])
    assert truncate(POST, CONFIRM_ATTACH) == POST
    assert truncate(b"x" * 50, 10) == b"x" * 10 + STRIPPED


def test_confirm_released_approve_and_moderation_paths(tmp_path: Path) -> None:
    c = cfg(tmp_path, moderators=("m@x",))
    cap = Capture()
    run(tmp_path, c, "list", "s@y", cap=cap)
    [held] = (tmp_path / "Maildir" / "new").iterdir()
    # confirmed on a moderated list: moved to cur/ under a new hash, moderators asked
    out = run(tmp_path, c, f"list-confirm-{held.name}", "s@y", b"Subject: ok\n\nok\n", cap=cap)
    assert isinstance(out, Held) and not held.exists()
    [moved] = (tmp_path / "Maildir" / "cur").iterdir()
    prefix = b"Return-Path: <s@y>\nDelivered-To: secretary for list@example.com\n"
    assert moved.read_bytes().startswith(prefix)
    data, sender, rcpts = cap.sent[-1]
    assert rcpts == ("m@x",) and sender == f"list-bounce-{moved.name}@example.com"
    assert b"Return-Path: <s@y>" in data  # the stored file is what the moderators see
    approve = f"list-approve-{moved.name.upper()}"
    assert run(tmp_path, c, approve, "m@x", b"Subject: ok\n\nok\n") == Released(moved)


def test_secretary_failures_and_pass_through(tmp_path: Path) -> None:
    plain = cfg(tmp_path, confirm=False)
    with pytest.raises(PermanentFailure) as exc:
        run(tmp_path, plain, "list", "s@y")
    assert exc.value.text == "no moderators found but needed."
    for local, text in (("list-moderators", p.BAD_ADDRESS), ("list-approve", p.APPROVE_WITHOUT_ID),
                        ("list-confirm", p.CONFIRM_WITHOUT_ID)):
        with pytest.raises(PermanentFailure) as exc:
            run(tmp_path, plain, local, "s@y")
        assert exc.value.text == text
    assert run(tmp_path, plain, "list-subscribe", "s@y") == Passed("")
    bad = Passed("qmail-secretary: warn: mail address has bad extension.")
    assert run(tmp_path, plain, "listfoo", "s@y") == bad
    assert (tmp_path / "Maildir" / "cur").is_dir()  # created on the way


def test_queue_refusal_of_a_request(tmp_path: Path) -> None:
    cap = Capture()
    cap.fail = TemporaryFailure("qq write error or disk full (#4.3.0)")
    with pytest.raises(TemporaryFailure) as exc:
        run(tmp_path, cfg(tmp_path), "list", "s@y", cap=cap)
    assert exc.value.text == "Unable to send reply message: qq write error or disk full (#4.3.0)."

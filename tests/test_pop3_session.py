"""qmail-pop3d's transaction state: every command on real maildirs, and the log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from qldap.pop3.reader import Close, Reply
from qldap.pop3.session import Pop3Session, Refused, SessionInfo, Transfer, open_session


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def wire(effects: list[object]) -> bytes:
    """What the glue would write: replies and every transfer chunk, in order."""
    out = b""
    for e in effects:
        if isinstance(e, Reply):
            out += e.data
        elif isinstance(e, Transfer):
            out += b"".join(e.stream)
    return out


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    md = make_maildir(tmp_path / "Maildir")
    (md / "new" / "1000.1.h,S=10").write_bytes(b"Subject: x\n\n.b\nlast")
    (md / "cur" / "2000.2.h,S=20:2,S").write_bytes(b"B: 2\n\nsecond\n")
    return tmp_path


def start(home: Path, env: dict[str, str] | None = None, log: Log | None = None) -> Pop3Session:
    log = log or Log()
    arg = "./Maildir/"
    info = SessionInfo.from_env(env or {}, pid=77)
    session = open_session(arg, env or {}, home=home, info=info, log=log)
    assert isinstance(session, Pop3Session)
    assert session.start() == [Reply(b"+OK \r\n")]
    return session


def test_stat_list_uidl(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"STAT\r\n")) == b"+OK 2 30\r\n"
    assert wire(s.receive(b"LIST\r\n")) == b"+OK \r\n1 10\r\n2 20\r\n.\r\n"
    assert wire(s.receive(b"LIST 2\r\n")) == b"+OK 2 20\r\n"
    assert wire(s.receive(b"UIDL 2\r\n")) == b"+OK 2 2000.2.h,S=20\r\n"
    assert wire(s.receive(b"uidl\r\n")) == b"+OK \r\n1 1000.1.h,S=10\r\n2 2000.2.h,S=20\r\n.\r\n"


def test_retr_and_top(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"RETR 1\r\n")) == b"+OK \r\nSubject: x\r\n\r\n..b\r\nlast\r\n\r\n.\r\n"
    assert wire(s.receive(b"TOP 1 0\r\n")) == b"+OK \r\nSubject: x\r\n\r\n\r\n.\r\n"
    assert wire(s.receive(b"RETR 1 0\r\n")) == b"+OK \r\nSubject: x\r\n\r\n\r\n.\r\n"
    assert wire(s.receive(b"TOP 1\r\n")) == wire(s.receive(b"RETR 1\r\n"))


def test_message_number_errors(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"DELE 1\r\n")) == b"+OK \r\n"
    assert wire(s.receive(b"DELE 1\r\n")) == b"-ERR already deleted\r\n"
    assert wire(s.receive(b"RETR 1\r\n")) == b"-ERR already deleted\r\n"
    assert wire(s.receive(b"LIST 0\r\n")) == b"-ERR messages are counted from 1\r\n"
    assert wire(s.receive(b"LIST 9\r\n")) == b"-ERR not that many messages\r\n"
    assert wire(s.receive(b"LIST x\r\n")) == b"-ERR syntax error\r\n"
    assert wire(s.receive(b"DELE\r\n")) == b"-ERR syntax error\r\n"
    assert wire(s.receive(b"LIST 2x\r\n")) == b"+OK 2 20\r\n"  # junk after the digits is ignored
    assert wire(s.receive(b"LIST\r\n")) == b"+OK \r\n2 20\r\n.\r\n"
    assert wire(s.receive(b"STAT\r\n")) == b"+OK 1 20\r\n"


def test_last_and_rset(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"LAST\r\n")) == b"+OK 0\r\n"
    s.receive(b"RETR 1\r\n")
    assert wire(s.receive(b"LAST\r\n")) == b"+OK 0\r\n"  # only DELE raises it
    assert wire(s.receive(b"DELE 2\r\nLAST\r\n")) == b"+OK \r\n+OK 2\r\n"
    s.receive(b"DELE 1\r\n")
    assert wire(s.receive(b"LAST\r\n")) == b"+OK 2\r\n"
    assert wire(s.receive(b"RSET\r\nLAST\r\n")) == b"+OK \r\n+OK 0\r\n"
    assert wire(s.receive(b"LIST\r\n")) == b"+OK \r\n1 10\r\n2 20\r\n.\r\n"


def test_quit_applies_deletions(home: Path) -> None:
    md = home / "Maildir"
    (md / "maildirsize").write_text("0S\n30 2\n")
    (md / "new" / "1500.1.h,S=1").write_bytes(b"k")
    s = start(home)
    s.receive(b"DELE 1\r\n")
    effects = s.receive(b"QUIT\r\nSTAT\r\n")
    assert effects == [Reply(b"+OK \r\n"), Close()]
    assert not (md / "new" / "1000.1.h,S=10").exists()
    assert (md / "maildirsize").read_text() == "0S\n30 2\n-10 -1\n"
    assert (md / "cur" / "1500.1.h,S=1:2,").read_bytes() == b"k"
    assert (md / "cur" / "2000.2.h,S=20:2,S").exists()


def test_disconnect_without_quit_changes_nothing(home: Path) -> None:
    md = home / "Maildir"
    before = sorted(p.relative_to(md) for p in md.rglob("*"))
    s = start(home)
    s.receive(b"DELE 1\r\nDELE 2\r\n")
    s.end()
    assert s.receive(b"QUIT\r\n") == []
    assert sorted(p.relative_to(md) for p in md.rglob("*")) == before


def test_unknown_command_maildir_override_and_future_names(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"XYZ\r\n")) == b"-ERR unimplemented\r\n"
    assert wire(s.receive(b"USER joe\r\n")) == b"-ERR unimplemented\r\n"
    other = make_maildir(home / "Other")
    (other / "new" / "3000.1.h,S=3").write_bytes(b"abc")
    (other / "new" / "9999999999.1.h,S=4").write_bytes(b"abcd")  # far future
    s2 = start(home, {"MAILDIR": "./Other/"})
    assert wire(s2.receive(b"STAT\r\n")) == b"+OK 1 3\r\n"
    s3 = start(home, {"MAILDIR": ""})  # empty MAILDIR does not override
    assert wire(s3.receive(b"STAT\r\n")) == b"+OK 2 30\r\n"


def test_capa_in_transaction_state(home: Path) -> None:
    out = wire(start(home).receive(b"CAPA\r\n"))
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"+OK")
    assert {b"TOP", b"UIDL", b"USER"} <= set(lines)
    assert out.endswith(b"\r\n.\r\n")


def test_noop_and_overlong_line(home: Path) -> None:
    s = start(home)
    assert wire(s.receive(b"NOOP\r\n")) == b"+OK \r\n"
    assert wire(s.receive(b"x" * 5000 + b"\r\nNOOP\r\n")) == b"-ERR syntax error\r\n+OK \r\n"


def test_refusals(tmp_path: Path) -> None:
    info = SessionInfo(pid=1)
    log = Log()
    assert open_session("./Maildir/", {}, home=tmp_path, info=info, log=log) == Refused(
        b"-ERR this user has no $HOME/Maildir\r\n"
    )
    (tmp_path / "Maildir" / "new").mkdir(parents=True)
    assert open_session("./Maildir/", {}, home=tmp_path, info=info, log=log) == Refused(
        b"-ERR unable to scan $HOME/Maildir\r\n"
    )
    assert open_session(None, {}, home=tmp_path, info=info, log=log) == Refused(
        b"-ERR this user has no $HOME/Maildir\r\n"
    )


def test_unopenable_message(home: Path) -> None:
    s = start(home)
    (home / "Maildir" / "new" / "1000.1.h,S=10").unlink()
    assert wire(s.receive(b"RETR 1\r\n")) == b"-ERR unable to open that message\r\n"


def test_log_lines_by_level(home: Path) -> None:
    env = {
        "POP3_LOGLEVEL": "4",
        "TCPREMOTEHOST": "client.example",
        "TCPREMOTEIP": "192.0.2.7",
        "USER": "joe",
    }
    log = Log()
    s = start(home, env, log=log)
    assert wire(s.receive(b"RETR 1\r\nDELE 9\r\n")).startswith(b"+OK \r\nSubject: x\r\n")
    wire(s.receive(b"QUIT\r\n"))
    s.end()
    s.end()
    assert log.lines == [
        "acct: pid 77: client.example:192.0.2.7: joe login",
        "comm: retr: 1",
        "comm: dele: 9",
        "not that many messages",
        "comm: quit",
        "acct: pid 77: client.example:192.0.2.7: joe logout 24 bytes transferred",
    ]


def test_log_level_2_only_accounting_and_defaults(home: Path) -> None:
    log = Log()
    s = start(home, {"POP3_LOGLEVEL": "2"}, log=log)
    s.receive(b"XYZ\r\n")
    s.end()
    assert log.lines == [
        "acct: pid 77: unknown:unknown: unknown login",
        "acct: pid 77: unknown:unknown: unknown logout 0 bytes transferred",
    ]
    quiet = Log()
    t = start(home, {}, log=quiet)
    t.receive(b"XYZ\r\n")
    t.end()
    assert quiet.lines == []

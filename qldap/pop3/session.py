"""The transaction state of qmail-pop3d as a sans-I/O command machine over a :class:`Maildrop`.

Client bytes go in through :meth:`Pop3Session.receive`; out come :class:`Reply` bytes,
:class:`Transfer` (a message stream the glue writes chunk by chunk, honouring back-pressure) and
:class:`Close`.  The maildrop does the file work; this module owns the command table, the
message-number rules and the exact replies of qmail-pop3d(8), SESSION, plus the ``POP3_LOGLEVEL`` lines.

Why QUIT is the only path to :meth:`Maildrop.commit`: an EOF, a timeout or an error ends the session
through :meth:`Pop3Session.end`, which logs and changes nothing on disk (RFC 1939's UPDATE state).
:func:`open_session` scans the maildir and QUIT's commit does file I/O (and may sleep 3 s on a quota
race), so the glue calls both in a worker thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from qldap.logs import printable
from qldap.pop3.maildrop import Maildrop, MessageStream, NoMaildir, ScanFailed
from qldap.pop3.popup import capa_reply
from qldap.pop3.reader import Close, Command, CommandReader, Reply, TooLong

OK = b"+OK \r\n"
ERR_NO_MAILDIR = b"-ERR this user has no $HOME/Maildir\r\n"
ERR_SCAN = b"-ERR unable to scan $HOME/Maildir\r\n"
ERR_SYNTAX = b"-ERR syntax error\r\n"
ERR_UNIMPLEMENTED = b"-ERR unimplemented\r\n"
ERR_DELETED = b"-ERR already deleted\r\n"
ERR_ZERO = b"-ERR messages are counted from 1\r\n"
ERR_TOO_BIG = b"-ERR not that many messages\r\n"
ERR_OPEN = b"-ERR unable to open that message\r\n"
ERR_UNLINK = b"-ERR unable to unlink all deleted messages\r\n"

LOG_ACCOUNTING = 2
LOG_ERRORS = 3
LOG_COMMANDS = 4


@dataclass(frozen=True, slots=True)
class Transfer:
    """Write every chunk of *stream* to the client, in order, before anything emitted after it."""

    stream: MessageStream


Effect = Reply | Transfer | Close


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who is connected, for the log lines; built once from the login environment."""

    pid: int
    remote_host: str = "unknown"
    remote_ip: str = "unknown"
    remote_info: str = ""
    user: str = "unknown"
    loglevel: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str], pid: int) -> SessionInfo:
        """Read ``TCPREMOTEHOST``, ``TCPREMOTEIP``, ``TCPREMOTEINFO``, ``USER``, ``POP3_LOGLEVEL``."""
        level = environ.get("POP3_LOGLEVEL", "")
        digits = len(level) - len(level.lstrip("0123456789"))
        return cls(
            pid=pid,
            remote_host=environ.get("TCPREMOTEHOST", "unknown"),
            remote_ip=environ.get("TCPREMOTEIP", "unknown"),
            remote_info=environ.get("TCPREMOTEINFO", ""),
            user=environ.get("USER", "unknown"),
            loglevel=int(level[:digits]) if digits else 0,
        )

    def acct(self, what: str) -> str:
        """``acct: pid PID: HOST:IP:INFO USER WHAT``."""
        where = printable(f"{self.remote_host}:{self.remote_ip}:{self.remote_info}")
        return f"acct: pid {self.pid}: {where} {printable(self.user)} {what}"


def maildir_path(argument: str | None, environ: Mapping[str, str], home: Path) -> Path | None:
    """The maildir to open: non-empty ``MAILDIR`` overrides *argument*; relative paths are under *home*."""
    chosen = environ.get("MAILDIR") or argument
    if not chosen:
        return None
    return home / chosen


@dataclass(frozen=True, slots=True)
class Refused:
    """The session cannot start: send *reply* and close."""

    reply: bytes


def open_session(
    argument: str | None,
    environ: Mapping[str, str],
    *,
    home: Path,
    info: SessionInfo,
    log: Callable[[str], None],
    now: float | None = None,
) -> Pop3Session | Refused:
    """Resolve and scan the maildir, log the login line, and return the session (or the refusal)."""
    path = maildir_path(argument, environ, home)
    try:
        if path is None:
            raise NoMaildir("no maildir given")
        drop = Maildrop.open(path, now=now)
    except NoMaildir:
        if info.loglevel >= 1:
            log("panic: this user has no $HOME/Maildir")
        return Refused(ERR_NO_MAILDIR)
    except ScanFailed:
        if info.loglevel >= 1:
            log("unable to scan $HOME/Maildir")
        return Refused(ERR_SCAN)
    return Pop3Session(drop, info=info, log=log, quota=environ.get("MAILDIRQUOTA"))


class Pop3Session:
    """One authenticated POP3 session; :meth:`start` answers the PASS that led here with ``+OK``."""

    def __init__(
        self,
        drop: Maildrop,
        *,
        info: SessionInfo,
        log: Callable[[str], None],
        quota: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.drop = drop
        self.info = info
        self.last = 0
        self.closed = False  # QUIT seen or end() called: no more input is read
        self._ended = False
        self._log = log
        self._quota = quota
        self._sleep = sleep
        self._reader = CommandReader()
        self._streams: list[MessageStream] = []
        self._handlers: dict[str, Callable[[bytes], list[Effect]]] = {
            "quit": self._quit,
            "stat": self._stat,
            "list": lambda arg: self._listing(arg, uidl=False),
            "uidl": lambda arg: self._listing(arg, uidl=True),
            "dele": self._dele,
            "retr": self._top,
            "rset": self._rset,
            "last": self._last,
            "top": self._top,
            "noop": lambda _arg: [Reply(OK)],
            "capa": lambda _arg: [Reply(capa_reply(stls=False, sasl_plain=False))],
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """Log the login line and send ``+OK``."""
        self._emit(LOG_ACCOUNTING, self.info.acct("login"))
        return [Reply(OK)]

    def receive(self, data: bytes) -> list[Effect]:
        """Feed client bytes; returns the effects in order.  Nothing is read after QUIT."""
        self._reader.receive(data)
        out: list[Effect] = []
        while not self.closed:
            event = self._reader.next_event()
            if event is None:
                break
            if isinstance(event, TooLong):
                out.append(self._error(ERR_SYNTAX, "error: syntax error"))
                continue
            out += self._dispatch(event)
        return out

    def end(self) -> None:
        """The connection is over (after QUIT's Close was written, or EOF, timeout, error): log out.

        The glue calls it exactly when it stops writing, so the logout line counts every transferred
        byte; without a prior QUIT nothing on disk changes.  Idempotent.
        """
        self.closed = True
        if not self._ended:
            self._ended = True
            self._emit(LOG_ACCOUNTING, self.info.acct(f"logout {self.bytes_sent} bytes transferred"))

    @property
    def bytes_sent(self) -> int:
        """Message line bytes transferred so far."""
        return sum(s.line_bytes for s in self._streams)

    # -- helpers -----------------------------------------------------------------------------------

    def _emit(self, level: int, line: str) -> None:
        if level <= self.info.loglevel:
            self._log(line)

    def _error(self, reply: bytes, line: str) -> Reply:
        self._emit(LOG_ERRORS, line)
        return Reply(reply)

    def _dispatch(self, command: Command) -> list[Effect]:
        handler = self._handlers.get(command.verb)
        if handler is None:
            return [self._error(ERR_UNIMPLEMENTED, "error: unimplemented")]
        if command.arg:
            self._emit(LOG_COMMANDS, f"comm: {command.verb}: {command.arg.decode('latin-1')}")
        else:
            self._emit(LOG_COMMANDS, f"comm: {command.verb}")
        return handler(command.arg)

    def _msgno(self, arg: bytes) -> int | Reply:
        """The 0-based index named by the leading digits of *arg*, or the error reply."""
        digits = len(arg) - len(arg.lstrip(b"0123456789"))
        if not digits:
            return self._error(ERR_SYNTAX, "error: syntax error")
        number = int(arg[:digits])
        if number == 0:
            return self._error(ERR_ZERO, "messages are counted from 1")
        if number > len(self.drop):
            return self._error(ERR_TOO_BIG, "not that many messages")
        if self.drop.is_deleted(number - 1):
            return self._error(ERR_DELETED, "already deleted")
        return number - 1

    # -- commands ----------------------------------------------------------------------------------

    def _stat(self, _arg: bytes) -> list[Effect]:
        count, total = self.drop.stat()
        return [Reply(f"+OK {count} {total}\r\n".encode())]

    def _line(self, number: int, uidl: bool) -> bytes:
        message = self.drop.messages[number - 1]
        value = os.fsencode(message.uid) if uidl else str(message.size).encode()
        return str(number).encode() + b" " + value + b"\r\n"

    def _listing(self, arg: bytes, *, uidl: bool) -> list[Effect]:
        if arg:
            index = self._msgno(arg)
            if isinstance(index, Reply):
                return [index]
            return [Reply(b"+OK " + self._line(index + 1, uidl))]
        body = b"".join(self._line(number, uidl) for number, _m in self.drop.listing())
        return [Reply(OK + body + b".\r\n")]

    def _dele(self, arg: bytes) -> list[Effect]:
        index = self._msgno(arg)
        if isinstance(index, Reply):
            return [index]
        self.drop.delete(index)
        self.last = max(self.last, index + 1)
        return [Reply(OK)]

    def _rset(self, _arg: bytes) -> list[Effect]:
        self.drop.reset()
        self.last = 0
        return [Reply(OK)]

    def _last(self, _arg: bytes) -> list[Effect]:
        return [Reply(f"+OK {self.last}\r\n".encode())]

    def _top(self, arg: bytes) -> list[Effect]:
        """RETR and TOP alike: ``n [k]``; with k only the headers and k body lines are sent."""
        index = self._msgno(arg)
        if isinstance(index, Reply):
            return [index]
        rest = arg.lstrip(b"0123456789").lstrip(b" ")
        digits = len(rest) - len(rest.lstrip(b"0123456789"))
        body_lines = int(rest[:digits]) if digits else None
        try:
            stream = self.drop.open_message(index, body_lines)
        except OSError:
            return [self._error(ERR_OPEN, "unable to open that message")]
        self._streams.append(stream)
        return [Reply(OK), Transfer(stream)]

    def _quit(self, _arg: bytes) -> list[Effect]:
        ok = self.drop.commit(self._quota, sleep=self._sleep)
        self.closed = True
        reply = Reply(OK) if ok else self._error(ERR_UNLINK, "unable to unlink all deleted messages")
        return [reply, Close()]

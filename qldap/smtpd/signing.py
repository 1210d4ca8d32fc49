"""DKIM-sign submitted mail at the end of DATA, before the queue, without stalling the event loop.

Which messages: those of a client that authenticated (SMTP AUTH) or that has RELAYCLIENT from the
client rules or POP-before-SMTP, i.e. mail this host sends on a user's behalf; a relay grant of
control/relaymailfrom does not count (anyone can claim an envelope sender), and inbound mail is
never signed (qldap-dkim(8), WHAT IS SIGNED).  Each message is signed once, whatever the number of
recipients, and the signature lines are put in front of the spooled message.

Why a worker process: dkimpy computes RSA with Python integers and canonicalizes bodies with regular
expressions, both of which hold the interpreter lock — about 11 ms for an RSA-2048 signature and
some 85 ms per MiB of body (docs/mailauth.md) — so a thread would stall every other session for as
long.  Up to :data:`WORKERS` spawned processes (started when needed, replaced after a crash; two, so
that one large message does not hold up the signatures behind it) do the work;
the stdin/stdout mode (one session per process) signs on a thread instead (``workers=0``).  Which
keys apply is decided here, in the loop, from files that are cached until they change.

A failure (unreadable or bad key, unparsable header, a dead worker) never loses mail: the message is
queued unsigned and the failure logged, or under control/dkimstrict it is refused with
``451 unable to sign the message (#4.3.0)`` so the client keeps it and tries again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.mailauth.dkimsign import DkimSigner, SigningError, SignResult, sign_message
from qldap.queue.codes import QueueError
from qldap.queue.envelope import Envelope
from qldap.queue.writer import parse_envelope
from qldap.smtpd.queueing import MessageSpool, QueueOutcome
from qldap.smtpd.session import Session

WORKERS = min(2, os.cpu_count() or 1)
UNSIGNABLE = "Zunable to sign the message (#4.3.0)"  # the queue-style text the session turns into 451

Log = Callable[[str, int], None]


def _worker_init() -> None:
    """A signing worker ignores the terminal's interrupt and hangup; it ends when the daemon does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def may_sign(session: Session) -> bool:
    """True for a session whose mail this host signs: authenticated, or RELAYCLIENT for the client,
    unless the client rules set NODKIMSIGN (a relay that passes on inbound mail, a host that signs)."""
    env = session.cfg.env
    return not env.nodkimsign and (session.auth_user is not None or env.relayclient is not None)


class SubmissionSigner:
    """Signs submitted messages for one daemon: the keys of control/dkimkeys, a worker to sign with."""

    def __init__(self, ctl: ControlDir, *, workers: int = WORKERS) -> None:
        self.dkim = DkimSigner(ctl)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> Executor | None:
        if self.workers <= 0:
            return None  # the loop's default thread pool
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a threaded daemon
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init)
        return self._pool

    async def sign(
        self, session: Session, spool: MessageSpool, envelope: bytes, log: Log
    ) -> QueueOutcome | None:
        """Sign *spool*'s message when *session* may send signed mail; None = go on and queue it.

        Returns the refusal (``451``) under control/dkimstrict when signing failed; the spool is
        closed then.  Never raises.
        """
        if spool.failed or not may_sign(session) or not self.dkim.enabled:
            return None
        loop = asyncio.get_running_loop()
        source = spool.source()
        if isinstance(source, bytes):
            message = source
        else:  # spilled to a file: read it on a thread
            message = await loop.run_in_executor(None, b"".join, source)
        result = await self._sign(message, _sender(envelope))
        if result.signed:
            spool.prepend(result.header)
            log(f"dkim: signed for {result.domain}", 3)
        elif result.error is not None:
            if result.defer:
                log(f"dkim: {result.error}; message refused (dkimstrict)", 1)
                spool.close()
                return QueueOutcome(UNSIGNABLE, 0)
            log(f"dkim: {result.error}; sent unsigned", 1)
        return None

    async def _sign(self, message: bytes, sender: str) -> SignResult:
        try:
            plan = self.dkim.plan(message, sender)
            if not plan.keys:
                return SignResult(b"", plan.domain)
            loop = asyncio.get_running_loop()
            header = await loop.run_in_executor(self._executor(), sign_message, message, plan.keys)
            return SignResult(header, plan.domain)
        except (ConfigError, SigningError) as exc:
            return SignResult(b"", None, str(exc), self.dkim.failure_defers())
        except (BrokenProcessPool, OSError) as exc:  # the worker died or could not be started
            self._drop_pool()
            return SignResult(b"", None, f"signing process failed: {exc!r}", self.dkim.failure_defers())

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker (blocking: waits for a signature in progress)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _sender(envelope: bytes) -> str:
    try:
        env: Envelope = parse_envelope(envelope)
    except QueueError:  # the queue refuses such an envelope itself, just after
        return ""
    return env.sender

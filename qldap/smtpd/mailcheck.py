"""Run the inbound mail-authentication checks for the daemon: SPF at MAIL, DKIM and DMARC at the final dot.

Why a glue module beside server.py: the checks themselves live in :mod:`qldap.mailauth` (pure where
possible, DNS through one seam); what the daemon adds is the time bound, the logging, and the edit
of the spooled message — forged ``Authentication-Results`` fields carrying our authserv-id removed,
ours prepended — or the ``550 5.7.1``/``451 4.7.1`` refusal that the policy words ask for
(qmail-smtpd(8), ``MAILAUTH``).  A check that runs out of time is ``temperror``: the message is
accepted and tagged (or 451 under ``tempfail``), never refused permanently.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from qldap.address import split_address
from qldap.mailauth.dkimverify import DkimOutcome, DkimResult, verify_message
from qldap.mailauth.dmarc import DmarcOutcome, DmarcResult, Policy, check_dmarc
from qldap.mailauth.inbound import InboundPolicy
from qldap.mailauth.resolve import Dns
from qldap.mailauth.results import field_values, header_end, header_line, strip_forged, summary
from qldap.mailauth.spf import SpfOutcome, SpfResult, check_sender
from qldap.smtpd import replies
from qldap.smtpd.config import SmtpdConfig
from qldap.smtpd.dns import DnsResolver, Resolver
from qldap.smtpd.queueing import MessageSpool
from qldap.smtpd.replies import Reply
from qldap.smtpd.session import CommitQueue, Send, Session

INLINE_BYTES = 256 * 1024  # larger messages are verified in a worker process
HEADER_BYTES = 1 << 20  # what is read of an unchecked message to find forged fields
SPF_BUDGET = 20.0  # seconds for one SPF evaluation, all its lookups included
DATA_BUDGET = 30.0  # seconds for the DKIM keys and the DMARC records of one message


def _worker_init() -> None:
    """The verification worker ignores the terminal's interrupt and hangup; it ends with the daemon."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class InboundChecks:
    """The daemon's checker: one DNS seam, one executor for the signature arithmetic."""

    def __init__(self, dns: Dns, rng: random.Random | None = None) -> None:
        self.dns = dns
        self.rng = rng or random.Random()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self, size: int) -> Executor | None:
        """None (verify inline: about a millisecond) for a usual message; a spawned worker process for
        a large one, whose body canonicalization would otherwise hold the event loop."""
        if size <= INLINE_BYTES:
            return None
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a threaded daemon
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init)
        return self._pool

    def close(self) -> None:
        """Stop the verification worker, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @classmethod
    def sharing(cls, resolver: Resolver, dns: Dns | None) -> InboundChecks:
        """A checker asking *dns*, else the dnspython resolver behind the daemon's *resolver*."""
        if dns is None:
            dns = Dns(source=resolver.dnspython if isinstance(resolver, DnsResolver) else None)
        return cls(dns)

    async def spf(self, session: Session, sender: str) -> SpfOutcome:
        """SPF for *session*'s client and HELO name and *sender* (see :meth:`check_spf`)."""
        return await self.check_spf(session.cfg.env.remote_ip, session.helo, sender)

    async def check_spf(self, ip: str, helo: str, sender: str) -> SpfOutcome:
        """The MAIL FROM result (the HELO identity's for a null sender), bounded in time."""
        try:
            return await asyncio.wait_for(check_sender(self.dns, ip, helo, sender), SPF_BUDGET)
        except TimeoutError:
            identity = sender or helo
            domain = split_address(identity)[1] or identity
            return SpfOutcome(SpfResult.TEMPERROR, identity, domain, "timed out", helo=not sender)

    async def _dkim_dmarc(
        self, message: bytes, spf: SpfOutcome
    ) -> tuple[tuple[DkimOutcome, ...], DmarcOutcome]:
        try:
            dkim = await verify_message(self.dns, message, executor=self._executor(len(message)))
        except (BrokenProcessPool, OSError) as exc:  # the worker died (or could not start): next time anew
            self.close()
            dkim = (DkimOutcome(DkimResult.TEMPERROR, reason=f"verifier failed: {exc}"),)
        end = header_end(message)
        dmarc = await check_dmarc(self.dns, field_values(message[:end], "From"), spf, dkim, self.rng)
        return dkim, dmarc

    async def data_end(
        self, cfg: SmtpdConfig, action: CommitQueue, spool: MessageSpool, log: Callable[[str], None]
    ) -> CommitQueue | Send:
        """At the final dot: *action* unchanged (spool amended when checked), or the refusal.

        A message of a relaying or authenticated client is not checked, but forged fields with our
        authserv-id go all the same: a local user must not fool another one's filter either.
        """
        if cfg.mailauth is None:
            return action
        if action.spf is None:
            self.strip_only(cfg.mailauth, spool, log)
            return action
        refused = await self.after_data(cfg.mailauth, action.spf, action.recipients, spool, log)
        return action if refused is None else Send(refused)

    def strip_only(self, policy: InboundPolicy, spool: MessageSpool, log: Callable[[str], None]) -> None:
        """Remove Authentication-Results fields claiming our authserv-id; add none."""
        message = spool.client_data(HEADER_BYTES)
        end = header_end(message)
        header, removed = strip_forged(message[:end], policy.authserv_id)
        if removed:
            log(f"mailauth: removed {removed} forged Authentication-Results field(s)")
            spool.amend(b"", end, header)

    async def after_data(
        self,
        policy: InboundPolicy,
        spf: SpfOutcome,
        recipients: Sequence[str],
        spool: MessageSpool,
        log: Callable[[str], None],
    ) -> Reply | None:
        """Verify, decide, and either amend *spool* (None: queue it) or return the refusal."""
        message = spool.client_data()
        try:
            dkim, dmarc = await asyncio.wait_for(self._dkim_dmarc(message, spf), DATA_BUDGET)
        except TimeoutError:
            dkim = (DkimOutcome(DkimResult.TEMPERROR, reason="timed out"),)
            dmarc = DmarcOutcome(DmarcResult.TEMPERROR, reason="timed out")
        log(f"mailauth: {summary(spf, dkim, dmarc)}"
            + (f" from {dmarc.from_domain}" if dmarc.from_domain else ""))  # fmt: skip
        rejecting = dmarc.result is DmarcResult.FAIL and dmarc.disposition is Policy.REJECT
        if rejecting and policy.reject_dmarc(recipients):
            return replies.dmarc_rejected(dmarc.from_domain)
        if dmarc.result is DmarcResult.TEMPERROR and policy.tempfail_dmarc(recipients):
            return replies.DMARC_TEMPFAIL
        end = header_end(message)
        header, removed = strip_forged(message[:end], policy.authserv_id)
        if removed:
            log(f"mailauth: removed {removed} forged Authentication-Results field(s)")
        spool.amend(header_line(policy.authserv_id, spf, dkim, dmarc), end, header)
        return None

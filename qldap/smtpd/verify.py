"""RCPTCHECK/SENDERCHECK verification (qmail-smtpd(8), ADDRESS VERIFICATION): is this local address
deliverable, per the directory?

Only addresses whose domain is local reach the verifier (the policy decides that, and goodmailaddr).
The answer is the policy's :data:`~qldap.smtpd.policy.VerifyAnswer`:

* the directory finds one entry: ``accountStatus`` disabled → Invalid (``Mailaddress is
  administratively disabled. (#5.2.1)``), deleted → Invalid (no mailbox), else Valid;
* it finds nothing: with ``ldaplocaldelivery`` on, the local fallbacks of delivery — ``users/cdb``
  (exact ``!local`` entry or a wildcard prefix) or a system account (also the part before a ``-``)
  with uid ≠ 0 owning its existing home — make it Valid; otherwise Invalid (no mailbox);
* it cannot be asked (down, timeout, several entries, no directory configured) → Soft, which the
  policy turns into ``451`` or, under LDAPSOFTOK, into acceptance.

Why the decision is a pure function (:func:`answer_for`) separate from :class:`Verifier`: the lookups
are blocking LDAP calls run on a bounded thread pool, while the mapping of results to answers is the
contract tests check without a directory.  smtpd does not import the delivery packages (STYLE.md
dependency rules), so the small passwd check is repeated here rather than borrowed from ``local/``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from concurrent.futures import Executor
from pathlib import Path

from qldap.address import Address
from qldap.control.cdb import CdbReader
from qldap.directory import schema
from qldap.directory.aio import AsyncRecipients, usable
from qldap.directory.base import Ambiguous, Found, LookupResult, NotFound, Trash, Unavailable
from qldap.directory.errors import AddressWithoutHost, NotUnique
from qldap.directory.lookup import Directory
from qldap.directory.schema import AccountStatus
from qldap.errors import ConfigError
from qldap.smtpd.policy import Invalid, Soft, Valid, VerifyAnswer

NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
DISABLED = "Mailaddress is administratively disabled. (#5.2.1)"
_MAX_ACCOUNT = 32  # longer names are never system accounts (qmail-getpw's limit)


def answer_for(result: LookupResult) -> VerifyAnswer | None:
    """The verdict of one directory answer; None when nothing was found (the local fallbacks decide)."""
    if isinstance(result, Found):
        try:
            status = AccountStatus.parse(result.entry.single(schema.ACCOUNT_STATUS))
        except NotUnique:
            return Soft()
        if status is AccountStatus.DISABLED:
            return Invalid(DISABLED)
        if status is AccountStatus.DELETED:
            return Invalid(NO_MAILBOX)
        return Valid()
    if isinstance(result, Trash):
        return Valid()  # an empty local part is accepted and discarded by delivery
    if isinstance(result, Ambiguous | Unavailable):
        return Soft()
    assert isinstance(result, NotFound)
    return None


def users_cdb_knows(reader: CdbReader, local: str) -> bool:
    """True when ``users/cdb`` has an exact entry for *local* or a wildcard prefix of it.

    Keys as qmail-newu writes them: ``!<local>\\0`` for ``=`` lines, ``!<prefix>`` for ``+`` lines
    (the empty prefix matches everything); compared in lower case.

    Raises:
        ConfigError: the file exists but is unreadable or corrupt.
    """
    cdb = reader.current()
    if cdb is None:
        return False
    key = b"!" + local.lower().encode("utf-8", "surrogateescape")
    if key + b"\0" in cdb:
        return True
    return any(key[:i] in cdb for i in range(len(key), 0, -1))


def system_account_knows(local: str) -> bool:
    """True when *local*, or its part before a ``-``, names an account with uid ≠ 0 owning its home."""
    lower = local.lower()
    cuts = [len(lower)] + [i for i in range(len(lower) - 1, 0, -1) if lower[i] == "-"]
    for cut in cuts:
        name = lower[:cut]
        if not name or len(name) >= _MAX_ACCOUNT:
            continue
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid == 0:
            continue
        try:
            if os.stat(pw.pw_dir).st_uid == pw.pw_uid:
                return True
        except OSError:
            continue
    return False


class Verifier:
    """Answers :class:`~qldap.smtpd.policy.VerifyQuery` requests with the directory and the fallbacks.

    *directory* is None (or a ConfigError) when the root has no usable LDAP configuration: every
    answer is then Soft, so mail is deferred rather than accepted or refused on a guess.
    """

    def __init__(
        self, directory: Directory | ConfigError | None, root: str | os.PathLike[str], pool: Executor
    ) -> None:
        self.directory = directory
        self.pool = pool
        self.users = CdbReader(Path(root) / "users" / "cdb")
        # the searches from the event loop when possible (no thread hand-off per RCPT)
        aio = isinstance(directory, Directory) and usable(directory)
        self._aio = AsyncRecipients(directory) if aio and isinstance(directory, Directory) else None

    def check(self, address: str) -> VerifyAnswer:
        """Blocking verification of *address* (runs the directory lookup in the calling thread)."""
        directory = self.directory
        if not isinstance(directory, Directory):
            return Soft()
        try:
            result = directory.find_recipient(address)
        except AddressWithoutHost:
            return Invalid(NO_MAILBOX)
        answer = answer_for(result)
        if answer is not None:
            return answer
        return self._fallbacks(directory, address)

    def _fallbacks(self, directory: Directory, address: str) -> VerifyAnswer:
        """Nothing in the directory: the local fallbacks of delivery decide (blocking: users/cdb, NSS)."""
        if not directory.config.local_delivery:
            return Invalid(NO_MAILBOX)
        local = Address.parse(address).local
        try:
            known = users_cdb_knows(self.users, local) or system_account_knows(local)
        except ConfigError:
            return Soft()
        return Valid() if known else Invalid(NO_MAILBOX)

    async def verify(self, address: str) -> VerifyAnswer:
        """The directory asked from the loop when it can be (else, or when that cannot ask, :meth:`check`
        on the lookup thread pool); the local fallbacks always run on the pool."""
        directory = self.directory
        if self._aio is not None and isinstance(directory, Directory):
            try:
                result = await self._aio.find_recipient(address)
            except AddressWithoutHost:
                return Invalid(NO_MAILBOX)
            if result is not None:
                answer = answer_for(result)
                if answer is not None:
                    return answer  # the common case: no loop look-up (a getpid() system call)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self.pool, self._fallbacks, directory, address)
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.check, address)

    def close(self) -> None:
        """Drop the loop's directory connection (reload, stop)."""
        if self._aio is not None:
            self._aio.close()

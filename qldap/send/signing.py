"""DKIM signatures on the bounces the queue manager writes (qldap-dkim(8)).

A bounce's From: is ``bouncefrom@bouncehost``, so control/dkimkeys lines for the bouncehost domain
sign it; with no such line the bounce goes out unsigned, as before.  The wrapper sits around the
manager's bounce injector, so elimination (``channels.eliminate``) and its retry logic stay as they
are: under control/dkimstrict a signing failure raises the same :class:`QueueError` an injection
failure does, and the bounce is tried again later with the message still queued.

The bounce is gathered into memory to be signed, since the body hash needs all of it; its size is
bounded by ``bouncemaxbytes`` when that is set.  Signing runs on the manager's worker thread that
eliminates the message, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from qldap.mailauth.dkimsign import DkimSigner
from qldap.queue.codes import QueueError, QueueExit
from qldap.queue.envelope import Envelope
from qldap.queue.inject import QueuedMessage
from qldap.send.channels import BounceInjector, Log


def signing_bounces(inject: BounceInjector, signer: DkimSigner, log: Log) -> BounceInjector:
    """*inject* with each bounce DKIM-signed first when control/dkimkeys has a key for its domain."""

    def inject_signed(chunks: Iterable[bytes], envelope: Envelope) -> QueuedMessage:
        if not signer.enabled:
            return inject(chunks, envelope)
        try:
            data = b"".join(chunks)
        except OSError as exc:
            raise QueueError(QueueExit.READ_ERROR, f"unable to read the message: {exc.strerror}") from exc
        result = signer.sign(data, envelope.sender)
        if result.error is not None:
            if result.defer:
                log(f"warning: dkim: unable to sign bounce: {result.error}; will try later")
                raise QueueError(QueueExit.CONFIG, result.error)
            log(f"warning: dkim: unable to sign bounce: {result.error}; sent unsigned")
        return inject((result.header, data) if result.signed else (data,), envelope)

    return inject_signed

"""Verify every DKIM signature of a received message (RFC 6376) with dkimpy, keys fetched by our resolver.

Why the key is fetched here and not by dkimpy's ``dnsfunc``: dkimpy's lookup is synchronous and turns
a DNS timeout into a plain "does not verify", while a ``temperror`` must stay distinguishable from a
``fail`` (a temporary DNS problem never leads to a rejection, docs/mailauth.md).  So each signature's
tags are validated by dkimpy (``verify_headerprep``), its key record is asked for through
:class:`~qldap.mailauth.resolve.Dns`, and only then does dkimpy check body hash and signature with a
``dnsfunc`` that returns the record already in hand.  The cryptography — RSA and Ed25519 — stays in
dkimpy, a well-kept library.  At most :data:`MAX_SIGNATURES` signatures are evaluated per message.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import dkim

from qldap.mailauth.resolve import Dns, DnsTempError

MAX_SIGNATURES = 8
MIN_KEY_BITS = 1024
LIBRARY_ERRORS = (dkim.DKIMException, ValueError, IndexError, KeyError, TypeError, UnicodeError)
"""What dkimpy raises on hostile input besides its own errors (a header section opening with a
continuation line is an IndexError): a broken message or signature is ``permerror``, never a crash."""


class DkimResult(enum.Enum):
    """The per-signature results of RFC 8601 section 2.7.1."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    """One signature's verdict with the properties Authentication-Results reports (RFC 6008 header.b)."""

    result: DkimResult
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    b_prefix: str = ""
    reason: str = ""


@functools.cache
def _quiet_logger() -> logging.Logger:
    """dkimpy logs every failing signature at ERROR; the daemon reports results itself."""
    log = logging.getLogger("qldap.mailauth.dkimpy")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def _tag(sig: dict[bytes, bytes], name: bytes) -> str:
    return sig.get(name, b"").decode("ascii", "replace").strip()


def _loose_tags(value: bytes) -> dict[bytes, bytes]:
    """Tags of a signature dkimpy refused, for the report only (d=, s=)."""
    out: dict[bytes, bytes] = {}
    for part in value.split(b";"):
        name, eq, val = part.partition(b"=")
        if eq:
            out[name.strip()] = re.sub(rb"\s+", b"", val)
    return out


def _outcome(result: DkimResult, sig: dict[bytes, bytes], reason: str = "") -> DkimOutcome:
    domain = _tag(sig, b"d").lower()
    return DkimOutcome(
        result,
        domain=domain,
        selector=_tag(sig, b"s"),
        algorithm=_tag(sig, b"a"),
        identity=_tag(sig, b"i") or (f"@{domain}" if domain else ""),
        b_prefix=re.sub(r"\s+", "", _tag(sig, b"b"))[:8],
        reason=reason,
    )


def _check(
    d: dkim.DKIM, sig: dict[bytes, bytes], include: list[bytes], header: tuple[bytes, bytes], key: bytes
) -> DkimOutcome:
    """The CPU part: body hash and signature against *key* (runs in a worker thread)."""

    def dnsfunc(_name: bytes | str, timeout: float = 5) -> bytes:
        return key

    try:
        ok = d.verify_sig(sig, include, header, dnsfunc)
    except dkim.ValidationError as exc:
        return _outcome(DkimResult.FAIL, sig, str(exc))
    except LIBRARY_ERRORS as exc:
        return _outcome(DkimResult.PERMERROR, sig, str(exc) or type(exc).__name__)
    if ok:
        return _outcome(DkimResult.PASS, sig)
    return _outcome(DkimResult.FAIL, sig, "signature did not verify")


def verify_with_keys(message: bytes, keys: Sequence[tuple[int, bytes]], minkey: int) -> list[DkimOutcome]:
    """The CPU part for signatures whose keys are in hand: ``(index, key record)`` pairs.

    A top-level function of bytes and ints so that it can run in a worker process (a large body's
    canonicalization holds the interpreter for about 0.1 s per MiB).
    """
    try:
        d = dkim.DKIM(message, logger=_quiet_logger(), minkey=minkey)
    except LIBRARY_ERRORS as exc:
        return [DkimOutcome(DkimResult.PERMERROR, reason=f"unparsable message: {exc}") for _ in keys]
    out = []
    for idx, key in keys:
        try:
            sig, include, sigheaders = d.verify_headerprep(idx)
        except LIBRARY_ERRORS as exc:
            out.append(DkimOutcome(DkimResult.PERMERROR, reason=str(exc)))
            continue
        out.append(_check(d, sig, include, sigheaders[idx], key))
    return out


async def verify_message(
    dns: Dns,
    message: bytes,
    *,
    executor: Executor | None = None,
    minkey: int = MIN_KEY_BITS,
) -> tuple[DkimOutcome, ...]:
    """Every DKIM-Signature of *message* (LF or CRLF line ends), topmost first; () when unsigned.

    Raises:
        BrokenProcessPool: *executor*'s worker process died.

    The tags are checked and the keys fetched here; body hash and signatures are checked inline, or
    in *executor* when given (see :func:`verify_with_keys`).
    """
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0] + b"\n\n"  # the tags need no body
    try:
        d = dkim.DKIM(head, logger=_quiet_logger(), minkey=minkey)
    except LIBRARY_ERRORS as exc:
        return (DkimOutcome(DkimResult.PERMERROR, reason=f"unparsable message: {exc or type(exc).__name__}"),)
    headers = [h for h in d.headers if h[0].lower() == b"dkim-signature"]
    found: dict[int, DkimOutcome] = {}
    keys: list[tuple[int, bytes]] = []
    count = min(len(headers), MAX_SIGNATURES)
    for idx in range(count):
        try:
            sig, _include, _sigheaders = d.verify_headerprep(idx)
        except LIBRARY_ERRORS as exc:
            found[idx] = _outcome(DkimResult.PERMERROR, _loose_tags(headers[idx][1]), str(exc))
            continue
        name = (sig[b"s"] + b"._domainkey." + sig[b"d"]).decode("ascii", "replace")
        try:
            records = await dns.txt(name)
        except DnsTempError as exc:
            found[idx] = _outcome(DkimResult.TEMPERROR, sig, f"key lookup: {exc}")
            continue
        if not records:
            found[idx] = _outcome(DkimResult.PERMERROR, sig, f"no key at {name}")
            continue
        keys.append((idx, records[0]))
    if keys:
        job = functools.partial(verify_with_keys, message, keys, minkey)
        if executor is None:
            checked = job()
        else:
            checked = await asyncio.get_running_loop().run_in_executor(executor, job)
        found.update(zip((idx for idx, _key in keys), checked, strict=True))
    return tuple(found[idx] for idx in range(count))

"""DMARC (RFC 7489): does an aligned SPF or DKIM pass vouch for the From domain, and what does it ask for?

Why the organizational domain comes from a bundled list: relaxed alignment and the fallback from
``_dmarc.<From domain>`` to ``_dmarc.<organizational domain>`` need the Public Suffix List, and the
daemon must not fetch anything at run time.  The ``publicsuffixlist`` package ships a snapshot; it is
loaded once per process on first use (~0.1 s).  Unknown top-level names (``.test``) count as public
suffixes, so ``x.test`` is its own organizational domain.

The evaluation is pure (:func:`evaluate`); :func:`check_dmarc` adds the two TXT lookups.  A DNS
failure during discovery, or a failing DMARC verdict when SPF or a DKIM signature had a temporary
error, is ``temperror``: the message might have passed, so it is never rejected for it.
``pct`` is applied with the caller's random source: a message outside the percentage gets the next
milder disposition (section 6.6.4: reject → quarantine → none).
"""

from __future__ import annotations

import enum
import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from qldap.address import split_address
from qldap.mailauth.dkimverify import DkimOutcome, DkimResult
from qldap.mailauth.resolve import Dns, DnsTempError
from qldap.mailauth.spf import SpfOutcome, SpfResult


class DmarcResult(enum.Enum):
    """RFC 8601/7489 results of the dmarc method."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Policy(enum.Enum):
    """A domain owner's requested handling (``p=``/``sp=``) and the disposition after ``pct``."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


_MILDER = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE, Policy.NONE: Policy.NONE}


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of one ``v=DMARC1`` record that evaluation uses."""

    p: Policy
    sp: Policy | None = None
    pct: int = 100
    adkim_strict: bool = False
    aspf_strict: bool = False


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """The verdict, the policy that applies to the From domain and the disposition after ``pct``."""

    result: DmarcResult
    from_domain: str = ""
    policy: Policy | None = None
    disposition: Policy = Policy.NONE
    record: DmarcRecord | None = None
    org_record: bool = False  # the record came from the organizational domain
    reason: str = ""


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organizational domain of *domain* (section 3.2) from the bundled Public Suffix List."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, strict: bool) -> bool:
    """section 3.1: strict = the same name; relaxed = the same organizational domain."""
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if strict else org_domain(a) == org_domain(b)


def parse_record(text: str) -> DmarcRecord | None:
    """A ``v=DMARC1`` record's tags; None when it is not a usable DMARC record (sections 6.3, 6.6.3)."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if i == 0 and (name != "v" or value != "DMARC1" or not eq):
            return None
        if eq and name not in tags:
            tags[name] = value
    policy = _policy(tags.get("p"))
    if policy is None:
        if "rua" not in tags:
            return None
        policy = Policy.NONE  # section 6.6.3: a bad or missing p= with a valid rua= is p=none
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(
        p=policy,
        sp=_policy(tags.get("sp")),
        pct=pct,
        adkim_strict=tags.get("adkim", "r").lower() == "s",
        aspf_strict=tags.get("aspf", "r").lower() == "s",
    )


def _policy(value: str | None) -> Policy | None:
    try:
        return Policy(value.lower()) if value is not None else None
    except ValueError:
        return None


def header_from_domain(values: Sequence[str]) -> str | None:
    """The domain of the single RFC5322.From address; None when there is not exactly one (section 6.6.1)."""
    if len(values) != 1:
        return None
    addresses = [a for _name, a in getaddresses(values) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = split_address(addresses[0])[1].strip().lower().rstrip(".")
    return domain or None


async def _record_at(dns: Dns, domain: str) -> DmarcRecord | None:
    """The one usable DMARC record at ``_dmarc.<domain>``; several or none → None (section 6.6.3)."""
    texts = await dns.txt(f"_dmarc.{domain}")
    candidates = [t.decode("utf-8", "replace") for t in texts or ()]
    records = [r for r in (parse_record(t) for t in candidates) if r is not None]
    return records[0] if len(records) == 1 else None


async def discover(dns: Dns, from_domain: str) -> tuple[DmarcRecord | None, bool]:
    """section 6.6.3: the record at the From domain, else at its organizational domain (second = from org).

    Raises:
        DnsTempError: a lookup could not be answered.
    """
    record = await _record_at(dns, from_domain)
    if record is not None:
        return record, False
    org = org_domain(from_domain)
    if org != from_domain:
        record = await _record_at(dns, org)
        if record is not None:
            return record, True
    return None, False


def evaluate(
    from_domain: str,
    record: DmarcRecord,
    from_org: bool,
    spf: SpfOutcome | None,
    dkim: Iterable[DkimOutcome],
    rng: random.Random | None = None,
) -> DmarcOutcome:
    """Decide pass/fail from the aligned identifiers and the disposition the record asks for."""
    signatures = tuple(dkim)
    spf_ok = spf is not None and spf.result is SpfResult.PASS
    spf_ok = spf_ok and spf is not None and aligned(spf.domain, from_domain, record.aspf_strict)
    dkim_ok = any(s.result is DkimResult.PASS and aligned(s.domain, from_domain, record.adkim_strict)
                  for s in signatures)  # fmt: skip
    policy = record.sp if from_org and record.sp is not None else record.p
    if spf_ok or dkim_ok:
        why = "aligned SPF" if spf_ok else "aligned DKIM"
        return DmarcOutcome(DmarcResult.PASS, from_domain, policy, Policy.NONE, record, from_org, why)
    temporary = (spf is not None and spf.result is SpfResult.TEMPERROR) or any(
        s.result is DkimResult.TEMPERROR for s in signatures
    )
    if temporary:
        return DmarcOutcome(DmarcResult.TEMPERROR, from_domain, policy, Policy.NONE, record, from_org,
                            "SPF or DKIM could not be checked")  # fmt: skip
    disposition = policy
    if record.pct < 100 and (rng or random.Random()).randrange(100) >= record.pct:
        disposition = _MILDER[policy]
    return DmarcOutcome(DmarcResult.FAIL, from_domain, policy, disposition, record, from_org,
                        "no aligned pass")  # fmt: skip


async def check_dmarc(
    dns: Dns,
    from_values: Sequence[str],
    spf: SpfOutcome | None,
    dkim: Iterable[DkimOutcome],
    rng: random.Random | None = None,
) -> DmarcOutcome:
    """The DMARC verdict for a message whose From header field values are *from_values*."""
    from_domain = header_from_domain(from_values)
    if from_domain is None:
        return DmarcOutcome(DmarcResult.PERMERROR, reason="not exactly one From address")
    try:
        record, from_org = await discover(dns, from_domain)
    except DnsTempError as exc:
        return DmarcOutcome(DmarcResult.TEMPERROR, from_domain, reason=f"policy lookup: {exc}")
    if record is None:
        return DmarcOutcome(DmarcResult.NONE, from_domain, reason="no DMARC record")
    return evaluate(from_domain, record, from_org, spf, dkim, rng)

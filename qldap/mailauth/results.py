"""The ``Authentication-Results:`` header (RFC 8601) we add, and removal of forged ones carrying our id.

Why removal matters: downstream filters and mail clients trust an Authentication-Results field whose
authserv-id is ours.  A sender could put ``Authentication-Results: mx.example.org; dmarc=pass`` in the
message itself, so every such field already present when the message arrives is removed (RFC 8601 section 5)
before ours is prepended.  Fields with other authserv-ids are left alone.

Messages here are the smtpd's queued form: LF line ends, the header section ending at the first empty
line.  Property values that are not plain tokens are quoted (RFC 8601 section 2.2 allows ``value`` = token or
quoted-string, and an addr-spec for ``smtp.mailfrom``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from qldap.mailauth.dkimverify import DkimOutcome, DkimResult
from qldap.mailauth.dmarc import DmarcOutcome, DmarcResult
from qldap.mailauth.spf import SpfOutcome, SpfResult

HEADER = "Authentication-Results"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-./^_`{|}~@]+\Z")
_AR_NAME = re.compile(rb"authentication-results[ \t]*:", re.I)


def _value(text: str) -> str:
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    return "(" + re.sub(r"[()\\\r\n]", " ", text).strip() + ")"


def spf_resinfo(spf: SpfOutcome) -> list[str]:
    """``spf=<result> smtp.mailfrom=…`` (or ``smtp.helo=…`` when the HELO identity was the one
    checked), then ``spf=<result> smtp.helo=<helo>`` for a separate HELO check that found a record."""
    prop = "smtp.helo" if spf.helo else "smtp.mailfrom"
    out = [f"spf={spf.result.value} {prop}={_value(spf.identity)}"]
    if spf.helo_result is not None and spf.helo_result is not SpfResult.NONE and spf.helo_name:
        out.append(f"spf={spf.helo_result.value} smtp.helo={_value(spf.helo_name)}")
    return out


def dkim_resinfo(sig: DkimOutcome) -> str:
    """``dkim=<result>`` with header.d, header.i, header.s, header.a and header.b (RFC 6008)."""
    parts = [f"dkim={sig.result.value}"]
    if sig.reason and sig.result is not DkimResult.PASS:
        parts.append(_comment(sig.reason[:80]))
    for prop, val in (("header.d", sig.domain), ("header.i", sig.identity), ("header.s", sig.selector),
                      ("header.a", sig.algorithm), ("header.b", sig.b_prefix)):  # fmt: skip
        if val:
            parts.append(f"{prop}={_value(val)}")
    return " ".join(parts)


def dmarc_resinfo(dmarc: DmarcOutcome) -> str:
    """``dmarc=<result> (p=… sp=… pct=… dis=…) header.from=…``."""
    parts = [f"dmarc={dmarc.result.value}"]
    rec = dmarc.record
    if rec is not None:
        sp = f" sp={rec.sp.value}" if rec.sp is not None else ""
        parts.append(f"(p={rec.p.value}{sp} pct={rec.pct} dis={dmarc.disposition.value})")
    elif dmarc.result in (DmarcResult.PERMERROR, DmarcResult.TEMPERROR) and dmarc.reason:
        parts.append(_comment(dmarc.reason))
    if dmarc.from_domain:
        parts.append(f"header.from={_value(dmarc.from_domain)}")
    return " ".join(parts)


def header_line(
    authserv_id: str,
    spf: SpfOutcome | None,
    dkim: Sequence[DkimOutcome],
    dmarc: DmarcOutcome | None,
) -> bytes:
    """The whole folded header field, LF-terminated: one method result per line."""
    results: list[str] = []
    if spf is not None:
        results.extend(spf_resinfo(spf))
    if dkim:
        results.extend(dkim_resinfo(s) for s in dkim)
    elif spf is not None or dmarc is not None:
        results.append("dkim=none")
    if dmarc is not None:
        results.append(dmarc_resinfo(dmarc))
    if not results:
        return f"{HEADER}: {authserv_id}; none\n".encode()
    body = ";\n\t".join(results)
    return f"{HEADER}: {authserv_id};\n\t{body}\n".encode("utf-8", "surrogateescape")


def header_end(message: bytes) -> int:
    """Length of the header section of *message* (LF line ends), without the empty line."""
    if message.startswith(b"\n"):
        return 0
    end = message.find(b"\n\n")
    return len(message) if end < 0 else end + 1


def fields(header: bytes) -> list[bytes]:
    """The header section split into whole fields, continuation lines kept with their field."""
    out: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def _strip_cfws(text: str) -> str:
    text = text.lstrip()
    while text.startswith("("):
        depth, end = 0, len(text) - 1
        for pos, ch in enumerate(text):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                end = pos
                break
        text = text[end + 1 :].lstrip()
    return text


def authserv_id_of(field: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field; None for other fields."""
    m = _AR_NAME.match(field)
    if m is None:
        return None
    text = _strip_cfws(field[m.end() :].decode("utf-8", "replace"))
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:end] if end > 0 else text[1:]
    return re.split(r"[\s;(]", text, maxsplit=1)[0]


def strip_forged(header: bytes, authserv_id: str) -> tuple[bytes, int]:
    """*header* without Authentication-Results fields claiming *authserv_id*; and how many went."""
    ours = authserv_id.lower()
    kept: list[bytes] = []
    removed = 0
    for field in fields(header):
        found = authserv_id_of(field)
        if found is not None and found.lower() == ours:
            removed += 1
        else:
            kept.append(field)
    return b"".join(kept), removed


def field_values(header: bytes, name: str) -> list[str]:
    """The unfolded values of every field called *name* (case-insensitive)."""
    want = name.lower().encode()
    out: list[str] = []
    for field in fields(header):
        fname, colon, value = field.partition(b":")
        if colon and fname.strip().lower() == want:
            out.append(re.sub(r"\r?\n[ \t]", " ", value.decode("utf-8", "replace")).strip())
    return out


def summary(spf: SpfOutcome | None, dkim: Iterable[DkimOutcome], dmarc: DmarcOutcome | None) -> str:
    """One log line: ``spf=pass dkim=pass,fail dmarc=pass``."""
    dk = ",".join(s.result.value for s in dkim) or "none"
    return (f"spf={spf.result.value if spf else 'none'} dkim={dk} "
            f"dmarc={dmarc.result.value if dmarc else 'none'}")  # fmt: skip

"""Independent DKIM verifiers for tests: Perl's Mail::DKIM and OpenDKIM, neither of which is dkimpy.

* :func:`mail_dkim` runs ``tests/peers/dkim_verify.pl``: Mail::DKIM with its DNS queries answered
  from a key map, so no resolver is involved.  The Debian 12 version (1.20230212) knows rsa-sha256
  only; it reports an ed25519-sha256 signature as ``invalid (unsupported algorithm …)``.
* :func:`opendkim` runs ``opendkim-testmsg`` (libopendkim 2.11, which verifies both algorithms)
  inside ``unshare -mn``: a private network namespace whose loopback carries a DNS server on port 53
  started by ``tests/peers/opendkim_verify.py``, and a private mount namespace in which that script
  binds its own resolv.conf over /etc/resolv.conf.  Nothing outside the namespaces changes.

Both take the DNS answers as a mapping ``"SELECTOR._domainkey.DOMAIN" → TXT value``.  When a tool is
missing the test is skipped, or fails under ``QLDAP_REQUIRE_SLAPD=1`` (CI installs both through
tools/install-deps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _missing(what: str) -> None:
    if os.environ.get("QLDAP_REQUIRE_SLAPD") == "1":
        pytest.fail(f"{what} is not available; tools/install-deps installs it", pytrace=False)
    pytest.skip(f"{what} is not available")


@dataclass(frozen=True)
class PeerResult:
    """One signature as Mail::DKIM judged it."""

    result: str  # pass | fail | invalid | none …
    domain: str
    selector: str
    algorithm: str
    detail: str


def mail_dkim(message: bytes, records: Mapping[str, str]) -> tuple[list[PeerResult], str]:
    """Mail::DKIM's result for every signature of *message*, and its overall result."""
    perl = shutil.which("perl")
    if perl is None or subprocess.run([perl, "-MMail::DKIM::Verifier", "-e", "1"],
                                      capture_output=True).returncode != 0:  # fmt: skip
        _missing("perl with Mail::DKIM (libmail-dkim-perl)")
        raise AssertionError  # unreachable: _missing skips or fails
    with tempfile.NamedTemporaryFile("w", suffix=".keymap") as keymap:
        keymap.write("".join(f"{name}\t{value}\n" for name, value in records.items()))
        keymap.flush()
        proc = subprocess.run([perl, str(HERE / "dkim_verify.pl"), keymap.name], input=message,
                              capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().splitlines()
    overall = lines[-1].split(" ", 1)[1]
    sigs = []
    for line in lines[:-1]:
        result, domain, selector, algorithm, detail = line.split(" ", 4)
        sigs.append(PeerResult(result, domain, selector, algorithm, detail))
    return sigs, overall


def opendkim(message: bytes, records: Mapping[str, str]) -> tuple[int, str]:
    """``opendkim-testmsg``'s exit code and error text for *message* (0 and "" = verified)."""
    if shutil.which("opendkim-testmsg") is None:
        _missing("opendkim-testmsg (opendkim-tools)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        _missing("unshare as root (private namespaces for OpenDKIM's DNS)")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        json.dump(dict(records), fh)
        fh.flush()
        proc = subprocess.run(["unshare", "-mn", sys.executable, str(HERE / "opendkim_verify.py"), fh.name],
                              input=message, capture_output=True, timeout=120)  # fmt: skip
    return proc.returncode, proc.stderr.decode(errors="replace").strip()


def without_signatures(message: bytes, *, keep: str) -> bytes:
    """*message* with every DKIM-Signature field removed except those whose ``a=`` is *keep*.

    OpenDKIM's test tool reports one result for the whole message; keeping one signature at a time
    shows that each of a dual-signed message's signatures verifies on its own.
    """
    head, sep, body = message.partition(b"\n\n")
    fields: list[list[bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    wanted = f"a={keep};".encode()

    def kept(field: list[bytes]) -> bool:
        if not field[0].lower().startswith(b"dkim-signature:"):
            return True
        return wanted in b"".join(field).replace(b" ", b"").replace(b"\t", b"")

    return b"\n".join(line for field in fields if kept(field) for line in field) + sep + body


def configure_keys(
    control: Path, keys: list[tuple[str, str, str]], *, write_control: bool = True
) -> dict[str, str]:
    """Make a key for each (domain, selector, "rsa"|"ed25519"), list them in control/dkimkeys, and
    return the DNS records a verifier needs (``SELECTOR._domainkey.DOMAIN`` → TXT value)."""
    from qldap.mailauth.keys import Algorithm, default_key_path, generate_key, record_value, write_new_key

    records: dict[str, str] = {}
    lines = []
    for domain, selector, algorithm in keys:
        algo = Algorithm(algorithm)
        key = generate_key(algo)
        path = default_key_path(control, domain.lstrip("."), selector)
        write_new_key(path, key.private_pem)
        records[f"{selector}._domainkey.{domain.lstrip('.')}"] = record_value(algo, key.public)
        lines.append(f"{domain}:{selector}:{algorithm}:{path.relative_to(control)}\n")
    if write_control:
        (control / "dkimkeys").write_text("".join(lines))
    return records

"""DKIM keys and signers for the inbound-check tests: openssl-made RSA keys, Mail::DKIM and dkimpy signers.

Why two signers: interoperability is only shown when the signature comes from an implementation that
is not the verifier's library, so the end-to-end cases sign with Perl's Mail::DKIM
(tests/dkim_sign.pl); dkimpy signs where only the DMARC logic is under test (and for ed25519).
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dkim
import nacl.signing

from tests.dnsserver import long_txt

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RsaKey:
    """An RSA key file (PKCS#1 PEM) and its DKIM key record."""

    pem: Path
    record: str  # zone rdata text for <selector>._domainkey.<domain> TXT

    def sign_perl(self, message: bytes, domain: str, selector: str) -> bytes:
        """*message* signed by Mail::DKIM (rsa-sha256, relaxed/relaxed), CRLF line ends."""
        done = subprocess.run(["perl", str(HERE / "dkim_sign.pl"), str(self.pem), domain, selector],
                              input=message, capture_output=True, check=True, timeout=60)  # fmt: skip
        return done.stdout

    def sign_dkimpy(self, message: bytes, domain: str, selector: str) -> bytes:
        """*message* signed by dkimpy (rsa-sha256, relaxed/relaxed)."""
        sig = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.pem.read_bytes(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject"],
        )
        return bytes(sig) + message


def rsa_key(directory: Path, bits: int = 2048) -> RsaKey:
    """A fresh RSA key made by openssl, and the ``v=DKIM1; k=rsa; p=…`` record of its public half."""
    pem = directory / f"rsa{bits}.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(pem), str(bits)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    der = subprocess.run(["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout  # fmt: skip
    return RsaKey(pem, long_txt("v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()))


@dataclass(frozen=True)
class Ed25519Key:
    """An Ed25519 seed (as dkimpy wants it) and its DKIM key record (RFC 8463)."""

    seed_b64: bytes
    record: str

    def sign_dkimpy(self, message: bytes, domain: str, selector: str) -> bytes:
        sig = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.seed_b64,
            signature_algorithm=b"ed25519-sha256",
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject"],
        )
        return bytes(sig) + message


def ed25519_key() -> Ed25519Key:
    key = nacl.signing.SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return Ed25519Key(base64.b64encode(bytes(key)), long_txt(f"v=DKIM1; k=ed25519; p={public}"))

"""DKIM keys: the ``control/dkimkeys`` table, private key files, new keys and their DNS records.

Why a table of ``domain:selector:algorithm:keyfile`` lines, qmail style, and not one file per domain:
one line per key lets a domain carry an RSA and an Ed25519 key at once (dual signing, RFC 8463), a
``.example.com`` line covers every subdomain, and ``qmail-showctl`` shows the whole set-up in one
place (qldap-control(5)).  Key files stay out of the table because they are secrets: mode 0600,
readable by whoever signs (qldap-dkim(8) explains who that is).

The private keys are read here and handed to :mod:`qldap.mailauth.dkimsign` as :class:`PrivateKey`
records in the form dkimpy expects (PEM for RSA, the base64 seed for Ed25519), so they can cross a
process boundary.  New RSA keys come from ``openssl genpkey`` (as dkimpy's own ``dknewkey`` does; the
Python standard library has no RSA), Ed25519 keys from PyNaCl; both are written as PKCS#8 PEM.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from qldap.control.files import ControlDir, Signature, ascii_lower, path_signature
from qldap.errors import ConfigError

CONTROL = "dkimkeys"
STRICT_CONTROL = "dkimstrict"
KEY_DIR = "dkim"  # ROOT/control/dkim/: where `qldap dkim keygen` writes keys by default
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must not accept smaller keys
MAX_RSA_BITS = 4096
DEFAULT_RSA_BITS = 2048
TXT_STRING_MAX = 255  # RFC 1035 section 3.3: one <character-string>

_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # RFC 8410 PrivateKeyInfo + seed
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)


class Algorithm(enum.Enum):
    """The signing algorithms qldap offers (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256)."""

    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def dkim_name(self) -> bytes:
        """The ``a=`` value of a signature made with this key type."""
        return b"rsa-sha256" if self is Algorithm.RSA else b"ed25519-sha256"


class KeyFileError(ConfigError):
    """A key file named in control/dkimkeys is missing, unreadable or not a key of its algorithm."""


def valid_name(name: str) -> bool:
    """True for a DNS name usable as a signing domain or selector (letters, digits, ``-``, ``_``)."""
    return len(name) <= 253 and _NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One control/dkimkeys line: sign mail of *domain* (``.suffix`` = its subdomains) with a key."""

    domain: str
    selector: str
    algorithm: Algorithm
    path: Path

    @property
    def signing_domain(self) -> str:
        """The ``d=`` of the signatures: the line's domain without a leading dot."""
        return self.domain.lstrip(".")


def parse_dkimkeys(lines: Iterable[str], control_dir: Path) -> tuple[KeyEntry, ...]:
    """Parse control/dkimkeys lines (comments and blanks already removed).

    A relative key path is taken relative to the control directory.

    Raises:
        ConfigError: a line has not four fields, a bad domain or selector, or an unknown algorithm.
    """
    out = []
    for line in lines:
        fields = line.split(":", 3)
        if len(fields) != 4 or not fields[3].strip():
            raise ConfigError(f"unable to parse control/{CONTROL} line: {line!r}")
        domain, selector, algorithm, keyfile = (f.strip() for f in fields)
        domain = ascii_lower(domain)
        if not valid_name(domain.removeprefix(".")) or not valid_name(ascii_lower(selector)):
            raise ConfigError(f"bad domain or selector in control/{CONTROL} line: {line!r}")
        try:
            algo = Algorithm(ascii_lower(algorithm))
        except ValueError:
            raise ConfigError(f"unknown algorithm {algorithm!r} in control/{CONTROL}") from None
        out.append(KeyEntry(domain, selector, algo, control_dir / keyfile))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class KeyTable:
    """Every configured key, and whether a signing failure defers the message (control/dkimstrict)."""

    entries: tuple[KeyEntry, ...] = ()
    strict: bool = False

    @classmethod
    def from_control(cls, ctl: ControlDir) -> KeyTable:
        """Read control/dkimkeys and control/dkimstrict (absent = nothing is signed).

        Raises:
            ConfigError: a file cannot be read or a line is malformed.
        """
        entries = parse_dkimkeys(ctl.lines(CONTROL), ctl.dir)
        return cls(entries, ctl.boolean(STRICT_CONTROL, False))

    def for_domain(self, domain: str) -> tuple[KeyEntry, ...]:
        """The keys that sign mail from *domain*: its own lines, else those of its nearest ``.parent``."""
        domain = ascii_lower(domain)
        exact = tuple(e for e in self.entries if e.domain == domain)
        if exact:
            return exact
        labels = domain.split(".")
        for i in range(1, len(labels)):
            suffix = "." + ".".join(labels[i:])
            found = tuple(e for e in self.entries if e.domain == suffix)
            if found:
                return found
        return ()


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A loaded key, in the form dkimpy signs with; picklable, so a worker process can use it."""

    domain: str
    selector: str
    algorithm: Algorithm
    data: bytes  # PEM (RSA) or the base64 32-byte seed (Ed25519)


def _pem_body(data: bytes) -> tuple[str, bytes] | None:
    m = _PEM.search(data)
    if m is None:
        return None
    try:
        return m.group(1).decode("ascii"), base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except binascii.Error:
        return None


def ed25519_seed(data: bytes) -> bytes | None:
    """The 32-byte seed of an Ed25519 private key: PKCS#8 PEM, or the bare base64 seed dkimpy uses."""
    pem = _pem_body(data)
    if pem is not None:
        label, der = pem
        if label == "PRIVATE KEY" and der.startswith(_ED25519_PKCS8) and len(der) == len(_ED25519_PKCS8) + 32:
            return der[len(_ED25519_PKCS8) :]
        return None
    try:
        seed = base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error:
        return None
    return seed if len(seed) == 32 else None


def key_material(algorithm: Algorithm, data: bytes) -> bytes:
    """*data* (a key file's bytes) in the form dkimpy signs with.

    Raises:
        ValueError: *data* is not a private key of *algorithm* (or an RSA key under 1024 bits).
    """
    if algorithm is Algorithm.ED25519:
        seed = ed25519_seed(data)
        if seed is None:
            raise ValueError("not an Ed25519 private key (PKCS#8 PEM or base64 seed)")
        return base64.b64encode(seed)
    try:
        parsed = parse_pem_private_key(data)
    except (UnparsableKeyError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"not an RSA private key: {exc}") from None
    if parsed["modulus"].bit_length() < MIN_RSA_BITS:
        raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
    return data


def load_key(entry: KeyEntry) -> PrivateKey:
    """Read and check the key file of *entry*.

    Raises:
        KeyFileError: the file cannot be read or holds no usable key of the entry's algorithm.
    """
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"unable to read DKIM key {entry.path}: {exc.strerror}") from exc
    try:
        material = key_material(entry.algorithm, data)
    except ValueError as exc:
        raise KeyFileError(f"bad DKIM key {entry.path}: {exc}") from None
    return PrivateKey(entry.signing_domain, entry.selector, entry.algorithm, material)


class KeyCache:
    """Loaded keys by path, re-read when the file changes (as control files are); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[KeyEntry, tuple[Signature, PrivateKey]] = {}

    def load(self, entry: KeyEntry) -> PrivateKey:
        """The key of *entry*, from the cache while its file is unchanged.

        Raises:
            KeyFileError: see :func:`load_key`.
        """
        try:
            sig = path_signature(entry.path)
        except ConfigError as exc:
            raise KeyFileError(f"unable to read DKIM key: {exc}") from exc
        with self._lock:
            hit = self._keys.get(entry)
        if hit is not None and hit[0] == sig:
            return hit[1]
        key = load_key(entry)
        with self._lock:
            self._keys[entry] = (sig, key)
        return key


# -- new keys and their DNS records --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewKey:
    """A generated key pair: the private key as PKCS#8 PEM and the ``p=`` bytes of its DNS record."""

    private_pem: bytes
    public: bytes  # RSA: DER SubjectPublicKeyInfo; Ed25519: the raw 32-byte public key


def _openssl(args: list[str], stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"unable to run openssl: {exc}") from exc
    if proc.returncode != 0:
        raise ConfigError(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _ed25519_pem(seed: bytes) -> bytes:
    body = base64.encodebytes(_ED25519_PKCS8 + seed)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"


def generate_key(algorithm: Algorithm, bits: int = DEFAULT_RSA_BITS) -> NewKey:
    """A fresh key pair of *algorithm* (*bits* only for RSA).

    Raises:
        ConfigError: *bits* is out of range, or openssl is missing or failed.
    """
    if algorithm is Algorithm.ED25519:
        signing = nacl.signing.SigningKey.generate()
        return NewKey(_ed25519_pem(bytes(signing)), bytes(signing.verify_key))
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ConfigError(f"RSA keys have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {bits}")
    pem = _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"])
    return NewKey(pem, public_key(Algorithm.RSA, pem))


def public_key(algorithm: Algorithm, private: bytes) -> bytes:
    """The ``p=`` bytes belonging to the private key file content *private*.

    Raises:
        ConfigError: *private* is not a key of *algorithm*, or openssl failed.
    """
    if algorithm is Algorithm.ED25519:
        seed = ed25519_seed(private)
        if seed is None:
            raise ConfigError("not an Ed25519 private key")
        return bytes(nacl.signing.SigningKey(seed).verify_key)
    return _openssl(["pkey", "-pubout", "-outform", "DER"], stdin=private)


def txt_strings(text: str, size: int = TXT_STRING_MAX) -> list[str]:
    """*text* cut into DNS character-strings of at most *size* bytes (a record's value is ASCII)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def dns_record(domain: str, selector: str, algorithm: Algorithm, public: bytes) -> str:
    """The zone-file line publishing *public*: ``SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; …"``.

    A value over 255 bytes (every RSA key of 2048 bits or more) is split into several strings on
    the one line, which resolvers hand back concatenated (RFC 6376 section 3.6.2.2).
    """
    value = f"v=DKIM1; k={algorithm.value}; p={base64.b64encode(public).decode('ascii')}"
    strings = " ".join(f'"{s}"' for s in txt_strings(value))
    return f"{selector}._domainkey.{domain}. IN TXT {strings}"


def record_value(algorithm: Algorithm, public: bytes) -> str:
    """The TXT value alone (as a resolver returns it, strings joined): for tests and checks."""
    return f"v=DKIM1; k={algorithm.value}; p={base64.b64encode(public).decode('ascii')}"


def default_key_path(control_dir: Path, domain: str, selector: str) -> Path:
    """Where ``qldap dkim keygen`` puts the key of *domain*/*selector*: control/dkim/DOMAIN.SELECTOR.key."""
    return control_dir / KEY_DIR / f"{domain}.{selector}.key"


def write_new_key(path: Path, pem: bytes) -> None:
    """Create *path* with mode 0600 and write *pem*, never replacing an existing file.

    Raises:
        ConfigError: the file exists already, or cannot be created or written.
    """
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already; not overwriting a key") from None
    except OSError as exc:
        raise ConfigError(f"unable to create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask may only remove bits; say it outright
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise ConfigError(f"unable to write {path}: {exc.strerror}") from exc
    os.close(fd)

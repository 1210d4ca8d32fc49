"""``qldap dkim``: make DKIM keys and show the DNS records that publish them (qldap-dkim(8)).

``keygen DOMAIN SELECTOR`` writes a new private key (mode 0600, never over an existing file) and
prints the TXT record to publish on stdout; what to add to control/dkimkeys goes to stderr, because
signing starts only when the operator adds the line — after the record is in DNS, so no receiver
ever sees a signature it cannot check.  ``records`` prints the record of every configured key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qldap.cli._run import run
from qldap.control.files import ControlDir, ascii_lower, find_root
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.mailauth.keys import (
    CONTROL,
    DEFAULT_RSA_BITS,
    Algorithm,
    KeyTable,
    default_key_path,
    dns_record,
    generate_key,
    public_key,
    valid_name,
    write_new_key,
)

PROG = "qldap dkim"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="DKIM keys and their DNS records")
    p.add_argument("--root", help="the qmail root (default $QLDAP_ROOT, else /var/qmail)")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write a new private key and print its DNS TXT record")
    k.add_argument("domain")
    k.add_argument("selector")
    k.add_argument("--algorithm", choices=[a.value for a in Algorithm], default=Algorithm.RSA.value)
    k.add_argument("--bits", type=int, default=DEFAULT_RSA_BITS, help="RSA key size (1024–4096)")
    k.add_argument("--dir", help="directory for the key file (default ROOT/control/dkim)")
    sub.add_parser("records", help="print the DNS TXT record of every key in control/dkimkeys")
    return p


def _keygen(args: argparse.Namespace, root: Path) -> int:
    domain, selector = ascii_lower(args.domain).rstrip("."), ascii_lower(args.selector)
    if not valid_name(domain) or not valid_name(selector):
        raise ConfigError(f"not a domain and selector: {args.domain!r} {args.selector!r}")
    algorithm = Algorithm(args.algorithm)
    control = root / "control"
    path = default_key_path(control, domain, selector)
    if args.dir:
        path = Path(args.dir) / path.name
    if path.exists():
        raise ConfigError(f"{path} exists already; not overwriting a key")
    key = generate_key(algorithm, args.bits)
    write_new_key(path, key.private_pem)
    print(dns_record(domain, selector, algorithm, key.public))
    shown = os.path.relpath(path, control) if path.is_relative_to(control) else str(path)
    sys.stderr.write(
        f"{PROG}: wrote {path} (mode 0600)\n"
        f"{PROG}: publish the record above, then add this line to {control / CONTROL}:\n"
        f"{domain}:{selector}:{algorithm.value}:{shown}\n"
    )
    return ExitCode.OK


def _records(root: Path) -> int:
    table = KeyTable.from_control(ControlDir(root))
    if not table.entries:
        sys.stderr.write(f"{PROG}: control/{CONTROL} names no key\n")
    for entry in table.entries:
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"unable to read DKIM key {entry.path}: {exc.strerror}") from exc
        public = public_key(entry.algorithm, data)
        print(dns_record(entry.signing_domain, entry.selector, entry.algorithm, public))
    return ExitCode.OK


def dkim_main(argv: Sequence[str] | None = None) -> int:
    """``qldap dkim keygen|records``: exit 0, 100 (usage) or 111 (a key could not be made or read)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse printed the usage
        return ExitCode.OK if exc.code == 0 else ExitCode.PERMANENT
    root = find_root(args.root)

    def body(_a: Sequence[str]) -> int:
        return _keygen(args, root) if args.command == "keygen" else _records(root)

    return run(PROG, body, args_list)


if __name__ == "__main__":
    sys.exit(dkim_main())

#!/usr/bin/env python3
"""CPU cost per message of mail authentication: DKIM signing, and the inbound SPF/DKIM/DMARC checks.

Not a test (no thresholds): run ``.venv/bin/python tools/bench_mailauth.py`` and compare the lines;
docs/mailauth.md records the figures.  Each case prints one line,
``CASE: N µs CPU per message (M messages, W µs wall)``, measured with ``time.process_time`` in this
process (the worker-process case counts only what the calling process spends, which is what a
daemon's event loop pays).

Adding a case: write a function that takes the message and returns a zero-argument callable doing
the work for one message (set-up such as key generation happens before it is returned), and add it
to :data:`CASES`.  ``--only NAME`` runs the cases whose names contain NAME.

The verification cases ask a loopback name server (tests/dnsserver.py) that runs in a child
process, so its CPU is not counted: what is measured is the daemon's side — building and parsing
the DNS messages, the SPF/DMARC logic, dkimpy's canonicalization and signature check, the header.
The daemon's answer cache (qldap.mailauth.resolve) is on, as in production, so the repeated
message pays no DNS round trip; the ``no DNS cache`` case shows the cost of a first message from a
domain.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from qldap.mailauth.dkimsign import sign_message
from qldap.mailauth.dkimverify import verify_message
from qldap.mailauth.dmarc import check_dmarc
from qldap.mailauth.inbound import InboundPolicy
from qldap.mailauth.keys import Algorithm, PrivateKey, generate_key, key_material
from qldap.mailauth.resolve import Dns
from qldap.mailauth.spf import check_sender
from qldap.smtpd.mailcheck import InboundChecks
from qldap.smtpd.queueing import MessageSpool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.dnsserver
from tests.dnsserver import DnsServer, long_txt, txt

Work = Callable[[], object]


def make_message(size: int) -> bytes:
    """A plain-text message of about *size* bytes in the queue's form (LF line ends)."""
    head = (
        b"From: Alice Example <alice@example.org>\nTo: bob@example.net\nCc: carol@example.net\n"
        b"Subject: quarterly figures for the north-east region\nDate: Sun, 06 Dec 2026 19:00:00 +0000\n"
        b"Message-ID: <20261206190000.4711@example.org>\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n\n"
    )
    line = b"The figures for the quarter are attached; the totals are up by four per cent.\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def _key(algorithm: Algorithm) -> PrivateKey:
    new = generate_key(algorithm)
    return PrivateKey("example.org", "bench", algorithm, key_material(algorithm, new.private_pem))


def sign_rsa(message: bytes) -> Work:
    keys = [_key(Algorithm.RSA)]
    return lambda: sign_message(message, keys)


def sign_ed25519(message: bytes) -> Work:
    keys = [_key(Algorithm.ED25519)]
    return lambda: sign_message(message, keys)


def sign_dual(message: bytes) -> Work:
    keys = [_key(Algorithm.RSA), _key(Algorithm.ED25519)]
    return lambda: sign_message(message, keys)


_POOL: list[ProcessPoolExecutor] = []
_SERVERS: list[Any] = []  # the name servers (spawned processes)
_LOOP = asyncio.new_event_loop()
_CHECKS: list[InboundChecks] = []  # their verification workers are stopped at the end


def _serve(records: dict[tuple[str, str], list[str]], port_out: Any) -> None:
    server = DnsServer(records)
    port_out.send(server.port)
    time.sleep(3600)


def _zone(keys: list[PrivateKey], public: dict[str, bytes], cache: bool = True) -> Dns:
    """Start the loopback name server for example.org in a child process; a Dns that asks it."""
    records: dict[tuple[str, str], list[str]] = {
        ("example.org", "TXT"): [txt("v=spf1 include:_spf.example.org -all")],
        ("_spf.example.org", "TXT"): [txt("v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.0/24 -all")],
        ("_dmarc.example.org", "TXT"): [txt("v=DMARC1; p=reject; rua=mailto:dmarc@example.org")],
    }
    for key in keys:
        kind = "rsa" if key.algorithm is Algorithm.RSA else "ed25519"
        p = base64.b64encode(public[key.selector]).decode()
        records[(f"{key.selector}._domainkey.example.org", "TXT")] = [long_txt(f"v=DKIM1; k={kind}; p={p}")]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(records, child), daemon=True)
    proc.start()
    _SERVERS.append(proc)
    port = parent.recv()
    probe = DnsServer.__new__(DnsServer)  # only for its resolver(): same settings as the tests
    probe.port = port
    return Dns(probe.resolver(timeout=2.0), timeout=2.0, cache_size=4096 if cache else 0)


def _signed(message: bytes, algorithms: list[Algorithm], cache: bool = True) -> tuple[bytes, Dns]:
    keys, public = [], {}
    for n, algorithm in enumerate(algorithms):
        new = generate_key(algorithm)
        selector = f"s{n}"
        keys.append(PrivateKey("example.org", selector, algorithm, key_material(algorithm, new.private_pem)))
        public[selector] = new.public
    return sign_message(message, keys) + message, _zone(keys, public, cache)


def _run(make: Callable[[], Coroutine[Any, Any, object]]) -> Work:
    return lambda: _LOOP.run_until_complete(make())


def verify_rsa(message: bytes) -> Work:
    signed, dns = _signed(message, [Algorithm.RSA])
    return _run(lambda: verify_message(dns, signed))


def verify_ed25519(message: bytes) -> Work:
    signed, dns = _signed(message, [Algorithm.ED25519])
    return _run(lambda: verify_message(dns, signed))


def spf_include(message: bytes) -> Work:
    _signed_message, dns = _signed(message, [])
    return _run(lambda: check_sender(dns, "192.0.2.25", "mail.example.org", "alice@example.org"))


def dmarc_lookup(message: bytes) -> Work:
    _signed_message, dns = _signed(message, [])
    return _run(lambda: check_dmarc(dns, ["Alice <alice@example.org>"], None, ()))


def whole_message(message: bytes, cache: bool = True) -> Work:
    """What smtpd does per message: SPF at MAIL, then DKIM + DMARC + Authentication-Results."""
    signed, dns = _signed(message, [Algorithm.RSA], cache)
    checks = InboundChecks(dns)
    _CHECKS.append(checks)
    policy = InboundPolicy("mx.example.net")

    async def one() -> object:
        spf = await checks.check_spf("192.0.2.25", "mail.example.org", "alice@example.org")
        spool = MessageSpool(b"Received: from mail.example.org\n")
        spool.write(signed)
        refused = await checks.after_data(policy, spf, ["bob@example.net"], spool, lambda _t: None)
        assert refused is None
        return spool.source()

    return _run(one)


def whole_message_uncached(message: bytes) -> Work:
    """The same with every lookup on the wire (6 queries: HELO and 2 SPF, DKIM key, 2 DMARC)."""
    return whole_message(message, cache=False)


def sign_rsa_in_worker(message: bytes) -> Work:
    """What the SMTP daemon does: the signature is made in a spawned worker process."""
    keys = [_key(Algorithm.RSA)]
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    _POOL.append(pool)
    pool.submit(sign_message, message, keys).result()  # start the worker outside the measurement
    return lambda: pool.submit(sign_message, message, keys).result()


CASES: dict[str, Callable[[bytes], Work]] = {
    "dkim sign rsa-2048": sign_rsa,
    "dkim sign ed25519": sign_ed25519,
    "dkim sign rsa-2048 + ed25519": sign_dual,
    "dkim sign rsa-2048 in a worker process (caller's CPU)": sign_rsa_in_worker,
    "verify: dkim rsa-2048 (key lookup included)": verify_rsa,
    "verify: dkim ed25519 (key lookup included)": verify_ed25519,
    "verify: spf pass via include (2 TXT lookups)": spf_include,
    "verify: dmarc record lookup": dmarc_lookup,
    "verify: whole message in smtpd (spf + dkim rsa-2048 + dmarc + header)": whole_message,
    "verify: whole message, no DNS cache (6 lookups on the wire)": whole_message_uncached,
}
"""Case name → set-up returning the per-message work."""


def measure(work: Work, count: int) -> tuple[float, float]:
    """CPU and wall microseconds per call of *work*, over *count* calls after one warm-up call."""
    work()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        work()
    return ((time.process_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--size", type=int, default=2048, help="message size in bytes (default 2 KiB)")
    p.add_argument("--count", type=int, default=200, help="messages per case")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = p.parse_args()
    message = make_message(args.size)
    print(f"message: {len(message)} bytes")
    try:
        for name, setup in CASES.items():
            if args.only not in name:
                continue
            cpu, wall = measure(setup(message), args.count)
            print(f"{name}: {cpu:.0f} µs CPU per message ({args.count} messages, {wall:.0f} µs wall)")
    finally:
        for pool in _POOL:
            pool.shutdown()
        for checks in _CHECKS:
            checks.close()
        for proc in _SERVERS:
            proc.kill()
            proc.join()


if __name__ == "__main__":
    main()

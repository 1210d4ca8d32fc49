#!/usr/bin/env python3
"""CPU cost per message of mail authentication: DKIM signing now, verification to be added.

Not a test (no thresholds): run ``.venv/bin/python tools/bench_mailauth.py`` and compare the lines;
docs/mailauth.md records the figures.  Each case prints one line,
``CASE: N µs CPU per message (M messages, W µs wall)``, measured with ``time.process_time`` in this
process (the worker-process case counts only what the calling process spends, which is what a
daemon's event loop pays).

Adding a case: write a function that takes the message and returns a zero-argument callable doing
the work for one message (set-up such as key generation happens before it is returned), and add it
to :data:`CASES`.  ``--only NAME`` runs the cases whose names contain NAME.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from qldap.mailauth.dkimsign import sign_message
from qldap.mailauth.keys import Algorithm, PrivateKey, generate_key, key_material

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


if __name__ == "__main__":
    main()

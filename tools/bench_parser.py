#!/usr/bin/env python3
"""Micro-benchmark of the sans-I/O SMTP reader: command lines per second and DATA megabytes per second.

Not a test (no thresholds): run ``.venv/bin/python tools/bench_parser.py`` before and after touching
qldap/smtpd/reader.py and compare the numbers.
"""

from __future__ import annotations

import argparse
import time

from qldap.smtpd.reader import Command, DataChunk, DataEnd, SmtpReader

COMMANDS = (
    b"MAIL FROM:<sender@remote.example> SIZE=12345\r\n"
    b"RCPT TO:<alice@example.org>\r\n"
    b"RCPT TO:<bob@example.org>\r\n"
    b"NOOP\r\n"
    b"RSET\r\n"
)


def bench_commands(n: int, packet: int) -> float:
    """Commands per second, the input arriving in *packet*-byte reads."""
    data = COMMANDS * (n // 5)
    reader = SmtpReader()
    count = 0
    start = time.perf_counter()
    for i in range(0, len(data), packet):
        reader.receive_data(data[i : i + packet])
        while (event := reader.next_event()) is not None:
            if isinstance(event, Command):
                count += 1
    elapsed = time.perf_counter() - start
    return count / elapsed


def bench_data(megabytes: int, packet: int) -> float:
    """DATA megabytes (client octets) per second, with dot-stuffed lines and a header."""
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv\r\n"
    body = (line + b"..dot-stuffed line\r\n") * (megabytes * 1024 * 1024 // (len(line) + 20))
    data = b"Received: from a\r\nSubject: bench\r\n\r\n" + body + b".\r\n"
    reader = SmtpReader()
    reader.begin_data(0)
    stored = 0
    start = time.perf_counter()
    for i in range(0, len(data), packet):
        reader.receive_data(data[i : i + packet])
        while (event := reader.next_event()) is not None:
            if isinstance(event, DataChunk):
                stored += len(event.data)
            elif isinstance(event, DataEnd):
                break
    elapsed = time.perf_counter() - start
    return len(data) / elapsed / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--packet", type=int, default=65536, help="bytes per simulated socket read")
    args = parser.parse_args()
    cps = bench_commands(args.commands, args.packet)
    mbs = bench_data(args.megabytes, args.packet)
    print(f"commands: {cps:,.0f}/s  data: {mbs:,.1f} MB/s  (packet {args.packet} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

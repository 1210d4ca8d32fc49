"""tools/bench_mailauth.py runs and prints one CPU-per-message line per case (figures in docs/mailauth.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT_DIR


def test_the_signing_bench_prints_a_line_per_case() -> None:
    out = subprocess.run([sys.executable, str(ROOT_DIR / "tools" / "bench_mailauth.py"), "--count", "3"],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    lines = out.splitlines()
    assert re.fullmatch(r"message: \d+ bytes", lines[0])
    cases = dict(line.rsplit(": ", 1) for line in lines[1:])  # a case name may hold ": " itself
    assert {
        "dkim sign rsa-2048", "dkim sign ed25519", "dkim sign rsa-2048 + ed25519",
        "dkim sign rsa-2048 in a worker process (caller's CPU)",
    } <= set(cases)  # fmt: skip
    for figure in cases.values():
        assert re.fullmatch(r"\d+ µs CPU per message \(3 messages, \d+ µs wall\)", figure), figure

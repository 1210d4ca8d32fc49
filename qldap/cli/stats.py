"""``qldap stats [FILE…]``: qmailanalog-style summary of the queue manager's log (qmail-send(8), LOG).

Reads log lines from the files (or stdin), each optionally prefixed by a TAI64N (``@4000…``) or ISO
timestamp and by the writer's ``PROG: `` tag, and counts what qmailanalog's ``zoverall``,
``zddist``-style reports count: messages and bytes (``info msg``), completed messages (``end msg``),
deliveries by result and channel, bounces, and the most frequent deferral and failure texts.

Why delivery numbers are matched per manager run: the manager numbers deliveries from 1 after each
start, so a ``starting delivery 3`` after a restart replaces the earlier delivery 3; a result line
whose start was not seen (the log began mid-run) still counts, under channel ``unknown``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qldap.cli._run import run
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode

PROG = "qldap stats"
RESULTS = ("success", "deferral", "failure")
CHANNELS = ("local", "remote", "unknown")

_STAMP = re.compile(
    r"^(?:@[0-9a-fA-F]{24}|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+"
)
_TAG = r"^(?:[\w.@-]+(?: [\w.@-]+)?: )?"
_INFO = re.compile(_TAG + r"info msg (\d+): bytes (\d+) from <(.*)> qp (\d+) uid (\d+)$")
_START = re.compile(_TAG + r"starting delivery (\d+): msg (\d+) to (local|remote) (.*)$")
_RESULT = re.compile(_TAG + r"delivery (\d+): (success|deferral|failure): (.*)$")
_END = re.compile(_TAG + r"end msg (\d+)$")
_BOUNCE = re.compile(_TAG + r"bounce msg (\d+) qp (\d+)$")
_TRIPLE = re.compile(_TAG + r"triple bounce: discarding bounce/(\d+)$")


@dataclass(slots=True)
class Summary:
    """The counts of one log (mutable while reading, then only read)."""

    messages: int = 0
    bytes: int = 0
    completed: int = 0
    bounces: int = 0
    triple_bounces: int = 0
    started: Counter[str] = field(default_factory=Counter)  # by channel
    results: Counter[tuple[str, str]] = field(default_factory=Counter)  # (result, channel)
    reasons: dict[str, Counter[str]] = field(default_factory=lambda: {r: Counter() for r in RESULTS})
    lines: int = 0
    unparsed: int = 0

    def count(self, result: str, channel: str | None = None) -> int:
        """Deliveries with *result*, on *channel* or on all channels."""
        if channel is not None:
            return self.results[(result, channel)]
        return sum(n for (res, _ch), n in self.results.items() if res == result)


def strip_stamp(line: str) -> str:
    """*line* without a leading TAI64N or ISO timestamp (and the blanks after it)."""
    return _STAMP.sub("", line, count=1)


def summarize(lines: Iterable[str]) -> Summary:
    """Count the manager events of *lines*; other lines are tallied as unparsed and skipped."""
    s = Summary()
    channel_of: dict[str, str] = {}
    for raw in lines:
        line = strip_stamp(raw.rstrip("\r\n"))
        if not line:
            continue
        s.lines += 1
        if m := _RESULT.match(line):
            channel = channel_of.pop(m.group(1), "unknown")
            s.results[(m.group(2), channel)] += 1
            s.reasons[m.group(2)][m.group(3)] += 1
        elif m := _START.match(line):
            channel_of[m.group(1)] = m.group(3)
            s.started[m.group(3)] += 1
        elif m := _INFO.match(line):
            s.messages += 1
            s.bytes += int(m.group(2))
        elif _END.match(line):
            s.completed += 1
        elif _BOUNCE.match(line):
            s.bounces += 1
        elif _TRIPLE.match(line):
            s.triple_bounces += 1
        else:
            s.unparsed += 1
    return s


def _by_channel(s: Summary, result: str) -> str:
    parts = [f"{ch} {s.count(result, ch)}" for ch in CHANNELS if ch != "unknown" or s.count(result, ch)]
    return ", ".join(parts)


def _top(title: str, reasons: Counter[str], top: int) -> list[str]:
    out = ["", title]
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if not ranked:
        out.append("  (none)")
    width = max((len(str(n)) for _t, n in ranked), default=1)
    out.extend(f"  {n:>{width}}  {text}" for text, n in ranked)
    return out


def render(s: Summary, top: int = 10) -> str:
    """The report: basic statistics, deliveries by result and channel, top deferral/failure texts."""
    deliveries = sum(s.results.values())
    lines = [
        "Basic statistics",
        f"messages: {s.messages}",
        f"bytes: {s.bytes}",
        f"average message size: {s.bytes // s.messages if s.messages else 0} bytes",
        f"completed messages: {s.completed}",
        f"bounces: {s.bounces} (triple bounces discarded: {s.triple_bounces})",
        f"delivery attempts started: {sum(s.started.values())} "
        f"(local {s.started['local']}, remote {s.started['remote']})",
        f"delivery results: {deliveries}",
    ]
    for result in RESULTS:
        lines.append(f"  {result}: {s.count(result)} ({_by_channel(s, result)})")
    lines += _top(f"Top {top} deferral reasons", s.reasons["deferral"], top)
    lines += _top(f"Top {top} failure reasons", s.reasons["failure"], top)
    return "\n".join(lines) + "\n"


def _read(paths: Sequence[str]) -> Iterable[str]:
    if not paths:
        yield from sys.stdin.buffer.read().decode("utf-8", "surrogateescape").splitlines()
        return
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(f"unable to read {path}: {exc.strerror or exc}") from None
        yield from data.decode("utf-8", "surrogateescape").splitlines()


def stats_main(argv: Sequence[str] | None = None) -> int:
    """``qldap stats [-n TOP] [FILE…]``: print the summary of the manager log in FILEs or stdin."""

    def body(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="summarise the queue manager's log")
        parser.add_argument("-n", "--top", type=int, default=10, help="reasons to list (default 10)")
        parser.add_argument("files", nargs="*", help="log files (default: stdin)")
        ns = parser.parse_args(list(args))
        text = render(summarize(_read(ns.files)), max(ns.top, 0))
        sys.stdout.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return ExitCode.OK

    return run(PROG, body, argv)


main = stats_main

if __name__ == "__main__":
    sys.exit(stats_main())

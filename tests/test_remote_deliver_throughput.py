"""Throughput of deliver_remote to a loopback sink: many deliveries, each one a full SMTP session.

Asserts only that every delivery succeeded and arrived intact; the measured rate is printed
(``pytest -s``) for the record, never compared with a threshold.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from qldap.remote.deliver import deliver_remote
from qldap.reports import Letter
from tests.test_remote_deliver_smtp import SENDER, Script, SmtpSink, config, routes
from tests.test_remote_deliver_smtp import server_tls as server_tls  # the fixture, re-exported for pytest

BODY = b"Subject: t\n\n" + b"a line of text in the message body\n" * 100


async def deliveries(
    tmp: Path, count: int, concurrency: int, script: Script
) -> tuple[float, SmtpSink, set[str]]:
    msg = tmp / "mess"
    msg.write_bytes(BODY)
    gate = asyncio.Semaphore(concurrency)
    async with SmtpSink(script) as sink:
        cfg = config(smtproutes=routes(example_net=f"127.0.0.1:{sink.port}"))

        async def one(i: int) -> str:
            async with gate:
                report = await deliver_remote(
                    tmp,
                    cfg,
                    SENDER,
                    f"u{i}@example.net",
                    msg,
                    tcpto_path=tmp / "tcpto",
                    my_addresses=frozenset(),
                )
            assert report.letter is Letter.SUCCESS, report
            return report.text

        start = time.perf_counter()
        texts = await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
    return elapsed, sink, set(texts)


@pytest.mark.slow
@pytest.mark.parametrize(("count", "concurrency"), [(500, 1), (500, 20)])
def test_sequential_and_concurrent_deliveries(tmp_path: Path, count: int, concurrency: int) -> None:
    elapsed, sink, _ = asyncio.run(deliveries(tmp_path, count, concurrency, Script()))
    expected = BODY.replace(b"\n", b"\r\n")
    assert len(sink.sessions) == count and all(s.data == expected for s in sink.sessions)
    rcpts = {s.commands[2] for s in sink.sessions}
    assert rcpts == {f"RCPT TO:<u{i}@example.net>" for i in range(count)}
    print(f"\n{count} deliveries, concurrency {concurrency}: {count / elapsed:.0f} messages/s")


@pytest.mark.slow
def test_starttls_deliveries(tmp_path: Path, server_tls: ssl.SSLContext) -> None:
    elapsed, sink, texts = asyncio.run(deliveries(tmp_path, 100, 20, Script(tls=server_tls)))
    assert len(sink.sessions) == 100 and all(s.tls for s in sink.sessions)
    assert all("STARTTLS proto=" in t for t in texts)
    print(f"\n100 STARTTLS deliveries, concurrency 20: {100 / elapsed:.0f} messages/s")

"""``qldap send``'s log writer: the loop's lines go out together, in the order lines were logged."""

from __future__ import annotations

import asyncio

import pytest

from qldap.cli.send import StderrLog


def test_loop_lines_are_written_on_the_next_iteration_and_threads_keep_the_order(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOGTIMESTAMPS", raising=False)

    async def main() -> list[str]:
        log = StderrLog()
        log.attach(asyncio.get_running_loop())
        log("a")
        log("b")
        seen = [capfd.readouterr().err]  # nothing yet: collected for one write
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(capfd.readouterr().err)
        log("c")
        await asyncio.get_running_loop().run_in_executor(None, log, "from a thread")
        log("d")
        log.flush()
        seen.append(capfd.readouterr().err)
        return seen

    assert asyncio.run(main()) == ["", "a\nb\n", "c\nfrom a thread\nd\n"]


def test_without_a_loop_every_line_is_written_at_once(capfd: pytest.CaptureFixture[str]) -> None:
    log = StderrLog()
    log("alert: cannot start: qmail-send is already running")
    assert capfd.readouterr().err.endswith("alert: cannot start: qmail-send is already running\n")

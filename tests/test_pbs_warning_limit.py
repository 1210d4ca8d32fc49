"""pbsdbd's refused-datagram warnings are rate-limited and summarised, so floods cannot block it."""

from __future__ import annotations

from qldap.pbs.daemon import WarningLimiter


def test_budget_per_second_and_summary() -> None:
    lines: list[str] = []
    now = [100.0]
    lim = WarningLimiter(lines.append, rate=3, clock=lambda: now[0])
    for i in range(10):
        lim.warn(f"w{i}")
    assert lines == ["w0", "w1", "w2"]
    now[0] = 101.2
    lim.warn("next")
    assert lines[3:] == ["pbsdbd: warning: 7 more refused datagrams not logged", "next"]
    now[0] = 102.5
    lim.warn("quiet second")
    assert lines[-1] == "quiet second" and len(lines) == 6

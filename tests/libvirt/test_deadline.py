"""The libvirt source's per-poll wall deadline, on the 1000-domain test-driver node.

A first poll reads every domain's XML, one call each: over a slow link that is the long part.
The deadline (90 % of `timeout`) is checked between those calls, so the poll ends with its own
`timeout` error naming how far it got, before the scheduler would abandon it; what was read is
kept, so the next poll carries on instead of starting over.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.sources.base import SourceError
from collector.sources.libvirt import LibvirtSource
from collector.sources.libvirt.settings import LibvirtSourceConfig


class SlowLinkClock:
    """Monotonic time in which every look at the clock costs `step` seconds (a slow link, simulated)."""

    def __init__(self, step: float):
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_slow_first_poll_stops_at_the_deadline_and_the_next_carries_on(
    node_1000: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = node_1000
    clock = SlowLinkClock(step=0.0)
    config = LibvirtSourceConfig(kind="libvirt", name="kvm-slow", uri=f"test://{path}", interval="60s", timeout="10s")
    source = LibvirtSource(config, clock=clock)
    try:
        clock.step = 0.025  # ~40 XML reads per second: 1000 domains would take 25 s, the deadline is 9 s
        with pytest.raises(SourceError) as error:
            source.checked_poll(datetime.now(UTC))
        assert error.value.reason == "timeout"
        message = str(error.value)
        assert "poll deadline (90% of timeout) passed while reading domain definitions" in message
        read = int(message.split("(")[2].split(" of ")[0])
        assert 300 < read < 400, message  # 9 s at 25 ms per look at the clock (one per XML read)
        clock.step = 0.0
        result = source.checked_poll(datetime.now(UTC))
        assert len(result.frames["consumers"]) == 1000
        # The XMLs read before the deadline were kept: only the rest are read now, plus the stats call,
        # getInfo and the node memory stats probe (the failed poll stopped before the node facts).
        assert result.api_calls == 1000 - read + 3
        assert source.connect_attempts == 1
    finally:
        source.close()

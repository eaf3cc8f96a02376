"""The daemon says where its memory is (capacityd_memory_bytes{part}), so a soak or an operator can tell a leak
from the history's page cache filling up. Read from the real `capacityd run` process and checked against /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import Estate
from tests.faults.harness import Daemon, poll_times, sample, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_parts_are_exported_and_consistent(daemon: Daemon, estate: Estate) -> None:
    daemon.start()
    wait_for(lambda: poll_times(estate.state_dir, "node5"), 60, "a first stored poll")
    wait_for(lambda: (daemon.metric("capacityd_memory_bytes", part="sqlite") or 0) > 0, 30, "SQLite memory > 0")
    text = daemon.scrape()
    names = ("resident", "resident_anonymous", "resident_file", "malloc_in_use", "sqlite")
    parts = {p: sample(text, "capacityd_memory_bytes", part=p) for p in names}  # one refresh's parts
    assert "# TYPE capacityd_memory_bytes gauge" in text
    resident, in_use, sqlite = parts["resident"], parts["malloc_in_use"], parts["sqlite"]
    assert resident is not None and in_use is not None and sqlite is not None, parts
    # RSS as the daemon saw it at its last refresh: same order as /proc now (not equal: time passed)
    assert 0.5 * _rss(daemon.pid) < resident < 2 * _rss(daemon.pid)
    assert 0 < sqlite < in_use < resident, parts  # SQLite allocates through malloc; malloc is part of RSS
    anonymous, mapped = parts["resident_anonymous"], parts["resident_file"]
    assert anonymous is not None and mapped is not None, parts
    assert abs(anonymous + mapped - resident) < 0.05 * resident, parts  # one read of /proc/self/status
    assert in_use < anonymous, parts  # the heap is anonymous memory
    assert daemon.stop() == 0

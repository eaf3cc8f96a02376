"""The daemon killed with SIGKILL while it polls and writes (power cut, OOM killer), then restarted as systemd would:
history stays intact and owned, and collection resumes within one interval of the restart."""

from __future__ import annotations

import random
import time

import pytest

from collector.demo.model import CLOUD
from tests.faults.conftest import Estate
from tests.faults.harness import Daemon, integrity_problems, poll_times, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_kill_9_mid_write_repeatedly_loses_nothing_committed(daemon: Daemon, estate: Estate) -> None:
    rng = random.Random(12)
    daemon.start()
    wait_for(lambda: poll_times(estate.state_dir, "node5"), 60, "a first stored poll")
    for _ in range(5):
        time.sleep(rng.uniform(1.0, 4.0))  # lands inside a poll or a write at some point
        stored = {source: poll_times(estate.state_dir, source) for source in ("node5", CLOUD)}
        daemon.kill9()
        assert not integrity_problems(estate.state_dir)
        after_kill = {source: poll_times(estate.state_dir, source) for source in stored}
        for source, times in stored.items():
            assert set(times) <= set(after_kill[source]), f"{source}: committed polls vanished after kill -9"
        restarted = time.time()
        daemon.start()
        wait_for(
            lambda since=restarted: [t for t in poll_times(estate.state_dir, "node5") if t >= since - 1],
            2.0 + 10,
            "the hypervisors to be stored again within one interval of the restart (+ start-up)",
        )
        daemon.wait_metric("capacityd_source_up", lambda v: v == 1, timeout=30, source=CLOUD)
    assert daemon.stop() == 0
    assert not integrity_problems(estate.state_dir)

"""A collector shares a bounded pool of poll threads between its targets (real daemon, libvirt test driver)."""

from __future__ import annotations

import threading
from pathlib import Path

from collector.app.config import parse_config
from collector.app.daemon import Daemon
from tests.cluster.harness import free_port, wait_for

TARGETS = 24


def test_a_collector_polls_many_targets_on_a_bounded_pool(tmp_path: Path) -> None:
    config = parse_config(
        {
            "listen": f"127.0.0.1:{free_port()}",
            "state_dir": str(tmp_path / "state"),
            "sources": [
                {
                    "kind": "libvirt",
                    "name": f"h{i:02d}",
                    "uri": "test:///default",
                    "cloud": "lab",
                    "pool": "rack1",
                    "interval": "2s",
                }
                for i in range(TARGETS)
            ],
            "cluster": {"role": "collector", "workers": 3},
        }
    )
    daemon = Daemon(config)
    peak = 0
    try:
        daemon.start()

        def all_polled() -> bool:
            nonlocal peak
            peak = max(peak, sum(t.name.startswith("poll-") for t in threading.enumerate()))
            statuses = daemon.estate.snapshot().statuses
            return len(statuses) == TARGETS and all(s.polls_total >= 2 and s.up for s in statuses)

        wait_for(all_polled, 60, "every target polled twice", every=0.05)
    finally:
        daemon.stop()
    assert 1 <= peak <= 3, f"{peak} poll threads for {TARGETS} targets"
    assert daemon.poll_pool is not None and daemon.poll_pool.submitted_total >= 2 * TARGETS


def test_the_default_process_keeps_a_thread_per_source(tmp_path: Path) -> None:
    config = parse_config({"listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / "state")})
    daemon = Daemon(config)
    assert daemon.poll_pool is None and daemon.cluster.job_threads(10) == 10

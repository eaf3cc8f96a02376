"""Per-target scheduling (collector/app/targets.py): spread slots, bounded concurrency, a hung host isolated.

The hung host is real: a TCP listener that accepts libvirt's connection and never answers, so the
libvirt client blocks in its handshake, exactly as with a hypervisor whose libvirtd is wedged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from collector.app.config import parse_config
from collector.app.targets import FleetRunner, slot_offset
from collector.estate import Estate
from collector.sources.discovery.fleet import TargetFleet
from tests.discovery.conftest import write_node


def test_slot_offsets_are_stable_and_spread_over_the_interval() -> None:
    offsets = [slot_offset("kvm", f"host-{i}", 60.0) for i in range(1000)]
    assert offsets == [slot_offset("kvm", f"host-{i}", 60.0) for i in range(1000)]
    assert all(0 <= o < 60 for o in offsets)
    per_decile = Counter(int(o // 6) for o in offsets)
    assert len(per_decile) == 10 and max(per_decile.values()) < 140  # ~100 each: no burst


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections and never says a word (a wedged libvirtd)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_hung_host_never_delays_the_others(tmp_path: Path, silent_listener: int) -> None:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    hosts = ["h1", "h2", "h3", "h4"]
    groups = [{"targets": [h], "labels": {"uri": f"test://{write_node(nodes, h)}"}} for h in hosts]
    groups.append({"targets": ["wedged"], "labels": {"uri": f"qemu+tcp://127.0.0.1:{silent_listener}/system"}})
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps(groups))
    config = parse_config(
        {
            "sources": [
                {
                    "kind": "libvirt",
                    "name": "kvm",
                    "interval": "1s",
                    "discover": {"file_sd": [str(sd)], "uri": "{uri}", "max_concurrency": 2, "refresh_interval": "1s"},
                }
            ]
        }
    )
    fleet = config.sources[0].create_source()
    assert isinstance(fleet, TargetFleet)
    estate = Estate()
    estate.add_source("kvm", "libvirt", timedelta(seconds=1))
    runner = FleetRunner(fleet, estate, interval=1.0, timeout=0.8, publish_period=0.5).start()
    try:
        time.sleep(4.5)
        polls = Counter(identity for identity, _ in runner.started_at)
        assert all(polls[h] >= 3 for h in hosts), polls
        assert polls["wedged"] >= 1  # tried, and given up on after its own connect timeout (1 s)
        assert runner.inflight_peak <= 2
        table = estate.snapshot().frames["targets"].set_index("target")
        assert all(bool(table.loc[h, "up"]) for h in hosts)
        assert not bool(table.loc["wedged", "up"]) and table.loc["wedged", "last_error_reason"] in (
            "unreachable",
            "still_running",
        )
        status = next(s for s in estate.snapshot().statuses if s.name == "kvm")
        assert status.up and set(status.frames["hosts"]["host"]) == set(hosts)
    finally:
        runner.close()

"""Three real `capacityd run --role collector --shard i --total-shards 3` processes on libvirt test-driver
sources: every target is polled by exactly one of them, once per interval, as rendezvous hashing says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.app.cluster.sharding import assign, static_members
from tests.cluster.harness import Collector, free_port, libvirt_sources, wait_for, write_config

TARGETS = 12
INTERVAL = 2.0


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[list[Collector]]:
    running: list[Collector] = []
    try:
        for shard in range(3):
            port = free_port()
            sources = libvirt_sources(TARGETS, f"{INTERVAL:g}s")
            if shard == 0:  # shard 0 from its config keys, the others from the command line
                config = write_config(
                    tmp_path / f"c{shard}.yaml",
                    port,
                    tmp_path / f"state{shard}",
                    sources,
                    "  role: collector\n  shard: 0\n  total_shards: 3",
                )
                args: list[str] = []
            else:
                config = write_config(tmp_path / f"c{shard}.yaml", port, tmp_path / f"state{shard}", sources)
                args = ["--role", "collector", "--shard", str(shard), "--total-shards", "3"]
            running.append(Collector(config, port, tmp_path / f"c{shard}.log", args).start(wait=False))
        for collector in running:
            wait_for(collector.answers, 60, f"collector {collector.config_path.name}")
        yield running
    finally:
        for collector in running:
            collector.stop()


def test_every_target_polled_by_exactly_one_shard_once_per_interval(collectors: list[Collector]) -> None:
    names = [f"h{i:02d}" for i in range(TARGETS)]
    expected = assign(names, static_members(3))
    wait_for(
        lambda: all(
            len(c.polls()) == list(expected.values()).count(str(i)) and all(c.polls().values())
            for i, c in enumerate(collectors)
        ),
        60,
        "every shard polling its targets",
    )
    polled_by = {i: set(c.polls()) for i, c in enumerate(collectors)}
    assert set().union(*polled_by.values()) == set(names)
    for i, sources in polled_by.items():
        assert sources == {n for n, member in expected.items() if member == str(i)}, f"shard {i}"
        assert collectors[i].value("capacityd_shard_self", shard=str(i)) == 1.0
        assert collectors[i].value("capacityd_shard_members") == 3.0
        counts = {dict(k)["shard"]: v for k, v in collectors[i].samples("capacityd_shard_targets").items()}
        assert counts == {m: float(list(expected.values()).count(m)) for m in static_members(3)}
        assert collectors[i].value("capacityd_cluster_role", role="collector") == 1.0
    # polls over a window: each target's count grows on its owner only, by about window / interval
    before = [c.polls() for c in collectors]
    window = 5 * INTERVAL
    time.sleep(window)
    after = [c.polls() for c in collectors]
    for name in names:
        deltas = [a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before, strict=True)]
        owners = [i for i, d in enumerate(deltas) if d > 0]
        assert owners == [int(expected[name])], f"{name} polled by shards {owners}"
        assert window / INTERVAL - 2 <= sum(deltas) <= window / INTERVAL + 1, f"{name}: {sum(deltas)} polls"


def test_a_shard_outside_the_set_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.faults.harness import REPO

    config = write_config(tmp_path / "c.yaml", free_port(), tmp_path / "state", libvirt_sources(1))
    done = subprocess.run(
        [sys.executable, "-m", "collector", "run", "-c", str(config), "--shard", "3", "--total-shards", "3"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "--shard: shard must be below --total-shards (3)" in done.stderr

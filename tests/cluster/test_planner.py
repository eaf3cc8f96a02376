"""Three collectors on static shards + one planner pulling their /snapshot, against one `--role all` process
on the same real sources (libvirt test driver, the OpenStack stand-in of the demo estate): the planner serves
the same capacity and headroom rows, with the same slots; the collectors serve no planning family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.demo.model import CLOUD, REGION, build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from tests.cluster.harness import Collector, free_port, wait_for, write_config
from tests.faults.harness import NODE5, libvirt_source, openstack_source, parse_samples

PLANNING_PREFIXES = ("capacity_headroom", "capacity_reclaimable", "capacity_exhaustion")


def _families(text: str, prefix: str = "capacity_") -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Capacity and headroom samples. Forecasts (`capacity_exhaustion_seconds`) are left out: each process's
    first forecast pass runs once its first polls are in, and which polls made it there is a race in both."""
    return {
        (name, tuple(sorted(labels.items())), round(value, 9))
        for name, labels, value in parse_samples(text)
        if name.startswith(prefix) and not name.startswith(("capacityd_", "capacity_exhaustion"))
    }


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, object]]:
    server = StandinServer(from_demo_estate(build_estate(), growth_every=3600.0)).start()
    clouds_yaml = server.write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, REGION)
    sources = [
        openstack_source(CLOUD, clouds_yaml, CLOUD, "2s", region=REGION),
        libvirt_source("node5", f"test://{NODE5}", "2s"),
        libvirt_source("default", "test:///default", "2s"),
    ]
    running: list[Collector] = []
    try:
        ports = [free_port() for _ in range(3)]
        for shard, port in enumerate(ports):
            config = write_config(
                tmp_path / f"c{shard}.yaml",
                port,
                tmp_path / f"s{shard}",
                sources,
                f"  role: collector\n  shard: {shard}\n  total_shards: 3",
            )
            running.append(Collector(config, port, tmp_path / f"c{shard}.log").start(wait=False))
        urls = "".join(f"\n    - http://127.0.0.1:{port}" for port in ports)
        planner_port = free_port()
        config = write_config(
            tmp_path / "planner.yaml",
            planner_port,
            tmp_path / "sp",
            [],
            f"  role: planner\n  leader_election: false\n  pull_interval_seconds: 1\n  collectors:{urls}",
        )
        planner = Collector(config, planner_port, tmp_path / "planner.log").start(wait=False)
        running.append(planner)
        single_port = free_port()
        config = write_config(tmp_path / "all.yaml", single_port, tmp_path / "sa", sources)
        single = Collector(config, single_port, tmp_path / "all.log").start(wait=False)
        running.append(single)
        for process in running:
            wait_for(process.answers, 60, f"{process.config_path.name} to serve")
        yield {"collectors": running[:3], "planner": planner, "single": single}
    finally:
        for process in running:
            process.stop()
        server.stop()


def test_the_planner_serves_what_one_process_serves(deployment: dict[str, object]) -> None:
    planner, single = deployment["planner"], deployment["single"]
    collectors = deployment["collectors"]
    assert isinstance(planner, Collector) and isinstance(single, Collector) and isinstance(collectors, list)

    def all_up(process: Collector) -> bool:
        up = process.samples("capacityd_source_up")
        return len(up) == 3 and all(v == 1.0 for v in up.values())

    wait_for(lambda: all_up(planner) and all_up(single), 90, "planner and single process to see 3 sources up")
    # every source is polled by exactly one collector
    owners = [set(c.polls()) for c in collectors]
    assert sorted(n for o in owners for n in o) == sorted([CLOUD, "default", "node5"])

    def same() -> tuple[set, set] | None:
        ours, theirs = _families(planner.scrape()), _families(single.scrape())
        headroom = {s for s in theirs if s[0].startswith(PLANNING_PREFIXES)}
        return (ours, theirs) if headroom and headroom <= ours and ours == theirs else None

    try:
        wait_for(same, 60, "the planner's capacity and headroom to equal the single process's")
    except AssertionError:
        ours, theirs = _families(planner.scrape()), _families(single.scrape())
        raise AssertionError(
            f"only planner: {sorted(ours - theirs)[:10]}\nonly single: {sorted(theirs - ours)[:10]}"
        ) from None
    # the planner runs forecasts too: its first pass starts on a background thread after its first complete
    # pull, and takes seconds on a loaded machine
    wait_for(lambda: planner.samples("capacity_exhaustion_seconds"), 90, "the planner's first forecast pass")
    for collector in collectors:
        text = collector.scrape()
        assert not {s for s in _families(text) if s[0].startswith(PLANNING_PREFIXES)}
        assert "capacity_exhaustion_seconds{" not in text
    # static shards: a dead collector's targets are not moved; the planner shows them down and stale, data kept
    victim = next(c for c, o in zip(collectors, owners, strict=True) if o)
    lost = sorted(victim.polls())
    capacity_before = {s for s in _families(planner.scrape(), "capacity_resource_capacity")}
    victim.kill9()
    wait_for(
        lambda: all(
            planner.value("capacityd_source_up", source=n) == 0.0
            and planner.value("capacityd_source_stale", source=n) == 1.0
            and (planner.value("capacityd_source_errors_total", source=n, reason="unreachable") or 0) > 0
            for n in lost
        ),
        15,
        "the planner to show the dead collector's sources down and stale",
    )
    assert _families(planner.scrape(), "capacity_resource_capacity") == capacity_before
    others = [n for n in (CLOUD, "default", "node5") if n not in lost]
    assert all(planner.value("capacityd_source_up", source=n) == 1.0 for n in others)

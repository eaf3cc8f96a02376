"""Discovery benchmark (issue 16): 1000 discovered libvirt targets on one source, polled on a spread schedule.

    .venv/bin/python bench/bench_discovery.py [--targets 1000] [--interval 20] [--intervals 2] [--runs 3]

Each target is a real libvirt test-driver connection behind the URI template
`test://<dir>/{target}.xml` (a 5-domain node file per host, distinct domain uuids), listed in one
file_sd file. `FleetRunner` (collector/app/targets.py) polls them with `max_concurrency` 16, each at
its hash-spread slot. The interval is compressed (default 20 s) so several intervals fit in a run: the
work per interval does not depend on its length (every target is polled once, the merged frames are
published twice), so CPU seconds per interval at 20 s is what a 60 s interval costs, and the share of
one core at 60 s is that figure / 60.

Printed (median of --runs runs, each measuring --intervals steady-state intervals after a warm-up):
CPU seconds per interval (process user+system, includes the in-process test driver's own work, which a
remote libvirtd would do on the hypervisor), the share of one core at a 60 s interval, peak concurrent
polls (= connections in use at once; one connection per target is kept open and reused), the spread of
poll start times over the interval (busiest tenth of the interval vs the even 10 %, largest gap), RSS.
Baseline in the same run: the same targets as 1000 plain one-host libvirt sources, each polled once
sequentially (what the one-source-per-hypervisor config costs per interval, without spreading).
Target: one interval's work for 1000 hosts < 25 % of one core at 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.app.config import parse_config
from collector.app.targets import FleetRunner
from collector.estate import Estate
from collector.sources.discovery.fleet import TargetFleet
from collector.sources.libvirt.settings import LibvirtSourceConfig
from collector.sources.libvirt.source import LibvirtSource
from tests.discovery.conftest import write_node


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fleet_run(work: Path, hosts: list[str], interval: float, intervals: int) -> dict[str, float]:
    config = parse_config(
        {
            "sources": [
                {
                    "kind": "libvirt",
                    "name": "fleet",
                    "interval": f"{interval}s",
                    "discover": {
                        "file_sd": [str(work / "sd.json")],
                        "uri": f"test://{work / 'nodes'}/{{target}}.xml",
                        "max_concurrency": 16,
                        "refresh_interval": f"{interval}s",
                    },
                }
            ]
        }
    )
    fleet = config.sources[0].create_source()
    assert isinstance(fleet, TargetFleet)
    estate = Estate()
    estate.add_source("fleet", "libvirt", timedelta(seconds=interval))
    runner = FleetRunner(fleet, estate, interval=interval, timeout=interval * 0.8).start()
    try:
        time.sleep(interval * 1.2)  # warm-up: connections opened, definitions cached
        runner.inflight_peak = 0
        begin_cpu, begin = cpu(), time.monotonic()
        time.sleep(interval * intervals)
        spent, wall = cpu() - begin_cpu, time.monotonic() - begin
        starts = [at for _, at in runner.started_at if begin <= at < begin + wall]
        polled = Counter(identity for identity, at in runner.started_at if begin <= at < begin + wall)
        phase = sorted((at - begin) % interval for at in starts)
        tenths = Counter(int(p / interval * 10) for p in phase)
        gaps = [b - a for a, b in pairwise(phase)] or [interval]
        up = int(estate.snapshot().frames["targets"]["up"].sum())
        return {
            "cpu_per_interval": spent / (wall / interval),
            "peak": float(runner.inflight_peak),
            "busiest_tenth": max(tenths.values()) / max(len(phase), 1),
            "largest_gap": max(gaps),
            "polls_per_target": statistics.mean(polled[h] for h in hosts) / intervals,
            "up": float(up),
            "rss": rss_mib(),
        }
    finally:
        runner.close()


def baseline_run(work: Path, hosts: list[str]) -> float:
    """CPU seconds for one sequential poll of every host as its own plain source (connections kept)."""
    nodes = work / "nodes"
    sources = [
        LibvirtSource(LibvirtSourceConfig(kind="libvirt", name=f"kvm-{h}", uri=f"test://{nodes}/{h}.xml"))
        for h in hosts
    ]
    try:
        for source in sources:  # warm-up, like the fleet's first interval
            source.checked_poll(datetime.now(UTC))
        begin = cpu()
        for source in sources:
            source.checked_poll(datetime.now(UTC))
        return cpu() - begin
    finally:
        for source in sources:
            source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--intervals", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "nodes").mkdir()
        hosts = [f"kvm-{i:04d}" for i in range(args.targets)]
        for host in hosts:
            write_node(work / "nodes", host)
        (work / "sd.json").write_text(json.dumps([{"targets": hosts, "labels": {"pool": "az1"}}]))
        runs, baselines = [], []
        for _ in range(args.runs):
            runs.append(fleet_run(work, hosts, args.interval, args.intervals))
            baselines.append(baseline_run(work, hosts))
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    base = statistics.median(baselines)
    print(
        f"bench_discovery: {args.targets} discovered libvirt targets (test driver, 5 domains each), "
        f"interval compressed to {args.interval:g}s, {args.intervals} intervals x {args.runs} runs (medians)"
    )
    print(
        f"  CPU per interval (fleet, spread)       {med['cpu_per_interval']:.2f} s"
        f"  -> {med['cpu_per_interval'] / 60 * 100:.1f} % of one core at a 60 s interval (target < 25 %)"
    )
    print(
        f"  CPU per interval (baseline, {args.targets} plain sources polled sequentially) {base:.2f} s;"
        f" ratio fleet/baseline {med['cpu_per_interval'] / base:.2f}"
    )
    print(
        f"  peak concurrent polls (connections in use) {med['peak']:.0f} (max_concurrency 16); "
        f"{args.targets} connections open, reused"
    )
    print(
        f"  spread: busiest tenth of the interval holds {med['busiest_tenth'] * 100:.1f} % of poll starts "
        f"(even: 10 %), largest gap {med['largest_gap'] * 1000:.0f} ms; polls per target per interval "
        f"{med['polls_per_target']:.2f}; targets up {med['up']:.0f}"
    )
    print(f"  RSS {med['rss']:.0f} MiB")


if __name__ == "__main__":
    main()

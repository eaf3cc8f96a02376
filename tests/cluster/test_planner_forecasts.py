"""Issue 13: "headroom and forecasts from the planner equal those of a single `--role all` process on the same data".

Real processes only: one VictoriaMetrics backfilled with 14 days of hourly history of the demo estate's sources
(written by capacityd's own remote-write encoder, allocations growing), three static collectors + a planner pulling
their /snapshot, and one `--role all` process, all with `history.backend: remote` reading that VictoriaMetrics.
Their live writes go to a second VictoriaMetrics, so both forecast passes read exactly the same history (otherwise
the current hour's bucket would differ by whichever polls landed between the two passes).

Forecasts are compared as exhaustion *dates*: /metrics carries seconds from each pass's own `now`, so
`capacity_exhaustion_seconds + capacityd_analysis_last_success_timestamp_seconds{analysis="forecast"}` must agree
within the two passes' durations (the success stamp is taken when the pass ends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from collector.app.config import parse_config
from collector.app.daemon import collect_once
from collector.demo.model import CLOUD, REGION, build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from collector.store.remote.client import RemoteWriter
from collector.store.remote.samples import SeriesEncoder
from collector.store.settings import RemoteHistoryConfig
from tests.cluster.harness import Collector, free_port, wait_for, write_config
from tests.cluster.test_planner import PLANNING_PREFIXES, _families
from tests.faults.harness import NODE5, libvirt_source, openstack_source
from tests.remote.tsdb import Service, flush, victoria_metrics

pytestmark = pytest.mark.slow

DAYS = 14
SOURCES = (CLOUD, "node5", "default")


def backfill(service: Service, capacity: pd.DataFrame, end: datetime) -> int:
    """Hourly polls of every source over DAYS days before `end`: allocated (and used, where known) grow from 40 %
    to 100 % of today's value with a daily wave, so most pools get a finite exhaustion date. Returns samples."""
    writer = RemoteWriter(RemoteHistoryConfig(write_url=f"{service.url}/api/v1/write", max_retries=2))
    encoder = SeriesEncoder()
    hours = DAYS * 24
    written = 0
    for day in range(DAYS):
        series: list[bytes] = []
        count = 0
        for hour in range(day * 24, (day + 1) * 24):
            when = end - timedelta(hours=hours - hour)
            growth = 0.4 + 0.6 * hour / hours + 0.03 * math.sin(2 * math.pi * hour / 24)
            for source, frame in capacity.groupby("source", sort=True):
                grown = frame.assign(
                    allocated=np.minimum(frame["allocated"] * growth, frame["allocatable"]),
                    used=frame["used"] * growth,
                )
                part, samples = encoder.encode(str(source), grown, when)
                series += part
                count += samples
        assert writer.send(series, count) == "ok", writer.last_rejection
        written += count
    flush(service)
    return written


def history_yaml(write: Service, read: Service) -> str:
    return (
        f"history:\n  backend: remote\n  remote:\n    write_url: {write.url}/api/v1/write\n"
        f"    read_url: {read.url}\n    max_retries: 1\n"
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, Any]]:
    # Both passes must read the same hourly buckets: don't start within 3 minutes of an hour boundary.
    now = datetime.now(UTC)
    if now.minute >= 57:
        time.sleep((60 - now.minute) * 60 - now.second + 5)
    server = StandinServer(from_demo_estate(build_estate(), growth_every=3600.0)).start()
    stores: list[Service] = []
    running: list[Collector] = []
    try:
        for name in ("history", "live"):
            (tmp_path / name).mkdir()
            stores.append(victoria_metrics(tmp_path / name))
        history, live = stores
        clouds_yaml = server.write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, REGION)
        polled = collect_once(
            parse_config(
                {
                    "sources": [
                        {
                            "kind": "openstack",
                            "name": CLOUD,
                            "cloud": CLOUD,
                            "clouds_yaml": str(clouds_yaml),
                            "region": REGION,
                        },
                        {"kind": "libvirt", "name": "node5", "uri": f"test://{NODE5}"},
                        {"kind": "libvirt", "name": "default", "uri": "test:///default"},
                    ]
                }
            ),
            analyses=False,
        )
        capacity = polled.frames["capacity"]
        assert sorted(capacity["source"].unique()) == sorted(SOURCES)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        assert backfill(history, capacity, end) > 0
        sources = [
            openstack_source(CLOUD, clouds_yaml, CLOUD, "2s", region=REGION),
            libvirt_source("node5", f"test://{NODE5}", "2s"),
            libvirt_source("default", "test:///default", "2s"),
        ]
        extra = history_yaml(live, history)

        def start(name: str, sources: list[str], cluster: str) -> Collector:
            port = free_port()
            config = write_config(tmp_path / f"{name}.yaml", port, tmp_path / f"state-{name}", sources, cluster)
            config.write_text(config.read_text() + extra)
            process = Collector(config, port, tmp_path / f"{name}.log")
            running.append(process)
            return process.start(wait=False)

        collectors = [
            start(f"c{shard}", sources, f"  role: collector\n  shard: {shard}\n  total_shards: 3") for shard in range(3)
        ]
        urls = "".join(f"\n    - http://127.0.0.1:{c.port}" for c in collectors)
        planner = start("planner", [], f"  role: planner\n  leader_election: false\n  pull_interval_seconds: 1\n"
                                        f"  collectors:{urls}")  # fmt: skip
        single = start("all", sources, "")
        for process in running:
            wait_for(process.answers, 60, f"{process.config_path.name} to serve")
        yield {"planner": planner, "single": single, "collectors": collectors}
    finally:
        for process in running:
            process.stop()
        for store in stores:
            store.stop()
        server.stop()


def forecast_pass(process: Collector) -> tuple[float, float] | None:
    """(end of the last successful forecast pass, its duration), or None before the first one."""
    stamp = process.value("capacityd_analysis_last_success_timestamp_seconds", analysis="forecast")
    duration = process.value("capacityd_analysis_duration_seconds", analysis="forecast")
    return (stamp, duration or 0.0) if stamp else None


def exhaustion(
    process: Collector,
) -> tuple[dict[tuple[tuple[str, str], ...], float], dict[tuple[tuple[str, str], ...], float]]:
    return process.samples("capacity_exhaustion_seconds"), process.samples("capacity_exhaustion_info")


def test_the_planner_forecasts_and_headroom_equal_one_process_on_the_same_history(
    deployment: dict[str, Any],
) -> None:
    planner, single, collectors = deployment["planner"], deployment["single"], deployment["collectors"]

    def ready(process: Collector) -> bool:
        up = process.samples("capacityd_source_up")
        return len(up) == 3 and all(v == 1.0 for v in up.values()) and bool(process.samples("capacity_exhaustion_info"))

    wait_for(lambda: ready(planner) and ready(single), 120, "planner and single process to forecast on 3 sources up")
    # headroom rows and slots (and capacity) equal, as in test_planner.py
    wait_for(
        lambda: (lambda ours, theirs: ours == theirs and {s for s in theirs if s[0].startswith(PLANNING_PREFIXES)})(
            _families(planner.scrape()), _families(single.scrape())
        ),
        60,
        "the planner's capacity and headroom to equal the single process's",
    )
    seconds_p, info_p = exhaustion(planner)
    seconds_s, info_s = exhaustion(single)
    pass_p, pass_s = forecast_pass(planner), forecast_pass(single)
    assert pass_p is not None and pass_s is not None
    assert time.gmtime(pass_p[0] - pass_p[1]).tm_hour == time.gmtime(pass_s[0] - pass_s[1]).tm_hour, (
        "the two passes fell in different hours (different hourly buckets); rerun"
    )
    # every pool and resource of the backfill is forecast, with the same reason, by both
    assert info_p == info_s
    reasons = {dict(k)["reason"] for k in info_s}
    assert "within_horizon" in reasons, reasons  # the growth gives real dates, not only +Inf
    pools = {(dict(k)["layer"], dict(k)["pool"]) for k in info_s}
    assert {("openstack", "az1"), ("openstack", "az2"), ("hypervisor", "default")} <= pools
    assert seconds_p.keys() == seconds_s.keys()
    tolerance = pass_p[1] + pass_s[1] + 2.0
    finite = 0
    for key, theirs in seconds_s.items():
        ours = seconds_p[key]
        if math.isinf(theirs) or math.isinf(ours) or min(ours, theirs) <= 0:  # not within horizon / exhausted now
            assert ours == theirs, key
            continue
        finite += 1
        # the same exhaustion date, whatever the pass's own `now`
        assert abs((ours + pass_p[0]) - (theirs + pass_s[0])) <= tolerance, (key, ours, theirs, pass_p, pass_s)
    assert finite >= 3
    # collectors serve their own remote-write health (never an analysis of their partial view)
    polling = [c for c in collectors if c.polls()]
    assert polling
    for collector in collectors:
        assert "capacityd_remote_storage_samples_total " in collector.scrape()
        assert "capacity_exhaustion_seconds{" not in collector.scrape()
    for collector in polling:
        wait_for(
            lambda c=collector: (c.value("capacityd_remote_storage_samples_total") or 0) > 0,
            30,
            f"{collector.config_path.name} to show its remote writes",
        )

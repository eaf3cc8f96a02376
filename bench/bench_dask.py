"""Forecasts on Dask vs the local executor, on pool series stored in a real History.

    .venv/bin/python bench/bench_dask.py [--series 10000] [--days 28] [--workers 2] [--runs 3]

Fills a History (SQLite, backfill) with N pool series (N/2 keys x allocated/used, hourly), then times
one forecast pass: the local executor (threads), Dask with tasks reading their own keys' series
(`forecast.executor: dask`), and the "ship frames" anti-pattern (the client reads every series and
sends the chunks' frames to the workers) for comparison. Medians of --runs; ratios against the local
executor measured in the same run. CPU is this (client) process's; the workers' own CPU is on top.
The LocalCluster is started once, before timing (a daemon joins a running scheduler).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.analyses.forecast.api import pool_series_for_forecast
from collector.analyses.forecast.engine import ForecastOptions
from collector.analyses.forecast.executor import forecast_frame, forecast_pools, list_keys, source_of
from collector.analyses.forecast.settings import ForecastConfig
from collector.store.history import History
from collector.store.settings import HistoryConfig

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def fill(history: History, keys: int, days: int) -> None:
    rng = np.random.default_rng(7)
    stamps = pd.date_range(NOW - timedelta(days=days), NOW, freq="h", inclusive="left")
    t = np.arange(len(stamps), dtype=float)
    for start in range(0, keys, 500):
        parts = []
        for i in range(start, min(keys, start + 500)):
            allocated = 200 + rng.uniform(0, 6) * t / 24 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, len(t))
            parts.append(pd.DataFrame({
                "timestamp": stamps, "source": "openstack-a", "layer": "openstack", "cloud": f"c{i % 4}",
                "pool": f"pool{i:05d}", "resource": "vcpu", "capacity": 1500.0, "allocatable": 1500.0,
                "allocated": allocated, "used": allocated * 0.6, "hosts": 4,
            }))  # fmt: skip
        history.backfill(pd.concat(parts, ignore_index=True))


def timed(run: Callable[[], int], runs: int) -> tuple[float, float, int]:
    walls, cpus, rows = [], [], 0
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        rows = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1000, help="keys per Dask task (500-2,500)")
    args = parser.parse_args()
    import distributed

    lookback = timedelta(days=args.days)
    with tempfile.TemporaryDirectory() as tmp, History.open(Path(tmp), HistoryConfig()) as history:
        began = time.perf_counter()
        fill(history, args.series // 2, args.days)
        history.flush()
        print(f"filled {args.series} series x {args.days} days hourly in {time.perf_counter() - began:.1f} s")
        local_config = ForecastConfig(lookback=lookback)
        dask_config = ForecastConfig(
            lookback=lookback, executor="dask", local_cluster_workers=args.workers, dask_chunk_series=args.chunk
        )
        with (
            distributed.LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            distributed.Client(cluster) as client,
        ):

            def local() -> int:
                return len(forecast_pools(history, local_config, now=NOW)[0])

            def dask_keys() -> int:
                return len(forecast_pools(history, dask_config, now=NOW, client=client)[0])

            def ship_frames() -> int:  # the anti-pattern: the client reads and sends every chunk's frame
                keys = list_keys(source_of(history), NOW, lookback)
                frame = pool_series_for_forecast(history, NOW, lookback)
                first = int(frame["timestamp"].min().timestamp() // 3600)
                total = frame[["layer", "cloud", "pool", "resource", "basis"]].drop_duplicates().shape[0]
                chunks = []
                for start in range(0, len(keys), args.chunk):
                    pools = {k[2] for k in keys[start : start + args.chunk]}
                    chunks.append(frame[frame["pool"].isin(pools)])
                futures = client.map(
                    forecast_frame,
                    chunks,
                    now=NOW,
                    horizon=timedelta(days=180),
                    options=ForecastOptions(),
                    total=total,
                    first_bucket=first,
                    pure=False,
                )
                return sum(len(r[0]) for r in client.gather(futures))

            dask_keys()  # warm the workers' imports
            results = {
                name: timed(run, args.runs)
                for name, run in (
                    ("local executor", local),
                    ("dask: tasks read their keys", dask_keys),
                    ("dask: ship frames", ship_frames),
                )
            }
    base = results["local executor"][0]
    print(
        f"{args.series} series, {args.days} days hourly, {args.workers} workers, {args.chunk} keys/task, "
        f"median of {args.runs}"
    )
    print(f"{'executor':32} {'wall s':>8} {'client CPU s':>13} {'rows':>7} {'vs local':>9}")
    for name, (wall, cpu, rows) in results.items():
        print(f"{name:32} {wall:8.2f} {cpu:13.2f} {rows:7d} {wall / base:8.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark of the history store (collector/store/history.py): append throughput and read latency at estate size.

Prints medians of several runs, each next to a baseline measured in the same run:

* appends, one source with 1000 hosts x 4 resources (+ 20k VMs) per poll: synchronous=NORMAL vs FULL;
* appends, 1000 one-host sources (the libvirt layout): NORMAL vs FULL;
* 150k pods per poll: buffered hourly accumulation vs upserting every consumer on every poll;
* reads over 8 weeks of 1000 hosts x 4 resources polled every 60 s by 20 sources (2 per pool, 10 pools),
  stored as the default config says (8 days raw, hourly beyond; host rows 2 days raw): one pool's and all
  pools' 8-week series, one pool's 8 days at 5 minutes against a naive pandas read-and-resample.

    .venv/bin/python bench/bench_history.py [--quick] [--keep DIR] [--parts big,many,consumers,reads]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from collector.store.history import History
from collector.store.settings import HistoryConfig

NOW = datetime(2026, 5, 4, tzinfo=UTC)
RESOURCES = {"vcpu": 256.0, "memory": 1024 * 2.0**30, "disk": 8 * 2.0**40, "pcpu": 64.0}


def table_sizes(path: Path, tables: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """(rows, bytes) per table, its indexes included (SQLite's dbstat)."""
    con = sqlite3.connect(path)
    try:
        pages = dict(con.execute(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
            "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
        ).fetchall())  # fmt: skip
        return {t: (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0], pages.get(t, 0)) for t in tables}
    finally:
        con.close()


def print_sizes(sizes: dict[str, tuple[int, int]]) -> dict[str, float]:
    per_row = {}
    for table, (rows, size) in sizes.items():
        per_row[table] = size / rows if rows else float("nan")
        print(f"  {table:<16} {rows:>12,} rows {size / 2**20:>9,.1f} MiB {per_row[table]:>6.1f} B/row")
    return per_row


def median_time(func: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def capacity_frame(source: str, hosts: list[str], pools: list[str], when: datetime, rng: np.random.Generator,
                   layer: str = "openstack") -> pd.DataFrame:  # fmt: skip
    n = len(hosts) * len(RESOURCES)
    capacity = np.tile(np.array(list(RESOURCES.values())), len(hosts))
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp(when).as_unit("ns"),
            "source": pd.array([source] * n, dtype="string"),
            "layer": pd.array([layer] * n, dtype="string"),
            "cloud": pd.array(["prod"] * n, dtype="string"),
            "pool": pd.array(np.repeat(pools, len(RESOURCES)), dtype="string"),
            "host": pd.array(np.repeat(hosts, len(RESOURCES)), dtype="string"),
            "scope": pd.array(["host"] * n, dtype="string"),
            "resource": pd.array(list(RESOURCES) * len(hosts), dtype="string"),
            "capacity": capacity,
            "reserved": np.zeros(n),
            "allocation_ratio": np.ones(n),
            "allocatable": capacity,
            "allocated": capacity * rng.uniform(0.3, 0.9, n),
            "used": capacity * rng.uniform(0.1, 0.6, n),
        }
    )


def consumers_frame(source: str, count: int, when: datetime, rng: np.random.Generator,
                    layer: str = "openstack") -> pd.DataFrame:  # fmt: skip
    i = np.arange(count)
    strings = {
        "source": [source] * count,
        "layer": [layer] * count,
        "cloud": ["prod"] * count,
        "pool": [f"pool-{k % 10:02d}" for k in i],
        "host": [f"host-{k % 1000:04d}" for k in i],
        "id": [f"{k:08x}-0000-4000-8000-{k:012x}" for k in i],
        "name": [f"vm-{k}" for k in i],
        "state": ["running"] * count,
        "project": [f"{k % 500:032x}" for k in i],
        "flavor": [f"m1.{('small', 'medium', 'large', 'xlarge')[k % 4]}" for k in i],
    }
    frame = pd.DataFrame({k: pd.array(v, dtype="string") for k, v in strings.items()})
    frame.insert(0, "timestamp", pd.Timestamp(when).as_unit("ns"))
    frame["holds_capacity"] = True
    frame["cpu"] = (1.0 + i % 8).astype(float)
    frame["memory"] = (2.0**31) * (1 + i % 8)
    frame["cpu_used"] = rng.uniform(0, 1, count) * frame["cpu"]
    frame["memory_used"] = rng.uniform(0.2, 0.9, count) * frame["memory"]
    return frame


def bench_one_big_source(workdir: Path, runs: int, consumers: int) -> None:
    rng = np.random.default_rng(1)
    hosts = [f"host-{h:04d}" for h in range(1000)]
    pools = [f"pool-{h % 10:02d}" for h in range(1000)]
    results = {}
    for sync in ("NORMAL", "FULL"):
        path = workdir / f"big-{sync}"
        history = History.open(path, HistoryConfig())
        history._writer.execute(f"PRAGMA synchronous = {sync}")
        frames = [
            {"capacity": capacity_frame("os", hosts, pools, NOW + timedelta(minutes=m), rng),
             "consumers": consumers_frame("os", consumers, NOW + timedelta(minutes=m), rng)}
            for m in range(runs + 1)
        ]  # fmt: skip
        history.append("os", frames[0], NOW)  # first poll interns keys: not the steady state
        minute = iter(range(1, runs + 1))

        def poll(history: History = history, frames: list = frames, minute=minute) -> None:
            m = next(minute)
            history.append("os", frames[m], NOW + timedelta(minutes=m))

        results[sync] = median_time(poll, runs)
        history.close()
    rows = 4000
    print(f"append, 1 source x 1000 hosts x 4 resources + {consumers} VMs per poll (median of {runs}):")
    for sync, seconds in results.items():
        print(f"  synchronous={sync:<6} {seconds * 1000:8.1f} ms/poll  {rows / seconds:10,.0f} host rows/s")
    print(f"  FULL / NORMAL = {results['FULL'] / results['NORMAL']:.2f}x")


def bench_many_small_sources(workdir: Path, sources: int) -> None:
    rng = np.random.default_rng(2)
    results = {}
    for sync in ("NORMAL", "FULL"):
        history = History.open(workdir / f"many-{sync}", HistoryConfig())
        history._writer.execute(f"PRAGMA synchronous = {sync}")
        frames = {
            s: {"capacity": capacity_frame(f"kvm-{s:04d}", [f"kvm-{s:04d}"], [f"pool-{s % 10:02d}"], NOW, rng,
                                           layer="hypervisor"),
                "consumers": consumers_frame(f"kvm-{s:04d}", 20, NOW, rng, layer="hypervisor")}
            for s in range(sources)
        }  # fmt: skip
        for s in range(sources):
            history.append(f"kvm-{s:04d}", frames[s], NOW)
        timings = []
        for m in range(1, 4):
            started = time.perf_counter()
            for s in range(sources):
                history.append(f"kvm-{s:04d}", frames[s], NOW + timedelta(minutes=m))
            timings.append(time.perf_counter() - started)
        results[sync] = statistics.median(timings)
        history.close()
    print(f"append, {sources} one-host sources x 4 resources + 20 VMs each (one poll round, median of 3):")
    for sync, seconds in results.items():
        print(f"  synchronous={sync:<6} {seconds:8.2f} s/round  {sources / seconds:10,.0f} appends/s")
    print(f"  FULL / NORMAL = {results['FULL'] / results['NORMAL']:.2f}x")


def bench_consumers(workdir: Path, count: int, runs: int) -> None:
    rng = np.random.default_rng(3)
    frames = [{"consumers": consumers_frame("k8s", count, NOW, rng, layer="kubernetes")} for _ in range(runs + 1)]
    for frame in frames:
        frame["consumers"]["cpu_used"] = rng.uniform(0, 1, count)
    history = History.open(workdir / "consumers", HistoryConfig())
    history.append("k8s", frames[0], NOW)
    history.flush()
    minute = iter(range(1, 2 * runs + 2))

    def buffered() -> None:
        m = next(minute)
        history.append("k8s", frames[m % len(frames)], NOW + timedelta(minutes=m))

    def upsert_every_poll() -> None:
        buffered()
        history.flush()

    buffered_s = median_time(buffered, runs)
    flush_s = median_time(history.flush, 1)
    upsert_s = median_time(upsert_every_poll, runs)
    read_s = median_time(lambda: history.consumer_usage(start=NOW, end=NOW + timedelta(hours=1)), 3)
    read_rows = len(history.consumer_usage(start=NOW, end=NOW + timedelta(hours=1)))
    history.close()
    sizes = table_sizes(workdir / "consumers" / "history.sqlite", ("consumer_hourly", "consumer_keys"))
    print(f"per-consumer usage, {count:,} pods per poll (median of {runs}):")
    print(f"  buffered in memory  {buffered_s * 1000:8.1f} ms/poll (+ one flush of {flush_s * 1000:.0f} ms "
          f"per 10 min / hour change)")  # fmt: skip
    print(f"  upsert every poll   {upsert_s * 1000:8.1f} ms/poll  -> buffered is {upsert_s / buffered_s:.1f}x cheaper")
    print(f"  consumer_usage() of one hour: {read_s * 1000:.0f} ms for {read_rows:,} rows")
    print("  stored:")
    print_sizes(sizes)


def populate(path: Path, config: HistoryConfig, weeks: int, hosts: int, sources: int) -> History:
    """8 weeks of 1000 hosts x 4 resources every 60 s, stored the way the daemon leaves it."""
    history = History.open(path, config)
    start = NOW - timedelta(weeks=weeks)
    per_source = hosts // sources
    rng = np.random.default_rng(4)
    # Keys: one real poll per source.
    for s in range(sources):
        names = [f"host-{s * per_source + h:04d}" for h in range(per_source)]
        frame = capacity_frame(f"src-{s:02d}", names, [f"pool-{s // 2:02d}"] * per_source, start, rng)
        history.append(f"src-{s:02d}", {"capacity": frame}, start)
    # Pool history through backfill, a week at a time (what the demo does), then compaction.
    minutes = pd.date_range(start, NOW, freq="60s", inclusive="left")
    for week in range(weeks):
        stamps = minutes[(minutes >= start + timedelta(weeks=week)) & (minutes < start + timedelta(weeks=week + 1))]
        phase = (stamps.hour.to_numpy() * 60 + stamps.minute.to_numpy()) / 1440 * 2 * np.pi
        parts = []
        for s in range(sources):
            for resource, size in RESOURCES.items():
                total = size * per_source
                load = 0.5 + 0.1 * np.sin(phase) + 0.05 * (week / weeks) + rng.normal(0, 0.01, len(stamps))
                parts.append(pd.DataFrame({
                    "timestamp": stamps, "source": f"src-{s:02d}", "layer": "openstack", "cloud": "prod",
                    "pool": f"pool-{s // 2:02d}", "resource": resource, "capacity": total, "reserved": 0.0,
                    "allocatable": total, "allocated": total * (load + 0.2), "used": total * load,
                    "hosts": per_source,
                }))  # fmt: skip
        history.backfill(pd.concat(parts, ignore_index=True))
        history.compact(stamps[-1].to_pydatetime() + timedelta(minutes=10))
    history.compact(NOW)
    # Host rows: hourly rollups for the whole span, every poll for host_raw_retention; written directly in
    # SQL because 17M rows through append would take the benchmark's whole budget.
    con = sqlite3.connect(path / "history.sqlite")
    hkeys = [k for (k,) in con.execute("SELECT hkey FROM host_keys ORDER BY hkey")]
    step = int(config.downsample_step.total_seconds())
    raw_from = int((NOW - config.host_raw_retention).timestamp())
    hours = np.arange(int(max(start, NOW - config.host_retention).timestamp()) // step * step, raw_from, step)
    keys = np.array(hkeys)
    for chunk in np.array_split(hours, max(1, len(hours) // 48)):
        ts = np.repeat(chunk, len(keys))
        k = np.tile(keys, len(chunk))
        v = rng.uniform(0, 100, len(ts))
        con.executemany(
            "INSERT OR REPLACE INTO host_rollup VALUES (?, ?, 100, 100, ?, ?, 60, ?, ?, 60, 60)",
            zip(k.tolist(), ts.tolist(), v.tolist(), (v * 1.1).tolist(), (v / 2).tolist(), (v / 1.5).tolist(),
                strict=True),
        )  # fmt: skip
        con.commit()
    for chunk in np.array_split(np.arange(raw_from, int(NOW.timestamp()), 60), 48):
        ts = np.repeat(chunk, len(keys))
        k = np.tile(keys, len(chunk))
        v = rng.uniform(0, 100, len(ts))
        con.executemany(
            "INSERT OR REPLACE INTO host_raw VALUES (?, ?, 100, 100, ?, ?)",
            zip(ts.tolist(), k.tolist(), v.tolist(), (v / 2).tolist(), strict=True),
        )
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return history


def naive_resample(path: Path, pool: str, start: datetime) -> pd.DataFrame:
    """Baseline: read the pool's raw rows and resample/sum them in pandas."""
    con = sqlite3.connect(path)
    frame = pd.read_sql_query(
        "SELECT k.source, k.resource, r.ts, r.capacity, r.allocatable, r.allocated, r.used, r.hosts FROM pool_raw r "
        "JOIN pool_keys k ON k.pkey = r.pkey WHERE k.pool = ? AND r.ts >= ?",
        con,
        params=(pool, int(start.timestamp())),
    )
    con.close()
    frame["timestamp"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    per_source = (
        frame.set_index("timestamp").groupby(["source", "resource"])[["capacity", "allocatable", "allocated", "used",
                                                                      "hosts"]]
        .resample("5min").mean().groupby(level=[0, 1]).ffill(limit=1)
    )  # fmt: skip
    return per_source.groupby(level=["resource", "timestamp"]).sum(min_count=1)


def bench_reads(workdir: Path, weeks: int, runs: int) -> None:
    config = HistoryConfig()
    path = workdir / "estate"
    started = time.perf_counter()
    history = populate(path, config, weeks, hosts=1000, sources=20)
    built = time.perf_counter() - started
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"estate: 1000 hosts x 4 resources, 20 sources in 10 pools, {weeks} weeks at 60 s, default retention "
          f"(built in {built:.0f} s); files {size / 2**20:,.0f} MiB:")  # fmt: skip
    per_row = print_sizes(
        table_sizes(path / "history.sqlite", ("pool_raw", "pool_rollup", "host_raw", "host_rollup", "host_keys"))
    )
    # What the default config keeps at steady state for 1000 hosts x 4 resources polled every 60 s.
    days_raw, days_host_raw = config.raw_retention.days, config.host_raw_retention.days
    days, hourly = config.retention.days, 86400 // int(config.downsample_step.total_seconds())
    steady = {
        "host_raw": 4000 * 1440 * days_host_raw * per_row["host_raw"],
        "host_rollup": 4000 * hourly * config.host_retention.days * per_row["host_rollup"],
        "pool_raw (per pool key)": 1440 * days_raw * per_row["pool_raw"],
        "pool_rollup (per pool key)": hourly * days * per_row["pool_rollup"],
    }
    print(f"  steady state with the default config ({days_host_raw} d host raw, {config.host_retention.days} d host "
          f"hourly, {days_raw} d pool raw, {days} d pool hourly):")  # fmt: skip
    for name, value in steady.items():
        print(f"    {name:<28} {value / 2**20:>10,.1f} MiB")
    start = NOW - timedelta(weeks=weeks)
    one = median_time(lambda: history.pool_series(pool="pool-03", start=start, end=NOW), runs)
    series = history.pool_series(pool="pool-03", start=start, end=NOW)
    every = median_time(lambda: history.pool_series(start=start, end=NOW), runs)
    all_series = history.pool_series(start=start, end=NOW)
    raw_start = NOW - config.raw_retention
    fine = median_time(lambda: history.pool_series(pool="pool-03", start=raw_start, end=NOW), runs)
    fine_rows = len(history.pool_series(pool="pool-03", start=raw_start, end=NOW))
    naive = median_time(lambda: naive_resample(path / "history.sqlite", "pool-03", raw_start), runs)
    host_raw = median_time(lambda: history.host_series(host="host-0042", start=NOW - timedelta(days=2)), runs)
    host_all = median_time(lambda: history.host_series(host="host-0042", start=start), runs)
    print(f"reads (median of {runs}):")
    print(f"  one pool, {weeks} weeks hourly        {one * 1000:8.1f} ms  ({len(series):,} rows, 4 resources)")
    print(f"  all 10 pools, {weeks} weeks hourly    {every * 1000:8.1f} ms  ({len(all_series):,} rows)")
    print(f"  one pool, 8 days at 5 min       {fine * 1000:8.1f} ms  ({fine_rows:,} rows); naive pandas "
          f"read+resample {naive * 1000:.1f} ms -> {naive / fine:.1f}x")  # fmt: skip
    print(f"  one host, 2 days raw            {host_raw * 1000:8.1f} ms")
    print(f"  one host, {weeks} weeks (mixed)       {host_all * 1000:8.1f} ms")
    started = time.perf_counter()
    history.compact(NOW + timedelta(minutes=1))
    print(f"  compact with nothing to do      {(time.perf_counter() - started) * 1000:8.1f} ms")
    history.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--parts", default="big,many,consumers,reads", help="comma-separated subset to run")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-history-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runs, parts = (3 if args.quick else 7), set(args.parts.split(","))
        if "big" in parts:
            bench_one_big_source(workdir, runs, consumers=2000 if args.quick else 20000)
        if "many" in parts:
            bench_many_small_sources(workdir, 100 if args.quick else 1000)
        if "consumers" in parts:
            bench_consumers(workdir, 15000 if args.quick else 150000, 3 if args.quick else 5)
        if "reads" in parts:
            bench_reads(workdir, 1 if args.quick else 8, 3 if args.quick else 5)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

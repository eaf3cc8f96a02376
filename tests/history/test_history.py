"""History store behaviour: aggregation, carry-forward, unknown values, retention, clocks, consumers."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.contract.schema import CAPACITY
from collector.store.history import SCHEMA_VERSION, History, HistoryError
from collector.store.settings import HistoryConfig
from tests.history.frames import RESOURCES, capacity_frame, consumers_frame

MIN = timedelta(minutes=1)
CPU = RESOURCES["cpu"]


def at(t0: datetime, minutes: float) -> datetime:
    return t0 + timedelta(minutes=minutes)


def raw_rows(history: History, table: str) -> int:
    with sqlite3.connect(history.path) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ---------------------------------------------------------------- pool sums


def test_pool_sums_count_hosts_and_add_pool_scope_rows(history: History, t0: datetime) -> None:
    frame = capacity_frame(t0, pools=("az1", "az2"), hosts_per_pool=3, resources=("cpu", "disk"))
    shared = frame.iloc[[0]].assign(host="ceph", scope="pool", resource="disk", capacity=1e15, allocatable=1e15,
                                    allocated=2e14, used=1e14)  # fmt: skip
    frame = CAPACITY.coerce(pd.concat([frame, shared], ignore_index=True))
    history.append("src", {"capacity": frame}, t0)
    series = history.pool_series().set_index(["pool", "resource"])
    assert series.loc[("az1", "cpu"), "capacity"] == 3 * CPU
    assert series.loc[("az1", "cpu"), "hosts"] == 3
    # The shared-storage provider adds its capacity to its pool, but is not a host.
    assert series.loc[("az1", "disk"), "capacity"] == 3 * RESOURCES["disk"] + 1e15
    assert series.loc[("az1", "disk"), "hosts"] == 3
    assert series.loc[("az2", "disk"), "capacity"] == 3 * RESOURCES["disk"]
    assert series.loc[("az1", "cpu"), "allocated"] == 3 * CPU * 0.5
    assert list(history.pool_series().columns[:5]) == ["timestamp", "layer", "cloud", "pool", "resource"]
    assert str(series["capacity"].dtype) == "float64"
    assert str(history.pool_series()["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_a_range_ending_within_the_second_of_a_poll_includes_it(history: History, t0: datetime) -> None:
    """A poll at 21.04 s is stored at second 21; a read ending at 21.738 s (a forecast started right after the
    poll, as a planner does after a pull) must see it — the floored end used to drop it, so the planner's
    first forecast pass read no history and served no exhaustion dates."""
    polled = t0 + timedelta(seconds=21.04)
    history.append("src", {"capacity": capacity_frame(polled, pools=("az1",), hosts_per_pool=2)}, polled)
    now = t0 + timedelta(seconds=21.738)
    for step in (None, timedelta(hours=1)):
        series = history.pool_series(start=now - timedelta(days=1), end=now, step=step).dropna(subset=["capacity"])
        assert len(series) and set(series["pool"]) == {"az1"}, step
    assert len(history.host_series(start=now - timedelta(hours=1), end=now).dropna(subset=["capacity"]))
    # a whole-second end stays exclusive: the same poll is not in a range ending at second 21
    assert not len(history.pool_series(start=t0, end=t0 + timedelta(seconds=21)).dropna(subset=["capacity"]))


def test_sources_are_summed_with_bounded_carry_forward(history: History, t0: datetime) -> None:
    # s1: one host, polled every minute, silent from minute 10 to 19; s2: two hosts, every 2 minutes.
    for m in range(30):
        if not 10 <= m < 20:
            frame = capacity_frame(at(t0, m), source="s1", hosts_per_pool=1, resources=("cpu",), host_prefix="a")
            history.append("s1", {"capacity": frame}, at(t0, m))
    for k in range(15):
        when = at(t0, 0.5 + 2 * k)
        history.append("s2", {"capacity": capacity_frame(when, source="s2", hosts_per_pool=2, resources=("cpu",),
                                                         host_prefix="b")}, when)  # fmt: skip
    series = history.pool_series(resource="cpu", step=MIN).set_index("timestamp")["capacity"]
    assert len(series) == 30 and series.index[0] == t0
    assert series[at(t0, 0)] == 3 * CPU
    assert series[at(t0, 1)] == 3 * CPU  # s2 carried over its odd minutes
    assert series[at(t0, 10)] == 3 * CPU  # s1's last value, still within 2 of its poll intervals
    for m in range(13, 20):
        assert series[at(t0, m)] == 2 * CPU, f"minute {m}: s1's gap must stay a gap, not be carried"
    assert series[at(t0, 20)] == 3 * CPU
    # Both silent: a gap is NaN (never 0), and the grid stays regular.
    for k in range(3):
        when = at(t0, 60 + k)
        history.append("s1", {"capacity": capacity_frame(when, source="s1", hosts_per_pool=1, resources=("cpu",),
                                                         host_prefix="a")}, when)  # fmt: skip
    series = history.pool_series(resource="cpu", step=MIN).set_index("timestamp")["capacity"]
    assert len(series) == 63
    assert series[at(t0, 40) : at(t0, 59)].isna().all()
    assert series[at(t0, 61)] == CPU


def test_step_buckets_average_and_keep_the_max(history: History, t0: datetime) -> None:
    for m in range(10):
        history.append("src", {"capacity": capacity_frame(at(t0, m), hosts_per_pool=1, resources=("cpu",),
                                                          used=m / 10)}, at(t0, m))  # fmt: skip
    series = history.pool_series(step=timedelta(minutes=5))
    assert series["used"].tolist() == pytest.approx([CPU * 0.2, CPU * 0.7])
    assert series["used_max"].tolist() == pytest.approx([CPU * 0.4, CPU * 0.9])
    assert history.pool_series(start=at(t0, 5))["timestamp"].tolist() == [at(t0, 5)]


# ---------------------------------------------------------------- unknown values


def test_unknown_usage_stays_unknown_everywhere(history: History, t0: datetime) -> None:
    used = np.full(4, np.nan)
    used[0] = 0.5  # pool az1: one host of four knows its usage
    for m in range(120):
        when = at(t0, m)
        frames = {
            "capacity": pd.concat(
                [capacity_frame(when, hosts_per_pool=4, resources=("cpu",), used=used),
                 capacity_frame(when, pools=("az2",), hosts_per_pool=2, resources=("cpu",), used=np.nan)],
                ignore_index=True,
            ),
            "consumers": consumers_frame(when, count=3, cpu_used=np.array([np.nan, 0.5, 1.0]), memory_used=np.nan),
        }  # fmt: skip
        history.append("src", frames, when)
    series = history.pool_series(step=MIN).set_index("pool")
    assert series.loc["az1", "used"].eq(CPU * 0.5).all(), "sum over the hosts that know it"
    assert series.loc["az2", "used"].isna().all(), "nobody knows: NaN, not 0"
    assert series.loc["az2", "used_max"].isna().all()
    assert series.loc["az2", "allocated"].eq(2 * CPU * 0.5).all()
    with sqlite3.connect(history.path) as con:
        assert con.execute("SELECT count(*) FROM pool_raw WHERE used IS NULL").fetchone()[0] == 120
        assert con.execute("SELECT count(*) FROM pool_raw WHERE used = 0").fetchone()[0] == 0
    history.compact(at(t0, 130))
    hourly = history.pool_series(step=timedelta(hours=1)).set_index("pool")
    assert len(hourly.loc["az2"]) == 2 and hourly.loc["az2", "used"].isna().all()
    assert hourly.loc["az1", "used"].eq(CPU * 0.5).all()
    hosts = history.host_series(pool="az2", start=t0, end=at(t0, 1))
    assert len(hosts) == 2 and hosts["used"].isna().all() and hosts["capacity"].eq(CPU).all()
    history.flush()
    usage = history.consumer_usage().set_index(["hour", "id"]).sort_index()
    first = usage.loc[t0]
    assert first["samples"].eq(60).all()
    assert np.isnan(first.iloc[0]["cpu_used_mean"]) and np.isnan(first.iloc[0]["cpu_used_max"])
    assert first.iloc[1]["cpu_used_mean"] == 0.5 and first.iloc[2]["cpu_used_max"] == 1.0
    assert first["memory_used_max"].isna().all()


# ---------------------------------------------------------------- retention and downsampling


def test_compact_rolls_up_hourly_and_drops_raw_past_retention(history: History, t0: datetime) -> None:
    used = np.array([(m % 60) / 100 for m in range(600)])  # 0.00 .. 0.59 within every hour
    for m in range(600):
        when = at(t0, m)
        history.append("src", {"capacity": capacity_frame(when, hosts_per_pool=2, resources=("cpu",),
                                                          used=used[m])}, when)  # fmt: skip
    now = at(t0, 610)  # raw_retention 6 h, host_raw_retention 3 h, hourly steps
    history.compact(now)
    with sqlite3.connect(history.path) as con:
        assert con.execute("SELECT min(ts) FROM pool_raw").fetchone()[0] == int(at(t0, 240).timestamp())
        assert con.execute("SELECT min(ts) FROM host_raw").fetchone()[0] == int(at(t0, 420).timestamp())
        rollups = con.execute("SELECT ts, used, used_max, samples FROM pool_rollup ORDER BY ts").fetchall()
    assert [r[0] for r in rollups] == [int(at(t0, 60 * h).timestamp()) for h in range(10)]
    for _, mean, peak, samples in rollups:
        assert mean == pytest.approx(2 * CPU * 0.295) and peak == pytest.approx(2 * CPU * 0.59) and samples == 60
    hourly = history.pool_series(step=timedelta(hours=1))
    assert len(hourly) == 10
    assert hourly["used"].tolist() == pytest.approx([2 * CPU * 0.295] * 10)
    assert hourly["used_max"].tolist() == pytest.approx([2 * CPU * 0.59] * 10)
    assert hourly["hosts"].eq(2).all()
    # Default step: hourly when the range reaches past full resolution, 5 minutes within it.
    assert len(history.pool_series()) == 10
    recent = history.pool_series(start=at(t0, 300))
    assert len(recent) == 60 and recent["timestamp"].diff().dropna().eq(pd.Timedelta(minutes=5)).all()
    # Fine steps over rolled-up time hold each hour's mean through that hour.
    fine = history.pool_series(start=t0, end=at(t0, 240), step=timedelta(minutes=30))
    assert len(fine) == 8 and fine["used"].tolist() == pytest.approx([2 * CPU * 0.295] * 8)
    hosts = history.host_series(host="haz1-0000")
    old, recent_rows = hosts[hosts["timestamp"] < at(t0, 420)], hosts[hosts["timestamp"] >= at(t0, 420)]
    assert len(old) == 7 and old["samples"].eq(60).all() and old["used_max"].eq(CPU * 0.59).all()
    assert len(recent_rows) == 180 and recent_rows["samples"].eq(1).all()
    # Nothing to do: the second compact writes nothing at all.
    before = history._writer.total_changes
    history.compact(now)
    assert history._writer.total_changes == before
    # Host rollups go after host_retention (2 days), pool rollups after retention (3 days).
    history.compact(now + timedelta(days=2, hours=12))
    assert history.host_series().empty and len(history.pool_series(step=timedelta(hours=1))) == 10
    history.compact(now + timedelta(days=4))
    assert history.pool_series().empty and history.host_series().empty
    assert raw_rows(history, "pool_rollup") == 0 and raw_rows(history, "pool_raw") == 0


def test_consumer_data_retention_and_daily_counts(history: History, t0: datetime) -> None:
    for h in range(30):
        when = at(t0, 60 * h + 1)
        history.append("src", {"consumers": consumers_frame(when, count=4)}, when)
    history.flush()
    counts = history.consumer_counts()
    assert counts.groupby("timestamp")["count"].sum().eq(4).all() and counts["timestamp"].nunique() == 30
    history.compact(at(t0, 60 * 30))  # raw_retention 6 h: older counts thinned to the 00 UTC hour
    kept = sorted(history.consumer_counts()["timestamp"].unique())
    assert kept == [at(t0, 1), at(t0, 60 * 24 + 1)] + [at(t0, 60 * h + 1) for h in range(24, 30) if h > 24]
    assert len(history.consumer_usage()) == 30 * 4
    history.compact(t0 + timedelta(days=2, hours=12))  # consumer_retention 2 days
    assert history.consumer_usage()["hour"].min() >= t0 + timedelta(days=0, hours=12)
    history.compact(t0 + timedelta(days=5))
    assert history.consumer_usage().empty
    assert raw_rows(history, "consumer_keys") == 0


# ---------------------------------------------------------------- clocks


def test_clock_stepping_back_is_stored_in_time_order(
    history: History, t0: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    def poll(minutes: float, used: float) -> None:
        when = at(t0, minutes)
        history.append("src", {"capacity": capacity_frame(when, hosts_per_pool=1, resources=("cpu",),
                                                          used=used)}, when)  # fmt: skip

    for m in range(21):
        poll(m, 0.1)
    poll(5.5, 0.9)  # the clock stepped back 15 minutes
    assert history.last_timestamp("src") == at(t0, 20)
    hosts = history.host_series()
    assert hosts["timestamp"].is_monotonic_increasing and len(hosts) == 22
    assert hosts.set_index("timestamp").loc[at(t0, 5.5), "used"] == CPU * 0.9
    minute = history.pool_series(step=MIN).set_index("timestamp")
    assert minute.loc[at(t0, 5), "used"] == pytest.approx(CPU * 0.5)  # mean of 0.1 and 0.9
    assert minute.loc[at(t0, 5), "used_max"] == CPU * 0.9
    history.compact(at(t0, 120))
    assert history.pool_series(step=timedelta(hours=1))["used_max"].tolist() == [CPU * 0.9]
    # A late sample in an hour already rolled up is read at once and re-rolled by the next compact.
    poll(50.25, 1.0)
    hourly = history.pool_series(step=timedelta(hours=1))
    assert hourly["used_max"].tolist() == [CPU * 1.0]
    history.compact(at(t0, 125))
    with sqlite3.connect(history.path) as con:
        assert con.execute("SELECT samples, used_max FROM pool_rollup").fetchall() == [(23, CPU * 1.0)]
        assert con.execute("SELECT count(*) FROM dirty_buckets").fetchone()[0] == 0
    # Older than what is kept at full resolution: refused, counted, logged; nothing stored.
    history.compact(at(t0, 60 * 10))
    rows = raw_rows(history, "pool_raw")
    with caplog.at_level(logging.WARNING, logger="collector.store.history"):
        poll(30, 0.5)
    assert history.rejected["src"] == 1 and "refused poll of src" in caplog.text
    assert raw_rows(history, "pool_raw") == rows
    assert history.last_timestamp("src") == at(t0, 50.25) or history.last_timestamp("src") == at(t0, 20)


def test_naive_datetimes_are_refused(history: History) -> None:
    with pytest.raises(ValueError, match="naive"):
        history.append("src", {}, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        history.pool_series(start=datetime(2026, 1, 1))


# ---------------------------------------------------------------- consumers


def test_consumer_usage_is_hourly_and_merges_across_restarts(tmp_path: Path, config: HistoryConfig,
                                                             t0: datetime) -> None:  # fmt: skip
    history = History.open(tmp_path, config)
    for m in range(90):
        when = at(t0, m)
        history.append("src", {"consumers": consumers_frame(when, count=2, cpu_used=float(m % 60))}, when)
    history.close()
    with History.open(tmp_path, config) as reopened:
        usage = reopened.consumer_usage()
        assert usage.groupby("hour")["samples"].max().tolist() == [60, 30]
        assert usage["cpu_used_max"].tolist() == [59.0, 59.0, 29.0, 29.0]
        assert usage["cpu_used_mean"].iloc[0] == pytest.approx(29.5)
        for m in range(90, 100):  # same hour after a restart: merged into the same rows
            when = at(t0, m)
            migrated = consumers_frame(when, count=2, cpu_used=100.0)
            if m >= 95:
                migrated.loc[1, "host"] = "elsewhere"
            reopened.append("src", {"consumers": migrated}, when)
    with History.open(tmp_path, config) as again:
        hour = again.consumer_usage(start=at(t0, 60))
        stay = hour[hour["id"] == "src-vm-000000"]
        assert stay["samples"].tolist() == [40] and stay["cpu_used_max"].tolist() == [100.0]
        moved = hour[hour["id"] == "src-vm-000001"].set_index("host")
        assert moved.loc["haz1-0001", "samples"] == 35 and moved.loc["elsewhere", "samples"] == 5
        assert set(hour.columns) >= {
            "hour",
            "layer",
            "cloud",
            "pool",
            "host",
            "id",
            "project",
            "flavor",
            "cpu",
            "memory",
            "cpu_used_mean",
            "cpu_used_max",
            "memory_used_max",
            "samples",
        }


# ---------------------------------------------------------------- backfill, files, threads, speed


def synthetic(start: datetime, periods: int, freq: str, sources=("s1", "s2"), pools=("az1", "az2"),
              resources=("cpu", "memory")) -> pd.DataFrame:  # fmt: skip
    stamps = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    parts = []
    for s, source in enumerate(sources):
        for pool in pools:
            for resource in resources:
                trend = np.linspace(0.2, 0.6, periods) + 0.01 * s
                parts.append(pd.DataFrame({
                    "timestamp": stamps, "source": source, "layer": "openstack", "cloud": "c1", "pool": pool,
                    "resource": resource, "capacity": 1000.0, "allocatable": 1000.0, "allocated": 1000 * trend,
                    "used": 500 * trend, "hosts": 10,
                }))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def test_backfill_then_compact_gives_the_same_hourly_series(tmp_path: Path, t0: datetime) -> None:
    history = History.open(tmp_path, HistoryConfig(raw_retention=timedelta(hours=6), retention=timedelta(days=30)))
    rows = synthetic(t0, 12 * 24 * 3, "5min")
    history.backfill(rows)
    assert history.last_timestamp("s2") == rows["timestamp"].max()
    expected = (
        rows.assign(hour=rows["timestamp"].dt.floor("h"))
        .groupby(["pool", "resource", "hour", "source"])[["allocated", "capacity"]].mean()
        .groupby(["pool", "resource", "hour"]).sum()
    )  # fmt: skip
    before = history.pool_series(step=timedelta(hours=1)).set_index(["pool", "resource", "timestamp"])
    assert before["allocated"].to_numpy() == pytest.approx(expected["allocated"].to_numpy())
    history.compact(t0 + timedelta(days=3, hours=1))
    after = history.pool_series(step=timedelta(hours=1)).set_index(["pool", "resource", "timestamp"])
    assert after["allocated"].to_numpy() == pytest.approx(expected["allocated"].to_numpy())
    assert after["hosts"].eq(20).all() and after["capacity"].eq(2000).all()
    # Backfilling further into the past (older than the raw floor) writes rollups directly.
    history.backfill(synthetic(t0 - timedelta(days=1), 24 * 12, "5min"))
    older = history.pool_series(start=t0 - timedelta(days=1), end=t0, step=timedelta(hours=1))
    assert len(older) == 4 * 24 and older["hosts"].eq(20).all()
    with pytest.raises(ValueError, match="capacity"):
        history.backfill(rows.drop(columns=["capacity"]))
    broken = rows.copy()
    broken.loc[5, "capacity"] = np.nan
    with pytest.raises(ValueError, match="capacity is missing in row 5"):
        history.backfill(broken)
    # Microsecond timestamps (pandas 2 keeps the unit of what it is given) land at the same seconds.
    with History.open(tmp_path / "us", HistoryConfig()) as fresh:
        fresh.backfill(rows.assign(timestamp=rows["timestamp"].dt.as_unit("us")))
        assert fresh.last_timestamp("s2") == rows["timestamp"].max()


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path, config: HistoryConfig) -> None:
    History.open(tmp_path / "a", config).close()
    with sqlite3.connect(tmp_path / "a" / "history.sqlite") as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    newer = rf"schema version 99 is newer than this capacityd supports \({SCHEMA_VERSION}\)"
    with pytest.raises(HistoryError, match=newer):
        History.open(tmp_path / "a", config)
    (tmp_path / "b").mkdir()
    with sqlite3.connect(tmp_path / "b" / "history.sqlite") as con:
        con.execute("CREATE TABLE other (x)")
    with pytest.raises(HistoryError, match="not capacityd history"):
        History.open(tmp_path / "b", config)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "history.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(HistoryError, match=r"c/history.sqlite: cannot open"):
        History.open(tmp_path / "c", config)


def test_closed_store_says_so(history: History) -> None:
    history.close()
    with pytest.raises(HistoryError, match="closed"):
        history.pool_series()
    history.close()  # idempotent


def test_concurrent_appends_and_reads(history: History, t0: datetime) -> None:
    stop = threading.Event()

    def writer(source: str) -> None:
        for m in range(40):
            when = at(t0, m)
            frames = {
                "capacity": capacity_frame(when, source=source, hosts_per_pool=20, host_prefix=source),
                "consumers": consumers_frame(when, source=source, count=200),
            }
            history.append(source, frames, when)

    def reader() -> int:
        reads = 0
        while not stop.is_set():
            series = history.pool_series(step=MIN)
            assert series["capacity"].notna().all()
            history.host_series(host="s0az1-0003")
            reads += 1
        return reads

    with ThreadPoolExecutor(max_workers=6) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        writers = [pool.submit(writer, f"s{i}") for i in range(4)]
        for future in writers:
            future.result()
        stop.set()
        assert all(future.result() > 0 for future in readers)
    series = history.pool_series(step=MIN)
    assert len(series) == 2 * 40 and series["hosts"].eq(80).all()
    history.flush()
    assert history.consumer_usage()["samples"].sum() == 4 * 200 * 40


def test_reading_eight_weeks_of_a_pool_is_fast(tmp_path: Path, t0: datetime) -> None:
    history = History.open(tmp_path, HistoryConfig())  # 8 days raw, hourly for 400 days
    rows = synthetic(t0, 12 * 24 * 56, "5min", sources=("s1",), pools=("az1", "az2", "az3", "az4"),
                     resources=("cpu", "memory", "disk", "pods"))  # fmt: skip
    history.backfill(rows)
    history.compact(t0 + timedelta(days=56, minutes=10))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        series = history.pool_series(pool="az1", start=t0, end=t0 + timedelta(days=56))
        timings.append(time.perf_counter() - started)
    assert len(series) == 4 * 24 * 56 and series["allocated"].notna().all()
    assert min(timings) < 1.0, f"one pool's 8-week hourly series took {min(timings):.3f} s"


def test_backfilled_past_joins_live_polls_without_a_seam(tmp_path: Path, t0: datetime) -> None:
    """The demo's flow: eight weeks of hourly pool rows, then live polls of the same source, then compact."""
    history = History.open(tmp_path, HistoryConfig())
    now = t0 + timedelta(weeks=8)
    past = synthetic(t0, 24 * 7 * 8, "h", sources=("src",), pools=("az1",), resources=("cpu",))
    past = past.assign(layer="hypervisor", cloud="c1", capacity=2 * CPU, allocatable=2 * CPU, hosts=2,
                       allocated=CPU, used=CPU / 2)  # fmt: skip
    history.backfill(past)
    for m in range(30):
        when = now + timedelta(minutes=m)
        history.append("src", {"capacity": capacity_frame(when, hosts_per_pool=2, resources=("cpu",))}, when)
    for compacted in (False, True):
        if compacted:
            history.compact(now + timedelta(hours=1, minutes=10))
        series = history.pool_series(start=t0, end=now + timedelta(minutes=30), step=timedelta(hours=1))
        assert len(series) == 24 * 7 * 8 + 1, f"compacted={compacted}"
        assert series["capacity"].eq(2 * CPU).all() and series["hosts"].eq(2).all()
        assert series["allocated"].eq(CPU).all() and series["used"].eq(CPU / 2).all()
    history.close()


def test_host_series_reads_the_same_through_both_raw_paths(tmp_path: Path, t0: datetime) -> None:
    """Few hosts seek by the pool rows' poll times; many hosts (or a short raw_retention) scan the range."""
    seek = History.open(tmp_path / "seek", HistoryConfig(raw_retention=timedelta(hours=6),
                                                         host_raw_retention=timedelta(hours=3)))  # fmt: skip
    scan = History.open(tmp_path / "scan", HistoryConfig(raw_retention=timedelta(hours=1),
                                                         host_raw_retention=timedelta(hours=3)))  # fmt: skip
    for m in range(20):
        when = at(t0, m)
        frames = {
            "capacity": pd.concat(
                [capacity_frame(when, source="a", hosts_per_pool=3, used=m / 40),
                 capacity_frame(when, source="b", pools=("az2",), hosts_per_pool=2, host_prefix="x")],
                ignore_index=True,
            )
        }  # fmt: skip
        seek.append("a", frames, when)
        scan.append("a", frames, when)
    one = seek.host_series(host="haz1-0001")
    assert len(one) == 40 and one["used"].tolist()[:2] == [0.0, CPU / 40]
    pd.testing.assert_frame_equal(one, scan.host_series(host="haz1-0001"))
    pd.testing.assert_frame_equal(seek.host_series(pool="az2"), scan.host_series(pool="az2"))
    seek.close()
    scan.close()

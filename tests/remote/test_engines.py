"""Samples written by capacityd through remote write, read back by PromQL from real VictoriaMetrics and
Prometheus, equal what the embedded store holds for the same polls."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.store.remote.backend import RemoteHistory, open_backend
from collector.store.remote.client import RemoteError
from collector.store.remote.promql import PromReader
from collector.store.settings import HistoryConfig, RemoteHistoryConfig
from tests.history.frames import capacity_frame
from tests.remote.conftest import recent_t0, write_url
from tests.remote.tsdb import Service, flush

pytestmark = pytest.mark.slow

POLL = timedelta(minutes=5)
POOL_VALUES = ["capacity", "reserved", "allocatable", "allocated", "used", "hosts", "allocated_max", "used_max"]
HOST_VALUES = ["capacity", "allocatable", "allocated", "used", "allocated_max", "used_max", "samples"]


def remote_config(service: Service) -> HistoryConfig:
    return HistoryConfig(backend="remote", remote=RemoteHistoryConfig(write_url=write_url(service), max_retries=0))


def poll_estate(history: RemoteHistory, start, polls: int) -> None:  # type: ignore[no-untyped-def]
    """Two sources, two pools of 4 hosts; allocated moves with time, `used` unknown on one pool's memory."""
    for i in range(polls):
        when = start + i * POLL
        fraction = 0.3 + 0.4 * (i % 12) / 12
        a = capacity_frame(when, source="kvm", pools=("az1", "az2"), allocated=fraction, used=fraction / 2)
        used = a["used"].to_numpy().copy()
        used[((a["pool"] == "az2") & (a["resource"] == "memory")).to_numpy()] = np.nan
        a = a.assign(used=used)
        b = capacity_frame(when, source="k8s", layer="kubernetes", cloud="prod", pools=("np1",),
                           resources=("cpu", "memory", "pods"), allocated=1 - fraction, used=0.1)  # fmt: skip
        assert history.append("kvm", {"capacity": a}, when)
        assert history.append("k8s", {"capacity": b}, when)
    assert history.writer.queue_length == 0


def test_pool_and_host_series_equal_the_embedded_store(engine: Service, tmp_path: Path) -> None:
    t0 = recent_t0()
    polls = 6 * 12  # six hours at 5 minutes
    history = open_backend(tmp_path / "state", remote_config(engine))
    assert isinstance(history, RemoteHistory)
    try:
        poll_estate(history, t0, polls)
        flush(engine)
        assert history.remote_stats.samples == polls * (2 * 4 * 2 * 5 - 4 + 4 * 3 * 5)
        assert history.remote_stats.failed_samples == 0
        end = t0 + polls * POLL
        for step in (timedelta(hours=1), POLL):
            local = history.local.pool_series(start=t0, end=end, step=step)
            remote = history.reader.pool_series(start=t0, end=end, step=step)
            key = ["layer", "cloud", "pool", "resource", "timestamp"]
            merged = local.merge(remote, on=key, how="outer", suffixes=("_local", "_remote"), indicator=True)
            assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][key]
            assert len(merged) == len(local) == 3 * (2 * 2 + 3) // 3 * polls * POLL // step  # 7 series
            for column in POOL_VALUES:
                np.testing.assert_allclose(merged[f"{column}_remote"], merged[f"{column}_local"], rtol=1e-11,
                                           err_msg=f"{engine.name} step {step}: {column}")  # fmt: skip
        # The analyses' own entry point reads through the backend (no fallback to the local store happened).
        via_backend = history.pool_series(start=t0, end=end, step=timedelta(hours=1))
        assert history.remote_stats.read_errors == 0
        assert len(via_backend) == 7 * 6
        local_hosts = history.local.host_series(start=t0, end=end)
        remote_hosts = history.reader.host_series(start=t0, end=end)
        assert len(remote_hosts) == len(local_hosts) == polls * (2 * 4 * 2 + 4 * 3)
        pd.testing.assert_frame_equal(remote_hosts[HOST_VALUES[:-1]], local_hosts[HOST_VALUES[:-1]])
        for column in ("source", "layer", "cloud", "pool", "host", "scope", "resource", "timestamp"):
            assert remote_hosts[column].astype(str).tolist() == local_hosts[column].astype(str).tolist(), column
        # Filters are pushed into PromQL.
        one = history.reader.pool_series(layer="kubernetes", resource=["pods"], start=t0, end=end,
                                         step=timedelta(hours=1))  # fmt: skip
        assert set(one["resource"]) == {"pods"} and len(one) == 6
    finally:
        history.close()


def test_forecast_input_from_the_tsdb_equals_the_embedded_one(engine: Service, tmp_path: Path) -> None:
    """What the forecast (and what-if) analyses read: 8 weeks of hourly pool totals, per basis."""
    from collector.analyses.forecast.api import pool_series_for_forecast

    t0 = recent_t0()
    polls = 4 * 12
    history = open_backend(tmp_path / "state", remote_config(engine))
    assert isinstance(history, RemoteHistory)
    try:
        poll_estate(history, t0, polls)
        flush(engine)
        now = t0 + polls * POLL
        local = pool_series_for_forecast(history.local, now)
        remote = pool_series_for_forecast(history, now)
        assert history.remote_stats.read_errors == 0
        # 4 hours x (7 pool series x 2 bases - 2 hypervisor cpu allocated (overcommit) - az2 memory used (unknown))
        assert len(local) == 4 * (7 * 2 - 2 - 1)
        order = ["layer", "cloud", "pool", "resource", "basis", "timestamp"]
        local = local.sort_values(order, ignore_index=True)
        remote = remote.sort_values(order, ignore_index=True)
        pd.testing.assert_frame_equal(remote[order], local[order], check_dtype=False)
        for column in ("value", "limit"):
            np.testing.assert_allclose(remote[column], local[column], rtol=1e-11, err_msg=column)
    finally:
        history.close()


def test_long_ranges_are_split_under_the_11000_point_limit(engine: Service, tmp_path: Path) -> None:
    """8 weeks at 5 minutes is 16,128 points: Prometheus refuses that in one query; the reader splits it."""
    t0 = recent_t0()
    history = open_backend(tmp_path / "state", remote_config(engine))
    assert isinstance(history, RemoteHistory)
    try:
        poll_estate(history, t0, 3)
        flush(engine)
        reader = PromReader(remote_config(engine).remote)  # type: ignore[arg-type]
        frame = reader.pool_series(start=t0 - timedelta(weeks=8) + timedelta(minutes=15), end=t0 + 3 * POLL,
                                   step=POLL)  # fmt: skip
        assert sorted(set(frame["timestamp"])) == [t0 + i * POLL for i in range(3)]
        assert history.remote_stats.read_errors == 0
        if engine.name == "prometheus":  # the engine behaviour the split avoids
            start = (t0 - timedelta(weeks=8)).timestamp()
            with pytest.raises(RemoteError, match=r"11,?000"):
                reader.http.get_json("/api/v1/query_range", {"query": "capacity_resource_capacity",
                                     "start": f"{start}", "end": f"{t0.timestamp()}", "step": "300"})  # fmt: skip
    finally:
        history.close()


def test_last_timestamp_of_a_source_from_the_tsdb(engine: Service, tmp_path: Path) -> None:
    """What a planner without a local store uses to tell a source's freshness."""
    from datetime import UTC, datetime

    history = open_backend(tmp_path / "state", remote_config(engine))
    assert isinstance(history, RemoteHistory)
    try:
        when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        assert history.append("kvm", {"capacity": capacity_frame(when, source="kvm")}, when)
        flush(engine)
        assert history.reader.last_timestamp("kvm") == when
        assert history.reader.last_timestamp("other") is None
    finally:
        history.close()

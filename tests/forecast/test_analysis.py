"""The forecast analysis on the daemon's real history store, and the metric family it feeds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.analyses.forecast import forecast_series, pool_series_for_forecast
from collector.analyses.registry import ANALYSES, AnalysisContext, run_analyses
from collector.contract.schema import validate_frame
from collector.demo.backfill import backfill_rows
from collector.demo.model import CLOUD, build_estate
from collector.estate import Snapshot
from collector.store.history import History
from collector.store.settings import HistoryConfig
from exporters.prometheus import forecast as forecast_metrics
from tests.forecast.conftest import FAST, end_of, long_frame


@pytest.fixture(scope="module")
def demo_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[History, object]]:
    """Eight weeks of the demo estate's pool history in a real History store."""
    estate = build_estate()
    history = History.open(Path(tmp_path_factory.mktemp("state")), HistoryConfig())
    history.backfill(backfill_rows(estate))
    yield history, estate
    history.close()


def test_pool_series_input_has_both_bases(demo_history: tuple[History, object]) -> None:
    history, estate = demo_history
    frame = pool_series_for_forecast(history, estate.now, timedelta(days=56))
    assert set(frame.columns) == {"layer", "cloud", "pool", "resource", "basis", "timestamp", "value", "limit"}
    assert set(frame["basis"]) == {"allocated", "used"}
    used = frame[frame["basis"] == "used"]
    assert set(used["layer"]) == {"hypervisor"}  # only the hypervisors measure use in the demo
    openstack = frame[(frame["layer"] == "openstack") & (frame["resource"] == "vcpu") & (frame["pool"] == "az1")]
    assert (openstack["timestamp"].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert len(openstack) == 2 * 28 * 24  # eight weeks, hourly
    assert (openstack["limit"] > openstack["value"]).all()


def test_demo_forecasts_are_finite_where_demand_grows(demo_history: tuple[History, object]) -> None:
    history, estate = demo_history
    assert "forecast" in ANALYSES and ANALYSES["forecast"].expensive
    context = AnalysisContext(now=estate.now, frames={}, history=history, config=None)
    frames, errors = run_analyses(context, expensive=True)
    assert "forecast" not in errors, errors
    forecast = frames["forecast"]
    validate_frame("forecast", forecast)
    validate_frame("forecast_points", frames["forecast_points"])
    # openstack vcpu/pcpu/memory per AZ and hypervisor memory allocated + cpu used per AZ; hypervisor CPU
    # allocated is overcommit by design and not forecast as exhaustion
    assert len(forecast) >= 9
    hypervisor_cpu = forecast[(forecast["layer"] == "hypervisor") & (forecast["resource"] == "cpu")]
    assert set(hypervisor_cpu["basis"]) == {"used"}
    assert set(forecast["cloud"]) == {CLOUD}
    growing = forecast[forecast["growth_per_day"] > 0.001 * forecast["limit"]]
    assert len(growing) >= 8
    assert np.isfinite(growing["seconds_p50"]).all(), growing[["layer", "pool", "resource", "basis"]]
    assert (growing["seconds_p10"] <= growing["seconds_p50"]).all()
    assert (forecast["history_points"] >= 24 * 7 * 7).all()
    assert not forecast["model"].eq("insufficient_history").any()


def test_without_history_the_frames_are_empty() -> None:
    context = AnalysisContext(
        now=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(), frames={}, history=None, config=None
    )
    frames, errors = run_analyses(context, expensive=True)
    assert not errors.get("forecast")
    assert frames["forecast"].empty and frames["forecast_points"].empty


def test_exhaustion_seconds_family(tmp_path: Path) -> None:
    growing = np.linspace(10, 80, 24 * 21)
    flat = np.full(24 * 21, 5.0)
    frame = pd.concat(
        [long_frame(growing, limit=100.0, pool="busy"), long_frame(flat, limit=100.0, pool="idle", basis="used")],
        ignore_index=True,
    )
    now = end_of(growing)
    forecast, _ = forecast_series(frame, now=now, options=FAST)
    snapshot = Snapshot(taken_at=now, frames={"forecast": forecast}, statuses=())

    class Collector:
        def collect(self) -> Iterator:
            return forecast_metrics.build(snapshot)

    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert "# TYPE capacity_exhaustion_seconds summary" in text
    busy = forecast.set_index("pool").loc["busy"]
    for quantile, column in (("0.1", "seconds_p10"), ("0.5", "seconds_p50"), ("0.9", "seconds_p90")):
        label = (
            f'capacity_exhaustion_seconds{{basis="allocated",cloud="test",layer="openstack",pool="busy",'
            f'quantile="{quantile}",resource="vcpu"}}'
        )
        line = next(line for line in text.splitlines() if line.startswith(label))
        assert float(line.split()[-1]) == pytest.approx(busy[column])
        assert 0 < float(line.split()[-1]) < math.inf
    idle = (
        'capacity_exhaustion_seconds{basis="used",cloud="test",layer="openstack",pool="idle",'
        'quantile="0.5",resource="vcpu"} +Inf'
    )
    assert idle in text
    assert text.count("capacity_exhaustion_seconds{") == 6
    assert "# TYPE capacity_exhaustion_info gauge" in text
    assert (
        'capacity_exhaustion_info{basis="allocated",cloud="test",layer="openstack",pool="busy",'
        'reason="within_horizon",resource="vcpu"} 1.0'
    ) in text
    assert (
        'capacity_exhaustion_info{basis="used",cloud="test",layer="openstack",pool="idle",'
        'reason="not_growing",resource="vcpu"} 1.0'
    ) in text


def test_family_is_empty_without_forecasts() -> None:
    snapshot = Snapshot(taken_at=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(), frames={}, statuses=())
    families = list(forecast_metrics.build(snapshot))
    assert [family.name for family in families] == ["capacity_exhaustion_seconds", "capacity_exhaustion_info"]
    assert all(family.samples == [] for family in families)


def test_demo_exhaustion_intervals_are_intervals(demo_history: tuple[History, object]) -> None:
    """Issue 11: the demo showed "77 d (77-77 d)" (p50 equal to p90 to the second). Strictly ordered now."""
    history, estate = demo_history
    frame = pool_series_for_forecast(history, estate.now)
    forecast, _ = forecast_series(frame, now=estate.now, options=FAST)
    crossing = forecast[np.isfinite(forecast["seconds_p50"]) & (forecast["seconds_p50"] > 0)]
    assert len(crossing) > 0
    assert (crossing["seconds_p10"] < crossing["seconds_p50"]).all()
    assert (crossing["seconds_p50"] < crossing["seconds_p90"]).all()
    assert (crossing["exhaustion_reason"] == "within_horizon").all()

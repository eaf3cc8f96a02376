"""forecast.executor dask: a real 2-process LocalCluster forecasts a real History like the local executor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from collector.analyses.forecast.api import SERIES_KEY
from collector.analyses.forecast.executor import forecast_pools, list_keys, source_of
from collector.analyses.forecast.settings import ForecastConfig
from collector.store.history import History
from collector.store.settings import HistoryConfig

distributed = pytest.importorskip("distributed")

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LOOKBACK = timedelta(days=21)
KEYS = 600  # 400 with allocated and used, 200 allocated only: 1,000 series, two tasks of 500 keys


def _rows() -> pd.DataFrame:
    """Hourly pool totals: trends, daily cycles, noise; series start at different hours (grid alignment)."""
    rng = np.random.default_rng(13)
    parts = []
    for i in range(KEYS):
        late = i >= 300 or i % 7  # the second task (sorted keys: cloud c1) has no series from the first hour
        start = NOW - LOOKBACK + timedelta(hours=int(rng.integers(1, 24 * 10)) if late else 0)
        stamps = pd.date_range(start, NOW, freq="h", inclusive="left")
        t = np.arange(len(stamps), dtype=float)
        limit = float(rng.uniform(300, 2000))
        allocated = 200 + rng.uniform(0, 6) * t / 24 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, len(t))
        used = allocated * 0.6 if i < 400 else np.full(len(t), np.nan)
        parts.append(pd.DataFrame({
            "timestamp": stamps, "source": "openstack-a", "layer": "openstack", "cloud": "c0" if i < 300 else "c1",
            "pool": f"pool{i:04d}", "resource": "vcpu" if i % 2 else "memory_mb", "capacity": limit,
            "allocatable": limit, "allocated": allocated, "used": used, "hosts": 4,
        }))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    store = History.open(tmp_path_factory.mktemp("dask"), HistoryConfig())
    store.backfill(_rows())
    store.flush()
    yield store
    store.close()


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as dask,
    ):
        yield dask


def _sorted(frame: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    return frame.sort_values([*SERIES_KEY, *extra]).reset_index(drop=True)


def test_dask_equals_local_on_1000_series(history: History, client: object) -> None:
    local = forecast_pools(history, ForecastConfig(lookback=LOOKBACK), now=NOW)
    config = ForecastConfig(lookback=LOOKBACK, executor="dask", local_cluster_workers=2, dask_chunk_series=500)
    dask = forecast_pools(history, config, now=NOW, client=client)
    assert len(local[0]) == 1000
    assert len(list_keys(source_of(history), NOW, LOOKBACK)) == KEYS
    for mine, theirs, extra in ((dask[0], local[0], []), (dask[1], local[1], ["timestamp"])):
        mine, theirs = _sorted(mine, extra), _sorted(theirs, extra)
        assert list(mine.columns) == list(theirs.columns)
        assert len(mine) == len(theirs)
        for column in mine.columns:
            if pd.api.types.is_float_dtype(theirs[column]):
                np.testing.assert_allclose(
                    mine[column].to_numpy(float), theirs[column].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=column
                )
            else:
                assert mine[column].astype(str).tolist() == theirs[column].astype(str).tolist(), column
    assert (local[0]["seconds_p50"] < float("inf")).any()  # some series exhaust: the comparison is not vacuous


def test_dask_reads_the_file_by_itself(history: History) -> None:
    source = source_of(history)
    assert source.path == Path(history.path)
    assert "dask" not in repr(source.history)  # the task gets settings and a path, never frames


@pytest.mark.parametrize(("settings", "message"), [
    ({"executor": "dask"}, "exactly one of dask_scheduler"),
    ({"executor": "dask", "dask_scheduler": "tcp://h:8786", "local_cluster_workers": 2}, "exactly one"),
    ({"executor": "dask", "dask_scheduler": "h:8786"}, "not a tcp://"),
    ({"dask_scheduler": "tcp://h:8786"}, "executor is local"),
    ({"executor": "spark"}, "executor"),
    ({"executor": "dask", "local_cluster_workers": 0}, "local_cluster_workers"),
    ({"executor": "dask", "local_cluster_workers": 2, "dask_chunk_series": 100}, "dask_chunk_series"),
])  # fmt: skip
def test_config_validation(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ForecastConfig.model_validate(settings)


def test_config_accepts_dask() -> None:
    assert ForecastConfig().executor == "local"
    assert ForecastConfig(executor="dask", dask_scheduler="tcp://10.0.0.1:8786").dask_chunk_series == 1000
    assert ForecastConfig(executor="dask", local_cluster_workers=2).local_cluster_workers == 2


def test_forecast_analysis_starts_its_local_cluster(history: History) -> None:
    """The daemon's `forecast` analysis with executor dask + local_cluster_workers equals the local one."""
    from types import SimpleNamespace

    from collector.analyses.forecast import forecast_analysis
    from collector.analyses.registry import AnalysisContext

    def run(config: ForecastConfig) -> pd.DataFrame:
        context = AnalysisContext(now=NOW, frames={}, history=history, config=SimpleNamespace(forecast=config))
        return _sorted(forecast_analysis(context)["forecast"], [])

    local = run(ForecastConfig(lookback=LOOKBACK))
    dask = run(ForecastConfig(lookback=LOOKBACK, executor="dask", local_cluster_workers=2))
    assert len(dask) == len(local) == 1000
    np.testing.assert_allclose(dask["seconds_p50"].to_numpy(float), local["seconds_p50"].to_numpy(float), rtol=1e-9)


@pytest.mark.slow
def test_dask_tasks_read_remote_history_through_promql(tmp_path: Path, client: object) -> None:
    """Remote backend: tasks build their own PromReader from the settings (real VictoriaMetrics on loopback)."""
    from collector.analyses.forecast.api import forecast_series, pool_series_for_forecast
    from collector.analyses.forecast.engine import ForecastOptions
    from collector.analyses.forecast.executor import HistorySource, run_dask
    from collector.app.cli import main
    from collector.store.remote.promql import PromReader
    from collector.store.settings import RemoteHistoryConfig
    from tests.remote.conftest import recent_t0, write_url
    from tests.remote.test_backfill import POLL, fill
    from tests.remote.tsdb import flush, victoria_metrics

    t0 = recent_t0()
    polls = 12 * 12
    now = t0 + polls * POLL
    fill(tmp_path / "state", t0, polls).close()
    service = victoria_metrics(tmp_path)
    try:
        assert main(["history", "export", "--state-dir", str(tmp_path / "state"), "--to", write_url(service),
                     "--start", t0.isoformat(), "--end", now.isoformat()]) == 0  # fmt: skip
        flush(service)
        remote = RemoteHistoryConfig(write_url=write_url(service))
        config = HistoryConfig(backend="remote", remote=remote)
        lookback = timedelta(days=1)
        frame = pool_series_for_forecast(PromReader(remote), now, lookback)
        assert not frame.empty
        local, _ = forecast_series(frame, now=now)
        dask, _ = run_dask(
            client,
            HistorySource(history=config),
            now=now,
            lookback=lookback,
            horizon=timedelta(days=180),
            options=ForecastOptions(),
            chunk=1,
        )  # a task per key
    finally:
        service.stop()
    local, dask = _sorted(local, []), _sorted(dask, [])
    assert dask[SERIES_KEY].astype(str).values.tolist() == local[SERIES_KEY].astype(str).values.tolist()
    np.testing.assert_allclose(dask["seconds_p50"].to_numpy(float), local["seconds_p50"].to_numpy(float), rtol=1e-9)
    np.testing.assert_allclose(dask["current"].to_numpy(float), local["current"].to_numpy(float), rtol=1e-9)

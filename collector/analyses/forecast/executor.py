"""Where pool forecasts run: in this process (`local`, the default) or on a Dask cluster (`dask`).

On Dask, the client only lists the series *keys* and sends each task a chunk of 500-2,500 of them;
every task opens its own history reader (the SQLite file read-only — a WAL reader never blocks the
writer — or a PromQL reader built from the same settings) and loads its own slice. Shipping pandas
frames from the client made Dask 10-36x slower than a local loop; tasks that load their own slice
were 1.6x faster on 2 workers (docs/scale-out.md, "Forecasts on Dask").
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import pandas as pd

from collector.analyses.forecast.api import (
    INPUT_COLUMNS,
    SERIES_KEY,
    _utc,
    forecast_blocks,
    forecast_series,
    pool_series_for_forecast,
)
from collector.analyses.forecast.engine import ForecastOptions, choose_candidates
from collector.analyses.forecast.frames import FORECAST, FORECAST_POINTS
from collector.analyses.forecast.preprocess import Grid, epoch_seconds, last_per_series, pivot, series_codes
from collector.analyses.forecast.settings import ForecastConfig

log = logging.getLogger(__name__)

POOL_KEY = ["layer", "cloud", "pool", "resource"]
Key = tuple[str, str, str, str]


class PoolReader(Protocol):
    """What a task needs of a history: `pool_series` with key filters and a time range."""

    def pool_series(self, **filters: Any) -> pd.DataFrame: ...


@dataclass(frozen=True)
class HistorySource:
    """How a task opens history by itself: picklable, holds paths and settings, never a secret's value.

    `sqlite`: the embedded store's file (opened read-only). `remote`: the `history:` settings
    (collector.store.settings.HistoryConfig with backend `remote`); credentials are read from their
    files on the worker, as the daemon does.
    """

    path: Path | None = None
    history: Any = None

    def open(self) -> PoolReader:
        if self.path is not None:
            return ReadOnlyHistory(self.path, self.history)
        if self.history is not None and getattr(self.history, "remote", None) is not None:
            from collector.store.remote.promql import PromReader

            return cast(PoolReader, PromReader(self.history.remote))
        raise ValueError("history source: neither a SQLite path nor remote history settings")


def source_of(history: Any) -> HistorySource:
    """The HistorySource of the daemon's history object (collector.store History or RemoteHistory)."""
    remote = getattr(getattr(history, "config", None), "remote", None)
    if getattr(history, "reader", None) is not None and remote is not None:  # RemoteHistory
        return HistorySource(history=history.config)
    path = getattr(history, "path", None)
    if path is None:
        raise ValueError(f"forecast on dask: cannot tell how a worker opens {type(history).__name__}")
    return HistorySource(path=Path(path), history=history.config)


def ReadOnlyHistory(path: Path, config: Any) -> PoolReader:
    """A read-only reader of a History file (imported lazily: analyses do not import the store eagerly)."""
    from collector.store.readonly import ReadOnlyHistory as Reader

    return cast(PoolReader, Reader(path, config))


def list_keys(source: HistorySource, now: datetime, lookback: timedelta) -> list[Key]:
    """Every pool key (layer, cloud, pool, resource) a forecast may cover, sorted; cheap on both backends."""
    if source.path is not None:
        con = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT DISTINCT layer, cloud, pool, resource FROM pool_keys").fetchall()
        finally:
            con.close()
        return sorted((str(a), str(b), str(c), str(d)) for a, b, c, d in rows)
    now_ts = _utc(now)  # remote: one point per series over the lookback (PromQL sums, not every sample)
    frame = source.open().pool_series(
        start=(now_ts - lookback).to_pydatetime(), end=now_ts.to_pydatetime(), step=lookback
    )
    if frame is None or frame.empty:
        return []
    return sorted({(str(a), str(b), str(c), str(d)) for a, b, c, d in frame[POOL_KEY].itertuples(index=False)})


class _KeyFilter:
    """A reader restricted to some pool keys: filters the query by their values, then keeps exact keys."""

    def __init__(self, reader: PoolReader, keys: list[Key]):
        self.reader = reader
        self.keys = pd.DataFrame(keys, columns=POOL_KEY).astype(str)

    def pool_series(self, **filters: Any) -> pd.DataFrame:
        for column in POOL_KEY:
            filters[column] = sorted(set(self.keys[column]))
        frame = self.reader.pool_series(**filters)
        if frame is None or frame.empty:
            return frame
        wanted = pd.MultiIndex.from_frame(self.keys)
        present = pd.MultiIndex.from_frame(frame[POOL_KEY].astype(str))
        return frame[present.isin(wanted)].reset_index(drop=True)


def forecast_chunk(
    source: HistorySource,
    keys: list[Key],
    now: datetime,
    lookback: timedelta,
    horizon: timedelta,
    options: ForecastOptions,
    total: int,
    first_bucket: int,
) -> ChunkResult:
    """One Dask task: load these keys' series from history and forecast them (same maths as local).

    `total` (all series of the pass) picks the candidate models as the local executor does, and every
    chunk is put on the same hourly grid from `first_bucket`, so results do not depend on chunking.
    """
    reader = source.open()
    try:
        frame = pool_series_for_forecast(_KeyFilter(reader, keys), now, lookback)
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()
    return forecast_frame(frame, now=now, horizon=horizon, options=options, total=total, first_bucket=first_bucket)


ChunkResult = tuple[pd.DataFrame, pd.DataFrame, int | None]
"""(forecast, forecast_points, first hour bucket of the chunk's data, None without data)."""


def forecast_frame(
    frame: pd.DataFrame, *, now: datetime, horizon: timedelta, options: ForecastOptions, total: int, first_bucket: int
) -> ChunkResult:
    """forecast_series on part of a pass: grid from `first_bucket`, model choice for `total` series.

    Also returns the chunk's own first bucket: the caller checks the pass's grid start against them.
    """
    now_ts = _utc(now)
    if frame.empty:
        return FORECAST.empty(), FORECAST_POINTS.empty(), None
    seconds = epoch_seconds(frame["timestamp"])
    data = frame[INPUT_COLUMNS]
    current = seconds <= now_ts.timestamp()
    data, seconds = data[current], seconds[current]
    if data.empty:
        return FORECAST.empty(), FORECAST_POINTS.empty(), None
    own_first = int(int(seconds.min()) // int(options.working_step))
    if own_first < first_bucket:  # the pass's grid must start earlier: the caller reruns with the right start
        return FORECAST.empty(), FORECAST_POINTS.empty(), own_first
    codes, series = series_codes(data, SERIES_KEY)
    values = pd.to_numeric(data["value"], errors="coerce").to_numpy(dtype=float)
    step = options.working_step
    matrix, grid = pivot(codes, len(series), seconds, values, step=step, end=now_ts)
    pad = int(grid.start.timestamp() // step) - first_bucket
    if pad > 0:  # leading empty hours, as the local pass has them when another series starts earlier
        matrix = np.concatenate([np.full((len(series), pad), np.nan), matrix], axis=1)
        grid = Grid(pd.Timestamp(first_bucket * int(step), unit="s", tz="UTC"), grid.step, grid.length + pad)
    limits = last_per_series(
        codes, len(series), seconds, pd.to_numeric(data["limit"], errors="coerce").to_numpy(dtype=float)
    )
    forecast, points = forecast_blocks(
        [(series, matrix, grid, limits)], total=total, now=now_ts, horizon=horizon, options=replace(options, threads=1)
    )
    return forecast, points, own_first


def _first_bucket(source: HistorySource, now: datetime, lookback: timedelta, step: float) -> int:
    """A first guess of the hour the local pass's grid starts at (the earliest point within the lookback).

    Only a guess (a point may be NaN, buckets are floored): `run_dask` checks it against what the
    tasks found and reruns the pass on the exact start when it was wrong, so results never depend on it.
    """
    now_ts = _utc(now)
    start = now_ts - lookback
    if source.path is not None:
        con = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
        try:
            since = int(start.timestamp())
            row = con.execute(
                "SELECT min(m) FROM (SELECT min(ts) AS m FROM pool_raw WHERE ts >= ? "
                "UNION ALL SELECT min(ts) FROM pool_rollup WHERE ts >= ?)",
                (since, since),
            ).fetchone()
        except sqlite3.Error:
            row = None
        finally:
            con.close()
        if row and row[0] is not None:
            return int(int(row[0]) // int(step))
    return int(start.timestamp() // step)


def run_dask(
    client: Any,
    source: HistorySource,
    *,
    now: datetime,
    lookback: timedelta,
    horizon: timedelta,
    options: ForecastOptions,
    chunk: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecast every pool series of `source` on a Dask client: keys out, forecasts back."""
    keys = list_keys(source, now, lookback)
    if not keys:
        return FORECAST.empty(), FORECAST_POINTS.empty()
    # A key has up to two series (allocated, used); the local pass picks models by the number of series.
    # That only matters for a handful of series (expensive models within budget): count them then.
    total = 2 * len(keys)
    if choose_candidates(total, options) != choose_candidates(1, options):
        total = _count_series(client, source, keys, now, lookback, chunk)
    first = _first_bucket(source, now, lookback, options.working_step)
    chunks = [keys[start : start + chunk] for start in range(0, len(keys), chunk)]
    for _attempt in range(2):
        futures = client.map(
            forecast_chunk,
            [source] * len(chunks),
            chunks,
            now=now,
            lookback=lookback,
            horizon=horizon,
            options=options,
            total=total,
            first_bucket=first,
            pure=False,
        )
        results: list[ChunkResult] = client.gather(futures)
        found = [r[2] for r in results if r[2] is not None]
        if not found:
            return FORECAST.empty(), FORECAST_POINTS.empty()
        if min(found) == first:
            break
        log.debug("forecast on dask: grid start %d, the data starts at %d; rerunning", first, min(found))
        first = min(found)
    forecast = FORECAST.coerce(pd.concat([r[0] for r in results], ignore_index=True))
    points = pd.concat([r[1] for r in results], ignore_index=True)
    return forecast, FORECAST_POINTS.coerce(points)


def _count_series(
    client: Any, source: HistorySource, keys: list[Key], now: datetime, lookback: timedelta, chunk: int
) -> int:
    """Series of the pass (what `forecast_series` sees), counted by the workers from their own slices."""
    chunks = [keys[start : start + chunk] for start in range(0, len(keys), chunk)]
    futures = client.map(count_chunk, [source] * len(chunks), chunks, now=now, lookback=lookback, pure=False)
    return int(sum(client.gather(futures)))


def count_chunk(source: HistorySource, keys: list[Key], now: datetime, lookback: timedelta) -> int:
    """One Dask task: how many (pool, resource, basis) series these keys have within the lookback."""
    reader = source.open()
    try:
        frame = pool_series_for_forecast(_KeyFilter(reader, keys), now, lookback)
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()
    frame = frame[epoch_seconds(frame["timestamp"]) <= _utc(now).timestamp()] if len(frame) else frame
    return int(frame[SERIES_KEY].drop_duplicates().shape[0]) if len(frame) else 0


@contextmanager
def dask_client(config: ForecastConfig) -> Iterator[Any]:
    """A distributed.Client on `dask_scheduler`, or on a LocalCluster of `local_cluster_workers` processes."""
    try:
        dist: Any = importlib.import_module("distributed")  # untyped: used through Any
    except ImportError:
        raise RuntimeError(
            "forecast.executor is dask but Dask is not installed: pip install 'capacityd[dask]'"
        ) from None
    if config.dask_scheduler is not None:
        with dist.Client(config.dask_scheduler, timeout=30) as client:
            yield client
        return
    with (
        dist.LocalCluster(
            n_workers=config.local_cluster_workers or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        dist.Client(cluster) as client,
    ):
        yield client


def forecast_pools(
    history: Any, config: ForecastConfig, *, now: datetime, options: ForecastOptions | None = None, client: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The forecast pass of the daemon on the configured executor (`forecast.executor`)."""
    options = options or ForecastOptions()
    if config.executor == "local":
        frame = pool_series_for_forecast(history, now, config.lookback)
        if frame.empty:
            return FORECAST.empty(), FORECAST_POINTS.empty()
        return forecast_series(frame, now=now, horizon=config.horizon, options=options)
    source = source_of(history)
    if client is not None:
        return run_dask(
            client,
            source,
            now=now,
            lookback=config.lookback,
            horizon=config.horizon,
            options=options,
            chunk=config.dask_chunk_series,
        )
    with dask_client(config) as own:
        return run_dask(
            own,
            source,
            now=now,
            lookback=config.lookback,
            horizon=config.horizon,
            options=options,
            chunk=config.dask_chunk_series,
        )

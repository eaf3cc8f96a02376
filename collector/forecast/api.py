"""Public entry points: pool series in, `forecast` and `forecast_points` frames out.

Used by the forecast analysis (daemon), the what-if command and the weekly report. The input is a
long frame of pool-level series; the work happens on an hourly matrix in blocks of series, so
thousands of pools take seconds and memory stays bounded whatever the horizon.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.forecast.engine import Bands, ForecastOptions, choose_candidates, first_crossing, fit_and_forecast
from collector.forecast.frames import FORECAST, FORECAST_POINTS
from collector.forecast.preprocess import DAY, long_to_matrix

log = logging.getLogger(__name__)

SERIES_KEY = ["layer", "cloud", "pool", "resource", "basis"]
INPUT_COLUMNS = [*SERIES_KEY, "timestamp", "value", "limit"]
INSUFFICIENT = "insufficient_history"


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def forecast_series(
    frame: pd.DataFrame,
    *,
    now: datetime,
    horizon: timedelta = timedelta(days=180),
    options: ForecastOptions | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecast every series of a long frame; returns the (forecast, forecast_points) frames.

    frame columns: layer, cloud, pool, resource, basis ('allocated'|'used'), timestamp (UTC), value,
    limit (allocatable at that time; the last non-NaN limit is the exhaustion threshold). Points
    after `now` are ignored. A series with fewer than two hourly points gets no forecast (model
    `insufficient_history`) but is still listed, exhausted if it is already at its limit.
    """
    options = options or ForecastOptions()
    missing = [column for column in INPUT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"forecast input lacks column(s) {', '.join(missing)} (need {', '.join(INPUT_COLUMNS)})")
    if horizon <= timedelta(0):
        raise ValueError("the forecast horizon must be positive")
    now_ts = _utc(now)
    data = frame[INPUT_COLUMNS].copy()
    data["timestamp"] = pd.to_datetime(data["timestamp"], utc=True)
    data = data[data["timestamp"] <= now_ts]
    bad_basis = ~data["basis"].isin(("allocated", "used"))
    if bad_basis.any():
        raise ValueError(f"forecast input: basis {data.loc[bad_basis, 'basis'].iloc[0]!r} is not allocated or used")
    if data.empty:
        return FORECAST.empty(), FORECAST_POINTS.empty()

    data = data.sort_values("timestamp", kind="stable")
    keys, matrix, grid = long_to_matrix(data, SERIES_KEY, step=options.working_step, end=now_ts)
    limits = (
        data.dropna(subset=["limit"]).groupby(SERIES_KEY, sort=False)["limit"].last()
        .reindex(pd.MultiIndex.from_frame(keys.astype(str))).to_numpy(dtype=float)
    )
    steps = max(1, math.ceil(horizon.total_seconds() / grid.step))
    horizon_end = now_ts + horizon
    candidates = choose_candidates(len(keys), options)

    rows: list[dict[str, Any]] = []
    points: list[pd.DataFrame] = []
    for start in range(0, len(keys), options.chunk):
        block = slice(start, start + options.chunk)
        values = matrix[block]
        bands = fit_and_forecast(values, grid, steps, options, candidates)
        chunk_keys = keys.iloc[block].reset_index(drop=True)
        rows.extend(_forecast_rows(chunk_keys, values, limits[block], bands, now_ts, horizon_end))
        points.append(_daily_points(chunk_keys, bands, horizon_end))
    forecast = FORECAST.build(rows)
    forecast_points = (
        FORECAST_POINTS.coerce(pd.concat(points, ignore_index=True)) if points else FORECAST_POINTS.empty()
    )
    return forecast, forecast_points


def _forecast_rows(keys: pd.DataFrame, values: np.ndarray, limits: np.ndarray, bands: Bands,
                   now: pd.Timestamp, horizon_end: pd.Timestamp) -> list[dict[str, Any]]:
    observed = ~np.isnan(values)
    counts = observed.sum(axis=1)
    last_index = values.shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1)
    current = np.where(counts > 0, values[np.arange(values.shape[0]), last_index], np.nan)
    crossing = {
        "p10": first_crossing(bands.p90, limits),  # the upper demand band reaches the limit first
        "p50": first_crossing(bands.p50, limits),
        "p90": first_crossing(bands.p10, limits),
    }
    growth = _slope_per_day(bands)
    rows = []
    for i in range(len(keys)):
        enough = counts[i] >= 2
        limit = limits[i]
        row: dict[str, Any] = {
            "timestamp": now, **keys.iloc[i].to_dict(),
            "current": current[i], "limit": limit,
            "growth_per_day": growth[i] if enough else np.nan,
            "model": str(bands.model[i]) if enough else INSUFFICIENT,
            "mase": bands.mase[i] if enough else np.nan,
            "history_points": int(counts[i]),
        }
        exhausted_now = not np.isnan(limit) and not np.isnan(current[i]) and current[i] >= limit
        for quantile, index in crossing.items():
            when: pd.Timestamp | None = None
            if exhausted_now:
                when = now
            elif enough and not np.isnan(limit) and index[i] >= 0:
                when = max(bands.grid.end + pd.Timedelta(seconds=bands.grid.step * int(index[i])), now)
                if when > horizon_end:
                    when = None
            row[f"exhaustion_{quantile}"] = when if when is not None else pd.NaT
            row[f"seconds_{quantile}"] = (when - now).total_seconds() if when is not None else math.inf
        rows.append(row)
    return rows


def _slope_per_day(bands: Bands) -> np.ndarray:
    """Least-squares slope of the median forecast over the horizon, per day."""
    p50 = bands.p50
    if p50.shape[1] < 2:
        return np.zeros(p50.shape[0])
    t = np.arange(p50.shape[1], dtype=float)
    t -= t.mean()
    with np.errstate(invalid="ignore"):
        slope = (np.nan_to_num(p50 - np.nanmean(p50, axis=1, keepdims=True)) @ t) / (t @ t)
    return slope * DAY / bands.grid.step


def _daily_points(keys: pd.DataFrame, bands: Bands, horizon_end: pd.Timestamp) -> pd.DataFrame:
    """Daily maxima of the hourly bands (a pool runs out at its daily peak)."""
    times = bands.times()
    keep = times < horizon_end
    times = times[keep]
    if len(times) == 0 or len(keys) == 0:
        return FORECAST_POINTS.empty()
    days = times.floor("D")
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    columns = {}
    for name, band in (("p10", bands.p10), ("p50", bands.p50), ("p90", bands.p90)):
        columns[name] = np.maximum.reduceat(band[:, keep], starts, axis=1).ravel()
    count = len(starts)
    frame = keys.loc[keys.index.repeat(count)].reset_index(drop=True)
    frame["timestamp"] = np.tile(days[starts].to_numpy(), len(keys))
    for name, column in columns.items():
        frame[name] = column
    return frame.dropna(subset=["p10", "p50", "p90"])


def pool_series_for_forecast(history: Any, now: datetime, lookback: timedelta = timedelta(days=56)) -> pd.DataFrame:
    """The forecast input from collector.history.History: one series per pool, resource and basis.

    Reads hourly pool totals (allocated and used sums, allocatable) over the lookback; `limit` is
    the pool's allocatable at each time. Unknown values (NaN used where a layer cannot measure it)
    are dropped, so a basis without data simply has no series.
    """
    now_ts = _utc(now)
    pools = history.pool_series(start=(now_ts - lookback).to_pydatetime(), end=now_ts.to_pydatetime(),
                                step=timedelta(hours=1))
    if pools is None or len(pools) == 0:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in INPUT_COLUMNS})
    parts = []
    for basis in ("allocated", "used"):
        if basis not in pools.columns:
            continue
        part = pools[["layer", "cloud", "pool", "resource", "timestamp", basis, "allocatable"]].rename(
            columns={basis: "value", "allocatable": "limit"}
        )
        part.insert(4, "basis", basis)
        parts.append(part.dropna(subset=["value"]))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INPUT_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame[INPUT_COLUMNS]

"""Public entry points: pool series in, `forecast` and `forecast_points` frames out.

Used by the forecast analysis (daemon), the what-if command and the weekly report. The input is a
long frame of pool-level series; the work happens on an hourly matrix in blocks of series, so
thousands of pools take seconds and memory stays bounded whatever the horizon.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.forecast.engine import (
    Bands,
    ForecastOptions,
    choose_candidates,
    first_crossing,
    fit_and_forecast,
    single_threaded_blas,
)
from collector.analyses.forecast.frames import FORECAST, FORECAST_POINTS
from collector.analyses.forecast.paths import PathModel, crossing_positions
from collector.analyses.forecast.preprocess import (
    DAY,
    Grid,
    block_mean,
    epoch_seconds,
    last_per_series,
    pivot,
    series_codes,
)

log = logging.getLogger(__name__)

SERIES_KEY = ["layer", "cloud", "pool", "resource", "basis"]
INPUT_COLUMNS = [*SERIES_KEY, "timestamp", "value", "limit"]
INSUFFICIENT = "insufficient_history"
EXHAUSTED = "exhausted"
WITHIN_HORIZON = "within_horizon"
BEYOND_HORIZON = "beyond_horizon"
NOT_GROWING = "not_growing"
NO_LIMIT = "no_limit"
REASONS = (EXHAUSTED, WITHIN_HORIZON, BEYOND_HORIZON, NOT_GROWING, NO_LIMIT, INSUFFICIENT)
"""Values of the forecast frame's `exhaustion_reason` (docs/forecasting.md#exhaustion-reason)."""


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
    seconds = epoch_seconds(frame["timestamp"])
    data = frame[INPUT_COLUMNS]
    current = seconds <= now_ts.timestamp()
    if not current.all():
        data, seconds = data[current], seconds[current]
    bad_basis = ~data["basis"].isin(("allocated", "used"))
    if bad_basis.any():
        raise ValueError(f"forecast input: basis {data.loc[bad_basis, 'basis'].iloc[0]!r} is not allocated or used")
    if data.empty:
        return FORECAST.empty(), FORECAST_POINTS.empty()

    codes, keys = series_codes(data, SERIES_KEY)
    values = pd.to_numeric(data["value"], errors="coerce").to_numpy(dtype=float)
    matrix, grid = pivot(codes, len(keys), seconds, values, step=options.working_step, end=now_ts)
    limits = last_per_series(
        codes, len(keys), seconds, pd.to_numeric(data["limit"], errors="coerce").to_numpy(dtype=float)
    )
    return forecast_matrix(keys, matrix, grid, limits, now=now_ts, horizon=horizon, options=options)


def forecast_matrix(
    keys: pd.DataFrame,
    matrix: np.ndarray,
    grid: Grid,
    limits: np.ndarray,
    *,
    now: datetime,
    horizon: timedelta = timedelta(days=180),
    options: ForecastOptions | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """forecast_series on series already on a regular grid (row i of `matrix` is series keys.iloc[i]).

    A grid finer than the working step (hourly) is averaged to it first. Series are processed in
    blocks of `options.chunk`, so working memory stays bounded whatever the number of series and horizon.
    """
    options = options or ForecastOptions()
    keys = keys.reset_index(drop=True)
    limits = np.asarray(limits, dtype=float)
    blocks = (
        (
            keys.iloc[start : start + options.chunk],
            matrix[start : start + options.chunk],
            grid,
            limits[start : start + options.chunk],
        )
        for start in range(0, len(keys), options.chunk)
    )
    return forecast_blocks(blocks, total=len(keys), now=now, horizon=horizon, options=options)


SeriesBlock = tuple[pd.DataFrame, np.ndarray, Grid, np.ndarray]
"""(keys, matrix, grid, limits) of some series: a block of the input, as `forecast_matrix` takes it whole."""


def forecast_blocks(
    blocks: Iterable[SeriesBlock],
    *,
    total: int | None = None,
    now: datetime,
    horizon: timedelta = timedelta(days=180),
    options: ForecastOptions | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """forecast_matrix on an input that arrives in blocks (e.g. read or generated block by block).

    Streaming: only the blocks being forecast (one per worker thread, plus one read ahead) are held,
    so the input never has to fit in memory at once; what is kept is the output (one `forecast` row a
    series and its daily `forecast_points`). Blocks are cut to at most `options.chunk` series.
    `total` (the number of series, when known) decides whether the expensive models fit the
    compute budget; unknown means "many" (cheap models only).
    """
    options = options or ForecastOptions()
    now_ts = _utc(now)
    horizon_end = now_ts + horizon
    candidates = choose_candidates(total if total is not None else 1 << 30, options)
    workers = max(1, options.threads or os.cpu_count() or 1)

    def run(holder: list[SeriesBlock], offset: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        # The block comes in a list that is emptied here, so a fine-grained input (5-minute points) is
        # freed as soon as it is averaged, not when the worker finishes.
        chunk_keys, values, grid, limits = holder.pop()
        if grid.step < options.working_step:
            values, grid = block_mean(values, grid, options.working_step)
        steps = max(1, math.ceil(horizon.total_seconds() / grid.step))
        bands = fit_and_forecast(values, grid, steps, options, candidates)
        daily = _DailyMaxima(bands, horizon_end)
        return (
            _forecast_rows(
                chunk_keys.reset_index(drop=True),
                values,
                np.asarray(limits, dtype=float),
                bands,
                daily,
                now_ts,
                horizon_end,
            ),
            daily.points(offset),
        )

    def pieces() -> Iterator[SeriesBlock]:
        for chunk_keys, matrix, grid, limits in blocks:
            for start in range(0, len(chunk_keys), options.chunk):
                stop = start + options.chunk
                yield chunk_keys.iloc[start:stop], matrix[start:stop], grid, np.asarray(limits)[start:stop]

    results: list[tuple[pd.DataFrame, dict[str, np.ndarray]]] = []
    key_parts: list[pd.DataFrame] = []
    offset = 0
    with single_threaded_blas():
        if workers > 1:  # numpy releases the GIL in the heavy loops: blocks run in parallel
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forecast") as pool:
                pending: deque[Future[tuple[pd.DataFrame, dict[str, np.ndarray]]]] = deque()
                source = pieces()
                while True:
                    while len(pending) >= workers:  # bounded: the next block is read only when a worker is free
                        results.append(pending.popleft().result())
                    block = next(source, None)
                    if block is None:
                        break
                    key_parts.append(block[0][SERIES_KEY].reset_index(drop=True))
                    pending.append(pool.submit(run, [block], offset))
                    offset += len(block[0])
                    del block
                results.extend(future.result() for future in pending)
        else:
            for block in pieces():
                key_parts.append(block[0][SERIES_KEY].reset_index(drop=True))
                results.append(run([block], offset))
                offset += len(block[0])
    if not results:
        return FORECAST.empty(), FORECAST_POINTS.empty()
    forecast = FORECAST.coerce(pd.concat([r[0] for r in results], ignore_index=True))
    keys = pd.concat(key_parts, ignore_index=True)
    parts = [r[1] for r in results]
    results.clear()  # the blocks' points are then referenced once, and freed as _points_frame merges them
    points = _points_frame(keys, parts)
    return forecast, points


def _forecast_rows(
    keys: pd.DataFrame,
    values: np.ndarray,
    limits: np.ndarray,
    bands: Bands,
    daily: _DailyMaxima,
    now: pd.Timestamp,
    horizon_end: pd.Timestamp,
) -> pd.DataFrame:
    """The `forecast` rows of one block of series, built column by column (vectorized)."""
    n = values.shape[0]
    observed = ~np.isnan(values)
    counts = observed.sum(axis=1)
    last_index = values.shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1)
    current = np.where(counts > 0, values[np.arange(n), last_index], np.nan)
    enough = counts >= 2
    columns: dict[str, Any] = {"timestamp": np.full(n, now), **{k: keys[k].to_numpy() for k in SERIES_KEY}}
    columns["current"] = current
    columns["limit"] = limits
    with np.errstate(invalid="ignore"):
        exhausted_now = current >= limits  # False where either is NaN
    valid_limit = ~np.isnan(limits)
    now_ns = now.value
    end_ns = horizon_end.value
    grid_end_ns = bands.grid.end.value
    step_ns = round(bands.grid.step * 1e9)
    # The dates are quantiles of the first crossing over sampled demand paths (paths.py): the p10 date is the
    # earliest plausible one. Positions are on the bands' columns (column i at grid end + i steps), the
    # current value at `now` (before the first forecast hour), interpolated to the second.
    start = (min(now_ns, grid_end_ns) - grid_end_ns) / step_ns if step_ns else 0.0
    paths = bands.paths if bands.paths is not None else PathModel.empty(n)
    positions = crossing_positions(
        bands.p10, bands.p50, bands.p90, paths, limits, current, start=start, starts=daily.starts, hours=daily.hours
    )
    for quantile, position in zip(("p10", "p50", "p90"), positions, strict=True):
        finite = np.isfinite(position)
        offset = np.round(np.where(finite, position, 0.0) * bands.grid.step).astype(np.int64) * 1_000_000_000
        when = np.maximum(grid_end_ns + offset, now_ns)  # whole seconds: block sizes do not move a date
        found = enough & valid_limit & finite & (when <= end_ns)
        when = np.where(exhausted_now, now_ns, when)
        found |= exhausted_now
        columns[f"exhaustion_{quantile}"] = pd.to_datetime(np.where(found, when, np.iinfo(np.int64).min), utc=True)
        columns[f"seconds_{quantile}"] = np.where(found, (when - now_ns) / 1e9, np.inf)
    growth = np.where(enough, _slope_per_day(bands), np.nan)
    reason = np.full(n, BEYOND_HORIZON, dtype=object)
    reason[np.isfinite(columns["seconds_p50"])] = WITHIN_HORIZON
    horizon_days = (end_ns - now_ns) / 1e9 / DAY
    scale = np.fmax(np.abs(np.nan_to_num(current)), np.abs(np.nan_to_num(limits)))
    with np.errstate(invalid="ignore"):
        # rounding noise is no growth: a rise over the whole horizon below a millionth of the level
        rising = growth * horizon_days > 1e-6 * np.maximum(scale, 1e-12)
        reason[(reason == BEYOND_HORIZON) & ~rising] = NOT_GROWING
    reason[~valid_limit] = NO_LIMIT
    reason[~enough] = INSUFFICIENT
    reason[exhausted_now] = EXHAUSTED
    columns["exhaustion_reason"] = reason
    columns["growth_per_day"] = growth
    columns["model"] = np.where(enough, bands.model.astype(object), INSUFFICIENT)
    columns["mase"] = np.where(enough, bands.mase, np.nan)
    columns["history_points"] = counts.astype(np.int64)
    return pd.DataFrame(columns)


def _slope_per_day(bands: Bands) -> np.ndarray:
    """Least-squares slope of the median forecast over the horizon, per day (one matrix-vector product)."""
    p50 = bands.p50
    if p50.shape[1] < 2:
        return np.zeros(p50.shape[0])
    t = np.arange(p50.shape[1], dtype=float)
    t -= t.mean()  # centred, so the forecast's own mean drops out of p50 @ t
    result: np.ndarray = (p50 @ t) / (t @ t) * DAY / bands.grid.step
    return result


class _DailyMaxima:
    """Each band's daily maxima over the horizon: the chart points, and the way to the first crossing.

    A band first reaches the limit on the first day whose maximum does, so the crossing hour is
    found by scanning the daily maxima (series x days) and then that one day's hours, instead of
    comparing every hour of a 180-day horizon three times over.
    """

    def __init__(self, bands: Bands, horizon_end: pd.Timestamp):
        self.bands = bands
        times = bands.times()
        self.hours = int((times < horizon_end).sum())
        days = times[: self.hours].floor("D")
        self.starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if self.hours else np.empty(0, int)
        self.days = days[self.starts] if self.hours else days
        self.maxima: dict[str, np.ndarray] = {}
        for name in ("p10", "p50", "p90"):
            band = getattr(bands, name)[:, : self.hours]
            self.maxima[name] = (
                np.maximum.reduceat(band, self.starts, axis=1) if self.hours else np.empty((band.shape[0], 0))
            )

    def crossing(self, name: str, limits: np.ndarray) -> np.ndarray:
        """Index of the first hour the band reaches the limit within the horizon; -1 where it does not."""
        day = first_crossing(self.maxima[name], limits)
        result = np.full(day.shape, -1, dtype=np.int64)
        rows = np.flatnonzero(day >= 0)
        if rows.size == 0:
            return result
        ends = np.r_[self.starts[1:], self.hours]
        first_hour = self.starts[day[rows]]
        width = int((ends - self.starts).max())
        hours = first_hour[:, None] + np.arange(width)[None, :]
        valid = hours < ends[day[rows]][:, None]
        values = getattr(self.bands, name)[rows[:, None], np.minimum(hours, self.hours - 1)]
        with np.errstate(invalid="ignore"):
            reached = valid & (values >= limits[rows, None])
        result[rows] = first_hour + reached.argmax(axis=1)
        return result

    def points(self, offset: int) -> dict[str, np.ndarray]:
        """The block's `forecast_points` columns (series index, day, daily maxima of each band)."""
        n = self.bands.p50.shape[0]
        count = len(self.starts)
        return {
            "series": np.repeat(np.arange(offset, offset + n), count),
            "timestamp": np.tile(self.days.tz_localize(None).to_numpy(), n)
            if count
            else np.empty(0, dtype="datetime64[ns]"),
            **{name: maxima.ravel() for name, maxima in self.maxima.items()},
        }


def _points_frame(keys: pd.DataFrame, parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """One `forecast_points` frame from every block's columns, built once with the contract's dtypes."""
    kept = []
    while parts:  # filtered block by block (no second full-size copy), each block freed once filtered
        part = parts.pop(0)
        keep = ~(np.isnan(part["p10"]) | np.isnan(part["p50"]) | np.isnan(part["p90"]))
        kept.append({name: column[keep] for name, column in part.items()})
        del part
    merged: dict[str, np.ndarray] = {}
    for name in list(kept[0]):  # one column at a time, dropping the blocks' copies of it as it goes
        merged[name] = np.concatenate([part.pop(name) for part in kept])
    kept.clear()
    series = merged.pop("series")
    columns: dict[str, Any] = {}
    for column in SERIES_KEY:  # StringArray.take: no per-element validation of ~2 million strings
        columns[column] = keys[column].astype("string").array.take(series)
    del series
    columns["timestamp"] = pd.DatetimeIndex(merged.pop("timestamp")).tz_localize("UTC")
    for name in ("p10", "p50", "p90"):
        columns[name] = merged.pop(name)
    # built in the contract's column order (SERIES_KEY, timestamp, p10, p50, p90): no reindexing copy
    return pd.DataFrame(columns, copy=False)


def pool_series_for_forecast(history: Any, now: datetime, lookback: timedelta = timedelta(days=56)) -> pd.DataFrame:
    """The forecast input from collector.store.history.History: one series per pool, resource and basis.

    Reads hourly pool totals (allocated and used sums, allocatable) over the lookback; `limit` is
    the pool's allocatable at each time. Unknown values (NaN used where a layer cannot measure it)
    are dropped, so a basis without data simply has no series. Hypervisor CPU is forecast on `used`
    only: allocated vCPUs above the physical count are overcommit, not exhaustion.
    """
    now_ts = _utc(now)
    pools = history.pool_series(
        start=(now_ts - lookback).to_pydatetime(), end=now_ts.to_pydatetime(), step=timedelta(hours=1)
    )
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
        if basis == "allocated":
            # vCPUs on a hypervisor are overcommitted by design (the ratio lives in Placement, the openstack
            # layer): their sum reaching the physical CPU count is not exhaustion, so it is not forecast as one.
            part = part[~((part["layer"] == "hypervisor") & (part["resource"] == "cpu"))]
        parts.append(part.dropna(subset=["value"]))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INPUT_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame[INPUT_COLUMNS]

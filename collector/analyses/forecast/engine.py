"""Model selection by rolling-origin backtest, calibrated intervals, and time to exhaustion.

The flow for a matrix of series on the hourly working grid:

1. Backtest every candidate model at a few rolling origins inside the history (fit on what came
   before the origin, forecast the next week, compare) and score it by MASE.
2. Per series, keep the model with the lowest backtest MASE; it must beat the least-squares trend
   by `margin` to replace it (a model that only ties the baseline is noise), and an expensive model
   must beat the best cheap one by `expensive_gain` (accuracy per compute second).
3. The 80 % interval is conformal: the 10th and 90th percentiles of the chosen model's own
   backtest errors, per day of lead time (widths never shrink with lead time), scaled by a
   calibration factor measured on the benchmark; before the middle of the first day and past the
   backtest horizon the widths follow the square root of the lead time.
4. Exhaustion (paths.py): quantiles of the first crossing of the limit over sampled demand paths
   (the band's slow quantile plus a bootstrap of the backtest's daily peak overshoots), not the
   crossings of the three bands: the running maximum of demand reaches a limit before its median does.

Over 500 lines on purpose: the models' selection, the bands' calibration and the exhaustion dates read off them
are one calibrated pipeline, checked together by tests/forecast/test_calibration.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from collector.analyses.forecast.models import BASELINE, DEFAULT_CANDIDATES, MODELS, FitInput
from collector.analyses.forecast.paths import PathModel, path_model
from collector.analyses.forecast.preprocess import (
    DAY,
    HOUR,
    Grid,
    block_mean,
    forward_fill,
    nan_mean,
    nan_quantiles,
    recent_level_shift,
)

MIN_WIDTH = 0.01
"""Narrowest band on either side, as a fraction of the series' naive scale (in-sample MAE of the daily
seasonal naive): a series every model fits exactly still gets p10 < p50 < p90."""

SCORE_TOLERANCE = 1e-6
"""MASE differences below this are ties (a constant series: every model is exact up to rounding)."""

INTERVAL_SCALE = 1.0
"""Widening of the raw backtest-error quantiles. The benchmark's pooled 80 % coverage came out at 84 %
with 1.0 (synthetic and Google trace series, 5-minute and hourly): inside 75-85 %, so none is applied."""


REGIME_WIDENING = True
"""Widen the band by `regime_factor` (a series livelier now than over the history it was calibrated on)."""

REGIME_DAYS = 2
"""The recent window `regime_factor` compares with the whole history."""

REGIME_MAX = 3.0
"""At most this much widening: a burst of a few hours is not a new regime for a whole week."""


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while forecasting.

    The matrix products here are small (a few hundred series by a few thousand hours); OpenBLAS'
    own threads only contend with ours and with the daemon's other work: measured here, a
    500 x 1100 matrix-vector product took 20 ms with its threads on a busy 2-core machine and
    0.6 ms on one. The limit is process-wide while the forecast runs.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with statsforecast
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class ForecastOptions:
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    backtest_horizon: timedelta = timedelta(days=7)
    """Lead time models are selected and intervals calibrated on (shortened for short histories)."""
    origins: int = 4
    coverage: float = 0.8
    default_model: str = "combination"
    margin: float = 0.05
    """Another model must beat the default's backtest MASE by this fraction to be chosen instead."""
    expensive_gain: float = 0.10
    compute_budget_seconds: float = 30.0
    """Expensive models (MSTL) are tried only when their estimated cost fits in this budget."""
    expensive_seconds_per_fit: float = 1.2
    """Measured here: MSTL(24, 168) + AutoETS on eight weeks of hourly points, 2 cores."""
    interval_scale: float = INTERVAL_SCALE
    working_step: float = HOUR
    chunk: int = 500
    threads: int | None = None
    """Blocks forecast in parallel (default: one thread per CPU)."""
    """Series per block, bounding memory (a 180-day hourly horizon is 4,320 columns a series)."""


@dataclass
class Bands:
    """Forecasts of n series for `steps` columns after the end of their history."""

    grid: Grid
    """The grid the bands are on; column 0 of the bands is grid.end."""
    model: np.ndarray
    mase: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    """Backtest MASE of every candidate (series,), for reporting."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Compute seconds each candidate took in the backtest."""
    paths: PathModel | None = None
    """What the exhaustion-date sampler needs beyond the bands (paths.py); None: the bands alone."""

    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(self.grid.end, periods=self.p50.shape[1], freq=pd.Timedelta(seconds=self.grid.step))


def backtest_origins(length: int, horizon: int, origins: int, min_train: int) -> list[int]:
    """Rolling origins (column indices), the latest first: each leaves `horizon` columns to test."""
    stride = max(horizon // 2, 1)
    result = []
    for k in range(origins):
        origin = length - horizon - k * stride
        if origin < min_train:
            break
        result.append(origin)
    return result


def naive_scale(values: np.ndarray, season: int) -> np.ndarray:
    """In-sample MAE of the seasonal naive forecast per series: the MASE denominator."""
    season = season if 0 < season < values.shape[1] else 1
    if values.shape[1] <= season:
        return np.full(values.shape[0], np.nan)
    scale = nan_mean(np.abs(values[:, season:] - values[:, :-season]), axis=1)
    level = nan_mean(np.abs(values), axis=1)
    floor = np.maximum(np.nan_to_num(level) * 1e-6, 1e-12)
    result: np.ndarray = np.where(np.isnan(scale) | (scale < floor), floor, scale)
    return result


def naive_scales(values: np.ndarray, season: int, origins: list[int]) -> np.ndarray:
    """naive_scale of values[:, :o] for every origin o at once (series, origins), from running sums."""
    season = season if 0 < season < values.shape[1] else 1
    change = np.abs(values[:, season:] - values[:, :-season])
    valid = ~np.isnan(change)
    total = np.cumsum(np.where(valid, change, 0.0), axis=1)
    count = np.cumsum(valid, axis=1)
    level_total = np.cumsum(np.where(np.isnan(values), 0.0, np.abs(values)), axis=1)
    level_count = np.cumsum(~np.isnan(values), axis=1)
    result = np.empty((values.shape[0], len(origins)))
    for k, origin in enumerate(origins):
        last = origin - season - 1  # the last change inside values[:, :origin]
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = total[:, last] / count[:, last] if last >= 0 else np.full(values.shape[0], np.nan)
            level = level_total[:, origin - 1] / level_count[:, origin - 1]
        floor = np.maximum(np.nan_to_num(level) * 1e-6, 1e-12)
        result[:, k] = np.where(np.isnan(scale) | (scale < floor), floor, scale)
    return result


def _mae(errors: np.ndarray) -> np.ndarray:
    """Mean absolute error over the last axis; NaN where nothing was observed (an origin before a series began)."""
    return nan_mean(np.abs(errors), axis=-1)


def choose_candidates(n: int, options: ForecastOptions) -> list[str]:
    """The candidates worth trying for n series: expensive ones only within the compute budget."""
    fits = options.origins + 1
    names = []
    for name in options.candidates:
        model = MODELS[name]
        if model.expensive and n * fits * options.expensive_seconds_per_fit > options.compute_budget_seconds:
            continue
        names.append(name)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    return names


def fit_and_forecast(
    values: np.ndarray, grid: Grid, steps: int, options: ForecastOptions, candidates: list[str] | None = None
) -> Bands:
    """Select a model per series by rolling-origin backtest and forecast `steps` columns with bands.

    `values` is on the working grid (hourly): NaN where nothing was observed.
    """
    n, length = values.shape
    day = grid.steps_per(DAY)
    names = candidates or choose_candidates(n, options)
    values = follow_recent_shift(values, day)
    horizon = round(options.backtest_horizon.total_seconds() / grid.step)
    horizon = max(1, min(horizon, length // 4))
    min_train = max(2 * day, 2, length // 3)
    origins = backtest_origins(length, horizon, options.origins, min_train)

    errors: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    per_origin: dict[str, np.ndarray] = {}
    whole = FitInput(values, day)
    seconds: dict[str, float] = {}
    if origins:
        scales = naive_scales(values, day, origins)
        actual = np.stack([values[:, o : o + horizon] for o in origins], axis=1)
        inputs = [whole.prefix(o) for o in origins]
        for name in names:
            started = time.perf_counter()
            predicted = np.stack([MODELS[name].forecast(data, horizon) for data in inputs], axis=1)
            seconds[name] = time.perf_counter() - started
            errors[name] = actual - predicted
            per_origin[name] = _mae(errors[name]) / scales
            scores[name] = nan_mean(per_origin[name], axis=1)

    chosen = _select(names, scores, per_origin, n, options)
    p50 = np.full((n, steps), np.nan)
    for name in np.unique(chosen):
        rows = chosen == name
        p50[rows] = MODELS[name].forecast(whole.rows(rows), steps)
    scale = naive_scale(values, day)
    floor = MIN_WIDTH * scale
    bias, lower, upper = _interval_widths(chosen, errors, horizon, steps, day, options, values, floor)
    if origins:
        paths = path_model(actual, _chosen_errors(chosen, errors), max(1, min(day or horizon, horizon)), floor)
    else:
        paths = PathModel.empty(n, floor)
    if REGIME_WIDENING:
        widen = regime_factor(values, day, scale)[:, None]
        lower *= widen
        upper *= widen
        paths.peaks *= widen  # the sampled paths' fast part widens with the band
        paths.fast_width *= widen[:, 0]
    p50 += bias
    del bias
    p10 = np.subtract(p50, lower, out=lower)  # in place: the horizon's matrices are the block's largest
    p90 = np.add(p50, upper, out=upper)
    # A series that never went below zero (usage, allocations) has no negative future either.
    lowest = np.fmin.reduce(values, axis=1) if length else np.full(n, np.nan)  # NaN-skipping, no warning
    with np.errstate(invalid="ignore"):
        non_negative = lowest >= 0
    if non_negative.any():
        for band in (p10, p50, p90):
            np.maximum(band, 0.0, out=band, where=non_negative[:, None])
    mase = np.full(n, np.nan)
    for name in np.unique(chosen):
        if name in scores:
            rows = chosen == name
            mase[rows] = scores[name][rows]
    return Bands(grid, chosen, mase, p10, p50, p90, scores, seconds, paths)


def _chosen_errors(chosen: np.ndarray, errors: dict[str, np.ndarray]) -> np.ndarray:
    """The backtest errors (series, origins, lead) of the model chosen for each series."""
    result = np.full_like(next(iter(errors.values())), np.nan)
    for name in np.unique(chosen):
        if name in errors:
            rows = chosen == name
            result[rows] = errors[name][rows]
    return result


def regime_factor(values: np.ndarray, day: int, scale: np.ndarray) -> np.ndarray:
    """How much livelier the series is now than over its history (series,): >= 1, at most REGIME_MAX.

    The daily seasonal naive's MAE over the last `REGIME_DAYS` days, over the largest of the same
    MAE on the same days of the week one and two weeks earlier and the whole history's. The backtest
    errors the band is calibrated on come from the history's regime; a pool whose day-to-day movement
    just grew (a tenant churning, a migration under way) gets its band widened by that ratio, never
    narrowed (a quiet spell is no promise of a quiet week). Comparing with the same weekdays keeps an
    ordinary weekday/weekend transition from counting as a new regime.
    """
    n, length = values.shape
    window = REGIME_DAYS * day

    def window_mae(end: int) -> tuple[np.ndarray, np.ndarray]:
        tail = values[:, end - window - day : end]
        change = np.abs(tail[:, day:] - tail[:, :-day])
        seen = ~np.isnan(change)
        count = seen.sum(axis=1)
        return np.where(seen, change, 0.0).sum(axis=1) / np.maximum(count, 1), count

    if day < 1 or length < window + day:
        return np.ones(n)
    recent, count = window_mae(length)
    reference = np.nan_to_num(scale).copy()
    for weeks in (1, 2):
        end = length - weeks * 7 * day
        if end >= window + day:
            earlier, seen = window_mae(end)
            reference = np.maximum(reference, np.where(seen >= day, earlier, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((count >= day) & (reference > 0), recent / reference, 1.0)
    result: np.ndarray = np.clip(np.nan_to_num(ratio, nan=1.0, posinf=REGIME_MAX), 1.0, REGIME_MAX)
    return result


def follow_recent_shift(values: np.ndarray, day: int) -> np.ndarray:
    """The history with the part before a fresh level shift moved to the new level.

    Every model (and the backtest that picks one) then sees the pool at the level it is at now: a
    pool that lost a big tenant hours ago is forecast from its new level, not extrapolated from the
    old one, and the shift is not read as growth.
    """
    start, size = recent_level_shift(values, day)
    rows = np.flatnonzero(start >= 0)
    if rows.size == 0:
        return values
    adjusted = values.copy()
    columns = np.arange(values.shape[1])
    adjusted[rows] += np.where(columns[None, :] < start[rows, None], size[rows, None], 0.0)
    return adjusted


def _select(
    names: list[str], scores: dict[str, np.ndarray], per_origin: dict[str, np.ndarray], n: int, options: ForecastOptions
) -> np.ndarray:
    """Per series: the default model unless another beats its backtest MASE by `margin`.

    The default (the combination where it can run, else the trend) is a prior: with a few weeks of
    history a backtest score is noisy, and a challenger winning by a hair, or on average thanks to
    one lucky origin, is more likely luck than skill. So a challenger must beat the default's mean
    MASE by `margin` *and* be better at most origins. Expensive challengers must win by
    `expensive_gain` (accuracy per compute second).
    """
    if len(names) == 1:  # a single model forced (the benchmark scores each model on its own)
        return np.full(n, names[0]).astype(str)
    default = options.default_model if options.default_model in scores else BASELINE
    chosen = np.full(n, default, dtype=object)
    if default not in scores:
        return chosen.astype(str)
    reference = np.nan_to_num(scores[default], nan=np.inf)
    best = reference.copy()
    for name in names:
        if name == default or name not in scores:
            continue
        gain = options.expensive_gain if MODELS[name].expensive else options.margin
        score = np.nan_to_num(scores[name], nan=np.inf)
        with np.errstate(invalid="ignore"):
            wins = (per_origin[name] < per_origin[default]).sum(axis=1)
        origins = np.isfinite(per_origin[default]).sum(axis=1)
        consistent = wins * 2 > origins
        better = (score < reference * (1 - gain) - SCORE_TOLERANCE) & (score < best) & consistent
        chosen[better] = name
        best = np.where(better, score, best)
    return chosen.astype(str)


def _interval_widths(
    chosen: np.ndarray,
    errors: dict[str, np.ndarray],
    horizon: int,
    steps: int,
    day: int,
    options: ForecastOptions,
    values: np.ndarray,
    floor: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias, lower and upper band widths (series, steps) from the chosen model's backtest errors.

    Conformal quantile calibration on the errors (actual - forecast) per day of lead time. The bias
    every origin agrees on is added to the point forecast where a leave-one-origin-out backtest says
    it pays (`_bias_pays`); the band widths are the distances of the 10th and 90th percentiles from
    the errors' median, so they are never clipped to zero on one side when the errors all have one
    sign. Widths are at least `floor` (a small fraction
    of the series' naive scale), so p10 < p50 < p90 strictly.
    """
    n = chosen.shape[0]
    alpha = (1 - options.coverage) / 2
    bucket = max(1, min(day or horizon, horizon))
    buckets = -(-horizon // bucket)
    low = np.zeros((n, buckets))
    mid = np.zeros((n, buckets))
    high = np.zeros((n, buckets))
    if errors:
        chosen_errors = _chosen_errors(chosen, errors)
        means = np.full((n, chosen_errors.shape[1], buckets), np.nan)  # mean error per origin and bucket
        for b in range(buckets):
            window = chosen_errors[:, :, b * bucket : (b + 1) * bucket]
            observed = (~np.isnan(window)).sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[:, :, b] = np.where(
                    observed > 0, np.where(np.isnan(window), 0.0, window).sum(axis=2) / np.maximum(observed, 1), np.nan
                )
            mid[:, b] = _consistent_bias(means[:, :, b])
        mid *= _bias_pays(chosen_errors, means, bucket)[:, None]
        for b in range(buckets):
            window = chosen_errors[:, :, b * bucket : (b + 1) * bucket]
            lower_q, median, upper_q = nan_quantiles(window.reshape(n, -1), (alpha, 0.5, 1 - alpha))
            # The band's shape is the errors' spread around their own median, whether or not the bias
            # moved the point forecast: one-signed errors give a lopsided band, never a zero-width side.
            low[:, b] = median - lower_q
            high[:, b] = upper_q - median
        # A series younger than every backtest origin has no backtest error to calibrate on
        unseen = ~np.isfinite(chosen_errors).any(axis=(1, 2))
    else:
        unseen = np.ones(n, dtype=bool)
    if unseen.any():
        # No backtest for these series (no room for one, or a series younger than every origin): the band of
        # a random walk with the series' own hour-to-hour changes, growing with the square root of the lead.
        # (Was: the floor alone, 1 % of the naive scale, so a two-day-old pool got p10 = p50 = p90 for months.)
        young = values[unseen]
        # root mean square of the changes (not their spread around the mean change: two points have none)
        changes = np.diff(young, axis=1) if values.shape[1] > 1 else np.full((young.shape[0], 1), np.nan)
        spread = np.sqrt(nan_mean(changes**2, axis=1)) * 1.2816
        walk = np.nan_to_num(spread)[:, None] * np.sqrt((np.arange(buckets) + 0.5) * bucket)[None, :]
        low[unseen] = walk
        high[unseen] = walk
        mid[unseen] = 0.0
    floor = np.nan_to_num(floor)[:, None]
    scale = options.interval_scale
    low = np.maximum(np.maximum.accumulate(np.nan_to_num(low), axis=1) * scale, floor)
    high = np.maximum(np.maximum.accumulate(np.nan_to_num(high), axis=1) * scale, floor)
    # Each bucket's quantile is the width at the bucket's middle lead time; in between, linear; before
    # the first middle, the first bucket's width (the errors of the first hours carry the series' whole
    # short-term noise: shrinking them towards lead 0 under-covered on the real traces); after the last
    # middle, growing with the square root of the lead (random-walk-like). The bias is held at its first
    # and last bucket's value outside them.
    lead = np.arange(1, steps + 1, dtype=float)
    centres = (np.arange(buckets) + 0.5) * bucket
    position = np.interp(lead, centres, np.arange(buckets, dtype=float))
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, buckets - 1)
    fraction = position - below
    growth = np.where(lead > centres[-1], np.sqrt(lead / centres[-1]), 1.0)
    # (buckets x steps) interpolation matrices: one matrix product per band instead of fancy indexing
    flat = np.zeros((buckets, steps))
    columns = np.arange(steps)
    np.add.at(flat, (below, columns), 1 - fraction)
    np.add.at(flat, (above, columns), fraction)
    weights = flat * growth[None, :]
    return mid @ flat, low @ weights, high @ weights


def _consistent_bias(per_origin: np.ndarray) -> np.ndarray:
    """The bias every backtest origin agrees on (series,): 0 unless all origins' mean errors share a sign.

    Then the smallest of them in magnitude: the part of the error that no origin contradicts. A
    growing series that every origin under-forecast gets its median lifted; noise, which makes some
    origins too high and some too low, moves nothing (four origins agree by chance one time in eight,
    and then by the least of their four errors).
    """
    seen = ~np.isnan(per_origin)
    count = seen.sum(axis=1)
    positive = ((per_origin > 0) & seen).sum(axis=1)
    negative = ((per_origin < 0) & seen).sum(axis=1)
    magnitude = np.where(seen, np.abs(per_origin), np.inf).min(axis=1)
    agree = (count >= 2) & ((positive == count) | (negative == count))
    return np.where(agree, np.where(positive == count, magnitude, -magnitude), 0.0)


def _bias_pays(errors: np.ndarray, means: np.ndarray, bucket: int) -> np.ndarray:
    """Per series: does correcting the bias lower the backtest error when the bias is learnt elsewhere?

    Leave one origin out: the bias is estimated on the other origins (`_consistent_bias`) and taken
    off the held-out origin's errors. Only where that lowers the mean absolute error over all origins
    is the correction applied: a bias that does not carry over from one week to the next (measured on
    the public traces: most of it did not) is noise, not a bias.
    """
    n, k, horizon = errors.shape
    if k < 3:
        return np.zeros(n)
    corrected = np.empty_like(errors)
    columns = np.minimum(np.arange(horizon) // bucket, means.shape[2] - 1)
    for origin in range(k):
        others = np.delete(means, origin, axis=1)
        bias = np.stack([_consistent_bias(others[:, :, b]) for b in range(means.shape[2])], axis=1)
        corrected[:, origin] = errors[:, origin] - bias[:, columns]
    seen = ~np.isnan(errors)
    count = np.maximum(seen.sum(axis=(1, 2)), 1)
    raw = np.where(seen, np.abs(errors), 0.0).sum(axis=(1, 2)) / count
    loo = np.where(seen, np.abs(corrected), 0.0).sum(axis=(1, 2)) / count
    result: np.ndarray = (loo < raw).astype(float)
    return result


def first_crossing(band: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Index of the first column where band >= limit per row; -1 where it never does."""
    with np.errstate(invalid="ignore"):
        reached = band >= limit[:, None]
    index = reached.argmax(axis=1)
    return np.where(reached.any(axis=1), index, -1)


def forecast_native(
    values: np.ndarray,
    grid: Grid,
    steps: int,
    options: ForecastOptions | None = None,
    candidates: list[str] | None = None,
) -> Bands:
    """Forecast series given on any regular grid; models run on the hourly working grid.

    A grid finer than an hour is averaged to hourly, forecast, and mapped back by interpolating
    between hour centres; the bands then also carry the series' spread within an hour (10th/90th
    percentile of native minus hourly mean over the last two weeks), so coverage holds at the
    native step.
    """
    options = options or ForecastOptions()
    if grid.step >= options.working_step or values.shape[1] == 0:
        return fit_and_forecast(values, grid, steps, options, candidates)
    hourly, hourly_grid = block_mean(values, grid, options.working_step)
    native_end = grid.end
    factor = round(options.working_step / grid.step)
    hours = int(np.ceil((native_end - hourly_grid.end).total_seconds() / options.working_step + steps / factor)) + 2
    bands = fit_and_forecast(hourly, hourly_grid, hours, options, candidates)
    centres = (np.arange(-1, hours) + 0.5) * options.working_step + (hourly_grid.end - native_end).total_seconds()
    targets = (np.arange(steps) + 0.5) * grid.step
    # the last hour with data anchors the interpolation before the first forecast hour
    last_hour = forward_fill(hourly)[:, -1] if hourly.shape[1] else np.full(hourly.shape[0], np.nan)

    def resample(band: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        full = np.concatenate((np.where(np.isnan(anchor), band[:, 0], anchor)[:, None], band), axis=1)
        out = np.empty((band.shape[0], steps))
        for row in range(band.shape[0]):
            out[row] = np.interp(targets, centres, full[row])
        return out

    p50 = resample(bands.p50, last_hour)
    sub_low, sub_high = _subhourly_spread(values, grid, factor, options)
    # The widths are anchored on the first forecast hour's width: a width, not the last hour's level
    # (which made the band span the whole series for the first half hour of every forecast).
    low_width, high_width = bands.p50 - bands.p10, bands.p90 - bands.p50
    low = np.sqrt(resample(low_width, low_width[:, 0]) ** 2 + sub_low[:, None] ** 2)
    high = np.sqrt(resample(high_width, high_width[:, 0]) ** 2 + sub_high[:, None] ** 2)
    p10, p90 = p50 - low, p50 + high
    lowest = np.fmin.reduce(values, axis=1)
    with np.errstate(invalid="ignore"):
        non_negative = lowest >= 0
    for band in (p10, p50, p90):
        np.maximum(band, 0.0, out=band, where=non_negative[:, None])
    return Bands(grid, bands.model, bands.mase, p10, p50, p90, bands.scores, bands.seconds, bands.paths)


def _subhourly_spread(
    values: np.ndarray, grid: Grid, factor: int, options: ForecastOptions
) -> tuple[np.ndarray, np.ndarray]:
    window = min(values.shape[1] // factor * factor, 14 * 24 * factor)
    if window < factor:
        return np.zeros(values.shape[0]), np.zeros(values.shape[0])
    tail = values[:, values.shape[1] - window :].reshape(values.shape[0], -1, factor)
    alpha = (1 - options.coverage) / 2
    deviation = (tail - nan_mean(tail, axis=2, keepdims=True)).reshape(values.shape[0], -1)
    low_q, high_q = nan_quantiles(deviation, (alpha, 1 - alpha))
    low, high = -low_q, high_q
    return np.clip(np.nan_to_num(low), 0, None), np.clip(np.nan_to_num(high), 0, None)

"""Exhaustion dates from the forecast distribution: sampled demand paths, each path's first crossing.

Why not read the date off the p10/p50/p90 bands: a band is a quantile of the demand *at each hour*,
and the first hour a path crosses the limit is decided by its running maximum. The median path is
smooth at the daily peaks (it is a mean of models), while real demand overshoots its forecast peak
on most days; reading the p50 date off the p50 band therefore dates exhaustion late, or never, and
the three dates of three deterministic paths collapse into one hour when the bands are narrow.

A sampled path here is, per calendar day d (the bands are hourly, the limit is reached at a peak):

    daily peak(d) = max over the day of p50 + S(u, d) + X(d)

* S(u, d), the slow part: the calibrated band at the hour of p50's daily peak, at quantile u (one u
  per path, the same every day: a level error persists), shaped as a normal quantile scaled to the
  band's 80 % widths, with the fast part's share of those widths taken out (in quadrature), so the
  pointwise band stays what the backtest calibrated;
* X(d), the fast part: a smoothed bootstrap of the chosen model's own backtest *peak excesses*, how
  far each backtest day's actual peak rose above the forecast's peak moved by that day's mean error
  (a fresh draw each day and path).

The date is the first day whose sampled peak reaches the limit, and within that day the first hour
the p50 profile moved by the same S + X does, interpolated linearly. The p10/p50/p90 of the crossing
times over the paths (a path that never crosses within the horizon is +inf) are the date interval.
Draws are common random numbers (a fixed seed, the same for every series), so the result does not
depend on how series are split into blocks, and a higher limit never gives an earlier date.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from collector.analyses.forecast.preprocess import nan_max, nan_mean, nan_quantiles, nan_std

PATHS = 100
"""Sampled paths per series (stratified in the slow quantile u: (i + 0.5) / PATHS)."""

SEED = 20_261_105
DAY_CHUNK = 16
"""Days of paths held at a time: a block of 500 series x 100 paths x 16 days is 6 MB per array."""

Z80 = NormalDist().inv_cdf(0.9)
OUTLIER = 4.0
"""Peak excesses beyond this many robust standard deviations (1.4826 MAD) of their median are clipped to it."""
MIN_OBSERVED = 0.5
"""A backtest day counts towards the peak excesses when at least half its hours were observed."""


@dataclass
class PathModel:
    """What the sampler needs per series besides the bands (from the chosen model's backtest)."""

    peaks: np.ndarray
    """(series, k) backtest peak excesses, NaN-padded: the smoothed bootstrap's source."""
    fast_width: np.ndarray
    """(series,) 80 % half-width of the backtest errors around their daily mean: the fast part of a band."""
    floor: np.ndarray
    """(series,) narrowest slow width: the bands' own floor, so slow quantiles stay apart."""

    @classmethod
    def empty(cls, n: int, floor: np.ndarray | None = None) -> PathModel:
        """No backtest: the slow part is the whole band and there is no fast part."""
        return cls(np.full((n, 0), np.nan), np.zeros(n), np.zeros(n) if floor is None else np.nan_to_num(floor))

    def rows(self, selection: np.ndarray) -> PathModel:
        return PathModel(self.peaks[selection], self.fast_width[selection], self.floor[selection])


def path_model(actual: np.ndarray, errors: np.ndarray, bucket: int, floor: np.ndarray) -> PathModel:
    """Peak excesses and the fast width from backtest actuals and errors (series, origins, lead)."""
    n, k, horizon = errors.shape
    days = horizon // bucket if bucket > 1 else 0
    if days == 0 or k == 0:
        return PathModel.empty(n, floor)
    shape = (n, k, days, bucket)
    error = errors[:, :, : days * bucket].reshape(shape)
    value = actual[:, :, : days * bucket].reshape(shape)
    mean = nan_mean(error, axis=3)
    enough = (~np.isnan(error)).sum(axis=3) >= MIN_OBSERVED * bucket
    predicted = value - error  # NaN where nothing was observed: the peaks compare observed hours only
    excess = nan_max(value, axis=3) - nan_max(predicted, axis=3) - mean
    peaks = np.where(enough, excess, np.nan).reshape(n, k * days)
    # A backtest day that straddled a level shift (or an outage) is no sample of the daily overshoot: over a
    # long horizon every path draws its largest value sooner or later, so one such day would date every
    # exhaustion by it. Outliers are pulled in to OUTLIER robust standard deviations of the median.
    centre = nan_quantiles(peaks, (0.5,))[0][:, None]
    sigma = 1.4826 * nan_quantiles(np.abs(peaks - centre), (0.5,))[0][:, None]
    peaks = np.clip(peaks, centre - OUTLIER * sigma, centre + OUTLIER * sigma)
    fast = (error - mean[..., None]).reshape(n, -1)
    low, high = nan_quantiles(fast, (0.1, 0.9))
    return PathModel(np.sort(peaks, axis=1), np.nan_to_num((high - low) / 2), np.nan_to_num(floor))


def crossing_positions(
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    model: PathModel,
    limits: np.ndarray,
    current: np.ndarray,
    *,
    start: float,
    starts: np.ndarray,
    hours: int,
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
) -> list[np.ndarray]:
    """Quantiles of the first crossing over sampled paths, as positions on the bands' columns.

    Column i of the bands is at position i; `current` (the last observation) is at `start` (<= 0).
    `starts` are the first columns of each calendar day, `hours` the columns within the horizon.
    Returns one array per quantile: fractional positions, +inf where that quantile of the paths does
    not cross within the horizon (or the limit is unknown).
    """
    n = p50.shape[0]
    position = np.full((n, PATHS), np.inf)
    days = len(starts)
    todo = np.isfinite(limits)
    if n and days and hours and todo.any():
        _sample(p10, p50, p90, model, limits, current, start, starts, hours, todo, position)
    return _quantiles(position, quantiles)


def _sample(
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    model: PathModel,
    limits: np.ndarray,
    current: np.ndarray,
    start: float,
    starts: np.ndarray,
    hours: int,
    todo: np.ndarray,
    position: np.ndarray,
) -> None:
    """Fill `position` (series, paths) with each path's first crossing, day chunk by day chunk."""
    days = len(starts)
    ends = np.r_[starts[1:], hours]
    width = int((ends - starts).max())
    columns = starts[:, None] + np.arange(width)[None, :]
    valid = columns < ends[:, None]
    columns = np.minimum(columns, hours - 1)
    z = np.array([NormalDist().inv_cdf((i + 0.5) / PATHS) for i in range(PATHS)]) / Z80
    draws = np.random.default_rng(SEED).integers(0, 1 << 30, size=(days, PATHS))
    noise = np.random.default_rng(SEED + 1).standard_normal((days, PATHS))
    count = (~np.isnan(model.peaks)).sum(axis=1)
    spread = np.nan_to_num(nan_std(model.peaks, axis=1))
    bandwidth = np.where(count >= 2, 1.06 * spread * np.maximum(count, 1) ** -0.2, 0.0)  # Silverman's rule
    pool = np.nan_to_num(model.peaks) if model.peaks.shape[1] else np.zeros((len(count), 1))
    for first in range(0, days, DAY_CHUNK):
        rows = np.flatnonzero(todo & np.isinf(position).any(axis=1))
        if rows.size == 0:
            return
        last = min(days, first + DAY_CHUNK)
        cols, ok = columns[first:last], valid[first:last]  # (chunk, width)
        r = rows[:, None, None]
        profile = np.where(ok[None], p50[r, cols[None]], -np.inf)  # (rows, chunk, width)
        peak_at = np.argmax(np.nan_to_num(profile, nan=-np.inf), axis=2)
        peak = np.take_along_axis(profile, peak_at[..., None], axis=2)[..., 0]
        at = cols[np.arange(last - first)[None, :], peak_at]  # (rows, chunk): the peak's column
        lower = p50[rows[:, None], at] - p10[rows[:, None], at]
        upper = p90[rows[:, None], at] - p50[rows[:, None], at]
        fast = model.fast_width[rows, None] ** 2
        floor = model.floor[rows, None] ** 2
        slow_low = np.sqrt(np.maximum(lower**2 - fast, floor))
        slow_high = np.sqrt(np.maximum(upper**2 - fast, floor))
        slow = np.where(z > 0, z * slow_high[..., None], z * slow_low[..., None])  # (rows, chunk, paths)
        index = draws[first:last][None] % np.maximum(count[rows], 1)[:, None, None]
        excess = pool[r, index] + bandwidth[rows, None, None] * noise[first:last][None]
        offset = slow + np.where(count[rows, None, None] > 0, excess, 0.0)
        with np.errstate(invalid="ignore"):
            hit = (peak[..., None] + offset >= limits[rows, None, None]) & np.isinf(position[rows])[:, None, :]
        crossed = hit.any(axis=1)  # (rows, paths)
        if not crossed.any():
            continue
        local, path = np.nonzero(crossed)
        day = hit[local, :, path].argmax(axis=1)
        shift = offset[local, day, path]
        series = rows[local]
        hourly = profile[local, day] + shift[:, None]  # (k, width): that day's p50 moved by the path's offset
        with np.errstate(invalid="ignore"):
            reached = hourly >= limits[series, None]
        step = reached.argmax(axis=1)
        column = cols[day, step]
        before_value = np.where(column > 0, p50[series, np.maximum(column - 1, 0)] + shift, current[series])
        before_position = np.where(column > 0, column - 1.0, start)
        after_value = hourly[np.arange(series.size), step]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = (limits[series] - before_value) / (after_value - before_value)
        fraction = np.where(np.isfinite(fraction), np.clip(fraction, 0.0, 1.0), 1.0)
        position[series, path] = before_position + fraction * (column - before_position)


def _quantiles(position: np.ndarray, quantiles: tuple[float, ...]) -> list[np.ndarray]:
    """Linear-interpolation quantiles over the paths; +inf when an interpolated neighbour never crossed."""
    ordered = np.sort(position, axis=1)
    paths = ordered.shape[1]
    result = []
    for q in quantiles:
        spot = q * (paths - 1)
        below, above = int(np.floor(spot)), int(np.ceil(spot))
        fraction = spot - below
        low, high = ordered[:, below], ordered[:, above]
        finite = np.isfinite(low) & np.isfinite(high)
        mixed = np.where(finite, low, 0.0) * (1 - fraction) + np.where(finite, high, 0.0) * fraction
        value = np.where(finite, mixed, np.inf)
        result.append(value)
    return result

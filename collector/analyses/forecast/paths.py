"""Exhaustion dates from the forecast distribution: sampled demand paths, each path's first crossing.

Why not read the date off the p10/p50/p90 bands: a band is a quantile of the demand *at each hour*,
and the first hour a path crosses the limit is decided by its running maximum. The median path is
smooth at the daily peaks (it is a mean of models), while real demand overshoots its forecast peak
on most days; reading the p50 date off the p50 band therefore dates exhaustion late, or never, and
the three dates of three deterministic paths collapse into one hour when the bands are narrow.

A sampled path here is, per calendar day d (the bands are hourly, the limit is reached at a peak):

    daily peak(d) = max over the day of p50 + S(u, d) + X(d)

* S(u, d), the slow part: the calibrated band at the hour of p50's daily peak, at quantile u (one u
  per path, the same every day: a level error persists), shaped as the empirical quantiles of the
  backtest's daily mean errors (a normal shape with too few of them) scaled to the band's 80 % widths,
  with the fast part's share of those widths taken out (in quadrature), so the pointwise band stays
  what the backtest calibrated;
* X(d), the fast part: a smoothed bootstrap of the chosen model's own backtest *peak excesses*, how
  far each backtest day's actual peak rose above the forecast's peak moved by that day's mean error
  (a fresh draw each day and path).

The date is the first day whose sampled peak reaches the limit, and within that day the first hour
where p50 + S + a fresh draw of the hourly errors (around their daily mean) does (the day's highest
such hour if none does), interpolated linearly within the hour. The p10/p50/p90 of the crossing
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
DAY_CHUNK = 8
"""Days of paths held at a time: a block of 500 series x 100 paths x 8 days is 3 MB per array."""

Z80 = NormalDist().inv_cdf(0.9)
OUTLIER = 4.0
"""Peak excesses beyond this many robust standard deviations (1.4826 MAD) of their median are clipped to it."""
FAST_LEVELS = 21
"""Quantile levels (0, 5, ..., 100 %) kept of the hourly errors around their daily mean."""
MIN_OBSERVED = 0.5
"""A backtest day counts towards the peak excesses when at least half its hours were observed."""
MIN_SHAPE = 8
"""Daily mean errors needed for their empirical shape (fewer: a normal shape)."""
LEVELS = (np.arange(PATHS) + 0.5) / PATHS
"""Each path's slow quantile level u."""
NORMAL_SHAPE = np.array([NormalDist().inv_cdf(u) for u in LEVELS]) / Z80
"""The normal slow shape: +-1 at the 10th and 90th percentiles."""


@dataclass
class PathModel:
    """What the sampler needs per series besides the bands (from the chosen model's backtest)."""

    peaks: np.ndarray
    """(series, k) backtest peak excesses, NaN-padded: the smoothed bootstrap's source."""
    fast_width: np.ndarray
    """(series,) 80 % half-width of the backtest errors around their daily mean: the fast part of a band."""
    floor: np.ndarray
    """(series,) narrowest slow width: the bands' own floor, so slow quantiles stay apart."""
    hourly: np.ndarray
    """(series, FAST_LEVELS) quantiles of the hourly errors around their daily mean: where in its day a path crosses."""
    shape: np.ndarray
    """(series, PATHS) each path's slow quantile in units of the band's 80 % width on its side (-1 at the 10th
    percentile, 0 at the median, +1 at the 90th): the empirical shape of the backtest's daily mean errors."""

    @classmethod
    def empty(cls, n: int, floor: np.ndarray | None = None) -> PathModel:
        """No backtest: the slow part is the whole band, normal-shaped, and there is no fast part."""
        floor = np.zeros(n) if floor is None else np.nan_to_num(floor)
        shape = np.tile(NORMAL_SHAPE, (n, 1))
        return cls(np.full((n, 0), np.nan), np.zeros(n), floor, np.zeros((n, FAST_LEVELS)), shape)

    def rows(self, selection: np.ndarray) -> PathModel:
        return PathModel(
            self.peaks[selection],
            self.fast_width[selection],
            self.floor[selection],
            self.hourly[selection],
            self.shape[selection],
        )


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
    levels = nan_quantiles(fast, tuple(np.linspace(0.0, 1.0, FAST_LEVELS)))
    hourly = np.nan_to_num(np.stack(levels, axis=1))
    return PathModel(
        np.sort(peaks, axis=1),
        np.nan_to_num((high - low) / 2),
        np.nan_to_num(floor),
        hourly,
        slow_shape(np.where(enough, mean, np.nan)),
    )


def slow_shape(mean: np.ndarray) -> np.ndarray:
    """Each path's slow quantile from the backtest's daily mean errors (series, origins, days), per band side.

    A normal shape between the band's quantiles read a band inflated by a few backtest days (a level shift
    inside the backtest: the 90th percentile 150 above the median, most errors within 5) as "the 60th
    percentile is 30 above": half the paths crossed days early. The empirical quantiles of the daily mean
    errors, scaled so that the 10th and 90th percentiles are -1 and +1, keep most paths near the median
    there; with fewer than MIN_SHAPE daily means, or a side of zero width, the normal shape is used.
    """
    n = mean.shape[0]
    flat = mean.reshape(n, -1)
    count = (~np.isnan(flat)).sum(axis=1)
    low, centre, high = nan_quantiles(flat, (0.1, 0.5, 0.9))
    levels = nan_quantiles(flat, tuple(LEVELS))
    quantile = np.stack(levels, axis=1)  # (series, paths)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = (quantile - centre[:, None]) / (centre - low)[:, None]
        above = (quantile - centre[:, None]) / (high - centre)[:, None]
    empirical = np.where(LEVELS[None, :] > 0.5, np.maximum(above, 0.0), np.minimum(below, 0.0))
    usable = (count >= MIN_SHAPE) & (high > centre) & (centre > low)
    result: np.ndarray = np.where(usable[:, None] & np.isfinite(empirical), empirical, NORMAL_SHAPE[None, :])
    return result


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
        # Paths crossing after the last order statistic the quantiles read cannot change them: a series is
        # done once that many have crossed (they all crossed before any later path can).
        needed = min(PATHS, int(np.ceil(max(quantiles) * (PATHS - 1))) + 1)
        _sample(p10, p50, p90, model, limits, current, start, starts, hours, todo, position, needed)
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
    needed: int,
) -> None:
    """Fill `position` (series, paths) with each path's first crossing, day chunk by day chunk."""
    days = len(starts)
    ends = np.r_[starts[1:], hours]
    width = int((ends - starts).max())
    columns = starts[:, None] + np.arange(width)[None, :]
    valid = columns < ends[:, None]
    columns = np.minimum(columns, hours - 1)
    shape = model.shape
    upper_from = int(np.searchsorted(LEVELS, 0.5, side="right"))  # paths above the median use the upper side
    draws = np.random.default_rng(SEED).random((days, PATHS))  # which overshoot each day and path draws
    noise = np.random.default_rng(SEED + 1).standard_normal((days, PATHS))
    chance = np.random.default_rng(SEED + 2).random((days, PATHS))
    count = (~np.isnan(model.peaks)).sum(axis=1)
    spread = np.nan_to_num(nan_std(model.peaks, axis=1))
    bandwidth = np.where(count >= 2, 1.06 * spread * np.maximum(count, 1) ** -0.2, 0.0)  # Silverman's rule
    pool = np.nan_to_num(model.peaks) if model.peaks.shape[1] else np.zeros((len(count), 1))
    # The highest any path can be each day (the top slow quantile on the whole upper width, the largest
    # overshoot and noise draw): before its first day reaching the limit a series needs no sampling at all,
    # and one that never reaches it (most series, over most of a long horizon) costs two passes, not 100 paths.
    top = np.where(count > 0, pool.max(axis=1) + bandwidth * np.abs(noise).max(), 0.0)
    # fmax skips NaN (a series without a forecast); NaN-safe on the small (series, days) results only
    upper = np.nan_to_num(np.fmax.reduceat(p90[:, :hours] - p50[:, :hours], starts, axis=1))
    upper = np.maximum(upper, model.floor[:, None])  # the slow width is at least the floor
    highest = np.nan_to_num(np.fmax.reduceat(p50[:, :hours], starts, axis=1), nan=-np.inf)
    with np.errstate(invalid="ignore"):
        possible = highest + shape.max(axis=1)[:, None] * upper + top[:, None] >= limits[:, None]
    earliest = np.where(possible.any(axis=1), possible.argmax(axis=1), days)
    for first in range(0, days, DAY_CHUNK):
        active = todo & (np.isfinite(position).sum(axis=1) < needed) & (earliest < days)
        if not active.any():
            return
        rows = np.flatnonzero(active & (earliest < first + DAY_CHUNK))
        if rows.size == 0:
            continue
        last = min(days, first + DAY_CHUNK)
        cols, ok = columns[first:last], valid[first:last]  # (chunk, width)
        r = rows[:, None, None]
        profile = p50[r, cols[None]]  # (rows, chunk, width); -inf past the horizon and where there is no forecast
        profile[~ok[None] | np.isnan(profile)] = -np.inf
        peak_at = np.argmax(profile, axis=2)
        peak = np.take_along_axis(profile, peak_at[..., None], axis=2)[..., 0]
        at = cols[np.arange(last - first)[None, :], peak_at]  # (rows, chunk): the peak's column
        lower = p50[rows[:, None], at] - p10[rows[:, None], at]
        upper = p90[rows[:, None], at] - p50[rows[:, None], at]
        fast = model.fast_width[rows, None] ** 2
        floor = model.floor[rows, None] ** 2
        # the fast part's share taken out of both sides alike (per side, a lopsided band became far more so)
        both = ((lower + upper) / 2) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.sqrt(np.clip(1 - fast / both, 0.0, 1.0))
        share = np.nan_to_num(share, nan=1.0)
        slow_low = np.sqrt(np.maximum((lower * share) ** 2, floor))
        slow_high = np.sqrt(np.maximum((upper * share) ** 2, floor))
        slow = np.empty((rows.size, last - first, PATHS))  # (rows, chunk, paths); z ascends: low side first
        np.multiply(shape[rows, None, :upper_from], slow_low[..., None], out=slow[..., :upper_from])
        np.multiply(shape[rows, None, upper_from:], slow_high[..., None], out=slow[..., upper_from:])
        # a series without overshoots has a pool of zeros and a zero bandwidth: its excess is 0
        index = (draws[first:last][None] * np.maximum(count[rows], 1)[:, None, None]).astype(np.int64)
        offset = pool[r, index]
        offset += bandwidth[rows, None, None] * noise[first:last][None]
        offset += slow
        with np.errstate(invalid="ignore"):
            hit = offset >= (limits[rows, None] - peak)[..., None]
        hit &= np.isinf(position[rows])[:, None, :]
        crossed = hit.any(axis=1)  # (rows, paths)
        if not crossed.any():
            continue
        local, path = np.nonzero(crossed)
        day = hit[local, :, path].argmax(axis=1)
        shift = offset[local, day, path]
        series = rows[local]
        # Within that day the path's hours are p50 moved by its slow part plus a fresh draw of the hourly errors:
        # it crosses at the first hour that reaches the limit (at the day's highest hour if none does; the
        # day's overshoot said it crosses that day). The first hour of the overshoot alone dated a flat
        # series' crossings at the start of every day; any hour of it alike, too late.
        draw = np.random.default_rng([SEED, 3, first]).random((last - first, PATHS, cols.shape[1]))
        spot = draw[day, path] * (FAST_LEVELS - 1)
        below = np.floor(spot).astype(np.int64)
        above = np.minimum(below + 1, FAST_LEVELS - 1)
        weight = spot - below
        levels = model.hourly[series]
        noise_h = levels[np.arange(series.size)[:, None], below] * (1 - weight)
        noise_h += levels[np.arange(series.size)[:, None], above] * weight
        hourly = profile[local, day] + slow[local, day, path][:, None] + noise_h
        with np.errstate(invalid="ignore"):
            reached = hourly >= limits[series, None]
        step = np.where(reached.any(axis=1), reached.argmax(axis=1), np.argmax(hourly, axis=1))
        shift = slow[local, day, path] + noise_h[np.arange(series.size), step]
        column = cols[day, step]
        before_value = np.where(column > 0, p50[series, np.maximum(column - 1, 0)] + shift, current[series])
        before_position = np.where(column > 0, column - 1.0, start)
        after_value = hourly[np.arange(series.size), step]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = (limits[series] - before_value) / (after_value - before_value)
        # within the hour: where the line between the two hours meets the limit, or anywhere in the hour
        # when the hour before was over it already (a continuous draw: paths do not tie on a whole hour)
        inside = np.isfinite(fraction) & (fraction > 0.0) & (fraction <= 1.0)
        fraction = np.where(inside, fraction, chance[first + day, path])
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

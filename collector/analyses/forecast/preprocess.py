"""Turning raw pool series into the regular matrices the models work on.

Everything here is vectorized across series: a forecast run holds one float matrix of shape
(series, time) on a regular grid, NaN where nothing was observed. Pool-level series are sums of
allocations or of usage, so they are gauges; the one cumulative input a user may bring (through
`capacityd backtest --counter`) has its resets undone first, as Prometheus' increase() does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
SLAB_POINTS = 1 << 20
"""Fine points `block_mean` averages at a time (8 MB of float64): bounds its temporaries."""


# --- NaN-aware reductions. numpy's nanmean/nanmax/nanmedian warn ("Mean of empty slice", "All-NaN slice
# encountered") on a slice with no observation, which is ordinary here: a series younger than the window,
# a backtest origin before a series started. These return NaN for such a slice, silently, by counting.


def nan_mean(matrix: np.ndarray, axis: int | tuple[int, ...] = -1, keepdims: bool = False) -> np.ndarray:
    """Mean of the observed (non-NaN) values along `axis`; NaN where there is none."""
    seen = ~np.isnan(matrix)
    count = seen.sum(axis=axis, keepdims=keepdims)
    total = np.where(seen, matrix, 0.0).sum(axis=axis, keepdims=keepdims)
    result: np.ndarray = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return result


def nan_std(matrix: np.ndarray, axis: int = -1) -> np.ndarray:
    """Population standard deviation of the observed values along `axis`; NaN where there is none."""
    centre = nan_mean(matrix, axis=axis, keepdims=True)
    result: np.ndarray = np.sqrt(nan_mean((matrix - centre) ** 2, axis=axis))
    return result


def nan_max(matrix: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """Largest observed value along `axis`; NaN where there is none (fmax skips NaN without a warning)."""
    if matrix.shape[axis] == 0:
        shape = list(matrix.shape)
        shape[axis] = 1
        empty = np.full(shape, np.nan)
        return empty if keepdims else empty.squeeze(axis=axis)
    result = np.fmax.reduce(matrix, axis=axis)
    return np.expand_dims(result, axis) if keepdims else np.asarray(result)


def nan_quantiles(matrix: np.ndarray, quantiles: tuple[float, ...]) -> list[np.ndarray]:
    """Quantiles of every row's observed values (numpy's linear interpolation); NaN for a row with none.

    np.nanquantile warns on an all-NaN row and loops over rows in Python when NaNs are present; this sorts once.
    """
    ordered = np.sort(matrix, axis=1)  # NaNs sort last
    count = (~np.isnan(matrix)).sum(axis=1)
    rows = np.arange(matrix.shape[0])
    result = []
    for q in quantiles:
        position = np.maximum(count - 1, 0) * q
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        fraction = position - below
        if matrix.shape[1]:
            value = ordered[rows, below] * (1 - fraction) + ordered[rows, above] * fraction
        else:
            value = np.full(matrix.shape[0], np.nan)
        result.append(np.where(count > 0, value, np.nan))
    return result


@dataclass(frozen=True)
class Grid:
    """A regular time grid: column i of a matrix is the bucket starting at start + i * step."""

    start: pd.Timestamp
    step: float
    """Seconds between columns."""
    length: int

    def times(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, periods=self.length, freq=pd.Timedelta(seconds=self.step))

    @property
    def end(self) -> pd.Timestamp:
        """Start of the bucket after the last column."""
        return self.start + pd.Timedelta(seconds=self.step * self.length)

    def steps_per(self, period: float) -> int:
        """Whole columns in a period (a day, a week); 0 when the period is not a multiple of the step."""
        ratio = period / self.step
        return round(ratio) if abs(ratio - round(ratio)) < 1e-9 and ratio >= 1 else 0


def series_codes(frame: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """An integer code per row (0..n-1, in order of first appearance) and the key rows in code order."""
    codes = frame.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    _, first_rows = np.unique(codes, return_index=True)
    return codes, frame[keys].iloc[first_rows].astype(str).reset_index(drop=True)


def epoch_seconds(stamps: pd.Series) -> np.ndarray:
    """Integer Unix seconds of timestamps (naive ones are taken as UTC)."""
    moments = pd.to_datetime(stamps, utc=True)  # any resolution (s, ms, us, ns): count whole seconds
    result: np.ndarray = ((moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    return result


def pivot(
    codes: np.ndarray,
    count: int,
    seconds: np.ndarray,
    values: np.ndarray,
    *,
    step: float,
    end: pd.Timestamp | None = None,
) -> tuple[np.ndarray, Grid]:
    """Rows (code, time, value) onto a (count x buckets) matrix of bucket means, NaN where empty.

    Buckets are aligned to multiples of `step` since the epoch, so hourly buckets start on the hour;
    with `end`, the grid reaches at least the bucket before it (the series' "now").
    """
    bucket = (seconds // int(step)).astype(np.int64)
    first = int(bucket.min())
    last = int(bucket.max()) if end is None else max(int(bucket.max()), int(end.timestamp() // step) - 1)
    length = last - first + 1
    ok = np.isfinite(values)
    cells = codes[ok].astype(np.int64) * length + (bucket[ok] - first)
    size = count * length
    sums = np.bincount(cells, weights=values[ok], minlength=size).reshape(count, length)
    counts = np.bincount(cells, minlength=size).reshape(count, length)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return matrix, Grid(pd.Timestamp(first * int(step), unit="s", tz="UTC"), float(step), length)


def long_to_matrix(
    frame: pd.DataFrame, keys: list[str], *, step: float, end: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, np.ndarray, Grid]:
    """Pivot a long frame (keys..., timestamp, value) onto a regular grid of `step` seconds.

    Values in one bucket are averaged; buckets without a value are NaN. Returns the key rows (one
    per series, in matrix order), the matrix and its grid.
    """
    if frame.empty:
        return pd.DataFrame(columns=keys), np.empty((0, 0)), Grid(pd.Timestamp(0, tz="UTC"), step, 0)
    codes, key_rows = series_codes(frame, keys)
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)
    matrix, grid = pivot(codes, len(key_rows), epoch_seconds(frame["timestamp"]), values, step=step, end=end)
    return key_rows, matrix, grid


def last_per_series(codes: np.ndarray, count: int, seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The latest non-NaN value of each series (NaN where it has none)."""
    result = np.full(count, np.nan)
    ok = np.flatnonzero(~np.isnan(values))
    if ok.size:
        latest_first = ok[np.lexsort((-seconds[ok], codes[ok]))]  # by series, the newest first
        series, first = np.unique(codes[latest_first], return_index=True)
        result[series] = values[latest_first[first]]
    return result


def coarser_grid(grid: Grid, step: float) -> tuple[Grid, int, int]:
    """The grid `block_mean` produces, and the padding (front, back) in fine columns it needs."""
    factor = step / grid.step
    if abs(factor - round(factor)) > 1e-9:
        raise ValueError(f"cannot aggregate a {grid.step:g} s grid to {step:g} s: not a multiple")
    factor = round(factor)
    start_seconds = grid.start.timestamp()
    aligned = np.floor(start_seconds / step) * step
    pad_front = round((start_seconds - aligned) / grid.step)
    pad_back = (-(pad_front + grid.length)) % factor
    length = (pad_front + grid.length + pad_back) // factor
    return Grid(pd.Timestamp(aligned, unit="s", tz="UTC"), float(step), length), pad_front, pad_back


def block_mean(matrix: np.ndarray, grid: Grid, step: float) -> tuple[np.ndarray, Grid]:
    """Aggregate a fine grid to a coarser one (e.g. 5-minute to hourly) by averaging each block.

    Blocks are aligned to multiples of `step` since the epoch; a block with no observation is NaN.
    """
    if step <= grid.step:
        return matrix, grid
    coarse_grid, pad_front, pad_back = coarser_grid(grid, step)
    factor = round(step / grid.step)
    if pad_front or pad_back:
        matrix = np.pad(matrix, ((0, 0), (pad_front, pad_back)), constant_values=np.nan)
    n = matrix.shape[0]
    ones = np.ones(factor)
    coarse = np.empty((n, coarse_grid.length))
    # In slabs of columns, so the temporaries (the zero-filled copy, the mask) are a slab, not a second
    # copy of the whole fine matrix (64 MB for 500 series of 8 weeks at 5 minutes).
    slab = max(1, SLAB_POINTS // max(n * factor, 1))
    for first in range(0, coarse_grid.length, slab):
        last = min(first + slab, coarse_grid.length)
        part = matrix[:, first * factor : last * factor]
        missing = np.isnan(part)
        shape = (n, last - first, factor)
        # Block sums as a matrix product over the short last axis, counts summed as bytes: about twice
        # as fast as .sum(axis=2) on both (measured on 500 x 16,128 5-minute points).
        sums = np.where(missing, 0.0, part).reshape(shape) @ ones
        counts = factor - missing.reshape(shape).view(np.uint8).sum(axis=2, dtype=np.int32)
        with np.errstate(invalid="ignore", divide="ignore"):
            coarse[:, first:last] = np.where(counts > 0, sums / counts, np.nan)
    return coarse, coarse_grid


def forward_fill(matrix: np.ndarray) -> np.ndarray:
    """Carry the last observation forward along time; leading NaNs stay NaN."""
    observed = ~np.isnan(matrix)
    index = np.where(observed, np.arange(matrix.shape[1]), 0)
    np.maximum.accumulate(index, axis=1, out=index)
    filled = matrix[np.arange(matrix.shape[0])[:, None], index]
    filled[~observed & (index == 0) & ~observed[:, :1]] = np.nan
    return filled


def fill_gaps(matrix: np.ndarray, seasons: tuple[int, ...] = ()) -> np.ndarray:
    """Fill gaps for the models that need a complete series.

    A gap is filled with the same hours one season earlier (the longest season first, so a missing
    Monday morning becomes last Monday morning's shape), moved to the level of the last observation
    before the gap; what is left is filled by carrying the last observation forward. Leading NaNs
    (a series that started later than the grid) stay NaN.
    """
    missing = np.isnan(matrix)
    if not missing.any():
        return matrix
    n, length = matrix.shape
    columns = np.arange(length)
    last = np.where(~missing, columns, -1)
    np.maximum.accumulate(last, axis=1, out=last)  # index of the last observation at or before t
    rows = np.arange(n)[:, None]
    filled = matrix.copy()
    for season in sorted(seasons, reverse=True):
        if not 0 < season < length:
            continue
        todo = np.isnan(filled) & (last >= season) & (columns[None, :] >= season)
        if not todo.any():
            continue
        anchor = np.maximum(last, season)
        # the shape one season back, shifted so it starts from the last value seen before the gap
        offset = matrix[rows, anchor] - filled[rows, anchor - season]
        candidate = filled[:, np.maximum(columns - season, 0)] + offset
        filled[todo] = candidate[todo]
    remaining = np.isnan(filled)
    if remaining.any():
        filled = np.where(remaining, forward_fill(filled), filled)
    return filled


def first_valid(matrix: np.ndarray) -> np.ndarray:
    """Index of the first observed column per series (the grid length for an all-NaN row)."""
    observed = ~np.isnan(matrix)
    first: np.ndarray = observed.argmax(axis=1)
    first[~observed.any(axis=1)] = matrix.shape[1]
    return first


def undo_counter_resets(values: np.ndarray) -> np.ndarray:
    """A cumulative counter with its resets (negative jumps) undone, along the last axis.

    As Prometheus' increase(): after a drop the counter restarted from zero, so the value after the
    drop is all that was added since. NaNs are kept in place and skipped.
    """
    values = np.asarray(values, dtype=float)
    flat = values.reshape(-1, values.shape[-1])
    out = np.full_like(flat, np.nan)
    for row in range(flat.shape[0]):
        series = flat[row]
        ok = ~np.isnan(series)
        observed = series[ok]
        if observed.size == 0:
            continue
        steps = np.diff(observed)
        increments = np.where(steps < 0, observed[1:], steps)
        out[row, ok] = observed[0] + np.concatenate(([0.0], np.cumsum(increments)))
    return out.reshape(values.shape)


def detect_level_shift(filled: np.ndarray, steps_per_day: int, *, threshold: float = 6.0) -> np.ndarray:
    """Column index of the latest level shift per series, or -1 where there is none.

    A level shift is a jump between consecutive daily means that stands out from the series' usual
    day-to-day movement (robust z-score above `threshold` *and* three times the mean absolute daily
    change), e.g. a project onboarded at once or a host pool merged. The exact hour is where the
    24-hour means before and after differ most within the two days around the jump.
    """
    n, length = filled.shape
    result = np.full(n, -1, dtype=np.int64)
    day = max(int(steps_per_day), 1)
    days = length // day
    if days < 4 or n == 0:
        return result
    tail = filled[:, length - days * day :].reshape(n, days, day)
    missing = np.isnan(tail)
    counts = day - missing.sum(axis=2)
    means = np.where(counts > 0, np.where(missing, 0.0, tail).sum(axis=2) / np.maximum(counts, 1), np.nan)
    changes = np.diff(means, axis=1)
    # a series younger than the window has days without a mean: NaN-aware reductions that stay silent
    centre = nan_quantiles(changes, (0.5,))[0][:, None]
    spread = 1.4826 * nan_quantiles(np.abs(changes - centre), (0.5,))[0][:, None]
    typical = nan_mean(np.abs(changes), axis=1, keepdims=True)
    level = nan_max(np.abs(means), axis=1, keepdims=True)
    deviation = np.abs(changes - centre)
    floor = np.maximum(np.maximum(threshold * spread, 3.0 * typical), 1e-6 * level)
    jumps = np.nan_to_num(deviation) > np.nan_to_num(floor, nan=np.inf)
    has = jumps.any(axis=1)
    if not has.any():
        return result
    last_jump = days - 2 - np.argmax(jumps[:, ::-1], axis=1)  # index j: jump between day j and j+1
    offset = length - days * day
    rows = np.flatnonzero(has)
    shifted = filled[rows]
    cumulative = np.zeros((rows.size, length + 1))
    np.cumsum(np.where(np.isnan(shifted), 0.0, shifted), axis=1, out=cumulative[:, 1:])
    local = np.arange(rows.size)[:, None]
    centres = offset + (last_jump[rows] + 1) * day
    candidates = np.clip(centres[:, None] + np.arange(-day, day + 1)[None, :], day, max(length - day, day))
    picked = cumulative[local, candidates]
    before = (picked - cumulative[local, candidates - day]) / day
    ends = np.minimum(candidates + day, length)
    after = (cumulative[local, ends] - picked) / np.maximum(ends - candidates, 1)
    result[rows] = candidates[np.arange(rows.size), np.argmax(np.abs(after - before), axis=1)]
    return result


def recent_level_shift(
    values: np.ndarray, steps_per_day: int, *, threshold: float = 5.0, confirm: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """A level shift in the last season of each series: (column it starts at or -1, its size).

    A pool that lost (or gained) a big tenant a few hours ago: every value since differs from the
    same hour one season earlier (a week with three weeks of history, else a day) by more than
    `threshold` robust standard deviations of those differences, all on the same side, for at least
    `confirm` columns up to the last one. The size is the median of those differences less their
    usual value (the growth over one season). `detect_level_shift` sees shifts between daily means,
    a day or more after they happen; this one sees them within hours.
    """
    n, length = values.shape
    start = np.full(n, -1, dtype=np.int64)
    size = np.zeros(n)
    day = max(int(steps_per_day), 1)
    lag = 7 * day if length >= 21 * day else day
    if n == 0 or steps_per_day < 2 or length < 3 * lag:
        return start, size
    change = values[:, lag:] - values[:, :-lag]
    reference = change[:, : change.shape[1] - lag]
    lower, centre, upper = nan_quantiles(reference, (0.25, 0.5, 0.75))
    level = nan_quantiles(np.abs(values), (0.5,))[0]
    sigma = np.maximum((upper - lower) / 1.349, np.nan_to_num(level) * 1e-6 + 1e-12)
    tail = change[:, -lag:]
    with np.errstate(invalid="ignore"):
        z = (tail - centre[:, None]) / sigma[:, None]
        up, down = z > threshold, z < -threshold
    # length of the run of same-side exceedances ending at the last column (a gap ends the run)
    run_up = np.argmin(np.c_[up[:, ::-1], np.zeros((n, 1), bool)], axis=1)
    run_down = np.argmin(np.c_[down[:, ::-1], np.zeros((n, 1), bool)], axis=1)
    run = np.maximum(run_up, run_down)
    rows = np.flatnonzero(run >= confirm)
    for row in rows:  # few series at a time have a fresh shift
        recent = tail[row, lag - run[row] :] - centre[row]
        start[row] = length - run[row]
        size[row] = float(np.median(recent))
    return start, size

"""Forecast models, vectorized across series.

Every cheap model takes a `FitInput` (a matrix of series on a regular grid, NaN where nothing was
observed) and returns point forecasts for the next `h` columns of every series at once, so a few
thousand pools cost milliseconds. The family:

* `trend` - ordinary least squares line through every observed point: Prometheus' predict_linear
  over the lookback window. The baseline everything is measured against.
* `snaive_day`, `snaive_week` - the last day (week) repeated.
* `trend_day`, `trend_week`, `trend_dow` - a level-shift-aware least-squares trend plus a seasonal
  profile: 24 hourly slots, 168 weekly slots, or 24 hourly slots plus 7 day-of-week offsets (fewer
  parameters than the weekly profile, so less noise from eight weeks of history).
* `local_week` - the weekly profile with a trend fitted on the last two weeks only: follows a
  change of growth rate.
* `anchored_week` - the long-window slope, restarted from the level of the last day: follows a
  recent jump without a detected shift.
* `combination` - the mean of trend_day, trend_dow, anchored_week and snaive_week.
* `mstl` - statsforecast's MSTL (daily and weekly seasons) with an AutoETS trend, one series at a
  time; about 1 s a fit on eight weeks of hourly data, so it is only tried where the compute budget allows.

The level-shift-aware trend regresses on [1, t, step at the last detected shift]: a pool that jumped
once (a project onboarded) keeps its new level without the jump inflating the slope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from collector.analyses.forecast.preprocess import detect_level_shift, fill_gaps, first_valid, nan_mean

LOCAL_WINDOW_DAYS = 14


@dataclass
class FitInput:
    """The history the models see: observed values (NaN = gap) on a regular grid."""

    values: np.ndarray
    steps_per_day: int
    """Columns per day (24 on the hourly working grid); 0 when the grid is coarser than a day."""
    detect_shifts: bool = True

    def prefix(self, length: int) -> FitInput:
        """The first `length` columns as a new input, reusing this one's gap filling and mask.

        Gap filling only looks back (the same hours a season earlier, then the last observation), so
        the filled prefix of the whole history is exactly the filled prefix: the backtest origins
        need not fill again. Level shifts and fits are recomputed: they look at the whole window.
        """
        child = FitInput(self.values[:, :length], self.steps_per_day, self.detect_shifts)
        child.__dict__["observed"] = self.observed[:, :length]
        child.__dict__["filled"] = self.filled[:, :length]
        return child

    def rows(self, selection: np.ndarray) -> FitInput:
        """Some of the series as a new input, reusing their gap filling, mask and level shifts."""
        child = FitInput(self.values[selection], self.steps_per_day, self.detect_shifts)
        child.__dict__["observed"] = self.observed[selection]
        child.__dict__["filled"] = self.filled[selection]
        child.__dict__["shift"] = self.shift[selection]  # computed once for all, then split
        return child

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        return int(self.values.shape[1])

    @property
    def steps_per_week(self) -> int:
        return 7 * self.steps_per_day

    @cached_property
    def observed(self) -> np.ndarray:
        result: np.ndarray = ~np.isnan(self.values)
        return result

    @cached_property
    def filled(self) -> np.ndarray:
        seasons = tuple(s for s in (self.steps_per_day, self.steps_per_week) if s > 1)
        return fill_gaps(self.values, seasons)

    @cached_property
    def first(self) -> np.ndarray:
        return first_valid(self.values)

    @cached_property
    def shift(self) -> np.ndarray:
        if not self.detect_shifts or self.steps_per_day < 2:
            return np.full(self.n, -1, dtype=np.int64)
        return detect_level_shift(self.filled, self.steps_per_day)

    @cached_property
    def observed_count(self) -> np.ndarray:
        result: np.ndarray = self.observed.sum(axis=1)
        return result

    def last_value(self) -> np.ndarray:
        """The last observation of every series (NaN when none)."""
        filled = self.filled
        return filled[:, -1] if self.length else np.full(self.n, np.nan)

    # --- shared decompositions, computed once per input and reused by the models ---

    def season_for(self, kind: str) -> int:
        """Profile length for 'day' or 'week', falling back to daily below two weeks of history."""
        day = self.steps_per_day
        if day < 2:
            return 0
        if kind == "week" and self.length >= 2 * 7 * day:
            return 7 * day
        return day if self.length >= 2 * day else 0

    @cached_property
    def _decomposed(self) -> _Decomposition:
        return _Decomposition(self)

    def decomposition(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(profile, level, slope) of the shift-aware trend fitted on the series minus `kind`'s profile.

        kind: 'day', 'week' or 'dow'. The profile is indexed by (column - length) mod season; level
        is the fitted trend at the last column (after any level shift), slope per column.
        """
        return self._decomposed.get(kind)


class _Decomposition:
    """Trend + seasonal profiles of a FitInput from per-slot sums: O(series x season) per variant.

    The fit window is the last whole weeks (whole days below two weeks of history), so the history
    reshapes into (series, periods, slots) views without copying. One pass builds the per-slot sums
    of the observations, of the observation mask, of t and of the shift step; every profile and every
    refit on a deseasonalized series is then arithmetic on those sums, not another pass over history.
    """

    def __init__(self, data: FitInput):
        self.data = data
        n, length = data.n, data.length
        day = data.steps_per_day
        week = 7 * day
        self.big = week if day >= 2 and length >= 2 * week else (day if day >= 2 and length >= 2 * day else 0)
        start = length - (length // self.big) * self.big if self.big else 0
        self.start = start
        observed = data.observed[:, start:]
        y0 = np.where(observed, data.values[:, start:], 0.0)
        shift = np.where(data.shift >= start, data.shift - start, -1)
        self.has_step = shift >= 0
        self.design = Design(observed, shift)
        self.rhs = self.design.rhs(y0)
        self.raw = self.design.coefficients(self.rhs)
        self.cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.slot_sums: dict[int, tuple[np.ndarray, ...]] = {}
        if self.big:
            periods = y0.shape[1] // self.big
            shape = (n, periods, self.big)
            obs = observed.astype(float).reshape(shape)
            t = self.design.t.reshape(periods, self.big)
            sums = [y0.reshape(shape).sum(axis=1), obs.sum(axis=1), np.einsum("npm,pm->nm", obs, t)]
            step_sums = np.zeros((n, self.big))
            if self.design.step is not None:
                rows = self.design.shift_rows
                step_sums[rows] = np.einsum(
                    "npm,npm->nm", obs[rows], self.design.step.reshape(rows.size, periods, self.big)
                )
            sums.append(step_sums)
            self.slot_sums[self.big] = tuple(sums)
            if self.big == week:  # daily sums from the weekly ones: a week is seven whole days
                self.slot_sums[day] = tuple(s.reshape(n, 7, day).sum(axis=1) for s in sums)

    def profile(self, season: int) -> np.ndarray:
        """Mean residual of the raw trend per slot, centred to mean zero (0 for slots never observed)."""
        y, count, t, step = self.slot_sums[season]
        a, b, c = self.raw
        fitted = a[:, None] * count + b[:, None] * t + c[:, None] * step
        seen = count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(seen, (y - fitted) / np.where(seen, count, 1.0), 0.0)
            # centred on the mean of the slots seen (a young series has slots never observed: no
            # nanmean, whose "Mean of empty slice" warning reached the user for a series younger than two weeks)
            centre = mean.sum(axis=1, keepdims=True) / np.maximum(seen.sum(axis=1, keepdims=True), 1)
        return np.where(seen, np.nan_to_num(mean - centre), 0.0)

    def get(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self.cache.get(kind)
        if cached is not None:
            return cached
        n = self.data.n
        day = self.data.steps_per_day
        season = self.data.season_for("week" if kind in ("week", "dow") else "day")
        if season and season in self.slot_sums:
            profile = self.profile(season)
            if kind == "dow" and season == 7 * day:
                offsets = profile.reshape(n, 7, day).mean(axis=2)
                profile = (offsets[:, :, None] + self.profile(day)[:, None, :]).reshape(n, season)
            _, count, t, step = self.slot_sums[season]
            adjust = np.stack(
                ((profile * count).sum(axis=1), (profile * t).sum(axis=1), (profile * step).sum(axis=1)), axis=1
            )
            a, b, c = self.design.coefficients(self.rhs - adjust)
        else:
            profile = np.zeros((n, 1))
            a, b, c = self.raw
        level = a + np.where(self.has_step, c, 0.0)
        self.cache[kind] = (profile, level, b)
        return profile, level, b


def _inverse3(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of 3x3 matrices by cofactors (np.linalg.inv costs ~20 us a matrix here)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    cofactors = np.empty_like(m)
    cofactors[:, 0, 0] = e * i - f * h
    cofactors[:, 0, 1] = -(b * i - c * h)
    cofactors[:, 0, 2] = b * f - c * e
    cofactors[:, 1, 0] = -(d * i - f * g)
    cofactors[:, 1, 1] = a * i - c * g
    cofactors[:, 1, 2] = -(a * f - c * d)
    cofactors[:, 2, 0] = d * h - e * g
    cofactors[:, 2, 1] = -(a * h - b * g)
    cofactors[:, 2, 2] = a * e - b * d
    determinant = a * cofactors[:, 0, 0] + b * cofactors[:, 1, 0] + c * cofactors[:, 2, 0]
    with np.errstate(all="ignore"):
        result: np.ndarray = cofactors / determinant[:, None, None]
        return result


class Design:
    """Least squares on [1, t, 1{column >= shift}] for every row at once, set up once per window.

    Weights are the observation mask, t is relative to the last column (so the intercept is the
    fitted level there); rows without a shift (-1) get no step term; rows with fewer than two points
    get slope 0 (a tiny ridge on the slope), rows with none get NaN.
    """

    def __init__(self, observed: np.ndarray, shift: np.ndarray):
        n, length = observed.shape
        self.t = np.arange(length, dtype=float) - (length - 1)
        w = observed.astype(float)
        s0 = w.sum(axis=1)
        s_t = w @ self.t
        s_tt = w @ (self.t * self.t)
        s_d = np.zeros(n)
        s_td = np.zeros(n)
        # The step column only exists for the rows with a level shift (few, in real estates).
        self.shift_rows = np.flatnonzero(shift >= 0)
        self.step: np.ndarray | None = None
        if self.shift_rows.size:
            rows = self.shift_rows
            self.step = (np.arange(length)[None, :] >= shift[rows, None]).astype(float)
            weighted = self.step * w[rows]
            s_d[rows] = weighted.sum(axis=1)
            s_td[rows] = weighted @ self.t
        matrix = np.empty((n, 3, 3))
        matrix[:, 0] = np.stack((s0, s_t, s_d), axis=1)
        matrix[:, 1] = np.stack((s_t, s_tt, s_td), axis=1)
        matrix[:, 2] = np.stack((s_d, s_td, s_d), axis=1)
        self.no_step = (s_d <= 0) | (s_d >= s0)
        matrix[self.no_step, 2, :] = 0.0
        matrix[self.no_step, :, 2] = 0.0
        matrix[self.no_step, 2, 2] = 1.0
        matrix[:, 1, 1] += 1e-9 * (1.0 + s_tt)
        self.empty = s0 <= 0
        matrix[self.empty] = np.eye(3)
        self.inverse = _inverse3(matrix)

    def rhs(self, y0: np.ndarray) -> np.ndarray:
        """Right-hand side of the normal equations for y (zeros where unobserved)."""
        rhs = np.zeros((y0.shape[0], 3))
        rhs[:, 0] = y0.sum(axis=1)
        rhs[:, 1] = y0 @ self.t
        if self.step is not None:
            rhs[self.shift_rows, 2] = np.einsum("ij,ij->i", y0[self.shift_rows], self.step)
        return rhs

    def coefficients(self, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rhs = rhs.copy()
        rhs[self.no_step, 2] = 0.0
        solution = np.einsum("nij,nj->ni", self.inverse, rhs)
        solution[self.empty] = np.nan
        return solution[:, 0], solution[:, 1], solution[:, 2]

    def solve(self, y0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coefficients (a, b, c) for y with zeros where unobserved."""
        return self.coefficients(self.rhs(y0))


def tile_profile(profile: np.ndarray, start: int, count: int) -> np.ndarray:
    """Profile values for columns start .. start+count-1 relative to the end of history."""
    season = profile.shape[1]
    return profile[:, (np.arange(start, start + count)) % season]


ModelFunc = Callable[[FitInput, int], np.ndarray]


@dataclass(frozen=True)
class Model:
    name: str
    func: ModelFunc
    expensive: bool = False
    """Runs one series at a time (seconds per hundred series): only tried within the compute budget."""
    doc: str = ""

    def forecast(self, data: FitInput, h: int) -> np.ndarray:
        if data.length == 0:
            return np.full((data.n, h), np.nan)
        result = self.func(data, h)
        # A series with too little history falls back to its last value (never extrapolate one point).
        thin = data.observed_count < 2
        if thin.any():
            result[thin] = data.last_value()[thin, None]
        return result


def _future(data: FitInput, h: int) -> np.ndarray:
    return np.arange(1, h + 1, dtype=float)


def trend(data: FitInput, h: int) -> np.ndarray:
    """predict_linear: least squares over every observed point, no shift, no season."""
    y = np.where(data.observed, data.values, 0.0)
    a, b, _ = Design(data.observed, np.full(data.n, -1)).solve(y)
    result: np.ndarray = a[:, None] + b[:, None] * _future(data, h)[None, :]
    return result


def _seasonal_naive(period_days: int) -> ModelFunc:
    def forecast(data: FitInput, h: int) -> np.ndarray:
        """The last season repeated; a series younger than the season repeats its last day, else its last value.

        Per series: the grid is as long as the oldest series, and a young one's last week is mostly the
        NaN before it began (repeating it gave NaN forecasts for most of the horizon).
        """
        day = data.steps_per_day
        span = data.length - data.first  # columns since each series' first observation
        result = np.empty((data.n, h))
        remaining = np.ones(data.n, dtype=bool)
        for season in dict.fromkeys((day * period_days, day, 1)):  # longest first, without repeats
            if season < 1 or season > data.length:
                continue
            rows = remaining & (span >= season)
            if rows.any():
                last = data.filled[rows, data.length - season :]
                result[rows] = last[:, np.arange(h) % season]
                remaining &= ~rows
        if remaining.any():  # no observation at all
            result[remaining] = np.nan
        return result

    return forecast


def _trend_with_profile(kind: str) -> ModelFunc:
    def forecast(data: FitInput, h: int) -> np.ndarray:
        profile, level, slope = data.decomposition(kind)
        result: np.ndarray = level[:, None] + slope[:, None] * _future(data, h)[None, :] + tile_profile(profile, 0, h)
        return result

    return forecast


def local_week(data: FitInput, h: int) -> np.ndarray:
    """Weekly profile from all history, trend from the last two weeks of the deseasonalized series."""
    profile, _, _ = data.decomposition("week")
    window = min(data.length, LOCAL_WINDOW_DAYS * max(data.steps_per_day, 1))
    start = data.length - window
    recent = data.values[:, start:]
    observed = data.observed[:, start:]
    deseasonalized = np.where(observed, recent - tile_profile(profile, -window, window), 0.0)
    shift = np.where(data.shift >= start, data.shift - start, -1)
    a, b, c = Design(observed, shift).solve(deseasonalized)
    level = a + np.where(shift >= 0, c, 0.0)
    result: np.ndarray = level[:, None] + b[:, None] * _future(data, h)[None, :] + tile_profile(profile, 0, h)
    return result


def anchored_week(data: FitInput, h: int) -> np.ndarray:
    """Long-window slope restarted from the mean deseasonalized level of the last day."""
    profile, _, b = data.decomposition("week")
    window = min(data.length, max(data.steps_per_day, 1))
    start = data.length - window
    observed = data.observed[:, start:]
    deseasonalized = data.values[:, start:] - tile_profile(profile, -window, window)
    level = nan_mean(np.where(observed, deseasonalized, np.nan), axis=1)
    t_mean = nan_mean(np.where(observed, np.arange(window, dtype=float) - (window - 1), np.nan), axis=1)
    fallback = np.isnan(level)
    level = np.where(fallback, data.last_value(), level)
    t_mean = np.where(fallback, 0.0, t_mean)
    steps = _future(data, h)[None, :] - t_mean[:, None]
    result: np.ndarray = level[:, None] + b[:, None] * steps + tile_profile(profile, 0, h)
    return result


def mstl(data: FitInput, h: int) -> np.ndarray:
    """statsforecast MSTL (daily + weekly seasons, AutoETS trend), one series at a time."""
    from statsforecast.models import MSTL, AutoETS

    out = np.full((data.n, h), np.nan)
    day = data.steps_per_day
    for row in range(data.n):
        series = data.filled[row, data.first[row] :]
        seasons = [s for s in (day, 7 * day) if s > 1 and len(series) >= 2 * s]
        if len(series) < 3:
            continue
        try:
            if seasons:
                model: MSTL | AutoETS = MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
            else:
                model = AutoETS(model="ZZN")
            out[row] = model.forecast(y=series.astype(float), h=h)["mean"]
        except Exception:  # noqa: BLE001 - a fit that fails for one series falls back to its trend
            out[row] = np.nan
    missing = np.isnan(out).any(axis=1)
    if missing.any():
        out[missing] = _trend_with_profile("week")(data, h)[missing]
    return out


COMBINATION = ("trend_day", "trend_dow", "anchored_week", "snaive_week")


def combination(data: FitInput, h: int) -> np.ndarray:
    """Mean of four different views of the series (forecast combination: their errors partly cancel).

    On the Google 2019 trace it beat every single model on CPU and assigned memory.
    """
    total = MODELS[COMBINATION[0]].forecast(data, h)
    for name in COMBINATION[1:]:  # summed in place: one (series x h) matrix alive, not four
        total += MODELS[name].forecast(data, h)
    total /= len(COMBINATION)
    return total


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("trend", trend, doc="least-squares line (predict_linear)"),
        Model("snaive_day", _seasonal_naive(1), doc="last day repeated"),
        Model("snaive_week", _seasonal_naive(7), doc="last week repeated"),
        Model("trend_day", _trend_with_profile("day"), doc="shift-aware trend + daily profile"),
        Model("trend_week", _trend_with_profile("week"), doc="shift-aware trend + weekly profile"),
        Model("trend_dow", _trend_with_profile("dow"), doc="shift-aware trend + daily profile + weekday offsets"),
        Model("local_week", local_week, doc="weekly profile + trend of the last two weeks"),
        Model("anchored_week", anchored_week, doc="long-window slope from the last day's level + weekly profile"),
        Model("combination", combination, doc="mean of trend_day, trend_dow, anchored_week, snaive_week"),
        Model("mstl", mstl, expensive=True, doc="statsforecast MSTL(24, 168) + AutoETS trend"),
    )
}

BASELINE = "trend"
DEFAULT_CANDIDATES: tuple[str, ...] = tuple(MODELS)

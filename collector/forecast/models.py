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
  time; about 0.1-0.2 s a series on hourly data, so it is only tried where the compute budget allows.

The level-shift-aware trend regresses on [1, t, step at the last detected shift]: a pool that jumped
once (a project onboarded) keeps its new level without the jump inflating the slope.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from collector.forecast.preprocess import detect_level_shift, fill_gaps, first_valid

LOCAL_WINDOW_DAYS = 14


@dataclass
class FitInput:
    """The history the models see: observed values (NaN = gap) on a regular grid."""

    values: np.ndarray
    steps_per_day: int
    """Columns per day (24 on the hourly working grid); 0 when the grid is coarser than a day."""
    detect_shifts: bool = True

    @property
    def n(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def steps_per_week(self) -> int:
        return 7 * self.steps_per_day

    @cached_property
    def observed(self) -> np.ndarray:
        return ~np.isnan(self.values)

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
        return self.observed.sum(axis=1)

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
    def _profiles(self) -> dict[str, tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        return {}

    def decomposition(self, kind: str) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(profile over the last season-length slots, (a, b, c) of the trend fitted on y - profile).

        kind: 'day', 'week' or 'dow'. The profile is indexed by (t - length) mod season.
        """
        cached = self._profiles.get(kind)
        if cached is not None:
            return cached
        t = np.arange(self.length, dtype=float) - (self.length - 1)
        weights = self.observed.astype(float)
        y = np.where(self.observed, self.values, 0.0)
        coefs = shifted_ols(y, weights, t, self.shift)
        season = self.season_for("week" if kind in ("week", "dow") else "day")
        if season:
            residual = np.where(self.observed, self.values - trend_values(coefs, t, self.shift, self.length), np.nan)
            profile = seasonal_profile(residual, season)
            if kind == "dow" and season == self.steps_per_week:
                day = self.steps_per_day
                daily = seasonal_profile(residual, day)
                offsets = profile.reshape(self.n, 7, day).mean(axis=2)
                profile = (offsets[:, :, None] + daily[:, None, :]).reshape(self.n, season)
            deseasonalized = self.values - tile_profile(profile, -self.length, self.length)
            y = np.where(self.observed, deseasonalized, 0.0)
            coefs = shifted_ols(y, weights, t, self.shift)
        else:
            profile = np.zeros((self.n, 1))
        self._profiles[kind] = (profile, coefs)
        return profile, coefs


def shifted_ols(
    y: np.ndarray, w: np.ndarray, t: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of y on [1, t, 1{column >= shift}] for every row at once.

    t is relative to the last column (so `a` is the fitted level there, before the step term);
    rows without a shift (-1) get c = 0. Rows with fewer than two points get slope 0.
    """
    n, length = y.shape
    columns = np.arange(length)
    step = (shift[:, None] >= 0) & (columns[None, :] >= shift[:, None])
    d = step.astype(float) * w
    s0 = w.sum(axis=1)
    s_t = w @ t
    s_tt = w @ (t * t)
    s_d = d.sum(axis=1)
    s_td = d @ t
    s_y = (w * y).sum(axis=1)
    s_ty = (w * y) @ t
    s_dy = (d * y).sum(axis=1)
    matrix = np.empty((n, 3, 3))
    matrix[:, 0] = np.stack((s0, s_t, s_d), axis=1)
    matrix[:, 1] = np.stack((s_t, s_tt, s_td), axis=1)
    matrix[:, 2] = np.stack((s_d, s_td, s_d), axis=1)
    rhs = np.stack((s_y, s_ty, s_dy), axis=1)
    # Regularize the degenerate cases: no shift (or nothing after it), a single point, no points.
    no_step = (s_d <= 0) | (s_d >= s0)
    matrix[no_step, 2, :] = 0.0
    matrix[no_step, :, 2] = 0.0
    matrix[no_step, 2, 2] = 1.0
    rhs[no_step, 2] = 0.0
    matrix[:, 1, 1] += 1e-9 * (1.0 + s_tt)
    empty = s0 <= 0
    matrix[empty] = np.eye(3)
    rhs[empty] = np.nan
    with np.errstate(all="ignore"):
        solution = np.linalg.solve(matrix, rhs[:, :, None])[:, :, 0]
    return solution[:, 0], solution[:, 1], solution[:, 2]


def trend_values(
    coefs: tuple[np.ndarray, np.ndarray, np.ndarray], t: np.ndarray, shift: np.ndarray, length: int
) -> np.ndarray:
    """The fitted trend at times t (relative to the last column) for every row."""
    a, b, c = coefs
    columns = t + (length - 1)
    step = (shift[:, None] >= 0) & (columns[None, :] >= shift[:, None])
    return a[:, None] + b[:, None] * t[None, :] + c[:, None] * step


def seasonal_profile(residual: np.ndarray, season: int) -> np.ndarray:
    """Mean residual per slot, slots counted back from the end; centred to mean zero; NaN slots -> 0."""
    n, length = residual.shape
    periods = -(-length // season)
    padded = np.pad(residual, ((0, 0), (periods * season - length, 0)), constant_values=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmean(padded.reshape(n, periods, season), axis=1)
        profile = np.nan_to_num(profile - np.nanmean(profile, axis=1, keepdims=True))
    return profile


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
    t = np.arange(data.length, dtype=float) - (data.length - 1)
    weights = data.observed.astype(float)
    y = np.where(data.observed, data.values, 0.0)
    a, b, _ = shifted_ols(y, weights, t, np.full(data.n, -1))
    return a[:, None] + b[:, None] * _future(data, h)[None, :]


def _seasonal_naive(period_days: int) -> ModelFunc:
    def forecast(data: FitInput, h: int) -> np.ndarray:
        season = data.steps_per_day * period_days if data.steps_per_day >= 1 else 1
        if season > data.length or season < 1:
            season = 1
        last = data.filled[:, data.length - season:]
        return last[:, np.arange(h) % season]

    return forecast


def _trend_with_profile(kind: str) -> ModelFunc:
    def forecast(data: FitInput, h: int) -> np.ndarray:
        profile, (a, b, c) = data.decomposition(kind)
        level = a + np.where(data.shift >= 0, c, 0.0)
        return level[:, None] + b[:, None] * _future(data, h)[None, :] + tile_profile(profile, 0, h)

    return forecast


def local_week(data: FitInput, h: int) -> np.ndarray:
    """Weekly profile from all history, trend from the last two weeks of the deseasonalized series."""
    profile, _ = data.decomposition("week")
    window = min(data.length, LOCAL_WINDOW_DAYS * max(data.steps_per_day, 1))
    start = data.length - window
    recent = data.values[:, start:]
    observed = data.observed[:, start:]
    deseasonalized = np.where(observed, recent - tile_profile(profile, -window, window), 0.0)
    t = np.arange(window, dtype=float) - (window - 1)
    shift = np.where(data.shift >= start, data.shift - start, -1)
    a, b, c = shifted_ols(deseasonalized, observed.astype(float), t, shift)
    level = a + np.where(shift >= 0, c, 0.0)
    return level[:, None] + b[:, None] * _future(data, h)[None, :] + tile_profile(profile, 0, h)


def anchored_week(data: FitInput, h: int) -> np.ndarray:
    """Long-window slope restarted from the mean deseasonalized level of the last day."""
    profile, (_, b, _) = data.decomposition("week")
    window = min(data.length, max(data.steps_per_day, 1))
    start = data.length - window
    observed = data.observed[:, start:]
    deseasonalized = data.values[:, start:] - tile_profile(profile, -window, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmean(np.where(observed, deseasonalized, np.nan), axis=1)
        t_mean = np.nanmean(np.where(observed, np.arange(window, dtype=float) - (window - 1), np.nan), axis=1)
    fallback = np.isnan(level)
    level = np.where(fallback, data.last_value(), level)
    t_mean = np.where(fallback, 0.0, t_mean)
    steps = _future(data, h)[None, :] - t_mean[:, None]
    return level[:, None] + b[:, None] * steps + tile_profile(profile, 0, h)


def mstl(data: FitInput, h: int) -> np.ndarray:
    """statsforecast MSTL (daily + weekly seasons, AutoETS trend), one series at a time."""
    from statsforecast.models import MSTL, AutoETS

    out = np.full((data.n, h), np.nan)
    day = data.steps_per_day
    for row in range(data.n):
        series = data.filled[row, data.first[row]:]
        seasons = [s for s in (day, 7 * day) if s > 1 and len(series) >= 2 * s]
        if len(series) < 3:
            continue
        try:
            if seasons:
                model = MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
            else:
                model = AutoETS(model="ZZN")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
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
    return np.mean([MODELS[name].forecast(data, h) for name in COMBINATION], axis=0)


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

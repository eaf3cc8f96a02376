"""The rolling-origin backtest harness: how far to trust capacityd's forecasts on a given series.

For each origin, everything before it is history: capacityd's full pipeline (model selection by its
own inner backtest, calibrated bands) forecasts the next `horizon`, and so does the least-squares
trend (predict_linear) fitted on the same history at the native step. Both are scored against what
actually came next:

* MASE - mean absolute error over the in-sample MAE of the daily seasonal naive forecast, so 1.0
  means "as good as repeating yesterday" and the figures compare across series;
* coverage - share of actual values inside the 80 % band (p10..p90), which should be near 0.8;
* exhaustion-date error - with a capacity: the hours between the forecast (p50) and the actual first
  crossing, whether the actual date fell inside the p10..p90 dates, and misses / false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from collector.analyses.forecast.engine import (
    Bands,
    ForecastOptions,
    first_crossing,
    forecast_native,
    naive_scale,
    single_threaded_blas,
)
from collector.analyses.forecast.models import MODELS, FitInput
from collector.analyses.forecast.paths import PathModel, crossing_positions
from collector.analyses.forecast.preprocess import DAY, Grid, nan_mean

EXHAUSTION_LOOKAHEAD = 4
"""Forecasts are extended to this many horizons to date an exhaustion the window only just shows."""


@dataclass
class OriginResult:
    """One series at one origin: the forecast next to what happened."""

    origin: pd.Timestamp
    times: pd.DatetimeIndex
    actual: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    trend: np.ndarray
    model: str
    mase: float
    trend_mase: float
    coverage: float
    exhaustion: dict[str, float | None] = field(default_factory=dict)
    """actual / p10 / p50 / p90 / trend: hours from the origin to the first crossing (None: none)."""


@dataclass
class Summary:
    """A series' backtest over all origins."""

    origins: int
    mase: float
    trend_mase: float
    coverage: float
    models: dict[str, int]
    exhaustion_error_hours: float | None = None
    """Mean |p50 date - actual date| over origins where the series did cross within the horizon."""
    trend_exhaustion_error_hours: float | None = None
    exhaustion_in_interval: float | None = None
    """Share of actual crossings that fell between the p10 and p90 dates."""
    exhaustion_missed: int = 0
    """Origins where the series crossed within the horizon but the p50 forecast never did."""
    exhaustion_false_alarms: int = 0
    """Origins where the p50 forecast crossed within the horizon but the series did not."""
    trend_exhaustion_missed: int = 0
    """The same misses for the least-squares trend."""

    @property
    def ratio(self) -> float:
        return self.mase / self.trend_mase if self.trend_mase > 0 else float("nan")


def outer_origins(length: int, horizon: int, origins: int, min_train: int) -> list[int]:
    """Origins for the outer backtest, the latest first, half a horizon apart."""
    stride = max(horizon // 2, 1)
    return [o for o in (length - horizon - k * stride for k in range(origins)) if o >= min_train]


def run_backtest(
    values: np.ndarray,
    grid: Grid,
    *,
    horizon: int,
    origins: int = 4,
    capacity: np.ndarray | float | None = None,
    options: ForecastOptions | None = None,
    candidates: list[str] | None = None,
) -> list[list[OriginResult]]:
    """Rolling-origin backtest of many series on one native grid; results[series][origin]."""
    options = options or ForecastOptions()
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n, length = values.shape
    day = grid.steps_per(DAY)
    min_train = max(3 * day, length // 3, 8)
    starts = outer_origins(length, horizon, origins, min_train)
    if not starts:
        raise ValueError(
            f"not enough history for a backtest: {length} points, need at least {min_train + horizon} "
            f"for a horizon of {horizon} steps"
        )
    caps = None if capacity is None else np.broadcast_to(np.asarray(capacity, dtype=float), (n,))
    with single_threaded_blas():
        return _run(values, grid, starts, horizon, caps, options, candidates)


def _run(
    values: np.ndarray,
    grid: Grid,
    starts: list[int],
    horizon: int,
    caps: np.ndarray | None,
    options: ForecastOptions,
    candidates: list[str] | None,
) -> list[list[OriginResult]]:
    n = values.shape[0]
    day = grid.steps_per(DAY)
    results: list[list[OriginResult]] = [[] for _ in range(n)]
    for origin in sorted(starts):
        history = values[:, :origin]
        sub_grid = Grid(grid.start, grid.step, origin)
        lookahead = horizon * (EXHAUSTION_LOOKAHEAD if caps is not None else 1)
        bands = forecast_native(history, sub_grid, lookahead, options, candidates)
        baseline = MODELS["trend"].forecast(FitInput(history, day, detect_shifts=False), lookahead)
        actual = values[:, origin : origin + horizon]
        scale = naive_scale(history, day)
        times = grid.times()[origin : origin + horizon]
        mase = nan_mean(np.abs(actual - bands.p50[:, :horizon]), axis=1) / scale
        trend_mase = nan_mean(np.abs(actual - baseline[:, :horizon]), axis=1) / scale
        observed = ~np.isnan(actual)
        with np.errstate(invalid="ignore"):  # comparisons with NaN (unobserved hours) are False, as wanted
            inside = (actual >= bands.p10[:, :horizon]) & (actual <= bands.p90[:, :horizon])
        coverage = (inside & observed).sum(axis=1) / np.maximum(observed.sum(axis=1), 1)
        crossings: dict[str, np.ndarray] = {}
        if caps is not None:
            hours = grid.step / 3600.0
            for name, band in (("actual", actual), ("trend", baseline)):
                index = first_crossing(band, caps).astype(float)
                crossings[name] = np.where(index < 0, np.nan, (index + 1) * hours)
            last = pd.DataFrame(history).ffill(axis=1).to_numpy()[:, -1]
            for name, position in exhaustion_positions(bands, caps, last).items():
                # column i is i + 1 steps after the origin here (as the actual's index + 1 above)
                crossings[name] = np.where(np.isfinite(position), (position + 1) * hours, np.nan)
            already = np.nan_to_num(last, nan=-np.inf) >= caps
            for name in crossings:
                crossings[name] = np.where(already, np.nan, crossings[name])
        for row in range(n):
            exhaustion = {
                name: (None if np.isnan(value[row]) else float(value[row])) for name, value in crossings.items()
            }
            results[row].append(
                OriginResult(
                    origin=grid.start + pd.Timedelta(seconds=grid.step * origin),
                    times=times,
                    actual=actual[row],
                    p10=bands.p10[row, :horizon],
                    p50=bands.p50[row, :horizon],
                    p90=bands.p90[row, :horizon],
                    trend=baseline[row, :horizon],
                    model=str(bands.model[row]),
                    mase=float(mase[row]),
                    trend_mase=float(trend_mase[row]),
                    coverage=float(coverage[row]),
                    exhaustion=exhaustion,
                )
            )
    return results


def exhaustion_positions(bands: Bands, limits: np.ndarray, last: np.ndarray) -> dict[str, np.ndarray]:
    """The p10/p50/p90 first-crossing positions on the bands' columns from sampled paths (paths.py), as the
    forecast frame dates them; the last observation sits one step before column 0. +inf: none."""
    times = bands.times()
    days = times.floor("D")
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if len(times) else np.empty(0, dtype=np.int64)
    model = bands.paths if bands.paths is not None else PathModel.empty(bands.p50.shape[0])
    limits = np.asarray(limits, dtype=float)
    positions = crossing_positions(
        bands.p10, bands.p50, bands.p90, model, limits, last, start=-1.0, starts=starts, hours=len(times)
    )
    return dict(zip(("p10", "p50", "p90"), positions, strict=True))


def summarize(results: list[OriginResult], horizon_hours: float | None = None) -> Summary:
    """Aggregate one series' origins; exhaustion figures only when a capacity was given."""
    models: dict[str, int] = {}
    for result in results:
        models[result.model] = models.get(result.model, 0) + 1
    summary = Summary(
        origins=len(results),
        mase=float(nan_mean(np.array([r.mase for r in results], dtype=float))),
        trend_mase=float(nan_mean(np.array([r.trend_mase for r in results], dtype=float))),
        coverage=float(nan_mean(np.array([r.coverage for r in results], dtype=float))),
        models=models,
    )
    if results and results[0].exhaustion:
        errors, trend_errors, inside = [], [], []
        for result in results:
            e = result.exhaustion
            actual = e.get("actual")
            p50 = e.get("p50")
            trend = e.get("trend")
            within = horizon_hours is None or (p50 is not None and p50 <= horizon_hours)
            if actual is None:
                if p50 is not None and within:
                    summary.exhaustion_false_alarms += 1
                continue
            if p50 is None:
                summary.exhaustion_missed += 1
            else:
                errors.append(abs(p50 - actual))
            if trend is not None:
                trend_errors.append(abs(trend - actual))
            else:
                summary.trend_exhaustion_missed += 1
            low, high = e.get("p10"), e.get("p90")
            inside.append(low is not None and low <= actual and (high is None or actual <= high))
        summary.exhaustion_error_hours = float(np.mean(errors)) if errors else None
        summary.trend_exhaustion_error_hours = float(np.mean(trend_errors)) if trend_errors else None
        summary.exhaustion_in_interval = float(np.mean(inside)) if inside else None
    return summary

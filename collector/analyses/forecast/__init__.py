"""Forecasts per pool and resource: time until allocatable is reached, with an 80 % interval.

Public API (used by the what-if command and the weekly report):

    forecast_series(frame, *, now, horizon=180 days) -> (forecast, forecast_points)
    pool_series_for_forecast(history, now, lookback=56 days) -> the input frame for it

The `forecast` analysis runs them on the daemon's history (docs/forecasting.md explains the
models, the selection by rolling-origin backtest, the intervals and what the benchmark showed).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from collector.analyses.forecast.api import forecast_series, pool_series_for_forecast
from collector.analyses.forecast.frames import FORECAST, FORECAST_POINTS
from collector.analyses.forecast.settings import ForecastConfig
from collector.analyses.registry import AnalysisContext, analysis
from collector.contract.schema import FrameSet

__all__ = ["FORECAST", "FORECAST_POINTS", "forecast_series", "pool_series_for_forecast"]

log = logging.getLogger(__name__)

DEFAULT_HORIZON = timedelta(days=180)
DEFAULT_LOOKBACK = timedelta(days=56)


def describe_horizon(horizon: timedelta) -> str:
    """'180 days', '36 hours': a horizon as a person writes it (str(timedelta) gave '180 days, 0:00:00')."""
    seconds = horizon.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def _setting(context: AnalysisContext, name: str, default: timedelta) -> timedelta:
    """A forecast setting from the config's `forecast:` section when there is one."""
    section = getattr(context.config, "forecast", None)
    value = getattr(section, name, None) if section is not None else None
    return value if isinstance(value, timedelta) else default


@analysis("forecast", expensive=True)
def forecast_analysis(context: AnalysisContext) -> FrameSet:
    """Forecast every pool series in the history; empty frames without history."""
    empty = {"forecast": FORECAST.empty(), "forecast_points": FORECAST_POINTS.empty()}
    if context.history is None:
        return empty
    lookback = _setting(context, "lookback", DEFAULT_LOOKBACK)
    horizon = _setting(context, "horizon", DEFAULT_HORIZON)
    section = getattr(context.config, "forecast", None)
    if isinstance(section, ForecastConfig) and section.executor == "dask":  # docs/scale-out.md, "Forecasts on Dask"
        from collector.analyses.forecast.executor import forecast_pools

        forecast, points = forecast_pools(context.history, section, now=context.now)
        if forecast.empty:
            return empty
    else:
        frame = pool_series_for_forecast(context.history, context.now, lookback)
        if frame.empty:
            return empty
        forecast, points = forecast_series(frame, now=context.now, horizon=horizon)
    log.info(
        "forecast: %d series, %d exhausting within %s (median)",
        len(forecast),
        int((forecast["seconds_p50"] < float("inf")).sum()),
        describe_horizon(horizon),
    )
    return {"forecast": forecast, "forecast_points": points}

"""The report's figures: every number the weekly report shows, computed here into frames.

Two analyses (registered through the `capacityd.analyses` entry point `report`):

* `report` (after every poll, after headroom): `report_pools` (each pool's urgency band per report,
  time remaining, utilization and its change over the week, N+1), `report_pool_resources` (pool
  totals and reclaimable amounts) and `report_headroom` (slots now and at +30/+60/+90 days);
* `report_history` (on the forecasts' schedule, after them): `report_growth` (top growers, like for
  like: collector/analyses/report/growth.py), `report_accuracy_series` (what each report checks) and
  `report_accuracy` (backtest of the forecast made from the history of 30 days ago).

Thresholds are each configured report's (`reports:` entries: red_days, amber_days, utilization_red,
utilization_amber, top_n, scope, accuracy_backtest — docs/config.md#reports); rows of report "" use
the defaults and serve a report that is not configured (the demo, `capacityd report` without one).
`exporters/report/` only selects rows in a report's scope, formats, charts and sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from collector.analyses.registry import AnalysisContext, analysis
from collector.analyses.report.accuracy import backtest_accuracy, checked_series, stored_accuracy
from collector.analyses.report.frames import (
    REPORT_ACCURACY,
    REPORT_ACCURACY_SERIES,
    REPORT_GROWTH,
    REPORT_HEADROOM,
    REPORT_POOL_RESOURCES,
    REPORT_POOLS,
)
from collector.analyses.report.growth import growth
from collector.analyses.report.spec import ReportSpec, Scope, scope_filter, spec_of, specs_of
from collector.analyses.report.status import (
    forecast_index,
    headroom_ahead,
    pool_inputs,
    pool_resources,
    pool_statuses,
    pool_totals,
    to_utc,
)
from collector.contract.schema import FrameSet

__all__ = [
    "REPORT_ACCURACY",
    "REPORT_ACCURACY_SERIES",
    "REPORT_GROWTH",
    "REPORT_HEADROOM",
    "REPORT_POOLS",
    "REPORT_POOL_RESOURCES",
    "ReportSpec",
    "Scope",
    "current_figures",
    "forecast_index",
    "history_figures",
    "scope_filter",
    "spec_of",
    "specs_of",
    "stored_accuracy",
]

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)


def read_week_ago(history: Any, now: datetime) -> pd.DataFrame:
    """Hourly pool series within 12 hours of a week ago (what the week-on-week change compares with)."""
    if history is None:
        return pd.DataFrame()
    frame = history.pool_series(
        start=now - WEEK - timedelta(hours=12), end=now - WEEK + timedelta(hours=12), step=timedelta(hours=1)
    )
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))


def current_figures(
    frames: Mapping[str, pd.DataFrame], history: Any, now: datetime, specs: Sequence[ReportSpec]
) -> FrameSet:
    """`report_pools` (one set of rows per spec), `report_pool_resources` and `report_headroom`."""
    now = to_utc(now).to_pydatetime()
    capacity, forecast = frames.get("capacity"), frames.get("forecast")
    headroom, consumers = frames.get("headroom"), frames.get("consumers")
    totals = pool_totals(capacity)
    inputs = pool_inputs(totals, forecast, headroom, consumers, read_week_ago(history, now), now)
    pools: list[pd.DataFrame] = []
    done: list[tuple[ReportSpec, pd.DataFrame]] = []
    for spec in specs:
        same = next((rows for other, rows in done if other.same_thresholds(spec)), None)
        rows = (
            same.assign(report=pd.array([spec.name] * len(same), dtype="string"))
            if same is not None
            else pool_statuses(spec, inputs)
        )
        done.append((spec, rows))
        pools.append(rows)
    non_empty = [frame for frame in pools if not frame.empty]
    return {
        "report_pools": pd.concat(non_empty, ignore_index=True) if non_empty else REPORT_POOLS.empty(),
        "report_pool_resources": pool_resources(totals, frames.get("reclaimable")),
        "report_headroom": headroom_ahead(headroom, forecast, frames.get("forecast_points"), now),
    }


def history_figures(
    frames: Mapping[str, pd.DataFrame],
    history: Any,
    now: datetime,
    specs: Sequence[ReportSpec],
    forecaster: Callable[..., Any] | None,
) -> FrameSet:
    """`report_growth`, `report_accuracy_series` and `report_accuracy` (backtest, when `forecaster`)."""
    now = to_utc(now).to_pydatetime()
    counts = history.consumer_counts(start=now - WEEK - timedelta(hours=1), end=now) if history is not None else None
    series = checked_series(specs, frames.get("forecast"), history, now)
    backtest = REPORT_ACCURACY.empty()
    if forecaster is not None and any(spec.backtest for spec in specs):
        wanted = {spec.name for spec in specs if spec.backtest}
        backtest = backtest_accuracy(forecaster, history, series[series["report"].isin(wanted)], now)
    return {
        "report_growth": growth(counts, frames.get("consumers"), now, WEEK),
        "report_accuracy_series": series,
        "report_accuracy": backtest,
    }


def _specs(context: AnalysisContext) -> list[ReportSpec]:
    return specs_of(list(getattr(context.config, "reports", None) or []))


@analysis("report")
def report_analysis(context: AnalysisContext) -> FrameSet:
    """The report's current figures (cheap: frames of this snapshot plus a week of pool history)."""
    return current_figures(context.frames, context.history, context.now, _specs(context))


@analysis("report_history", expensive=True)
def report_history_analysis(context: AnalysisContext) -> FrameSet:
    """Growth over the week and the accuracy backtest (expensive: runs with the forecasts)."""
    from collector.analyses.forecast import forecast_series

    return history_figures(context.frames, context.history, context.now, _specs(context), forecast_series)

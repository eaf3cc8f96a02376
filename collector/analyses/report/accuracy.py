"""How last month's forecasts fared: so readers know how far to trust the dates in a report.

Two measurements:

* **backtest** — the forecasting engine (`collector.analyses.forecast.forecast_series`) is re-run on
  the history as it stood 30 days ago, and its band for today compared with what happened. This works
  from the first report on, as soon as history reaches back far enough. The report analysis does this
  (an exporter never re-runs a forecast).
* **report** — each sent report stores its forecast bands (daily p10/p50/p90) in the send record;
  `stored_accuracy` compares the band that a report sent about a month ago gave for today with today's
  actual. The exporter owns the send record and hands it here.

Pool forecasts are daily maxima of hourly bands (a pool runs out at its daily peak), so the actual
compared is the maximum of the target day's recorded values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from collector.analyses.report.frames import REPORT_ACCURACY, REPORT_ACCURACY_SERIES
from collector.analyses.report.spec import ReportSpec, scope_filter
from collector.analyses.report.status import number, positive

log = logging.getLogger(__name__)

LOOKBACK = timedelta(days=30)
TRAIN = timedelta(days=56)
MIN_TRAIN = timedelta(days=7)
NEAR = pd.Timedelta(hours=36)
SERIES = ["layer", "cloud", "pool", "resource", "basis"]
SeriesKey = tuple[str, str, str, str, str]


def series_to_check(spec: ReportSpec, forecast: pd.DataFrame | None) -> list[tuple[SeriesKey, float]]:
    """(series, limit) of a report's most urgent forecast series in its scope."""
    forecast = scope_filter(forecast, spec.scope)
    if forecast is None or forecast.empty:
        return []
    frame = forecast.assign(_p50=forecast["seconds_p50"].astype(float).fillna(math.inf))
    frame = frame.sort_values(["_p50", *SERIES]).head(spec.top_n)
    return [
        (
            (str(row["layer"]), str(row["cloud"]), str(row["pool"]), str(row["resource"]), str(row["basis"])),
            number(row["limit"]),
        )
        for _, row in frame.iterrows()
    ]


def actuals(
    history: Any,
    series: Sequence[tuple[SeriesKey, float]],
    today: pd.Timestamp,
    now: datetime,
    forecast: pd.DataFrame | None,
) -> dict[SeriesKey, float]:
    """Today's daily maximum per series (from history), else the current value."""
    actual: dict[SeriesKey, float] = {}
    current: dict[SeriesKey, float] = {}
    if forecast is not None and not forecast.empty:
        current = {
            (str(r["layer"]), str(r["cloud"]), str(r["pool"]), str(r["resource"]), str(r["basis"])): float(r["current"])
            for _, r in forecast.iterrows()
            if pd.notna(r.get("current"))
        }
    for key, _limit in series:
        value = current.get(key, math.nan)
        if history is not None:
            frame = history.pool_series(
                layer=key[0], cloud=key[1], pool=key[2], resource=key[3], start=today.to_pydatetime(), end=now
            )
            if not frame.empty and key[4] in frame.columns:
                values = frame[key[4]].astype(float).dropna()
                if not values.empty:
                    value = max(float(values.max()), value) if not math.isnan(value) else float(values.max())
        if not math.isnan(value):
            actual[key] = value
    return actual


def checked_series(
    specs: Sequence[ReportSpec], forecast: pd.DataFrame | None, history: Any, now: datetime
) -> pd.DataFrame:
    """The `report_accuracy_series` frame: per report, the series it checks, ranked, with today's actual."""
    today = pd.Timestamp(now).tz_convert("UTC").floor("D")
    chosen = {spec.name: series_to_check(spec, forecast) for spec in specs}
    every = list({key: (key, limit) for series in chosen.values() for key, limit in series}.values())
    actual = actuals(history, every, today, now, forecast)
    records = [
        {
            "report": name,
            "layer": key[0],
            "cloud": key[1],
            "pool": key[2],
            "resource": key[3],
            "basis": key[4],
            "rank": float(rank),
            "actual": actual.get(key, math.nan),
            "limit": limit,
        }
        for name, series in chosen.items()
        for rank, (key, limit) in enumerate(series)
    ]
    return REPORT_ACCURACY_SERIES.build(records) if records else REPORT_ACCURACY_SERIES.empty()


def _row(
    key: SeriesKey, method: str, made_at: Any, target: Any, point: pd.Series, actual: float, limit: float
) -> dict[str, Any]:
    p10, p50, p90 = float(point["p10"]), float(point["p50"]), float(point["p90"])
    scale = limit if positive(limit) else abs(actual)
    low, high = sorted((p10, p90))
    return {
        "layer": key[0],
        "cloud": key[1],
        "pool": key[2],
        "resource": key[3],
        "basis": key[4],
        "method": method,
        "made_at": pd.Timestamp(made_at),
        "target_time": pd.Timestamp(target),
        "predicted_p10": p10,
        "predicted_p50": p50,
        "predicted_p90": p90,
        "actual": actual,
        "limit": limit,
        "error": (p50 - actual) / scale if positive(scale) else math.nan,
        "inside": 1.0 if low <= actual <= high else 0.0,
    }


def _wanted(series: pd.DataFrame) -> dict[SeriesKey, tuple[float, float]]:
    """series -> (actual, limit) of the checked series that have an actual."""
    out: dict[SeriesKey, tuple[float, float]] = {}
    for record in series.itertuples(index=False):
        if not math.isnan(float(record.actual)):
            key = (str(record.layer), str(record.cloud), str(record.pool), str(record.resource), str(record.basis))
            out[key] = (float(record.actual), float(record.limit))
    return out


def stored_accuracy(
    previous: pd.DataFrame | None, made_at: datetime | None, series: pd.DataFrame, now: datetime
) -> pd.DataFrame:
    """`report_accuracy` rows (method `report`) for forecast points stored with a send about a month ago."""
    wanted = _wanted(series)
    if previous is None or previous.empty or made_at is None or not wanted:
        return REPORT_ACCURACY.empty()
    today = pd.Timestamp(now).tz_convert("UTC").floor("D")
    frame = previous.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame[(frame["timestamp"] - today).abs() <= NEAR]
    groups = {tuple(map(str, k)): g for k, g in frame.groupby(SERIES)}
    records = []
    for key, (actual, limit) in wanted.items():
        group = groups.get(key)
        if group is None:
            continue
        point = group.iloc[(group["timestamp"] - today).abs().argsort().iloc[0]]
        records.append(_row(key, "report", made_at, point["timestamp"], point, actual, limit))
    return REPORT_ACCURACY.build(records) if records else REPORT_ACCURACY.empty()


def backtest_accuracy(
    forecaster: Callable[..., Any], history: Any, series: pd.DataFrame, now: datetime
) -> pd.DataFrame:
    """`report_accuracy` rows (method `backtest`): re-forecast from the history of 30 days ago."""
    wanted = _wanted(series)
    if history is None or not wanted:
        return REPORT_ACCURACY.empty()
    today = pd.Timestamp(now).tz_convert("UTC").floor("D")
    origin = pd.Timestamp(now).tz_convert("UTC") - pd.Timedelta(LOOKBACK)
    parts = []
    for key, (_actual, limit) in wanted.items():
        frame = history.pool_series(
            layer=key[0],
            cloud=key[1],
            pool=key[2],
            resource=key[3],
            start=(origin - pd.Timedelta(TRAIN)).to_pydatetime(),
            end=origin.to_pydatetime(),
        )
        if frame.empty or key[4] not in frame.columns:
            continue
        frame = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))
        frame = frame[frame["timestamp"] <= origin]
        frame = frame[frame[key[4]].astype(float).notna()]
        if frame.empty or frame["timestamp"].max() - frame["timestamp"].min() < pd.Timedelta(MIN_TRAIN):
            continue
        allocatable = frame["allocatable"].astype(float)
        parts.append(
            pd.DataFrame(
                {
                    "layer": key[0],
                    "cloud": key[1],
                    "pool": key[2],
                    "resource": key[3],
                    "basis": key[4],
                    "timestamp": frame["timestamp"].to_numpy(),
                    "value": frame[key[4]].astype(float).to_numpy(),
                    "limit": allocatable.to_numpy() if allocatable.notna().any() else limit,
                }
            )
        )
    if not parts:
        return REPORT_ACCURACY.empty()
    try:
        _forecast, points = forecaster(
            pd.concat(parts, ignore_index=True), now=origin.to_pydatetime(), horizon=LOOKBACK + timedelta(days=2)
        )
    except Exception:  # an accuracy check must never stop the other figures
        log.exception("report: re-forecasting from history for the accuracy check failed")
        return REPORT_ACCURACY.empty()
    if points is None or points.empty:
        return REPORT_ACCURACY.empty()
    points = points.assign(timestamp=pd.to_datetime(points["timestamp"], utc=True))
    records = []
    for key, group in points.groupby(SERIES):
        key = tuple(map(str, key))  # type: ignore[assignment]
        if key not in wanted:
            continue
        distance = (group["timestamp"] - today).abs()
        if distance.min() > NEAR:
            continue
        point = group.iloc[distance.argsort().iloc[0]]
        actual, limit = wanted[key]
        records.append(_row(key, "backtest", origin, point["timestamp"], point, actual, limit))
    return REPORT_ACCURACY.build(records) if records else REPORT_ACCURACY.empty()

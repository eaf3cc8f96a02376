"""How last month's forecasts fared: so readers know how far to trust the dates in this report.

Two measurements, both cheap:

* **stored** — each sent report stores its forecast bands (daily p10/p50/p90) in the send record;
  the report sent about a month ago is read back and its band for today compared with today's
  actual value. This is exactly what readers were told a month ago.
* **backtest** — the forecasting engine (`collector.analyses.forecast.forecast_series`) is re-run on the
  history as it stood 30 days ago, and its band for today compared with what happened. This works
  from the first report on, as soon as history reaches back far enough.

Pool forecasts are daily maxima of hourly bands (a pool runs out at its daily peak), so the actual
compared is the maximum of the target day's recorded values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from exporters.report.settings import ReportConfig

log = logging.getLogger(__name__)


def _positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


@dataclass
class AccuracyRow:
    layer: str
    cloud: str
    pool: str
    resource: str
    basis: str
    made_at: datetime
    method: str  # "report" (stored with an earlier send) | "backtest" (re-forecast from history)
    target_time: datetime
    predicted_p10: float
    predicted_p50: float
    predicted_p90: float
    actual: float
    limit: float

    @property
    def error(self) -> float:
        """Error of the median as a share of the limit (what matters for a date: distance to full)."""
        scale = self.limit if _positive(self.limit) else abs(self.actual)
        return (self.predicted_p50 - self.actual) / scale if _positive(scale) else math.nan

    @property
    def inside(self) -> bool:
        low, high = sorted((self.predicted_p10, self.predicted_p90))
        return low <= self.actual <= high


@dataclass
class Accuracy:
    rows: list[AccuracyRow] = field(default_factory=list)
    note: str = ""

    @property
    def median_abs_error(self) -> float:
        errors = [abs(r.error) for r in self.rows if not math.isnan(r.error)]
        return float(np.median(errors)) if errors else math.nan

    @property
    def coverage(self) -> float:
        return float(np.mean([r.inside for r in self.rows])) if self.rows else math.nan

LOOKBACK = timedelta(days=30)
TRAIN = timedelta(days=56)
MIN_TRAIN = timedelta(days=7)
SeriesKey = tuple[str, str, str, str, str]


def evaluate(*, config: ReportConfig, now: datetime, forecast: pd.DataFrame, totals: pd.DataFrame, history: Any,
             previous: pd.DataFrame | None, previous_made_at: datetime | None,
             backtest: Callable[..., Any] | None) -> Accuracy:
    """Compare forecasts made about a month ago with what happened, most urgent series first."""
    series = _series_to_check(forecast, totals, config.top_n)
    if not series:
        return Accuracy(note="No forecast series in scope yet, so there is nothing to check.")
    today = pd.Timestamp(now).tz_convert("UTC").floor("D")
    actuals = _actuals(history, series, today, now, forecast, totals)
    rows: dict[SeriesKey, AccuracyRow] = {}
    if previous is not None and not previous.empty and previous_made_at is not None:
        for row in _from_stored(previous, previous_made_at, series, actuals, today):
            rows[_key(row)] = row
    if backtest is not None and history is not None:
        missing = [s for s in series if s[0] not in rows]
        for row in _from_backtest(backtest, history, missing, actuals, now, today):
            rows.setdefault(_key(row), row)
    ordered = [rows[s[0]] for s in series if s[0] in rows]
    if not ordered:
        return Accuracy(note="Needs a month of history (or a report sent a month ago) to check forecasts against "
                             "what happened; until then, treat the dates as indicative.")
    methods = {r.method for r in ordered}
    how = " and ".join(sorted({"report": "the forecasts sent a month ago",
                               "backtest": "forecasts re-made from the history of 30 days ago"}[m]
                              for m in methods))
    return Accuracy(rows=ordered, note=f"Compares {how} with today's values.")


def _key(row: AccuracyRow) -> SeriesKey:
    return (row.layer, row.cloud, row.pool, row.resource, row.basis)


def _series_to_check(forecast: pd.DataFrame, totals: pd.DataFrame,
                     top_n: int) -> list[tuple[SeriesKey, float]]:
    """(series, limit) of the most urgent forecast series in scope."""
    if forecast is None or forecast.empty:
        return []
    frame = forecast.assign(_p50=forecast["seconds_p50"].astype(float).fillna(math.inf))
    frame = frame.sort_values(["_p50", "layer", "cloud", "pool", "resource", "basis"]).head(top_n)
    out = []
    for _, row in frame.iterrows():
        key = (str(row["layer"]), str(row["cloud"]), str(row["pool"]), str(row["resource"]), str(row["basis"]))
        out.append((key, float(row["limit"]) if pd.notna(row["limit"]) else math.nan))
    return out


def _actuals(history: Any, series: list[tuple[SeriesKey, float]], today: pd.Timestamp, now: datetime,
             forecast: pd.DataFrame, totals: pd.DataFrame) -> dict[SeriesKey, float]:
    """Today's daily maximum per series (from history), else the current value."""
    actual: dict[SeriesKey, float] = {}
    current = {(str(r["layer"]), str(r["cloud"]), str(r["pool"]), str(r["resource"]), str(r["basis"])):
               float(r["current"]) for _, r in forecast.iterrows() if pd.notna(r.get("current"))}
    for key, _limit in series:
        value = current.get(key, math.nan)
        if history is not None:
            frame = history.pool_series(layer=key[0], cloud=key[1], pool=key[2], resource=key[3],
                                        start=today.to_pydatetime(), end=now)
            if not frame.empty and key[4] in frame.columns:
                values = frame[key[4]].astype(float).dropna()
                if not values.empty:
                    value = max(float(values.max()), value) if not math.isnan(value) else float(values.max())
        if not math.isnan(value):
            actual[key] = value
    return actual


def _from_stored(previous: pd.DataFrame, made_at: datetime, series: list[tuple[SeriesKey, float]],
                 actuals: dict[SeriesKey, float], today: pd.Timestamp) -> list[AccuracyRow]:
    rows = []
    frame = previous.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame[(frame["timestamp"] - today).abs() <= pd.Timedelta(hours=36)]
    groups = {tuple(map(str, k)): g for k, g in frame.groupby(["layer", "cloud", "pool", "resource", "basis"])}
    for key, limit in series:
        group = groups.get(key)
        if group is None or key not in actuals:
            continue
        point = group.iloc[(group["timestamp"] - today).abs().argsort().iloc[0]]
        rows.append(AccuracyRow(
            layer=key[0], cloud=key[1], pool=key[2], resource=key[3], basis=key[4],
            made_at=pd.Timestamp(made_at).to_pydatetime(), method="report",
            target_time=point["timestamp"].to_pydatetime(),
            predicted_p10=float(point["p10"]), predicted_p50=float(point["p50"]), predicted_p90=float(point["p90"]),
            actual=actuals[key], limit=limit,
        ))
    return rows


def _from_backtest(backtest: Callable[..., Any], history: Any, series: list[tuple[SeriesKey, float]],
                   actuals: dict[SeriesKey, float], now: datetime, today: pd.Timestamp) -> list[AccuracyRow]:
    if not series:
        return []
    origin = pd.Timestamp(now).tz_convert("UTC") - pd.Timedelta(LOOKBACK)
    parts = []
    for key, limit in series:
        if key not in actuals:
            continue
        frame = history.pool_series(layer=key[0], cloud=key[1], pool=key[2], resource=key[3],
                                    start=(origin - pd.Timedelta(TRAIN)).to_pydatetime(), end=origin.to_pydatetime())
        if frame.empty or key[4] not in frame.columns:
            continue
        frame = frame[frame["timestamp"] <= origin]
        values = frame[key[4]].astype(float)
        frame = frame[values.notna()]
        if frame.empty or frame["timestamp"].max() - frame["timestamp"].min() < pd.Timedelta(MIN_TRAIN):
            continue
        allocatable = frame["allocatable"].astype(float)
        parts.append(pd.DataFrame({
            "layer": key[0], "cloud": key[1], "pool": key[2], "resource": key[3], "basis": key[4],
            "timestamp": frame["timestamp"].to_numpy(), "value": frame[key[4]].astype(float).to_numpy(),
            "limit": allocatable.to_numpy() if allocatable.notna().any() else limit,
        }))
    if not parts:
        return []
    try:
        result = backtest(pd.concat(parts, ignore_index=True), now=origin.to_pydatetime(),
                          horizon=LOOKBACK + timedelta(days=2))
    except Exception:  # an accuracy check must never stop the report
        log.exception("report: re-forecasting from history for the accuracy check failed")
        return []
    points = _points_from(result)
    if points is None or points.empty:
        return []
    points = points.copy()
    points["timestamp"] = pd.to_datetime(points["timestamp"], utc=True)
    limits = dict(series)
    rows = []
    for key, group in points.groupby(["layer", "cloud", "pool", "resource", "basis"]):
        key = tuple(map(str, key))  # type: ignore[assignment]
        if key not in actuals:
            continue
        distance = (group["timestamp"] - today).abs()
        if distance.min() > pd.Timedelta(hours=36):
            continue
        point = group.iloc[distance.argsort().iloc[0]]
        rows.append(AccuracyRow(
            layer=key[0], cloud=key[1], pool=key[2], resource=key[3], basis=key[4],
            made_at=origin.to_pydatetime(), method="backtest", target_time=point["timestamp"].to_pydatetime(),
            predicted_p10=float(point["p10"]), predicted_p50=float(point["p50"]), predicted_p90=float(point["p90"]),
            actual=actuals[key], limit=limits.get(key, math.nan),  # type: ignore[arg-type]
        ))
    return rows


def _points_from(result: Any) -> pd.DataFrame | None:
    """The future-bands frame in whatever container forecast_series returns (frame, tuple or mapping)."""
    candidates: list[Any]
    if isinstance(result, pd.DataFrame):
        candidates = [result]
    elif isinstance(result, dict):
        candidates = [result.get("forecast_points"), *result.values()]
    elif isinstance(result, tuple | list):
        candidates = list(result)
    else:
        candidates = [getattr(result, "points", None), getattr(result, "forecast_points", None)]
    for candidate in candidates:
        if isinstance(candidate, pd.DataFrame) and {"p10", "p50", "p90", "timestamp"} <= set(candidate.columns):
            return candidate
    return None

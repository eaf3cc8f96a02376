"""The report's content model: plain data that the charts, the templates and the CSV read.

Built by exporters/report/content.py from the report analysis's frames (collector/analyses/report/);
nothing here computes a figure: properties only combine what a row already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

STATUS_RANK = {"red": 0, "amber": 1, "green": 2, "unknown": 3}
HORIZONS_DAYS = (30, 60, 90)


def _positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _ratio(part: float, whole: float) -> float:
    if _positive(whole) and part is not None and not (isinstance(part, float) and math.isnan(part)):
        return float(part) / float(whole)
    return math.nan


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

    error: float
    """Error of the median as a share of the limit (what matters for a date: distance to full)."""
    inside: bool
    """The actual fell inside the p10-p90 band."""


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


# -- the content model ----------------------------------------------------------------------------------


@dataclass
class PoolStatus:
    """One pool's line in the summary: its colour, why, and how long it has."""

    layer: str
    cloud: str
    pool: str
    status: str
    reason: str
    resource: str | None = None
    basis: str | None = None
    days_p50: float = math.nan
    days_low: float = math.nan
    days_high: float = math.nan
    utilization: float = math.nan
    utilization_change: float = math.nan
    days_change: float = math.nan
    headroom_shape: str | None = None
    headroom_slots: float = math.nan
    n1: str = "unknown"
    n1_text: str = ""
    hosts: float = math.nan

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.layer, self.cloud, self.pool)

    def sort_key(self) -> tuple[Any, ...]:
        days = self.days_p50 if not math.isnan(self.days_p50) else math.inf
        low = self.days_low if not math.isnan(self.days_low) else math.inf
        utilization = self.utilization if not math.isnan(self.utilization) else -1.0
        return (STATUS_RANK[self.status], days, low, -utilization, self.layer, self.cloud, self.pool)


@dataclass
class CloudSummary:
    """The pools of one cloud or cluster, most urgent first."""

    kind: str  # "cloud" or "cluster"
    name: str
    layers: list[str]
    pools: list[PoolStatus]
    counts: dict[str, int]
    hidden: int = 0
    """Pools left out of the mail by top_n (they are in the CSV)."""


@dataclass
class HeadroomRow:
    layer: str
    cloud: str
    pool: str
    pool_kind: str
    shape: str
    shape_kind: str
    slots: float
    future: dict[int, float]
    """Days ahead -> slots expected then (NaN when no forecast for the limiting resource)."""
    slots_after_failure: float
    failure_domain: str | None
    shortfall: float
    limiting_resource: str | None
    hosts: float


@dataclass
class Grower:
    layer: str
    cloud: str
    project: str
    count_now: float
    delta_count: float
    delta_cpu: float
    delta_memory: float
    since: datetime


@dataclass
class ReclaimRow:
    layer: str
    cloud: str
    pool: str
    amounts: dict[str, float]
    consumers: float


@dataclass
class PoolRow:
    """Every number of one pool and resource (the CSV row; the mail shows the top N)."""

    layer: str
    cloud: str
    pool: str
    resource: str
    hosts: float
    capacity: float
    allocatable: float
    allocated: float
    used: float
    status: str
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """basis -> {days_p10, days_p50, days_p90, exhaustion_p50, growth_per_day, model, mase}."""
    reclaimable: float = math.nan

    @property
    def allocated_ratio(self) -> float:
        return _ratio(self.allocated, self.allocatable)

    @property
    def used_ratio(self) -> float:
        return _ratio(self.used, self.allocatable)


@dataclass
class SourceNote:
    """A data-quality finding: a source down, stale or missing, or a pool without data for a while."""

    subject: str
    kind: str
    state: str  # down | stale | missing | gap
    since: datetime | None
    duration: timedelta | None
    detail: str


@dataclass
class Chart:
    cid: str
    title: str
    alt: str
    png: bytes = b""
    kind: str = "growth"
    """overview | growth"""


@dataclass
class ReportContent:
    name: str
    title: str
    generated_at: datetime
    zone: ZoneInfo
    period: datetime
    scope: str
    has_history: bool
    history_note: str
    clouds: list[CloudSummary]
    pools: list[PoolStatus]
    headroom: list[HeadroomRow]
    growers: list[Grower]
    growers_note: str
    reclaimable: list[ReclaimRow]
    pool_rows: list[PoolRow]
    data_quality: list[SourceNote]
    accuracy: Accuracy
    notes: list[str]
    top_n: int
    red_days: float = 30.0
    amber_days: float = 90.0
    forecast_points: pd.DataFrame | None = None
    series: dict[tuple[str, str, str, str, str], pd.DataFrame] = field(default_factory=dict)
    """History used by the charts, per (layer, cloud, pool, resource, basis)."""
    chart_points: dict[tuple[str, str, str, str, str], pd.DataFrame] = field(default_factory=dict)
    """Forecast bands of the charted series."""

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUS_RANK, 0)
        for pool in self.pools:
            counts[pool.status] += 1
        return counts

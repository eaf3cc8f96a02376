"""The report's content: what a capacity planner needs to read once a week, built from frames.

`build_content` turns a snapshot (source frames plus the derived `headroom`, `reclaimable`,
`forecast` and `forecast_points` frames) and history into a `ReportContent`: plain data that the
charts, the templates and the CSV read. Nothing here renders or sends; every number shown comes
from the engine's frames, so the CSV attached to the mail equals what `/metrics` exports.

Missing inputs never fail the report: no history, no forecast yet, a source down all week — each
becomes a note in the report instead, because a report that does not arrive tells nobody anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from exporters.report.accuracy import Accuracy
from exporters.report.settings import ReportConfig

log = logging.getLogger(__name__)

STATUS_RANK = {"red": 0, "amber": 1, "green": 2, "unknown": 3}
HORIZONS_DAYS = (30, 60, 90)
PARTITION_POOL_KINDS = ("az", "node_pool")
POOL_KIND_ORDER = {"az": 0, "node_pool": 0, "cloud": 1, "cluster": 1, "aggregate": 2}
"""Headroom pool kinds that are the capacity frame's pools (hosts partition into them)."""
FINISHED_STATES = frozenset({"succeeded", "failed", "deleted", "soft_deleted", "shelved_offloaded"})
WEEK = timedelta(days=7)
DAY_SECONDS = 86400.0
UTILIZATION_RED = 0.95
UTILIZATION_AMBER = 0.85


class HistoryReader(Protocol):
    """What the report reads from `collector.store.history.History`."""

    def pool_series(self, layer: Any = None, cloud: Any = None, pool: Any = None, resource: Any = None,
                    start: Any = None, end: Any = None, step: Any = None) -> pd.DataFrame: ...

    def consumer_counts(self, start: Any = None, end: Any = None) -> pd.DataFrame: ...


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


# -- helpers --------------------------------------------------------------------------------------------


def _ratio(part: float, whole: float) -> float:
    if _positive(whole) and part is not None and not (isinstance(part, float) and math.isnan(part)):
        return float(part) / float(whole)
    return math.nan


def _positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _float(value: Any) -> float:
    try:
        if value is None or pd.isna(value):
            return math.nan
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _to_utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def scope_filter(frame: pd.DataFrame | None, config: ReportConfig) -> pd.DataFrame:
    """Rows of a frame (with layer/cloud/pool columns) inside the report's scope."""
    if frame is None:
        return pd.DataFrame()
    if frame.empty or "layer" not in frame.columns:
        return frame
    scope = config.scope
    mask = np.ones(len(frame), dtype=bool)
    if scope.layers:
        mask &= frame["layer"].isin(scope.layers).to_numpy()
    if "cloud" in frame.columns:
        is_cluster = (frame["layer"] == "kubernetes").to_numpy()
        if scope.clouds:
            mask &= is_cluster | frame["cloud"].isin(scope.clouds).to_numpy()
        if scope.clusters:
            mask &= ~is_cluster | frame["cloud"].isin(scope.clusters).to_numpy()
    if scope.pools and "pool" in frame.columns:
        mask &= frame["pool"].isin(scope.pools).to_numpy()
    return frame[mask]


def describe_scope(config: ReportConfig) -> str:
    scope = config.scope
    parts = []
    if scope.layers:
        parts.append("layers " + ", ".join(scope.layers))
    if scope.clouds:
        parts.append("clouds " + ", ".join(scope.clouds))
    if scope.clusters:
        parts.append("clusters " + ", ".join(scope.clusters))
    if scope.pools:
        parts.append("pools " + ", ".join(scope.pools))
    return "; ".join(parts) if parts else "the whole estate"


def pool_totals(capacity: pd.DataFrame) -> pd.DataFrame:
    """Per pool and resource: sums of capacity, allocatable, allocated, used, and the host count.

    Unknown stays unknown: a pool where no host reports `used` has NaN, not 0.
    """
    columns = ["layer", "cloud", "pool", "resource", "hosts", "capacity", "allocatable", "allocated", "used"]
    if capacity is None or capacity.empty:
        return pd.DataFrame(columns=columns)
    frame = capacity.copy()
    frame["_host"] = frame["host"].where(frame["scope"] == "host")
    keys = ["layer", "cloud", "pool", "resource"]
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = pd.DataFrame({
        "hosts": grouped["_host"].nunique().astype(float),
        "capacity": grouped["capacity"].sum(min_count=1),
        "allocatable": grouped["allocatable"].sum(min_count=1),
        "allocated": grouped["allocated"].sum(min_count=1),
        "used": grouped["used"].sum(min_count=1),
    }).reset_index()
    for column in ("layer", "cloud", "pool", "resource"):
        out[column] = out[column].astype(str)
    return out[columns]


# -- the builder ----------------------------------------------------------------------------------------


@dataclass
class BuildInputs:
    """Everything `build_content` reads, gathered so tests can build it from hand-made frames."""

    frames: Mapping[str, pd.DataFrame]
    now: datetime
    history: HistoryReader | None = None
    previous_summary: dict[str, Any] | None = None
    """The pools' summary stored with the last sent report (for 'change since last week')."""
    previous_forecasts: pd.DataFrame | None = None
    """Forecast points stored with a report sent about a month ago (for forecast accuracy)."""
    previous_forecasts_made_at: datetime | None = None
    period: datetime | None = None
    backtest: Callable[..., Any] | None = None
    """collector.analyses.forecast.forecast_series, or None to skip the re-forecast from history."""


def build_content(config: ReportConfig, inputs: BuildInputs) -> ReportContent:
    """Build the report for one ReportConfig (its scope and thresholds) from frames and history."""
    from exporters.report import accuracy as accuracy_module

    zone = ZoneInfo(config.timezone)
    now = _to_utc(inputs.now).to_pydatetime()
    frames = inputs.frames
    notes: list[str] = []

    capacity = scope_filter(frames.get("capacity"), config)
    consumers = scope_filter(frames.get("consumers"), config)
    headroom = scope_filter(frames.get("headroom"), config)
    reclaimable = scope_filter(frames.get("reclaimable"), config)
    forecast = scope_filter(frames.get("forecast"), config)
    points = scope_filter(frames.get("forecast_points"), config)

    if capacity.empty:
        notes.append("No capacity data is in scope: every source of this report is down or not configured.")
    if frames.get("forecast") is None or frames["forecast"].empty:
        notes.append("Forecasts have not been computed yet (the daemon computes them after its first polls); "
                     "pool colours are by utilization until they are.")

    history = _SafeHistory(inputs.history, notes)
    week = history.pool_series(start=now - WEEK - timedelta(hours=6), end=now, step=timedelta(hours=1))
    has_history = not week.empty
    history_note = _history_note(week, now, zone, inputs.history is not None)

    totals = pool_totals(capacity)
    reclaim_by_pool = _reclaim_by_pool_resource(reclaimable)
    pool_rows = _pool_rows(totals, forecast, reclaim_by_pool)
    statuses = _pool_statuses(config, totals, forecast, headroom, consumers, week, now, inputs.previous_summary)
    status_of = {p.key: p.status for p in statuses}
    for row in pool_rows:
        row.status = status_of.get((row.layer, row.cloud, row.pool), "unknown")
    pool_rows.sort(key=lambda r: (STATUS_RANK[r.status], _min_days(r), r.layer, r.cloud, r.pool, r.resource))

    headroom_rows = _headroom_rows(headroom, forecast, points, now)
    growers, growers_note = _growers(history, consumers, now, config.top_n)
    content = ReportContent(
        name=config.name,
        title=config.title,
        generated_at=now,
        zone=zone,
        period=_to_utc(inputs.period).to_pydatetime() if inputs.period else now,
        scope=describe_scope(config),
        has_history=has_history,
        history_note=history_note,
        clouds=_clouds(statuses, config.top_n),
        pools=statuses,
        headroom=headroom_rows,
        growers=growers,
        growers_note=growers_note,
        reclaimable=_reclaim_rows(reclaimable),
        pool_rows=pool_rows,
        data_quality=_data_quality(frames.get("sources"), week, totals, now),
        accuracy=Accuracy(),
        notes=notes,
        top_n=config.top_n,
        red_days=config.red_days,
        amber_days=config.amber_days,
        forecast_points=points if not points.empty else None,
    )
    content.accuracy = accuracy_module.evaluate(
        config=config, now=now, forecast=forecast, totals=totals, history=history,
        previous=inputs.previous_forecasts, previous_made_at=inputs.previous_forecasts_made_at,
        backtest=inputs.backtest,
    )
    content.series = _chart_series(history, statuses, config.charts, now)
    keys = [(s.layer, s.cloud, s.pool, str(s.resource), str(s.basis)) for s in statuses if s.resource and s.basis]
    content.chart_points = _chart_points(points, keys[: config.charts])
    return content


def _min_days(row: PoolRow) -> float:
    values = [f.get("days_p50", math.inf) for f in row.forecasts.values()]
    values = [v for v in values if not math.isnan(v)]
    return min(values, default=math.inf)


class _SafeHistory:
    """History reads that never fail the report: an error becomes a note and an empty frame."""

    def __init__(self, history: HistoryReader | None, notes: list[str]):
        self.history = history
        self.notes = notes
        self._failed = False

    def _call(self, method: str, **kwargs: Any) -> pd.DataFrame:
        if self.history is None or self._failed:
            return pd.DataFrame()
        try:
            frame = getattr(self.history, method)(**kwargs)
        except Exception as error:  # a broken history must not stop the report
            log.exception("report: reading history (%s) failed", method)
            self.notes.append(f"History could not be read ({type(error).__name__}: {error}); "
                              "sections that need it are left out.")
            self._failed = True
            return pd.DataFrame()
        return frame if frame is not None else pd.DataFrame()

    def pool_series(self, **kwargs: Any) -> pd.DataFrame:
        frame = self._call("pool_series", **kwargs)
        if not frame.empty:
            frame = frame.copy()
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame

    def consumer_counts(self, **kwargs: Any) -> pd.DataFrame:
        frame = self._call("consumer_counts", **kwargs)
        if not frame.empty:
            frame = frame.copy()
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame


def _history_note(week: pd.DataFrame, now: datetime, zone: ZoneInfo, configured: bool) -> str:
    from exporters.report.units import format_age, format_time

    if not configured:
        return ("No history yet: capacityd has no state directory history to read. This report shows the "
                "current state only; growth, forecasts and week-on-week changes appear once history builds up.")
    if week.empty:
        return ("No history yet: nothing has been recorded in the last week. This report shows the current "
                "state only; growth, forecasts and week-on-week changes appear once history builds up.")
    first = week["timestamp"].min().to_pydatetime()
    if now - first < WEEK - timedelta(hours=12):
        return (f"History covers only {format_age(now - first)} (since {format_time(first, zone)}); "
                "week-on-week figures are over that shorter span.")
    return ""


def _reclaim_by_pool_resource(reclaimable: pd.DataFrame) -> dict[tuple[str, str, str, str], float]:
    if reclaimable is None or reclaimable.empty:
        return {}
    sums = reclaimable.groupby(["layer", "cloud", "pool", "resource"], observed=True)["amount"].sum()
    return {tuple(map(str, key)): float(value) for key, value in sums.items()}  # type: ignore[misc]


def _forecast_fields(row: pd.Series) -> dict[str, Any]:
    def days(column: str) -> float:
        value = _float(row.get(column))
        return value / DAY_SECONDS if not math.isnan(value) else math.nan

    return {
        "days_p10": days("seconds_p10"),
        "days_p50": days("seconds_p50"),
        "days_p90": days("seconds_p90"),
        "exhaustion_p10": row.get("exhaustion_p10"),
        "exhaustion_p50": row.get("exhaustion_p50"),
        "exhaustion_p90": row.get("exhaustion_p90"),
        "growth_per_day": _float(row.get("growth_per_day")),
        "current": _float(row.get("current")),
        "limit": _float(row.get("limit")),
        "model": row.get("model"),
        "mase": _float(row.get("mase")),
    }


def _forecast_index(forecast: pd.DataFrame) -> dict[tuple[str, str, str, str, str], dict[str, Any]]:
    if forecast is None or forecast.empty:
        return {}
    index = {}
    for _, row in forecast.iterrows():
        key = (str(row["layer"]), str(row["cloud"]), str(row["pool"]), str(row["resource"]), str(row["basis"]))
        index[key] = _forecast_fields(row)
    return index


def _pool_rows(totals: pd.DataFrame, forecast: pd.DataFrame,
               reclaim: dict[tuple[str, str, str, str], float]) -> list[PoolRow]:
    index = _forecast_index(forecast)
    rows = []
    for record in totals.itertuples(index=False):
        key = (record.layer, record.cloud, record.pool, record.resource)
        forecasts = {basis: index[(*key, basis)] for basis in ("allocated", "used") if (*key, basis) in index}
        rows.append(PoolRow(
            layer=record.layer, cloud=record.cloud, pool=record.pool, resource=record.resource,
            hosts=_float(record.hosts), capacity=_float(record.capacity), allocatable=_float(record.allocatable),
            allocated=_float(record.allocated), used=_float(record.used), status="unknown",
            forecasts=forecasts, reclaimable=reclaim.get(key, math.nan),
        ))
    return rows


def _pool_statuses(config: ReportConfig, totals: pd.DataFrame, forecast: pd.DataFrame, headroom: pd.DataFrame,
                   consumers: pd.DataFrame, week: pd.DataFrame, now: datetime,
                   previous: dict[str, Any] | None) -> list[PoolStatus]:
    from exporters.report.units import format_day_range, format_days

    pools = sorted({(r.layer, r.cloud, r.pool) for r in totals.itertuples(index=False)})
    if forecast is not None and not forecast.empty:
        pools = sorted(set(pools) | {(str(a), str(b), str(c)) for a, b, c in
                                     forecast[["layer", "cloud", "pool"]].drop_duplicates().itertuples(index=False)})
    first_forecast: dict[tuple[str, str, str], pd.Series] = {}
    if forecast is not None and not forecast.empty:
        # The series that runs out first per pool (median, then earliest bound): one sort for all pools.
        ordered = forecast.assign(
            _p50=forecast["seconds_p50"].astype(float).fillna(math.inf),
            _p10=forecast["seconds_p10"].astype(float).fillna(math.inf),
        ).sort_values(["layer", "cloud", "pool", "_p50", "_p10", "resource", "basis"])
        for _, row in ordered.drop_duplicates(["layer", "cloud", "pool"]).iterrows():
            first_forecast[(str(row["layer"]), str(row["cloud"]), str(row["pool"]))] = row
    by_pool_totals = {key: group for key, group in totals.groupby(["layer", "cloud", "pool"], observed=True)} \
        if not totals.empty else {}
    partition = headroom[headroom["pool_kind"].isin(PARTITION_POOL_KINDS)] if not headroom.empty else headroom
    by_pool_headroom = {key: group for key, group in partition.groupby(["layer", "cloud", "pool"], observed=True)} \
        if not partition.empty else {}
    common_flavor = _common_flavors(consumers)
    week_then = _values_week_ago(week, now)
    previous_days = {tuple(p["key"]): p.get("days_p50") for p in (previous or {}).get("pools", [])}

    statuses = []
    for key in pools:
        status = PoolStatus(layer=key[0], cloud=key[1], pool=key[2], status="unknown", reason="no data")
        pool_totals_frame = by_pool_totals.get(key)
        if pool_totals_frame is not None:
            status.hosts = float(pool_totals_frame["hosts"].max())
        top = first_forecast.get(key)
        if top is not None:
            fields = _forecast_fields(top)
            status.resource, status.basis = str(top["resource"]), str(top["basis"])
            status.days_p50, status.days_low, status.days_high = (
                fields["days_p50"], fields["days_p10"], fields["days_p90"])
            what = f"{status.resource} ({status.basis})"
            if status.days_p50 <= config.red_days:
                status.status = "red"
                status.reason = (f"{what} is full now" if status.days_p50 < 0.5 else
                                 f"{what} runs out in {format_days(status.days_p50)} "
                                 f"({format_day_range(status.days_low, status.days_high)})")
            elif status.days_p50 <= config.amber_days or status.days_low <= config.amber_days:
                status.status = "amber"
                status.reason = (f"{what} may run out in {format_days(status.days_p50)} "
                                 f"({format_day_range(status.days_low, status.days_high)})")
            else:
                status.status = "green"
                status.reason = (f"no resource runs out within {config.amber_days:g} d; "
                                 f"{what} closest ({format_day_range(status.days_low, status.days_high)})")
            current, limit = fields["current"], fields["limit"]
            status.utilization = _ratio(current, limit)
        elif pool_totals_frame is not None:
            _status_by_utilization(status, pool_totals_frame)
        if pool_totals_frame is not None and status.resource is not None:
            match = pool_totals_frame[pool_totals_frame["resource"] == status.resource]
            if not match.empty and math.isnan(status.utilization):
                basis = status.basis or "allocated"
                status.utilization = _ratio(_float(match.iloc[0][basis]), _float(match.iloc[0]["allocatable"]))
            then = week_then.get((*key, status.resource))
            if then is not None and not math.isnan(status.utilization):
                then_value = _ratio(then.get(status.basis or "allocated", math.nan), then.get("allocatable"))
                status.utilization_change = status.utilization - then_value
        if key in previous_days and previous_days[key] is not None:
            before = _float(previous_days[key])
            if math.isfinite(before) and math.isfinite(status.days_p50):
                status.days_change = status.days_p50 - before
        _apply_headroom(status, by_pool_headroom.get(key), common_flavor.get(key))
        if status.n1 == "fails" and status.status == "green":
            status.status = "amber"
            status.reason = f"N+1 fails: {status.n1_text}"
        statuses.append(status)
    statuses.sort(key=PoolStatus.sort_key)
    return statuses


def _status_by_utilization(status: PoolStatus, totals: pd.DataFrame) -> None:
    """Without a forecast, colour a pool by its fullest resource (allocated, else used)."""
    best: tuple[float, str, str] | None = None
    for record in totals.itertuples(index=False):
        for basis in ("allocated", "used"):
            ratio = _ratio(_float(getattr(record, basis)), _float(record.allocatable))
            if not math.isnan(ratio) and (best is None or ratio > best[0]):
                best = (ratio, str(record.resource), basis)
            if not math.isnan(ratio):
                break
    if best is None:
        status.reason = "no allocation or usage reported"
        return
    ratio, resource, basis = best
    status.utilization, status.resource, status.basis = ratio, resource, basis
    level = "red" if ratio >= UTILIZATION_RED else "amber" if ratio >= UTILIZATION_AMBER else "green"
    status.status = level
    status.reason = f"{resource} {ratio:.0%} {basis} (no forecast yet)"


def _common_flavors(consumers: pd.DataFrame) -> dict[tuple[str, str, str], list[str]]:
    """Per pool, the flavors/shapes in use, most common first (the headroom shape the summary names)."""
    if consumers is None or consumers.empty or "flavor" not in consumers.columns:
        return {}
    holding = consumers[consumers["holds_capacity"].astype(bool) & consumers["flavor"].notna()]
    counts = holding.groupby(["layer", "cloud", "pool", "flavor"], observed=True).size()
    out: dict[tuple[str, str, str], list[str]] = {}
    for (layer, cloud, pool, flavor), _ in counts.sort_values(ascending=False).items():
        out.setdefault((str(layer), str(cloud), str(pool)), []).append(str(flavor))
    return out


def _apply_headroom(status: PoolStatus, rows: pd.DataFrame | None, flavors: list[str] | None) -> None:
    from exporters.report.units import format_count

    if rows is None or rows.empty:
        return
    by_shape = {str(r["shape"]): r for _, r in rows.iterrows()}
    choice = next((f for f in (flavors or []) if f in by_shape), None)
    if choice is None:
        choice = str(rows.sort_values(["slots", "shape"]).iloc[0]["shape"])
    status.headroom_shape = choice
    status.headroom_slots = _float(by_shape[choice]["slots"])
    failure = rows[rows["slots_after_failure"].notna() | rows["shortfall"].notna()]
    if failure.empty:
        return
    shortfall = failure["shortfall"].astype(float).fillna(0.0)
    worst = failure.loc[shortfall.idxmax()]
    domain = worst["failure_domain"] if pd.notna(worst["failure_domain"]) else "the worst host"
    if float(shortfall.max()) > 0:
        status.n1 = "fails"
        status.n1_text = (f"losing {domain} leaves {format_count(shortfall.max())} of its consumers "
                          "without a home")
    else:
        status.n1 = "ok"
        after = _float(by_shape[choice]["slots_after_failure"])
        chosen_domain = by_shape[choice]["failure_domain"]
        domain = chosen_domain if pd.notna(chosen_domain) else domain
        status.n1_text = (f"survives losing {domain}; {format_count(after)} × {choice} still fit"
                          if not math.isnan(after) else f"survives losing {domain}")


def _values_week_ago(week: pd.DataFrame, now: datetime) -> dict[tuple[str, str, str, str], dict[str, float]]:
    """Per pool and resource, the history row closest to a week ago (within 12 hours)."""
    if week is None or week.empty:
        return {}
    target = _to_utc(now - WEEK)
    window = week[(week["timestamp"] - target).abs() <= pd.Timedelta(hours=12)]
    if window.empty:
        return {}
    window = window.assign(_distance=(window["timestamp"] - target).abs()).sort_values("_distance")
    first = window.drop_duplicates(["layer", "cloud", "pool", "resource"])
    return {
        (str(r["layer"]), str(r["cloud"]), str(r["pool"]), str(r["resource"])): {
            "allocatable": _float(r.get("allocatable")), "allocated": _float(r.get("allocated")),
            "used": _float(r.get("used")),
        }
        for _, r in first.iterrows()
    }


def _clouds(statuses: list[PoolStatus], top_n: int) -> list[CloudSummary]:
    groups: dict[tuple[str, str], list[PoolStatus]] = {}
    for status in statuses:
        kind = "cluster" if status.layer == "kubernetes" else "cloud"
        groups.setdefault((kind, status.cloud), []).append(status)
    summaries = []
    for (kind, name), pools in groups.items():
        counts = dict.fromkeys(STATUS_RANK, 0)
        for pool in pools:
            counts[pool.status] += 1
        summaries.append(CloudSummary(
            kind=kind, name=name, layers=sorted({p.layer for p in pools}), pools=pools, counts=counts,
            hidden=max(0, len(pools) - top_n),
        ))
    summaries.sort(key=lambda s: (min(STATUS_RANK[p.status] for p in s.pools), s.kind, s.name))
    return summaries


def _p50_at_horizons(points: pd.DataFrame, now: datetime) -> dict[tuple[str, ...], float]:
    """(layer, cloud, pool, resource, basis, days) -> the median forecast on the day `days` ahead."""
    if points is None or points.empty:
        return {}
    days_of = {(_to_utc(now) + pd.Timedelta(days=d)).floor("D"): d for d in HORIZONS_DAYS}
    selected = points[points["timestamp"].isin(list(days_of))]
    out: dict[tuple[str, ...], float] = {}
    for record in selected.itertuples(index=False):
        key = (str(record.layer), str(record.cloud), str(record.pool), str(record.resource), str(record.basis))
        out[(*key, days_of[record.timestamp])] = float(record.p50)  # type: ignore[index]
    return out


def _free_after(days: int, fields: dict[str, Any] | None, p50: float | None) -> float:
    """Free amount of a series `days` ahead: limit minus the median forecast then (NaN when unknown)."""
    if fields is None:
        return math.nan
    limit, current = fields["limit"], fields["current"]
    if math.isnan(limit) or math.isnan(current):
        return math.nan
    if p50 is not None and not math.isnan(p50):
        return limit - p50
    growth = fields["growth_per_day"]
    if math.isnan(growth):
        return math.nan
    return limit - (current + growth * days)


def _headroom_rows(headroom: pd.DataFrame, forecast: pd.DataFrame, points: pd.DataFrame,
                   now: datetime) -> list[HeadroomRow]:
    """Slots now and at +30/+60/+90 days.

    Future slots scale today's slots by how much of the limiting resource's free amount the median
    forecast leaves then (allocated basis: slots are about what is handed out). This assumes new
    demand spreads over hosts as today's free space does; the engine's what-if gives exact answers.
    """
    if headroom is None or headroom.empty:
        return []
    index = _forecast_index(forecast)
    ahead = _p50_at_horizons(points, now)
    rows = []
    for _, record in headroom.iterrows():
        slots = _float(record["slots"])
        resource = record["limiting_resource"] if pd.notna(record["limiting_resource"]) else None
        future = dict.fromkeys(HORIZONS_DAYS, math.nan)
        if resource is not None:
            key = (str(record["layer"]), str(record["cloud"]), str(record["pool"]), str(resource), "allocated")
            fields = index.get(key)
            if fields is not None:
                free_now = fields["limit"] - fields["current"]
                for days in HORIZONS_DAYS:
                    free = _free_after(days, fields, ahead.get((*key, days)))
                    if math.isnan(free) or math.isnan(slots):
                        continue
                    if free_now > 0:
                        future[days] = float(math.floor(slots * max(0.0, free) / free_now))
                    else:
                        future[days] = 0.0
        rows.append(HeadroomRow(
            layer=str(record["layer"]), cloud=str(record["cloud"]), pool=str(record["pool"]),
            pool_kind=str(record["pool_kind"]), shape=str(record["shape"]), shape_kind=str(record["shape_kind"]),
            slots=slots, future=future, slots_after_failure=_float(record["slots_after_failure"]),
            failure_domain=str(record["failure_domain"]) if pd.notna(record["failure_domain"]) else None,
            shortfall=_float(record["shortfall"]), limiting_resource=str(resource) if resource else None,
            hosts=_float(record["hosts"]),
        ))
    # Pools first (AZs, node pools), then whole clouds/clusters, then aggregates; tightest first within.
    rows.sort(key=lambda r: (POOL_KIND_ORDER.get(r.pool_kind, 9), _nan_last(r.future[HORIZONS_DAYS[-1]]),
                             _nan_last(r.slots), r.layer, r.cloud, r.pool, r.shape))
    return rows


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _growers(history: _SafeHistory, consumers: pd.DataFrame, now: datetime,
             top_n: int) -> tuple[list[Grower], str]:
    """Projects/namespaces whose consumer count grew most over the week, with an estimate in cores/bytes."""
    counts = history.consumer_counts(start=now - WEEK - timedelta(hours=1), end=now)
    if counts.empty:
        return [], "Needs history: top growers appear once capacityd has recorded consumers for a while."
    counts = counts[~counts["state"].astype(str).isin(FINISHED_STATES) & counts["project"].notna()]
    if counts.empty or counts["timestamp"].nunique() < 2:
        return [], "Needs at least two recorded collections to measure growth."
    first, last = counts["timestamp"].min(), counts["timestamp"].max()
    keys = ["layer", "cloud", "project", "flavor"]
    counts = counts.assign(flavor=counts["flavor"].astype(object).where(counts["flavor"].notna(), ""))
    at_first = counts[counts["timestamp"] == first].groupby(keys, observed=True)["count"].sum()
    at_last = counts[counts["timestamp"] == last].groupby(keys, observed=True)["count"].sum()
    delta = at_last.sub(at_first, fill_value=0.0)
    sizes = _flavor_sizes(consumers)
    per_project: dict[tuple[str, str, str], dict[str, float]] = {}
    for (layer, cloud, project, flavor), change in delta.items():
        entry = per_project.setdefault((str(layer), str(cloud), str(project)),
                                       {"delta": 0.0, "cpu": 0.0, "memory": 0.0, "now": 0.0})
        entry["delta"] += float(change)
        size = sizes.get((str(layer), str(cloud), str(flavor)))
        if size is not None:
            entry["cpu"] += float(change) * size[0]
            entry["memory"] += float(change) * size[1]
    for (layer, cloud, project, _flavor), count in at_last.items():
        per_project[(str(layer), str(cloud), str(project))]["now"] += float(count)
    growers = [
        Grower(layer=k[0], cloud=k[1], project=k[2], count_now=v["now"], delta_count=v["delta"],
               delta_cpu=v["cpu"], delta_memory=v["memory"], since=first.to_pydatetime())
        for k, v in per_project.items() if v["delta"] > 0 or v["cpu"] > 0
    ]
    growers.sort(key=lambda g: (-g.delta_cpu, -g.delta_count, g.layer, g.cloud, g.project))
    note = "" if growers else "No project or namespace grew this week."
    return growers[:top_n], note


def _flavor_sizes(consumers: pd.DataFrame) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Mean cores and bytes per flavor/shape today, to turn a change in counts into resources."""
    if consumers is None or consumers.empty:
        return {}
    frame = consumers.assign(flavor=consumers["flavor"].astype(object).where(consumers["flavor"].notna(), ""))
    means = frame.groupby(["layer", "cloud", "flavor"], observed=True)[["cpu", "memory"]].mean()
    return {(str(a), str(b), str(c)): (_zero_nan(r["cpu"]), _zero_nan(r["memory"]))
            for (a, b, c), r in means.iterrows()}


def _zero_nan(value: Any) -> float:
    number = _float(value)
    return 0.0 if math.isnan(number) else number


def _reclaim_rows(reclaimable: pd.DataFrame) -> list[ReclaimRow]:
    if reclaimable is None or reclaimable.empty:
        return []
    rows = []
    for (layer, cloud, pool), group in reclaimable.groupby(["layer", "cloud", "pool"], observed=True):
        amounts = {str(r["resource"]): float(r["amount"]) for _, r in group.iterrows()}
        if not any(v > 0 for v in amounts.values()):
            continue
        rows.append(ReclaimRow(layer=str(layer), cloud=str(cloud), pool=str(pool), amounts=amounts,
                               consumers=float(group["consumers"].max())))
    rows.sort(key=lambda r: (-r.consumers, r.layer, r.cloud, r.pool))
    return rows


def _data_quality(sources: pd.DataFrame | None, week: pd.DataFrame, totals: pd.DataFrame,
                  now: datetime) -> list[SourceNote]:
    """Sources that are down, stale or missing, and pools with gaps in the last week's history."""
    notes: list[SourceNote] = []
    stamp = _to_utc(now)
    if sources is not None and not sources.empty:
        for _, row in sources.sort_values("source").iterrows():
            last_success = row["last_success"] if pd.notna(row["last_success"]) else None
            error = str(row["last_error"]) if pd.notna(row["last_error"]) else ""
            if last_success is None:
                notes.append(SourceNote(
                    subject=str(row["source"]), kind=str(row["kind"]), state="missing", since=None, duration=None,
                    detail="has never been polled successfully" + (f": {error}" if error else ""),
                ))
                continue
            age = (stamp - last_success).to_pytimedelta()
            if age >= WEEK:
                state = "missing"
                detail = "no successful poll all week"
            elif not bool(row["up"]):
                state, detail = "down", "last poll failed"
            elif bool(row["stale"]):
                state, detail = "stale", "data older than the last poll attempt"
            else:
                continue
            notes.append(SourceNote(
                subject=str(row["source"]), kind=str(row["kind"]), state=state,
                since=last_success.to_pydatetime(), duration=age,
                detail=detail + (f": {error}" if error else ""),
            ))
    if week is not None and not week.empty:
        start = max(week["timestamp"].min(), stamp - pd.Timedelta(WEEK))
        expected = max(1.0, (stamp - start) / pd.Timedelta(hours=1))
        # A pool series is on a regular grid; an hour without data from any source is NaN, not absent.
        recent = week[(week["timestamp"] >= start) & week["allocatable"].notna()]
        hours = recent.assign(_hour=recent["timestamp"].dt.floor("h")).groupby(
            ["layer", "cloud", "pool"], observed=True)
        seen = {}
        for key, group in hours:
            seen[tuple(map(str, key))] = (group["_hour"].nunique(), group["timestamp"].max())
        pools = set(seen) | {(r.layer, r.cloud, r.pool) for r in totals.itertuples(index=False)}
        for key in sorted(pools):
            count, last = seen.get(key, (0, None))
            missing_hours = expected - count
            if missing_hours / expected <= 0.1 or missing_hours < 2:
                continue
            gap = timedelta(hours=float(missing_hours))
            notes.append(SourceNote(
                subject=f"{key[1]}/{key[2]}", kind=key[0], state="gap",
                since=last.to_pydatetime() if last is not None else None, duration=gap,
                detail=(f"no data for about {missing_hours:.0f} of the last {expected:.0f} hours"
                        if count else "no data recorded in the last week"),
            ))
    return notes


def _chart_series(history: _SafeHistory, statuses: list[PoolStatus], charts: int,
                  now: datetime) -> dict[tuple[str, str, str, str, str], pd.DataFrame]:
    """History of the most urgent pools' limiting series (six weeks), for the growth charts."""
    series = {}
    for status in [s for s in statuses if s.resource and s.basis][:charts]:
        frame = history.pool_series(layer=status.layer, cloud=status.cloud, pool=status.pool,
                                    resource=status.resource, start=now - timedelta(days=42), end=now,
                                    step=timedelta(hours=1))
        series[(status.layer, status.cloud, status.pool, str(status.resource), str(status.basis))] = frame
    return series


def _chart_points(points: pd.DataFrame, keys: list[tuple[str, str, str, str, str]]) -> dict[
        tuple[str, str, str, str, str], pd.DataFrame]:
    """The forecast bands of the charted series, split once (the points frame can be large)."""
    if points is None or points.empty or not keys:
        return {}
    columns = ["layer", "cloud", "pool", "resource", "basis"]
    wanted = pd.MultiIndex.from_tuples(keys, names=columns)
    mask = pd.MultiIndex.from_frame(points[columns].astype(str)).isin(wanted)
    return {tuple(map(str, key)): group.sort_values("timestamp")  # type: ignore[misc]
            for key, group in points[mask].groupby(columns, observed=True)}


def summary_record(content: ReportContent) -> dict[str, Any]:
    """What a send stores for next week's 'change since last week' (JSON-safe)."""
    def clean(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "generated_at": content.generated_at.isoformat(),
        "pools": [
            {"key": list(p.key), "status": p.status, "days_p50": clean(p.days_p50),
             "headroom_slots": clean(p.headroom_slots), "utilization": clean(p.utilization)}
            for p in content.pools
        ],
    }

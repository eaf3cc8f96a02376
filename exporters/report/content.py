"""The report's content: the report analysis's frames, selected for one report and worded.

`build_content` reads the frames the analyses made (`report_pools`, `report_pool_resources`,
`report_headroom`, `report_growth`, `report_accuracy*` from collector/analyses/report/, and `forecast`,
`forecast_points`, `reclaimable`, `sources`) and turns the rows in the report's scope into a
`ReportContent` (exporters/report/model.py) that the charts, the templates and the CSV read. It
computes no figure: it selects rows (scope, top N, order), words them, and reads history only for the
charts and the notes on data quality. So the CSV attached to the mail holds the analysis's numbers.

Missing inputs never fail the report: no history, no forecast yet, a source down all week — each
becomes a note in the report instead, because a report that does not arrive tells nobody anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from collector.analyses.report import scope_filter, spec_of
from collector.analyses.report.status import forecast_index
from exporters.report.accuracy import select_accuracy
from exporters.report.model import (
    HORIZONS_DAYS,
    STATUS_RANK,
    Chart,
    CloudSummary,
    Grower,
    HeadroomRow,
    PoolRow,
    PoolStatus,
    ReclaimRow,
    ReportContent,
)
from exporters.report.quality import HistoryReader, SafeHistory, data_quality, history_note
from exporters.report.select import rows_of_report
from exporters.report.settings import ReportConfig

__all__ = [
    "HORIZONS_DAYS",
    "STATUS_RANK",
    "BuildInputs",
    "Chart",
    "ReportContent",
    "build_content",
    "describe_scope",
    "summary_record",
]

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
POOL_KIND_ORDER = {"az": 0, "node_pool": 0, "cloud": 1, "cluster": 1, "aggregate": 2}


def _float(value: Any) -> float:
    try:
        if value is None or pd.isna(value):
            return math.nan
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _to_utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


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


@dataclass
class BuildInputs:
    """Everything `build_content` reads, gathered so tests can build it from hand-made frames."""

    frames: Mapping[str, pd.DataFrame]
    """The snapshot's frames, with the report analysis's."""
    now: datetime
    history: HistoryReader | None = None
    """Read for the growth charts and the data-quality notes only."""
    previous_summary: dict[str, Any] | None = None
    """The pools' summary stored with the last sent report (for 'change since last week')."""
    previous_forecasts: pd.DataFrame | None = None
    """Forecast points stored with a report sent about a month ago (for forecast accuracy)."""
    previous_forecasts_made_at: datetime | None = None
    period: datetime | None = None


def build_content(config: ReportConfig, inputs: BuildInputs) -> ReportContent:
    """Select and word the report analysis's rows for one ReportConfig (its scope, top N and thresholds)."""
    zone = ZoneInfo(config.timezone)
    now = _to_utc(inputs.now).to_pydatetime()
    frames = inputs.frames
    spec = spec_of(config)
    notes: list[str] = []

    def scoped(name: str) -> pd.DataFrame:
        return scope_filter(frames.get(name), spec.scope)

    capacity = scoped("capacity")
    forecast = scoped("forecast")
    points = scoped("forecast_points")
    if capacity.empty:
        notes.append("No capacity data is in scope: every source of this report is down or not configured.")
    if frames.get("forecast") is None or frames["forecast"].empty:
        notes.append(
            "Forecasts have not been computed yet (the daemon computes them after its first polls); "
            "pool colours are by utilization until they are."
        )
    pools_frame = rows_of_report(frames.get("report_pools"), spec)
    if pools_frame is None:
        notes.append(
            f"The report figures for {config.name!r} have not been computed yet (the daemon's `report` "
            "analysis computes them for every configured report)."
        )
        pools_frame = pd.DataFrame()

    history = SafeHistory(inputs.history, notes)
    week = history.pool_series(start=now - WEEK - timedelta(hours=6), end=now, step=timedelta(hours=1))
    resources = scoped("report_pool_resources")
    statuses = _pool_statuses(scope_filter(pools_frame, spec.scope), inputs.previous_summary)
    status_of = {p.key: p.status for p in statuses}
    pool_rows = _pool_rows(resources, forecast, status_of)
    growers, growers_note = _growers(scoped("report_growth"), inputs.history is not None, config.top_n)
    content = ReportContent(
        name=config.name,
        title=config.title,
        generated_at=now,
        zone=zone,
        period=_to_utc(inputs.period).to_pydatetime() if inputs.period else now,
        scope=describe_scope(config),
        has_history=not week.empty,
        history_note=history_note(week, now, zone, inputs.history is not None),
        clouds=_clouds(statuses, config.top_n),
        pools=statuses,
        headroom=_headroom_rows(scoped("report_headroom")),
        growers=growers,
        growers_note=growers_note,
        reclaimable=_reclaim_rows(scoped("reclaimable")),
        pool_rows=pool_rows,
        data_quality=data_quality(frames.get("sources"), week, resources, now),
        accuracy=select_accuracy(
            frames, spec, config.accuracy_backtest, inputs.previous_forecasts, inputs.previous_forecasts_made_at, now
        ),
        notes=notes,
        top_n=config.top_n,
        red_days=config.red_days,
        amber_days=config.amber_days,
        forecast_points=points if not points.empty else None,
    )
    content.series = _chart_series(history, statuses, config.charts, now)
    keys = [(s.layer, s.cloud, s.pool, str(s.resource), str(s.basis)) for s in statuses if s.resource and s.basis]
    content.chart_points = _chart_points(points, keys[: config.charts])
    return content


# -- pools ----------------------------------------------------------------------------------------------


def _reason(row: Any, amber_days: float) -> str:
    from exporters.report.units import format_day_range, format_days

    rule = str(row["rule"])
    what = f"{row['resource']} ({row['basis']})"
    days, low, high = _float(row["days_p50"]), _float(row["days_p10"]), _float(row["days_p90"])
    if rule == "full":
        return f"{what} is full now"
    if rule == "runs_out":
        return f"{what} runs out in {format_days(days)} ({format_day_range(low, high)})"
    if rule == "may_run_out":
        return f"{what} may run out in {format_days(days)} ({format_day_range(low, high)})"
    if rule in ("no_runout", "n1_fails"):
        return f"no resource runs out within {amber_days:g} d; {what} closest ({format_day_range(low, high)})"
    if rule == "utilization":
        return f"{row['resource']} {_float(row['utilization']):.0%} {row['basis']} (no forecast yet)"
    if rule == "no_usage":
        return "no allocation or usage reported"
    return "no data"


def _n1_text(row: Any) -> str:
    from exporters.report.units import format_count

    domain = _text(row["n1_domain"]) or "the worst host"
    if row["n1"] == "fails":
        return f"losing {domain} leaves {format_count(_float(row['n1_shortfall']))} of its consumers without a home"
    if row["n1"] == "ok":
        after = _float(row["n1_slots"])
        return (
            f"survives losing {domain}; {format_count(after)} × {row['headroom_shape']} still fit"
            if not math.isnan(after)
            else f"survives losing {domain}"
        )
    return ""


def _pool_statuses(frame: pd.DataFrame, previous: dict[str, Any] | None) -> list[PoolStatus]:
    previous_days = {tuple(p["key"]): p.get("days_p50") for p in (previous or {}).get("pools", [])}
    statuses = []
    for _, row in frame.iterrows():
        status = PoolStatus(
            layer=str(row["layer"]),
            cloud=str(row["cloud"]),
            pool=str(row["pool"]),
            status=str(row["status"]),
            reason=_reason(row, float(row["amber_days"])),
            resource=_text(row["resource"]),
            basis=_text(row["basis"]),
            days_p50=_float(row["days_p50"]),
            days_low=_float(row["days_p10"]),
            days_high=_float(row["days_p90"]),
            utilization=_float(row["utilization"]),
            utilization_change=_float(row["utilization_change"]),
            headroom_shape=_text(row["headroom_shape"]),
            headroom_slots=_float(row["headroom_slots"]),
            n1=str(row["n1"]),
            n1_text=_n1_text(row),
            hosts=_float(row["hosts"]),
        )
        if row["rule"] == "n1_fails":
            status.reason = f"N+1 fails: {status.n1_text}"
        before = _float(previous_days.get(status.key))
        if math.isfinite(before) and math.isfinite(status.days_p50):
            status.days_change = status.days_p50 - before  # against what last week's mail said
        statuses.append(status)
    statuses.sort(key=PoolStatus.sort_key)
    return statuses


def _pool_rows(
    resources: pd.DataFrame, forecast: pd.DataFrame, status_of: dict[tuple[str, str, str], str]
) -> list[PoolRow]:
    index = forecast_index(forecast)
    rows = []
    for record in resources.itertuples(index=False):
        key = (str(record.layer), str(record.cloud), str(record.pool), str(record.resource))
        rows.append(
            PoolRow(
                layer=key[0],
                cloud=key[1],
                pool=key[2],
                resource=key[3],
                hosts=_float(record.hosts),
                capacity=_float(record.capacity),
                allocatable=_float(record.allocatable),
                allocated=_float(record.allocated),
                used=_float(record.used),
                status=status_of.get(key[:3], "unknown"),
                forecasts={basis: index[(*key, basis)] for basis in ("allocated", "used") if (*key, basis) in index},
                reclaimable=_float(record.reclaimable),
            )
        )
    rows.sort(key=lambda r: (STATUS_RANK[r.status], _min_days(r), r.layer, r.cloud, r.pool, r.resource))
    return rows


def _min_days(row: PoolRow) -> float:
    values = [f.get("days_p50", math.inf) for f in row.forecasts.values()]
    values = [v for v in values if not math.isnan(v)]
    return min(values, default=math.inf)


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
        summaries.append(
            CloudSummary(
                kind=kind,
                name=name,
                layers=sorted({p.layer for p in pools}),
                pools=pools,
                counts=counts,
                hidden=max(0, len(pools) - top_n),
            )
        )
    summaries.sort(key=lambda s: (min(STATUS_RANK[p.status] for p in s.pools), s.kind, s.name))
    return summaries


# -- headroom, growth, reclaimable ----------------------------------------------------------------------


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _headroom_rows(frame: pd.DataFrame) -> list[HeadroomRow]:
    """The analysis's slots now and ahead; pools first (AZs, node pools), then clouds, then aggregates."""
    rows = [
        HeadroomRow(
            layer=str(r["layer"]),
            cloud=str(r["cloud"]),
            pool=str(r["pool"]),
            pool_kind=str(r["pool_kind"]),
            shape=str(r["shape"]),
            shape_kind=str(r["shape_kind"]),
            slots=_float(r["slots"]),
            future={d: _float(r[f"slots_{d}d"]) for d in HORIZONS_DAYS},
            slots_after_failure=_float(r["slots_after_failure"]),
            failure_domain=_text(r["failure_domain"]),
            shortfall=_float(r["shortfall"]),
            limiting_resource=_text(r["limiting_resource"]),
            hosts=_float(r["hosts"]),
        )
        for _, r in frame.iterrows()
    ]
    rows.sort(
        key=lambda r: (
            POOL_KIND_ORDER.get(r.pool_kind, 9),
            _nan_last(r.future[HORIZONS_DAYS[-1]]),
            _nan_last(r.slots),
            r.layer,
            r.cloud,
            r.pool,
            r.shape,
        )
    )
    return rows


def _growers(frame: pd.DataFrame, has_history: bool, top_n: int) -> tuple[list[Grower], str]:
    """The projects/namespaces that grew most (the analysis compared like with like)."""
    if not has_history:
        return [], "Needs history: top growers appear once capacityd has recorded consumers for a while."
    if frame.empty:
        return [], (
            "Needs at least two recorded collections of a source over the week to measure growth "
            "(existing VMs and pods are never counted as growth)."
        )
    growers = [
        Grower(
            layer=str(r["layer"]),
            cloud=str(r["cloud"]),
            project=str(r["project"]),
            count_now=float(r["count_now"]),
            delta_count=float(r["delta_count"]),
            delta_cpu=float(r["delta_cpu"]),
            delta_memory=float(r["delta_memory"]),
            since=pd.Timestamp(r["start"]).to_pydatetime(),
        )
        for _, r in frame.iterrows()
        if float(r["delta_count"]) > 0 or float(r["delta_cpu"]) > 0
    ]
    growers.sort(key=lambda g: (-g.delta_cpu, -g.delta_count, g.layer, g.cloud, g.project))
    note = "" if growers else "No project or namespace grew this week."
    return growers[:top_n], note


def _reclaim_rows(reclaimable: pd.DataFrame) -> list[ReclaimRow]:
    if reclaimable is None or reclaimable.empty:
        return []
    rows = []
    for (layer, cloud, pool), group in reclaimable.groupby(["layer", "cloud", "pool"], observed=True):
        amounts = {str(r["resource"]): float(r["amount"]) for _, r in group.iterrows()}
        if not any(v > 0 for v in amounts.values()):
            continue
        rows.append(
            ReclaimRow(
                layer=str(layer),
                cloud=str(cloud),
                pool=str(pool),
                amounts=amounts,
                consumers=float(group["consumers"].max()),
            )
        )
    rows.sort(key=lambda r: (-r.consumers, r.layer, r.cloud, r.pool))
    return rows


# -- charts and the send record -------------------------------------------------------------------------


def _chart_series(
    history: SafeHistory, statuses: list[PoolStatus], charts: int, now: datetime
) -> dict[tuple[str, str, str, str, str], pd.DataFrame]:
    """History of the most urgent pools' limiting series (six weeks), for the growth charts."""
    series = {}
    for status in [s for s in statuses if s.resource and s.basis][:charts]:
        frame = history.pool_series(
            layer=status.layer,
            cloud=status.cloud,
            pool=status.pool,
            resource=status.resource,
            start=now - timedelta(days=42),
            end=now,
            step=timedelta(hours=1),
        )
        series[(status.layer, status.cloud, status.pool, str(status.resource), str(status.basis))] = frame
    return series


def _chart_points(
    points: pd.DataFrame, keys: list[tuple[str, str, str, str, str]]
) -> dict[tuple[str, str, str, str, str], pd.DataFrame]:
    """The forecast bands of the charted series, split once (the points frame can be large)."""
    if points is None or points.empty or not keys:
        return {}
    columns = ["layer", "cloud", "pool", "resource", "basis"]
    wanted = pd.MultiIndex.from_tuples(keys, names=columns)
    mask = pd.MultiIndex.from_frame(points[columns].astype(str)).isin(wanted)
    return {
        tuple(map(str, key)): group.sort_values("timestamp")  # type: ignore[misc]
        for key, group in points[mask].groupby(columns, observed=True)
    }


def summary_record(content: ReportContent) -> dict[str, Any]:
    """What a send stores for next week's 'change since last week' (JSON-safe)."""

    def clean(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "generated_at": content.generated_at.isoformat(),
        "pools": [
            {
                "key": list(p.key),
                "status": p.status,
                "days_p50": clean(p.days_p50),
                "headroom_slots": clean(p.headroom_slots),
                "utilization": clean(p.utilization),
            }
            for p in content.pools
        ],
    }

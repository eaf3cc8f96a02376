"""Each pool's urgency band, time remaining, utilization, week-on-week change and N+1 status.

A pool's colour comes from the series that runs out first (median, then earliest bound): red when
its median runs out within `red_days`, amber when the median or the earliest bound runs out within
`amber_days`, else green; without a forecast, by utilization of its fullest resource. A pool that
fails N+1 is never green. The thresholds are each report's (docs/config.md#reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from collector.analyses.report.frames import REPORT_HEADROOM, REPORT_POOL_RESOURCES, REPORT_POOLS
from collector.analyses.report.spec import ReportSpec

PARTITION_POOL_KINDS = ("az", "node_pool")
"""Headroom pool kinds that are the capacity frame's pools (hosts partition into them)."""
HORIZONS_DAYS = (30, 60, 90)
WEEK = timedelta(days=7)
DAY_SECONDS = 86400.0
SeriesKey = tuple[str, str, str, str, str]


def number(value: Any) -> float:
    """A float, NaN for None/NA/not a number."""
    try:
        if value is None or pd.isna(value):
            return math.nan
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def positive(value: Any) -> bool:
    number_ = number(value)
    return math.isfinite(number_) and number_ > 0


def ratio(part: float, whole: float) -> float:
    if positive(whole) and part is not None and not (isinstance(part, float) and math.isnan(part)):
        return float(part) / float(whole)
    return math.nan


def to_utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# -- pool totals ----------------------------------------------------------------------------------------


def pool_totals(capacity: pd.DataFrame | None) -> pd.DataFrame:
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
    out = pd.DataFrame(
        {
            "hosts": grouped["_host"].nunique().astype(float),
            "capacity": grouped["capacity"].sum(min_count=1),
            "allocatable": grouped["allocatable"].sum(min_count=1),
            "allocated": grouped["allocated"].sum(min_count=1),
            "used": grouped["used"].sum(min_count=1),
        }
    ).reset_index()
    for column in ("layer", "cloud", "pool", "resource"):
        out[column] = out[column].astype(str)
    return out[columns]


def pool_resources(totals: pd.DataFrame, reclaimable: pd.DataFrame | None) -> pd.DataFrame:
    """The `report_pool_resources` frame: totals plus the reclaimable amount per pool and resource."""
    if totals.empty:
        return REPORT_POOL_RESOURCES.empty()
    reclaim: dict[tuple[str, ...], float] = {}
    if reclaimable is not None and not reclaimable.empty:
        sums = reclaimable.groupby(["layer", "cloud", "pool", "resource"], observed=True)["amount"].sum()
        reclaim = {tuple(map(str, key)): float(value) for key, value in sums.items()}
    frame = totals.copy()
    frame["reclaimable"] = [
        reclaim.get(key, math.nan)
        for key in zip(frame["layer"], frame["cloud"], frame["pool"], frame["resource"], strict=True)
    ]
    return REPORT_POOL_RESOURCES.build(frame.to_dict("records"))


# -- forecasts ------------------------------------------------------------------------------------------


def forecast_fields(row: pd.Series) -> dict[str, Any]:
    def days(column: str) -> float:
        value = number(row.get(column))
        return value / DAY_SECONDS if not math.isnan(value) else math.nan

    return {
        "days_p10": days("seconds_p10"),
        "days_p50": days("seconds_p50"),
        "days_p90": days("seconds_p90"),
        "exhaustion_p10": row.get("exhaustion_p10"),
        "exhaustion_p50": row.get("exhaustion_p50"),
        "exhaustion_p90": row.get("exhaustion_p90"),
        "growth_per_day": number(row.get("growth_per_day")),
        "current": number(row.get("current")),
        "limit": number(row.get("limit")),
        "model": row.get("model"),
        "mase": number(row.get("mase")),
    }


def forecast_index(forecast: pd.DataFrame | None) -> dict[SeriesKey, dict[str, Any]]:
    if forecast is None or forecast.empty:
        return {}
    return {
        (
            str(row["layer"]),
            str(row["cloud"]),
            str(row["pool"]),
            str(row["resource"]),
            str(row["basis"]),
        ): forecast_fields(row)
        for _, row in forecast.iterrows()
    }


# -- statuses -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInputs:
    """What every report's bands are judged from, gathered once per pass (the thresholds differ, not these)."""

    pools: list[tuple[str, str, str]]
    first_forecast: dict[tuple[str, str, str], pd.Series]
    totals: dict[Any, pd.DataFrame]
    headroom: dict[Any, pd.DataFrame]
    common_flavor: dict[tuple[str, str, str], list[str]]
    week_then: dict[tuple[str, str, str, str], dict[str, float]]


def pool_inputs(
    totals: pd.DataFrame,
    forecast: pd.DataFrame | None,
    headroom: pd.DataFrame | None,
    consumers: pd.DataFrame | None,
    week: pd.DataFrame,
    now: datetime,
) -> PoolInputs:
    pools = sorted({(r.layer, r.cloud, r.pool) for r in totals.itertuples(index=False)})
    first_forecast: dict[tuple[str, str, str], pd.Series] = {}
    if forecast is not None and not forecast.empty:
        pools = sorted(
            set(pools)
            | {
                (str(a), str(b), str(c))
                for a, b, c in forecast[["layer", "cloud", "pool"]].drop_duplicates().itertuples(index=False)
            }
        )
        # The series that runs out first per pool (median, then earliest bound): one sort for all pools.
        ordered = forecast.assign(
            _p50=forecast["seconds_p50"].astype(float).fillna(math.inf),
            _p10=forecast["seconds_p10"].astype(float).fillna(math.inf),
        ).sort_values(["layer", "cloud", "pool", "_p50", "_p10", "resource", "basis"])
        for _, first in ordered.drop_duplicates(["layer", "cloud", "pool"]).iterrows():
            first_forecast[(str(first["layer"]), str(first["cloud"]), str(first["pool"]))] = first
    by_pool_totals = dict(iter(totals.groupby(["layer", "cloud", "pool"], observed=True))) if not totals.empty else {}
    partition = (
        headroom[headroom["pool_kind"].isin(PARTITION_POOL_KINDS)]
        if headroom is not None and not headroom.empty
        else None
    )
    by_pool_headroom = (
        dict(iter(partition.groupby(["layer", "cloud", "pool"], observed=True)))
        if partition is not None and not partition.empty
        else {}
    )
    return PoolInputs(
        pools, first_forecast, by_pool_totals, by_pool_headroom, _common_flavors(consumers), _values_week_ago(week, now)
    )


def pool_statuses(spec: ReportSpec, inputs: PoolInputs) -> pd.DataFrame:
    """The `report_pools` rows of one report (its thresholds) for every pool with data or a forecast."""
    first_forecast, by_pool_totals, by_pool_headroom = inputs.first_forecast, inputs.totals, inputs.headroom
    common_flavor, week_then = inputs.common_flavor, inputs.week_then
    records = []
    for key in inputs.pools:
        row: dict[str, Any] = {
            "report": spec.name,
            "layer": key[0],
            "cloud": key[1],
            "pool": key[2],
            "status": "unknown",
            "rule": "no_data",
            "resource": None,
            "basis": None,
            "days_p10": math.nan,
            "days_p50": math.nan,
            "days_p90": math.nan,
            "utilization": math.nan,
            "utilization_change": math.nan,
            "hosts": math.nan,
            "headroom_shape": None,
            "headroom_slots": math.nan,
            "n1": "unknown",
            "n1_domain": None,
            "n1_shortfall": math.nan,
            "n1_slots": math.nan,
            "red_days": spec.red_days,
            "amber_days": spec.amber_days,
        }
        pool_totals_frame = by_pool_totals.get(key)
        if pool_totals_frame is not None:
            row["hosts"] = float(pool_totals_frame["hosts"].max())
        top = first_forecast.get(key)
        if top is not None:
            fields = forecast_fields(top)
            row["resource"], row["basis"] = str(top["resource"]), str(top["basis"])
            days_p50, days_low = fields["days_p50"], fields["days_p10"]
            row["days_p50"], row["days_p10"], row["days_p90"] = days_p50, days_low, fields["days_p90"]
            if days_p50 <= spec.red_days:
                row["status"], row["rule"] = "red", ("full" if days_p50 < 0.5 else "runs_out")
            elif days_p50 <= spec.amber_days or days_low <= spec.amber_days:
                row["status"], row["rule"] = "amber", "may_run_out"
            else:
                row["status"], row["rule"] = "green", "no_runout"
            row["utilization"] = ratio(fields["current"], fields["limit"])
        elif pool_totals_frame is not None:
            _status_by_utilization(row, pool_totals_frame, spec)
        if pool_totals_frame is not None and row["resource"] is not None:
            match = pool_totals_frame[pool_totals_frame["resource"] == row["resource"]]
            if not match.empty and math.isnan(row["utilization"]):
                basis = row["basis"] or "allocated"
                row["utilization"] = ratio(number(match.iloc[0][basis]), number(match.iloc[0]["allocatable"]))
            then = week_then.get((*key, row["resource"]))
            if then is not None and not math.isnan(row["utilization"]):
                then_value = ratio(then.get(row["basis"] or "allocated", math.nan), then.get("allocatable", math.nan))
                row["utilization_change"] = row["utilization"] - then_value
        _apply_headroom(row, by_pool_headroom.get(key), common_flavor.get(key))
        if row["n1"] == "fails" and row["status"] == "green":
            row["status"], row["rule"] = "amber", "n1_fails"
        records.append(row)
    if not records:
        return REPORT_POOLS.empty()
    return REPORT_POOLS.build(records)


def _status_by_utilization(row: dict[str, Any], totals: pd.DataFrame, spec: ReportSpec) -> None:
    """Without a forecast, colour a pool by its fullest resource (allocated, else used)."""
    best: tuple[float, str, str] | None = None
    for record in totals.itertuples(index=False):
        for basis in ("allocated", "used"):
            share = ratio(number(getattr(record, basis)), number(record.allocatable))
            if not math.isnan(share) and (best is None or share > best[0]):
                best = (share, str(record.resource), basis)
            if not math.isnan(share):
                break
    if best is None:
        row["rule"] = "no_usage"
        return
    share, resource, basis = best
    row["utilization"], row["resource"], row["basis"] = share, resource, basis
    row["status"] = "red" if share >= spec.utilization_red else "amber" if share >= spec.utilization_amber else "green"
    row["rule"] = "utilization"


def _common_flavors(consumers: pd.DataFrame | None) -> dict[tuple[str, str, str], list[str]]:
    """Per pool, the flavors/shapes in use, most common first (the headroom shape the summary names)."""
    if consumers is None or consumers.empty or "flavor" not in consumers.columns:
        return {}
    holding = consumers[consumers["holds_capacity"].astype(bool) & consumers["flavor"].notna()]
    counts = holding.groupby(["layer", "cloud", "pool", "flavor"], observed=True).size()
    out: dict[tuple[str, str, str], list[str]] = {}
    for (layer, cloud, pool, flavor), _ in counts.sort_values(ascending=False).items():
        out.setdefault((str(layer), str(cloud), str(pool)), []).append(str(flavor))
    return out


def _apply_headroom(row: dict[str, Any], rows: pd.DataFrame | None, flavors: list[str] | None) -> None:
    """The pool's headroom shape and slots, and N+1: fails when any failure leaves consumers homeless."""
    if rows is None or rows.empty:
        return
    by_shape = {str(r["shape"]): r for _, r in rows.iterrows()}
    choice = next((f for f in (flavors or []) if f in by_shape), None)
    if choice is None:
        choice = str(rows.sort_values(["slots", "shape"]).iloc[0]["shape"])
    row["headroom_shape"] = choice
    row["headroom_slots"] = number(by_shape[choice]["slots"])
    failure = rows[rows["slots_after_failure"].notna() | rows["shortfall"].notna()]
    if failure.empty:
        return
    shortfall = failure["shortfall"].astype(float).fillna(0.0)
    worst = failure.loc[shortfall.idxmax()]
    domain = str(worst["failure_domain"]) if pd.notna(worst["failure_domain"]) else None
    if float(shortfall.max()) > 0:
        row["n1"], row["n1_domain"], row["n1_shortfall"] = "fails", domain, float(shortfall.max())
    else:
        chosen_domain = by_shape[choice]["failure_domain"]
        row["n1"] = "ok"
        row["n1_domain"] = str(chosen_domain) if pd.notna(chosen_domain) else domain
        row["n1_shortfall"] = 0.0
        row["n1_slots"] = number(by_shape[choice]["slots_after_failure"])


def _values_week_ago(week: pd.DataFrame, now: datetime) -> dict[tuple[str, str, str, str], dict[str, float]]:
    """Per pool and resource, the history row closest to a week ago (within 12 hours)."""
    if week is None or week.empty:
        return {}
    target = to_utc(now - WEEK)
    window = week[(week["timestamp"] - target).abs() <= pd.Timedelta(hours=12)]
    if window.empty:
        return {}
    window = window.assign(_distance=(window["timestamp"] - target).abs()).sort_values("_distance")
    first = window.drop_duplicates(["layer", "cloud", "pool", "resource"])
    return {
        (str(r["layer"]), str(r["cloud"]), str(r["pool"]), str(r["resource"])): {
            "allocatable": number(r.get("allocatable")),
            "allocated": number(r.get("allocated")),
            "used": number(r.get("used")),
        }
        for _, r in first.iterrows()
    }


# -- headroom ahead -------------------------------------------------------------------------------------


def _p50_at_horizons(points: pd.DataFrame | None, now: datetime) -> dict[tuple[Any, ...], float]:
    """(layer, cloud, pool, resource, basis, days) -> the median forecast on the day `days` ahead."""
    if points is None or points.empty:
        return {}
    days_of = {(to_utc(now) + pd.Timedelta(days=d)).floor("D"): d for d in HORIZONS_DAYS}
    selected = points[points["timestamp"].isin(list(days_of))]
    out: dict[tuple[Any, ...], float] = {}
    for record in selected.itertuples(index=False):
        key = (str(record.layer), str(record.cloud), str(record.pool), str(record.resource), str(record.basis))
        out[(*key, days_of[record.timestamp])] = float(record.p50)
    return out


def _free_after(days: int, fields: dict[str, Any] | None, p50: float | None) -> float:
    """Free amount of a series `days` ahead: limit minus the median forecast then (NaN when unknown)."""
    if fields is None:
        return math.nan
    limit, current = fields["limit"], fields["current"]
    if math.isnan(limit) or math.isnan(current):
        return math.nan
    if p50 is not None and not math.isnan(p50):
        return float(limit - p50)
    growth = fields["growth_per_day"]
    if math.isnan(growth):
        return math.nan
    return float(limit - (current + growth * days))


def headroom_ahead(
    headroom: pd.DataFrame | None, forecast: pd.DataFrame | None, points: pd.DataFrame | None, now: datetime
) -> pd.DataFrame:
    """The `report_headroom` frame: slots now and at +30/+60/+90 days.

    Future slots scale today's slots by how much of the limiting resource's free amount the median
    forecast leaves then (allocated basis: slots are about what is handed out). This assumes new
    demand spreads over hosts as today's free space does; the engine's what-if gives exact answers.
    """
    if headroom is None or headroom.empty:
        return REPORT_HEADROOM.empty()
    index = forecast_index(forecast)
    ahead = _p50_at_horizons(points, now)
    records = []
    for _, record in headroom.iterrows():
        slots = number(record["slots"])
        resource = str(record["limiting_resource"]) if pd.notna(record["limiting_resource"]) else None
        future = dict.fromkeys(HORIZONS_DAYS, math.nan)
        if resource is not None:
            key = (str(record["layer"]), str(record["cloud"]), str(record["pool"]), resource, "allocated")
            fields = index.get(key)
            if fields is not None:
                free_now = fields["limit"] - fields["current"]
                for days in HORIZONS_DAYS:
                    free = _free_after(days, fields, ahead.get((*key, days)))
                    if math.isnan(free) or math.isnan(slots):
                        continue
                    future[days] = float(math.floor(slots * max(0.0, free) / free_now)) if free_now > 0 else 0.0
        records.append(
            {
                "layer": str(record["layer"]),
                "cloud": str(record["cloud"]),
                "pool": str(record["pool"]),
                "pool_kind": str(record["pool_kind"]),
                "shape": str(record["shape"]),
                "shape_kind": str(record["shape_kind"]),
                "slots": slots,
                **{f"slots_{d}d": future[d] for d in HORIZONS_DAYS},
                "slots_after_failure": number(record["slots_after_failure"]),
                "failure_domain": str(record["failure_domain"]) if pd.notna(record["failure_domain"]) else None,
                "shortfall": number(record["shortfall"]),
                "limiting_resource": resource,
                "hosts": number(record["hosts"]),
            }
        )
    return REPORT_HEADROOM.build(records)

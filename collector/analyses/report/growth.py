"""Top growers: how many VMs/pods each project or namespace gained over the window, like for like.

Sources poll at their own seconds, so the history's consumer counts are a set of samples per
source. Growth compares each source with itself: its sample nearest to the window's start against its
sample nearest to the window's end. A source with only one sample in the window has no growth to
measure and is left out, so consumers that existed before capacityd first saw them (a new source,
the first days after a backfill) never count as growth. Within a source that sampled both ends, a
project absent from one sample had no consumers then.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pandas as pd

from collector.analyses.report.frames import REPORT_GROWTH
from collector.analyses.report.status import number, to_utc

FINISHED_STATES = frozenset({"succeeded", "failed", "deleted", "soft_deleted", "shelved_offloaded"})
KEYS = ["layer", "cloud", "project", "flavor"]


def growth(
    counts: pd.DataFrame | None, consumers: pd.DataFrame | None, now: datetime, window: timedelta = timedelta(days=7)
) -> pd.DataFrame:
    """The `report_growth` frame from `History.consumer_counts` rows (the window plus an hour's slack)."""
    if counts is None or counts.empty:
        return REPORT_GROWTH.empty()
    counts = counts.assign(timestamp=pd.to_datetime(counts["timestamp"], utc=True))
    start_target, end_target = to_utc(now - window), to_utc(now)
    ends = _sample_ends(counts, start_target, end_target)
    if ends.empty:
        return REPORT_GROWTH.empty()
    active = counts[~counts["state"].astype(str).isin(FINISHED_STATES) & counts["project"].notna()]
    active = active.assign(flavor=active["flavor"].astype(object).where(active["flavor"].notna(), ""))
    active = active.merge(ends, on="source")
    at_start = _sum_at(active, "start")
    at_end = _sum_at(active, "end")
    if at_start.empty and at_end.empty:
        return REPORT_GROWTH.empty()
    both = at_start.to_frame("start_count").join(at_end.to_frame("end_count"), how="outer").fillna(0.0)
    sizes = _flavor_sizes(consumers)
    since = ends.set_index("source")
    records: dict[tuple[str, str, str], dict[str, object]] = {}
    for (source, layer, cloud, project, flavor), row in both.iterrows():
        change = float(row["end_count"] - row["start_count"])
        entry = records.setdefault(
            (str(layer), str(cloud), str(project)),
            {
                "layer": str(layer),
                "cloud": str(cloud),
                "project": str(project),
                "count_start": 0.0,
                "count_now": 0.0,
                "delta_count": 0.0,
                "delta_cpu": 0.0,
                "delta_memory": 0.0,
                "start": since.at[source, "start"],
                "end": since.at[source, "end"],
            },
        )
        entry["count_start"] = float(entry["count_start"]) + float(row["start_count"])  # type: ignore[arg-type]
        entry["count_now"] = float(entry["count_now"]) + float(row["end_count"])  # type: ignore[arg-type]
        entry["delta_count"] = float(entry["delta_count"]) + change  # type: ignore[arg-type]
        size = sizes.get((str(layer), str(cloud), str(flavor)))
        if size is not None:
            entry["delta_cpu"] = float(entry["delta_cpu"]) + change * size[0]  # type: ignore[arg-type]
            entry["delta_memory"] = float(entry["delta_memory"]) + change * size[1]  # type: ignore[arg-type]
        entry["start"] = min(entry["start"], since.at[source, "start"])
        entry["end"] = max(entry["end"], since.at[source, "end"])
    if not records:
        return REPORT_GROWTH.empty()
    return REPORT_GROWTH.build(list(records.values()))


def _sample_ends(counts: pd.DataFrame, start_target: pd.Timestamp, end_target: pd.Timestamp) -> pd.DataFrame:
    """Per source: its sample nearest the window's start and nearest its end; sources with one sample dropped.

    Every recorded timestamp of a source is a sample, whatever its rows' states (a poll that found only
    finished pods still says the others were not there).
    """
    samples = counts[["source", "timestamp"]].drop_duplicates()
    samples = samples[samples["timestamp"] <= end_target]
    if samples.empty:
        return pd.DataFrame(columns=["source", "start", "end"])
    to_start = (samples["timestamp"] - start_target).abs()
    to_end = (samples["timestamp"] - end_target).abs()
    start = samples.assign(_d=to_start).sort_values(["_d", "timestamp"]).drop_duplicates("source")
    end = samples.assign(_d=to_end).sort_values(["_d", "timestamp"]).drop_duplicates("source")
    ends = (
        start[["source", "timestamp"]]
        .rename(columns={"timestamp": "start"})
        .merge(end[["source", "timestamp"]].rename(columns={"timestamp": "end"}), on="source")
    )
    return ends[ends["start"] < ends["end"]].reset_index(drop=True)


def _sum_at(active: pd.DataFrame, end: str) -> pd.Series:
    rows = active[active["timestamp"] == active[end]]
    return rows.groupby(["source", *KEYS], observed=True)["count"].sum().astype(float)


def _flavor_sizes(consumers: pd.DataFrame | None) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Mean cores and bytes per flavor/shape today, to turn a change in counts into resources."""
    if consumers is None or consumers.empty:
        return {}
    frame = consumers.assign(flavor=consumers["flavor"].astype(object).where(consumers["flavor"].notna(), ""))
    means = frame.groupby(["layer", "cloud", "flavor"], observed=True)[["cpu", "memory"]].mean()
    return {
        (str(a), str(b), str(c)): (_zero_nan(r["cpu"]), _zero_nan(r["memory"])) for (a, b, c), r in means.iterrows()
    }


def _zero_nan(value: object) -> float:
    result = number(value)
    return 0.0 if math.isnan(result) else result

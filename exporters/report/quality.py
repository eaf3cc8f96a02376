"""What the report says about its own inputs: history reads that never fail it, the history note, and
data quality (sources down, stale or missing; pools with gaps in the last week's history).

These are notes about the data, not capacity figures: the figures come from the report analysis.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pandas as pd

from exporters.report.model import SourceNote

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)


class HistoryReader(Protocol):
    """What the report reads from `collector.store.history.History` (charts and notes)."""

    def pool_series(
        self,
        layer: Any = None,
        cloud: Any = None,
        pool: Any = None,
        resource: Any = None,
        start: Any = None,
        end: Any = None,
        step: Any = None,
    ) -> pd.DataFrame: ...


def _to_utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class SafeHistory:
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
            self.notes.append(
                f"History could not be read ({type(error).__name__}: {error}); sections that need it are left out."
            )
            self._failed = True
            return pd.DataFrame()
        return frame if frame is not None else pd.DataFrame()

    def pool_series(self, **kwargs: Any) -> pd.DataFrame:
        frame = self._call("pool_series", **kwargs)
        if not frame.empty:
            frame = frame.copy()
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame


def history_note(week: pd.DataFrame, now: datetime, zone: ZoneInfo, configured: bool) -> str:
    from exporters.report.units import format_age, format_time

    if not configured:
        return (
            "No history yet: capacityd has no state directory history to read. This report shows the "
            "current state only; growth, forecasts and week-on-week changes appear once history builds up."
        )
    if week.empty:
        return (
            "No history yet: nothing has been recorded in the last week. This report shows the current "
            "state only; growth, forecasts and week-on-week changes appear once history builds up."
        )
    first = week["timestamp"].min().to_pydatetime()
    if now - first < WEEK - timedelta(hours=12):
        return (
            f"History covers only {format_age(now - first)} (since {format_time(first, zone)}); "
            "week-on-week figures are over that shorter span."
        )
    return ""


def data_quality(
    sources: pd.DataFrame | None, week: pd.DataFrame, totals: pd.DataFrame, now: datetime
) -> list[SourceNote]:
    """Sources that are down, stale or missing, and pools with gaps in the last week's history."""
    notes: list[SourceNote] = []
    stamp = _to_utc(now)
    if sources is not None and not sources.empty:
        for _, row in sources.sort_values("source").iterrows():
            last_success = row["last_success"] if pd.notna(row["last_success"]) else None
            error = str(row["last_error"]) if pd.notna(row["last_error"]) else ""
            if last_success is None:
                notes.append(
                    SourceNote(
                        subject=str(row["source"]),
                        kind=str(row["kind"]),
                        state="missing",
                        since=None,
                        duration=None,
                        detail="has never been polled successfully" + (f": {error}" if error else ""),
                    )
                )
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
            notes.append(
                SourceNote(
                    subject=str(row["source"]),
                    kind=str(row["kind"]),
                    state=state,
                    since=last_success.to_pydatetime(),
                    duration=age,
                    detail=detail + (f": {error}" if error else ""),
                )
            )
    if week is not None and not week.empty:
        start = max(week["timestamp"].min(), stamp - pd.Timedelta(WEEK))
        expected = max(1.0, (stamp - start) / pd.Timedelta(hours=1))
        # A pool series is on a regular grid; an hour without data from any source is NaN, not absent.
        recent = week[(week["timestamp"] >= start) & week["allocatable"].notna()]
        hours = recent.assign(_hour=recent["timestamp"].dt.floor("h")).groupby(
            ["layer", "cloud", "pool"], observed=True
        )
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
            notes.append(
                SourceNote(
                    subject=f"{key[1]}/{key[2]}",
                    kind=key[0],
                    state="gap",
                    since=last.to_pydatetime() if last is not None else None,
                    duration=gap,
                    detail=(
                        f"no data for about {missing_hours:.0f} of the last {expected:.0f} hours"
                        if count
                        else "no data recorded in the last week"
                    ),
                )
            )
    return notes

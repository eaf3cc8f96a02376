"""How last month's forecasts fared, as the report shows it: rows of the report analysis, selected.

The report analysis (collector/analyses/report/accuracy.py) picks the series each report checks and
backtests the forecast made from the history of 30 days ago. The bands a report *sent* a month ago
live in this exporter's send record, so they are handed to the analysis's `stored_accuracy` to be
compared with today's actuals; a series checked both ways shows what readers were told.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from collector.analyses.report import ReportSpec, stored_accuracy
from exporters.report.model import Accuracy, AccuracyRow
from exporters.report.select import rows_of_report

SERIES = ["layer", "cloud", "pool", "resource", "basis"]
METHOD_WORDS = {
    "report": "the forecasts sent a month ago",
    "backtest": "forecasts re-made from the history of 30 days ago",
}


def _series_of(frames: Mapping[str, pd.DataFrame], spec: ReportSpec) -> pd.DataFrame:
    series = rows_of_report(frames.get("report_accuracy_series"), spec)
    return series.sort_values("rank") if series is not None else pd.DataFrame(columns=[*SERIES, "rank"])


def select_accuracy(
    frames: Mapping[str, pd.DataFrame],
    spec: ReportSpec,
    backtest: bool,
    previous: pd.DataFrame | None,
    previous_made_at: datetime | None,
    now: datetime,
) -> Accuracy:
    """The accuracy rows of one report, most urgent series first: stored bands first, else the backtest."""
    series = _series_of(frames, spec)
    if series.empty:
        return Accuracy(note="No forecast series in scope yet, so there is nothing to check.")
    rows: dict[tuple[str, ...], pd.Series] = {}
    stored = stored_accuracy(previous, previous_made_at, series, now)
    for _, row in stored.iterrows():
        rows[tuple(str(row[c]) for c in SERIES)] = row
    computed = frames.get("report_accuracy")
    if backtest and computed is not None and not computed.empty:
        for _, row in computed[computed["method"] == "backtest"].iterrows():
            rows.setdefault(tuple(str(row[c]) for c in SERIES), row)
    ordered = [rows[key] for key in (tuple(str(r[c]) for c in SERIES) for _, r in series.iterrows()) if key in rows]
    if not ordered:
        return Accuracy(
            note="Needs a month of history (or a report sent a month ago) to check forecasts against "
            "what happened; until then, treat the dates as indicative."
        )
    how = " and ".join(sorted({METHOD_WORDS[str(r["method"])] for r in ordered}))
    return Accuracy(rows=[_row(r) for r in ordered], note=f"Compares {how} with today's values.")


def _row(row: pd.Series) -> AccuracyRow:
    return AccuracyRow(
        layer=str(row["layer"]),
        cloud=str(row["cloud"]),
        pool=str(row["pool"]),
        resource=str(row["resource"]),
        basis=str(row["basis"]),
        made_at=pd.Timestamp(row["made_at"]).to_pydatetime(),
        method=str(row["method"]),
        target_time=pd.Timestamp(row["target_time"]).to_pydatetime(),
        predicted_p10=float(row["predicted_p10"]),
        predicted_p50=float(row["predicted_p50"]),
        predicted_p90=float(row["predicted_p90"]),
        actual=float(row["actual"]),
        limit=float(row["limit"]) if pd.notna(row["limit"]) else math.nan,
        error=float(row["error"]) if pd.notna(row["error"]) else math.nan,
        inside=bool(row["inside"]),
    )

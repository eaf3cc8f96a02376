"""Which rows of the report analysis's per-report frames belong to one report."""

from __future__ import annotations

import pandas as pd

from collector.analyses.report import ReportSpec


def rows_of_report(frame: pd.DataFrame | None, spec: ReportSpec) -> pd.DataFrame | None:
    """A per-report frame's rows for this report; rows of the defaults ("") when the report's figures equal
    theirs (a report the running config does not list: the demo's, `capacityd report` without one).
    None when the analysis computed nothing for it."""
    if frame is None or "report" not in frame.columns:
        return None
    mine = frame[frame["report"] == spec.name]
    if not mine.empty or spec.name == "":
        return mine
    if spec.same_figures(ReportSpec()):
        return frame[frame["report"] == ""]
    return None

"""What the report analysis needs to know of each configured report: its thresholds and scope.

The analysis reads them from the app's config (`reports:` entries, duck-typed: analyses never import
the exporter that owns those settings) and computes one set of rows per report, plus a default set
(report name "") that an unconfigured report (`capacityd report` without `reports:`, the demo) uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_RED_DAYS = 30.0
DEFAULT_AMBER_DAYS = 90.0
DEFAULT_UTILIZATION_RED = 0.95
DEFAULT_UTILIZATION_AMBER = 0.85
DEFAULT_TOP_N = 10


@dataclass(frozen=True)
class Scope:
    """Which part of the estate a report covers; an empty tuple means all."""

    layers: tuple[str, ...] = ()
    clouds: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportSpec:
    """One report's thresholds and scope, as the analysis uses them."""

    name: str = ""
    red_days: float = DEFAULT_RED_DAYS
    amber_days: float = DEFAULT_AMBER_DAYS
    utilization_red: float = DEFAULT_UTILIZATION_RED
    utilization_amber: float = DEFAULT_UTILIZATION_AMBER
    top_n: int = DEFAULT_TOP_N
    backtest: bool = True
    scope: Scope = field(default_factory=Scope)

    def same_thresholds(self, other: ReportSpec) -> bool:
        """True when `other` colours pools the same (its thresholds equal)."""
        return (self.red_days, self.amber_days, self.utilization_red, self.utilization_amber) == (
            other.red_days,
            other.amber_days,
            other.utilization_red,
            other.utilization_amber,
        )

    def same_figures(self, other: ReportSpec) -> bool:
        """True when `other` would get the same rows (everything but the name equal)."""
        return (
            self.red_days,
            self.amber_days,
            self.utilization_red,
            self.utilization_amber,
            self.top_n,
            self.scope,
        ) == (
            other.red_days,
            other.amber_days,
            other.utilization_red,
            other.utilization_amber,
            other.top_n,
            other.scope,
        )


def spec_of(report: Any, *, name: str | None = None) -> ReportSpec:
    """The spec of one `reports:` entry (exporters.report.settings.ReportConfig, read by attribute)."""
    scope = getattr(report, "scope", None)
    return ReportSpec(
        name=str(getattr(report, "name", "")) if name is None else name,
        red_days=float(getattr(report, "red_days", DEFAULT_RED_DAYS)),
        amber_days=float(getattr(report, "amber_days", DEFAULT_AMBER_DAYS)),
        utilization_red=float(getattr(report, "utilization_red", DEFAULT_UTILIZATION_RED)),
        utilization_amber=float(getattr(report, "utilization_amber", DEFAULT_UTILIZATION_AMBER)),
        top_n=int(getattr(report, "top_n", DEFAULT_TOP_N)),
        backtest=bool(getattr(report, "accuracy_backtest", True)),
        scope=Scope(*(tuple(getattr(scope, part, ()) or ()) for part in ("layers", "clouds", "clusters", "pools"))),
    )


def specs_of(reports: Sequence[Any]) -> list[ReportSpec]:
    """One spec per configured report, and the default spec "" (whole estate, default thresholds)."""
    return [ReportSpec(), *(spec_of(report) for report in reports)]


def scope_filter(frame: pd.DataFrame | None, scope: Scope) -> pd.DataFrame:
    """Rows of a frame (with layer/cloud/pool columns) inside a report's scope."""
    if frame is None:
        return pd.DataFrame()
    if frame.empty or "layer" not in frame.columns:
        return frame
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

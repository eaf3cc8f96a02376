"""The report's charts: PNGs drawn on matplotlib's Agg canvas directly (no pyplot, no display, no
global state, so report jobs in scheduler threads never interfere).

* an overview: days until each urgent pool's first resource runs out, with the 80 % interval, in
  the pool's status colour;
* one growth chart per urgent pool: six weeks of history of the limiting series, its limit, and
  the forecast's median with the p10–p90 band.

Images are small (about 40 KB each) so a dozen fit comfortably in a mail; they are attached inline
and referenced by Content-ID (or inlined as data: URIs when the report is written to a file).
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from collector.contract.schema import resource_unit
from exporters.report.model import Chart, PoolStatus, ReportContent

COLORS = {"red": "#c62828", "amber": "#ef8f00", "green": "#2e7d32", "unknown": "#9e9e9e"}
INK = "#263238"
MUTED = "#78909c"
GRID = "#eceff1"
HISTORY_COLOR = "#1565c0"
FORECAST_COLOR = "#6a1b9a"
DPI = 100
OVERVIEW_CAP_DAYS = 120.0
FORECAST_DAYS = 92


def render_charts(content: ReportContent, limit: int) -> list[Chart]:
    """The overview plus up to `limit` growth charts, most urgent pools first."""
    if limit <= 0:
        return []
    charts: list[Chart] = []
    overview = _overview(content, max_rows=min(12, max(limit * 2, 6)))
    if overview is not None:
        charts.append(overview)
    for status in [p for p in content.pools if p.resource and p.basis][:limit]:
        chart = _growth(content, status)
        if chart is not None:
            charts.append(chart)
    return charts


def _cid(*parts: str) -> str:
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]
    return f"chart-{digest}@capacityd"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _style(axes: Any) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color("#b0bec5")
    axes.tick_params(colors=INK, labelsize=8)
    axes.grid(True, color=GRID, linewidth=0.8)
    axes.set_axisbelow(True)


def _label(status: PoolStatus) -> str:
    return f"{status.cloud} / {status.pool}"


def _overview(content: ReportContent, max_rows: int) -> Chart | None:
    pools = [p for p in content.pools if not math.isnan(p.days_p50) or not math.isnan(p.days_low)][:max_rows]
    if not pools:
        return None
    height = 0.9 + 0.32 * len(pools)
    figure = _figure(7.2, height)
    axes = figure.add_axes((0.30, 0.8 / (height * 2.2) + 0.05, 0.66, 1 - (0.8 / (height * 2.2) + 0.05) - 0.3 / height))
    _style(axes)
    axes.grid(True, axis="x", color=GRID)
    axes.grid(False, axis="y")
    labels = []
    for row, status in enumerate(reversed(pools)):
        labels.append(_label(status))
        days = min(status.days_p50, OVERVIEW_CAP_DAYS) if not math.isnan(status.days_p50) else OVERVIEW_CAP_DAYS
        axes.barh(row, days, height=0.6, color=COLORS[status.status], alpha=0.85)
        low = status.days_low if not math.isnan(status.days_low) else days
        high = status.days_high if not math.isnan(status.days_high) else OVERVIEW_CAP_DAYS
        low, high = min(low, OVERVIEW_CAP_DAYS), min(high, OVERVIEW_CAP_DAYS)
        axes.plot([low, high], [row, row], color=INK, linewidth=1.2)
        axes.plot([low, low], [row - 0.15, row + 0.15], color=INK, linewidth=1.2)
        if high < OVERVIEW_CAP_DAYS:
            axes.plot([high, high], [row - 0.15, row + 0.15], color=INK, linewidth=1.2)
        text = "beyond" if math.isinf(status.days_p50) else f"{status.days_p50:.0f} d"
        axes.text(min(days, OVERVIEW_CAP_DAYS) + 1.5, row + 0.22, text, fontsize=7.5, color=INK, va="center")
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlim(0, OVERVIEW_CAP_DAYS + 12)
    axes.set_xticks([0, 30, 60, 90, 120], ["0", "30 d", "60 d", "90 d", "120+ d"])
    axes.axvline(30, color=COLORS["red"], linewidth=0.8, linestyle=":")
    axes.axvline(90, color=COLORS["amber"], linewidth=0.8, linestyle=":")
    figure.suptitle(
        "Days until the first resource runs out (median, 80 % interval)",
        fontsize=9.5,
        color=INK,
        x=0.02,
        ha="left",
        y=1 - 0.08 / height,
    )
    return Chart(
        cid=_cid(content.name, "overview"),
        title="Days until the first resource runs out",
        alt="Bar chart: days until each pool's first resource runs out",
        png=_png(figure),
        kind="overview",
    )


def _unit_formatter(resource: str) -> FuncFormatter:
    unit = resource_unit(resource)

    def fmt(value: float, _position: int) -> str:
        if unit == "bytes":
            for scale, suffix in ((2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB")):
                if abs(value) >= scale:
                    return f"{value / scale:,.3g} {suffix}"
            return f"{value:,.0f} B"
        return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.1f}"

    return FuncFormatter(fmt)


def _growth(content: ReportContent, status: PoolStatus) -> Chart | None:
    resource, basis = str(status.resource), str(status.basis)
    key = (status.layer, status.cloud, status.pool, resource, basis)
    history = content.series.get(key)
    points = content.chart_points.get(key)
    if history is not None and (history.empty or basis not in history.columns):
        history = None
    if points is not None and points.empty:
        points = None
    if history is None and points is None:
        return None
    figure = _figure(7.2, 2.7)
    axes = figure.add_axes((0.11, 0.17, 0.86, 0.66))
    _style(axes)
    now = pd.Timestamp(content.generated_at)
    limit_value = math.nan
    if history is not None:
        frame = history.sort_values("timestamp")
        times = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
        axes.plot(times, frame[basis].astype(float), color=HISTORY_COLOR, linewidth=1.2, label=f"{basis}")
        if "allocatable" in frame.columns and frame["allocatable"].notna().any():
            axes.step(
                times,
                frame["allocatable"].astype(float),
                where="post",
                color=INK,
                linewidth=1.0,
                linestyle="--",
                label="allocatable",
            )
            limit_value = float(frame["allocatable"].dropna().iloc[-1])
    if points is not None:
        # The first three months: what the headroom table's +30/+60/+90 days columns are about.
        points = points[
            pd.to_datetime(points["timestamp"], utc=True)
            <= pd.Timestamp(content.generated_at) + pd.Timedelta(days=FORECAST_DAYS)
        ]
        times = pd.to_datetime(points["timestamp"], utc=True).dt.tz_localize(None)
        axes.fill_between(
            times,
            points["p10"].astype(float),
            points["p90"].astype(float),
            color=FORECAST_COLOR,
            alpha=0.18,
            linewidth=0,
            label="80 % interval",
        )
        axes.plot(times, points["p50"].astype(float), color=FORECAST_COLOR, linewidth=1.4, label="forecast (median)")
        if math.isnan(limit_value):
            row = next(
                (
                    r
                    for r in content.pool_rows
                    if (r.layer, r.cloud, r.pool, r.resource) == (status.layer, status.cloud, status.pool, resource)
                ),
                None,
            )
            limit_value = row.allocatable if row is not None else math.nan
        if not math.isnan(limit_value):
            axes.hlines(limit_value, times.min(), times.max(), color=INK, linewidth=1.0, linestyle="--")
    axes.axvline(now.tz_convert("UTC").tz_localize(None), color=MUTED, linewidth=0.8)
    axes.text(now.tz_convert("UTC").tz_localize(None), axes.get_ylim()[1], " now", fontsize=7, color=MUTED, va="top")
    axes.yaxis.set_major_formatter(_unit_formatter(resource))
    # matplotlib.dates leaves these constructors unannotated.
    axes.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=9))  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))  # type: ignore[no-untyped-call]
    bottom = axes.get_ylim()[0]
    axes.set_ylim(bottom=min(0.0, bottom))
    axes.legend(loc="upper left", fontsize=7, frameon=False, ncol=4)
    unit = {"cores": " (cores)", "bytes": "", "count": ""}[resource_unit(resource)]
    title = f"{status.cloud} / {status.pool} — {resource} {basis}{unit}"
    figure.suptitle(title, fontsize=9.5, color=INK, x=0.02, ha="left", y=0.97)
    return Chart(
        cid=_cid(content.name, *key),
        title=title,
        alt=f"Growth of {resource} {basis} in {status.cloud}/{status.pool} with forecast band",
        png=_png(figure),
    )

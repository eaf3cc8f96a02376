"""The weekly capacity report by email (docs/report.md).

    content.py   the report analysis's frames (collector/analyses/report/) -> ReportContent: selects, words
    model.py     ReportContent and its rows (plain data)
    select.py    which rows of a per-report frame are this report's
    accuracy.py  how last month's forecasts fared (the analysis's rows + the bands stored with sends)
    quality.py   notes on the data: history reads that never fail, sources down, gaps
    charts.py    matplotlib PNGs (Agg canvas)
    render.py    jinja2 HTML/text, CSV attachments, the MIME message under a size bound
    delivery.py  SMTP (STARTTLS / implicit TLS, auth, retries)
    store.py     the record of sends (SQLite): once per period
    service.py   build/send/schedule (APScheduler, persistent job store)
    metrics.py   capacityd_report_* families for /metrics

This module stays import-light (the daemon and /metrics import it); the heavy parts load on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from collector.estate import Snapshot
    from exporters.report.service import ReportsConfig, ReportService, SendGuard
    from exporters.report.settings import ReportConfig


def schedule_reports(
    scheduler: Any,
    config: ReportsConfig,
    snapshot_provider: Callable[[], Snapshot],
    history: Any,
    guard: SendGuard | None = None,
) -> ReportService | None:
    """(Re)schedule every configured report on the daemon's APScheduler; call at start and on reload.

    `guard`: a send record shared with the processes that may take over (a planner's Lease); None: local only.
    Returns the service whose methods are the jobs (None when no report is configured)."""
    from exporters.report.service import LOCAL_GUARD
    from exporters.report.service import schedule_reports as schedule

    return schedule(scheduler, config, snapshot_provider, history, guard or LOCAL_GUARD)


def write_report(snapshot: Snapshot, history: Any, out_dir: Path, *, report: ReportConfig | None = None) -> Path:
    """Write report.html (images inlined) and its CSVs into out_dir; returns the HTML path."""
    from exporters.report.service import write_report as write

    return write(snapshot, history, out_dir, report=report)


__all__ = ["schedule_reports", "write_report"]

"""Generating, sending and scheduling reports: the glue between content, rendering, SMTP and the record.

Scheduling (APScheduler 3, the daemon's BackgroundScheduler):

* each report is a cron job in the report's time zone, stored in a persistent job store
  (SQLAlchemyJobStore, `<state_dir>/report-schedule.sqlite`). At start the stored job is kept
  as it was — including a `next_run_time` that passed while the daemon was down — so the
  scheduler runs a missed send once (`coalesce`) if it is within `misfire_grace_time`, instead of
  recomputing the next time from "now" and silently skipping the week;
* each run works out its *period* (the scheduled time it belongs to) from the cron expression and
  asks the send record first: a period is sent at most once, whatever runs it (a misfire catch-up,
  a retry, `capacityd report --send`, a second daemon on the same state dir);
* a failed send is logged, counted (`capacityd_report_failures_total`) and retried by a one-off
  job `retry_interval` later, for up to `retry_for` after the scheduled time.

Job functions are module-level and referenced by name with plain-string arguments, as a persistent
job store requires; what they need at run time (config, snapshot provider, history) is registered
by `schedule_reports`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from collector.estate import Snapshot
from exporters.report import metrics
from exporters.report.content import BuildInputs, build_content, summary_record
from exporters.report.model import Chart, ReportContent
from exporters.report.settings import ReportConfig, SmtpConfig, report_cron_trigger
from exporters.report.store import SendStore, period_key


class ReportsConfig(Protocol):
    """What scheduling reports needs of the app's config (exporters never import the app)."""

    state_dir: Path
    smtp: SmtpConfig | None
    reports: list[ReportConfig]

log = logging.getLogger(__name__)

JOBSTORE = "capacityd-reports"
JOB_PREFIX = "report:"
RETRY_PREFIX = "report-retry:"
ACCURACY_LOOKBACK = timedelta(days=30)


# -- building -------------------------------------------------------------------------------------------


def build_report(report: ReportConfig, snapshot: Snapshot, history: Any, *, store: SendStore | None = None,
                 period: datetime | None = None) -> tuple[ReportContent, list[Chart]]:
    """The report's content and charts for `snapshot` (its frames hold the report analysis's figures; history
    is read for the charts and data-quality notes; the send record for last week's and last month's)."""
    from exporters.report.charts import render_charts

    now = snapshot.taken_at
    previous_summary = None
    made_at, previous_forecasts = None, None
    if store is not None:
        previous = store.last_sent(report.name, before=period or now)
        previous_summary = previous.summary if previous else None
        made_at, previous_forecasts = store.sent_forecasts_near(report.name, now - ACCURACY_LOOKBACK)
    inputs = BuildInputs(
        frames=snapshot.frames, now=now, history=history, previous_summary=previous_summary,
        previous_forecasts=previous_forecasts, previous_forecasts_made_at=made_at, period=period,
    )
    content = build_content(report, inputs)
    charts = render_charts(content, report.charts)
    return content, charts


def write_report(snapshot: Snapshot, history: Any, out_dir: Path, *, report: ReportConfig | None = None) -> Path:
    """Write `report.html` (images inlined) and its CSVs into out_dir; used by `capacityd demo`."""
    from exporters.report.render import write_html

    report = report or ReportConfig(name="demo", recipients=["capacity-planning@example.org"],
                                    title="Weekly capacity report — demo estate")
    content, charts = build_report(report, snapshot, history)
    return write_html(content, charts, Path(out_dir) / "report.html")


# -- sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendOutcome:
    status: str  # sent | skipped | failed
    detail: str
    size_bytes: int = 0
    message_id: str | None = None


def send_report(report: ReportConfig, smtp: SmtpConfig, snapshot: Snapshot, history: Any, store: SendStore,
                period: datetime, *, force: bool = False) -> SendOutcome:
    """Build and send one period's report unless that period was already sent; never raises on failure."""
    from exporters.report.delivery import DeliveryError, send
    from exporters.report.render import compose_message

    key = period_key(period)
    if not force and store.is_sent(report.name, period):
        log.info("report %s for %s was already sent; not sending it again", report.name, key)
        return SendOutcome("skipped", f"already sent for {key}")
    if not store.claim(report.name, period) and not force:
        log.info("report %s for %s is being sent by another run; skipping", report.name, key)
        return SendOutcome("skipped", f"another run is sending {key}")
    try:
        content, charts = build_report(report, snapshot, history, store=store, period=period)
        composed = compose_message(content, report, charts, sender=smtp.from_address, period_key=key)
        delivered = send(smtp, composed.message, report.recipients)
    except DeliveryError as error:
        return _failed(report, store, period, str(error))
    except Exception as error:  # a bug or bad data must not kill the scheduler thread
        log.exception("report %s for %s could not be built", report.name, key)
        return _failed(report, store, period, f"building the report failed: {type(error).__name__}: {error}")
    store.mark_sent(report.name, period, message_id=delivered.message_id, size_bytes=composed.size,
                    summary=summary_record(content), forecasts=content.forecast_points)
    metrics.record_success(report.name, datetime.now(UTC))
    log.info("report %s for %s sent to %d recipient(s): %d bytes, %d chart(s), attempt %d", report.name, key,
             len(report.recipients) - len(delivered.refused), composed.size, composed.charts, delivered.attempts)
    return SendOutcome("sent", f"sent {composed.size} bytes", composed.size, delivered.message_id)


def _failed(report: ReportConfig, store: SendStore, period: datetime, error: str) -> SendOutcome:
    log.error("report %s for %s was not sent: %s", report.name, period_key(period), error)
    store.mark_failed(report.name, period, error)
    metrics.record_failure(report.name)
    return SendOutcome("failed", error)


# -- periods --------------------------------------------------------------------------------------------


def _trigger(report: ReportConfig) -> Any:
    return report_cron_trigger(report.schedule, report.timezone)


def latest_period(report: ReportConfig, now: datetime) -> datetime | None:
    """The latest scheduled time at or before `now` (the period a run at `now` belongs to)."""
    trigger = _trigger(report)
    now = now.astimezone(ZoneInfo(report.timezone))
    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32),
                   timedelta(days=370)):
        fire = trigger.get_next_fire_time(None, now - window)
        latest = None
        while fire is not None and fire <= now:
            latest = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if latest is not None:
            return latest.astimezone(UTC)
    return None


# -- scheduling -----------------------------------------------------------------------------------------


@dataclass
class _Runtime:
    scheduler: Any
    config: ReportsConfig
    snapshot_provider: Callable[[], Snapshot]
    history: Any
    store: SendStore


_RUNTIME: _Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def _jobstore_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / 'report-schedule.sqlite'}"


def schedule_reports(scheduler: Any, config: ReportsConfig, snapshot_provider: Callable[[], Snapshot],
                     history: Any) -> None:
    """(Re)schedule every configured report on the daemon's scheduler; call at start and on reload.

    With no report configured, nothing is opened (a reload must not touch the state dir for reports
    that do not exist: with a full disk that would stop the daemon); a schedule stored earlier is
    dropped only when its job store already exists.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    global _RUNTIME
    state_dir = Path(config.state_dir)
    names = {report.name for report in config.reports}
    if not config.reports:
        metrics.forget_except(names)
        with _RUNTIME_LOCK:
            _RUNTIME = None
        if (state_dir / "report-schedule.sqlite").exists():
            _drop_stored(scheduler, _jobstore_url(state_dir), names)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    store = SendStore.open(state_dir)
    with _RUNTIME_LOCK:
        _RUNTIME = _Runtime(scheduler, config, snapshot_provider, history, store)
    metrics.forget_except(names)
    for report in config.reports:
        last = store.last_sent(report.name)
        metrics.seed(report.name, last.sent_at if last else None)

    url = _jobstore_url(state_dir)
    with contextlib.suppress(ValueError):  # added by an earlier call (reload): the same store
        scheduler.add_jobstore(SQLAlchemyJobStore(url=url), alias=JOBSTORE)
    stored = _drop_stored(scheduler, url, names)

    for report in config.reports:
        trigger = _trigger(report)
        job_id = JOB_PREFIX + report.name
        grace = int(report.misfire_grace_time.total_seconds())
        options: dict[str, Any] = {}
        previous = stored.get(job_id)
        if previous is not None and str(previous.trigger) == str(trigger) \
                and str(previous.trigger.timezone) == str(trigger.timezone) and previous.next_run_time is not None:
            # Unchanged schedule: keep the stored next run time, even if it passed while we were down.
            options["next_run_time"] = previous.next_run_time
        scheduler.add_job(
            f"{__name__}:run_scheduled", trigger=trigger, args=[report.name], id=job_id,
            name=f"report {report.name}", jobstore=JOBSTORE, replace_existing=True,
            misfire_grace_time=grace, coalesce=True, max_instances=1, **options,
        )
        log.info("report %s scheduled (%s %s); next run %s", report.name, report.schedule, report.timezone,
                 options.get("next_run_time", "per schedule"))


def _drop_stored(scheduler: Any, url: str, names: set[str]) -> dict[str, Any]:
    """The stored jobs, after removing those of reports no longer configured.

    Read what is stored directly (the scheduler may not be started yet, and a stopped scheduler only
    shows jobs added since); a second store object on the same database is safe.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    probe = SQLAlchemyJobStore(url=url)
    probe.start(scheduler, JOBSTORE)
    try:
        stored = {job.id: job for job in probe.get_all_jobs()}
        for job_id in stored:
            name = job_id.split(":", 1)[1]
            if job_id.startswith((JOB_PREFIX, RETRY_PREFIX)) and name not in names:
                probe.remove_job(job_id)
                log.info("report %s is no longer configured: its schedule was removed", name)
    finally:
        probe.shutdown()
    return stored


def _runtime() -> _Runtime | None:
    with _RUNTIME_LOCK:
        return _RUNTIME


def run_scheduled(name: str) -> None:
    """The cron job: send this period's report (once)."""
    runtime = _runtime()
    if runtime is None:
        log.error("report %s: the report service was not set up; skipping this run", name)
        return
    report = next((r for r in runtime.config.reports if r.name == name), None)
    if report is None:
        log.warning("report %s is no longer configured; skipping", name)
        return
    period = latest_period(report, datetime.now(UTC))
    if period is None:
        log.error("report %s: no scheduled time found at or before now; skipping", name)
        return
    _run(runtime, report, period)


def run_retry(name: str, period: str) -> None:
    """The one-off retry of a failed send for a given period."""
    runtime = _runtime()
    if runtime is None:
        return
    report = next((r for r in runtime.config.reports if r.name == name), None)
    if report is None:
        return
    _run(runtime, report, datetime.fromisoformat(period))


def _run(runtime: _Runtime, report: ReportConfig, period: datetime) -> SendOutcome:
    smtp = runtime.config.smtp
    if smtp is None:  # the config validator prevents this; be explicit anyway
        log.error("report %s: no smtp section configured", report.name)
        return SendOutcome("failed", "no smtp section")
    outcome = send_report(report, smtp, runtime.snapshot_provider(), runtime.history, runtime.store, period)
    if outcome.status == "failed":
        _schedule_retry(runtime, report, period)
    return outcome


def _schedule_retry(runtime: _Runtime, report: ReportConfig, period: datetime) -> None:
    from apscheduler.triggers.date import DateTrigger

    when = datetime.now(UTC) + report.retry_interval
    if when > period + report.retry_for:
        log.error("report %s for %s: giving up after retrying for %s", report.name, period_key(period),
                  report.retry_for)
        return
    runtime.scheduler.add_job(
        f"{__name__}:run_retry", trigger=DateTrigger(when), args=[report.name, period_key(period)],
        id=RETRY_PREFIX + report.name, name=f"report {report.name} retry", jobstore=JOBSTORE,
        replace_existing=True, misfire_grace_time=int(report.retry_for.total_seconds()), coalesce=True,
    )
    log.info("report %s for %s: retrying at %s", report.name, period_key(period), when.isoformat())

"""Generating, sending and scheduling reports: the glue between content, rendering, SMTP and the record.

Scheduling (APScheduler 3, the daemon's BackgroundScheduler):

* each report is a cron job in the report's time zone; its next run time is kept in the send record
  (`<state_dir>/reports.sqlite`, table `schedules`). At start the stored time is kept as it was —
  including one that passed while the daemon was down — so the scheduler runs a missed send once
  (`coalesce`) if it is within `misfire_grace_time`, instead of recomputing the next time from "now"
  and silently skipping the week;
* each run works out its *period* (the scheduled time it belongs to) from the cron expression and
  asks the send record first: a period is sent at most once, whatever runs it (a misfire catch-up,
  a retry, `capacityd report --send`, a second daemon on the same state dir);
* across processes that take over from one another (planners failing over through the planner Lease), a
  `SendGuard` shared by them is asked too: it refuses a period another process claimed or sent, and a new
  leader catches up the latest period (within `misfire_grace_time`) that the shared record does not hold;
* a failed send is logged, counted (`capacityd_report_failures_total`) and retried by a one-off
  job `retry_interval` later, for up to `retry_for` after the scheduled time; a pending retry is kept
  in the same table, so a restart does not lose it.

The jobs are methods of the `ReportService` that `schedule_reports` makes: what they need at run
time (config, snapshot provider, history, send record, scheduler) comes with them as arguments, never
from module state; the jobs live in the scheduler's memory job store `capacityd-reports`.
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger(__name__)

JOBSTORE = "capacityd-reports"
JOB_PREFIX = "report:"
RETRY_PREFIX = "report-retry:"
ACCURACY_LOOKBACK = timedelta(days=30)


# -- building -------------------------------------------------------------------------------------------


def build_report(
    report: ReportConfig,
    snapshot: Snapshot,
    history: Any,
    *,
    store: SendStore | None = None,
    period: datetime | None = None,
) -> tuple[ReportContent, list[Chart]]:
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
        frames=snapshot.frames,
        now=now,
        history=history,
        previous_summary=previous_summary,
        previous_forecasts=previous_forecasts,
        previous_forecasts_made_at=made_at,
        period=period,
    )
    content = build_content(report, inputs)
    charts = render_charts(content, report.charts)
    return content, charts


def write_report(snapshot: Snapshot, history: Any, out_dir: Path, *, report: ReportConfig | None = None) -> Path:
    """Write `report.html` (images inlined) and its CSVs into out_dir; used by `capacityd demo`."""
    from exporters.report.render import write_html

    report = report or ReportConfig(
        name="demo", recipients=["capacity-planning@example.org"], title="Weekly capacity report — demo estate"
    )
    content, charts = build_report(report, snapshot, history)
    return write_html(content, charts, Path(out_dir) / "report.html")


# -- sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendOutcome:
    status: str  # sent | skipped | failed
    detail: str
    size_bytes: int = 0
    message_id: str | None = None


class GuardUnavailable(Exception):
    """The shared send record could not be read or written (e.g. the API server is unreachable): retry later."""


class SendGuard(Protocol):
    """A send record shared by processes that take over from one another, asked beside the local SendStore.

    The local store keeps one process (and its restarts) to one send per period; a planner's standby has its own
    state dir, so only a record both can see (the planner Lease, collector/app/cluster/report_guard.py) keeps a
    fail-over from sending the week again. `shared` False means the local store is the whole truth.
    """

    shared: bool

    def claim(self, report: str, key: str) -> bool:
        """Take the right to send (report, period key); False if another process claimed or sent it, or this one
        may not send now (no longer the leader). Raises GuardUnavailable when the record cannot be reached."""
        ...

    def sent(self, report: str, key: str) -> None:
        """Record that (report, key) went out; never raises (logged)."""
        ...

    def release(self, report: str, key: str) -> None:
        """Give a failed send's claim back, so a retry (here or on a successor) may send; never raises."""
        ...


class LocalSendGuard:
    """One process (role all): the local send record is the whole truth; every claim is granted."""

    shared = False

    def claim(self, report: str, key: str) -> bool:
        return True

    def sent(self, report: str, key: str) -> None:
        return None

    def release(self, report: str, key: str) -> None:
        return None


LOCAL_GUARD = LocalSendGuard()


def send_report(
    report: ReportConfig,
    smtp: SmtpConfig,
    snapshot: Snapshot,
    history: Any,
    store: SendStore,
    period: datetime,
    *,
    force: bool = False,
    guard: SendGuard = LOCAL_GUARD,
) -> SendOutcome:
    """Build and send one period's report unless that period was already sent; never raises on failure."""
    from exporters.report.delivery import DeliveryError, send
    from exporters.report.render import compose_message

    key = period_key(period)
    if not force and store.is_sent(report.name, period):
        log.info("report %s for %s was already sent; not sending it again", report.name, key)
        return SendOutcome("skipped", f"already sent for {key}")
    if not force:
        try:
            granted = guard.claim(report.name, key)
        except GuardUnavailable as error:  # counted and retried like a failed delivery
            return _failed(report, store, period, f"the shared send record is unavailable: {error}")
        if not granted:
            log.info("report %s for %s was claimed or sent by another process; not sending it", report.name, key)
            return SendOutcome("skipped", f"claimed or sent elsewhere for {key}")
    if not store.claim(report.name, period) and not force:
        log.info("report %s for %s is being sent by another run; skipping", report.name, key)
        return SendOutcome("skipped", f"another run is sending {key}")
    try:
        content, charts = build_report(report, snapshot, history, store=store, period=period)
        composed = compose_message(content, report, charts, sender=smtp.from_address, period_key=key)
        delivered = send(smtp, composed.message, report.recipients)
    except DeliveryError as error:
        guard.release(report.name, key)
        return _failed(report, store, period, str(error))
    except Exception as error:  # a bug or bad data must not kill the scheduler thread
        log.exception("report %s for %s could not be built", report.name, key)
        guard.release(report.name, key)
        return _failed(report, store, period, f"building the report failed: {type(error).__name__}: {error}")
    guard.sent(report.name, key)
    store.mark_sent(
        report.name,
        period,
        message_id=delivered.message_id,
        size_bytes=composed.size,
        summary=summary_record(content),
        forecasts=content.forecast_points,
    )
    metrics.record_success(report.name, datetime.now(UTC))
    log.info(
        "report %s for %s sent to %d recipient(s): %d bytes, %d chart(s), attempt %d",
        report.name,
        key,
        len(report.recipients) - len(delivered.refused),
        composed.size,
        composed.charts,
        delivered.attempts,
    )
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
    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32), timedelta(days=370)):
        fire = trigger.get_next_fire_time(None, now - window)
        latest: datetime | None = None
        while fire is not None and fire <= now:
            latest = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if latest is not None:
            return latest.astimezone(UTC)
    return None


# -- scheduling -----------------------------------------------------------------------------------------


class ReportsConfig(Protocol):
    """What scheduling reports needs of the app's config (exporters never import the app)."""

    state_dir: Path
    smtp: SmtpConfig | None
    reports: list[ReportConfig]


def _trigger_text(trigger: Any) -> str:
    return f"{trigger} {trigger.timezone}"


class ReportService:
    """The report jobs of one scheduler, with everything they need (no module-global state)."""

    def __init__(
        self,
        scheduler: Any,
        config: ReportsConfig,
        snapshot_provider: Callable[[], Snapshot],
        history: Any,
        store: SendStore,
        guard: SendGuard = LOCAL_GUARD,
    ):
        self.scheduler = scheduler
        self.config = config
        self.snapshot_provider = snapshot_provider
        self.history = history
        self.store = store
        self.guard = guard

    def _report(self, name: str) -> ReportConfig | None:
        return next((r for r in self.config.reports if r.name == name), None)

    def run_scheduled(self, name: str) -> SendOutcome | None:
        """The cron job: send this period's report (once)."""
        report = self._report(name)
        if report is None:
            log.warning("report %s is no longer configured; skipping", name)
            return None
        now = datetime.now(UTC)
        trigger = _trigger(report)
        # What a persistent job store would record: the next run after this one, kept across restarts.
        self.store.save_schedule(
            JOB_PREFIX + name,
            name,
            _trigger_text(trigger),
            trigger.get_next_fire_time(None, now + timedelta(seconds=1)),
        )
        period = latest_period(report, now)
        if period is None:
            log.error("report %s: no scheduled time found at or before now; skipping", name)
            return None
        return self._run(report, period)

    def run_retry(self, name: str, period: str) -> SendOutcome | None:
        """The one-off retry of a failed send for a given period."""
        self.store.drop_schedule(RETRY_PREFIX + name)
        report = self._report(name)
        if report is None:
            return None
        return self._run(report, datetime.fromisoformat(period))

    def _run(self, report: ReportConfig, period: datetime) -> SendOutcome:
        smtp = self.config.smtp
        if smtp is None:  # the config validator prevents this; be explicit anyway
            log.error("report %s: no smtp section configured", report.name)
            return SendOutcome("failed", "no smtp section")
        outcome = send_report(
            report, smtp, self.snapshot_provider(), self.history, self.store, period, guard=self.guard
        )
        if outcome.status == "failed":
            self._schedule_retry(report, period)
        return outcome

    def _schedule_retry(self, report: ReportConfig, period: datetime, when: datetime | None = None) -> None:
        from apscheduler.triggers.date import DateTrigger

        when = when or datetime.now(UTC) + report.retry_interval
        if when > period + report.retry_for:
            log.error(
                "report %s for %s: giving up after retrying for %s", report.name, period_key(period), report.retry_for
            )
            self.store.drop_schedule(RETRY_PREFIX + report.name)
            return
        self.store.save_schedule(RETRY_PREFIX + report.name, report.name, "retry", when, period_key(period))
        self.scheduler.add_job(
            self.run_retry,
            trigger=DateTrigger(when),
            args=[report.name, period_key(period)],
            id=RETRY_PREFIX + report.name,
            name=f"report {report.name} retry",
            jobstore=JOBSTORE,
            replace_existing=True,
            misfire_grace_time=int(report.retry_for.total_seconds()),
            coalesce=True,
        )
        log.info("report %s for %s: retrying at %s", report.name, period_key(period), when.isoformat())

    def _catch_up(self, report: ReportConfig, now: datetime, next_run: datetime | None) -> datetime | None:
        """A process that just took over (a new planner leader) runs the latest period at once if it is within
        `misfire_grace_time` and not sent here: its predecessor may have died before sending it. The shared guard
        decides at run time whether anyone did (then the run is skipped)."""
        latest = latest_period(report, now)
        if latest is None or now - latest > report.misfire_grace_time or self.store.is_sent(report.name, latest):
            return next_run
        if next_run is not None and next_run <= latest:
            return next_run
        log.info("report %s: catching up the period %s on taking over", report.name, period_key(latest))
        return latest

    def schedule(self) -> None:
        """Add (or replace) every configured report's jobs, keeping stored run times of unchanged schedules."""
        names = {report.name for report in self.config.reports}
        stored = self.store.schedules()
        for job_id, (name, *_rest) in stored.items():
            if name not in names:
                self.store.drop_schedule(job_id)
                _remove_job(self.scheduler, job_id)
                log.info("report %s is no longer configured: its schedule was removed", name)
        now = datetime.now(UTC)
        for report in self.config.reports:
            trigger = _trigger(report)
            job_id = JOB_PREFIX + report.name
            previous = stored.get(job_id)
            next_run: datetime | None
            if previous is not None and previous[1] == _trigger_text(trigger) and previous[2] is not None:
                # Unchanged schedule: keep the stored next run time, even if it passed while we were down.
                next_run, kept = previous[2], True
            else:
                next_run, kept = trigger.get_next_fire_time(None, now), False
            if self.guard.shared:
                next_run = self._catch_up(report, now, next_run)
            self.store.save_schedule(job_id, report.name, _trigger_text(trigger), next_run)
            self.scheduler.add_job(
                self.run_scheduled,
                trigger=trigger,
                args=[report.name],
                id=job_id,
                name=f"report {report.name}",
                jobstore=JOBSTORE,
                replace_existing=True,
                next_run_time=next_run,
                misfire_grace_time=int(report.misfire_grace_time.total_seconds()),
                coalesce=True,
                max_instances=1,
            )
            log.info(
                "report %s scheduled (%s %s); next run %s%s",
                report.name,
                report.schedule,
                report.timezone,
                next_run.isoformat() if next_run else "never",
                " (kept)" if kept else "",
            )
            retry = stored.get(RETRY_PREFIX + report.name)
            if retry is not None and retry[2] is not None and retry[3] is not None:
                self._schedule_retry(report, datetime.fromisoformat(retry[3]), max(retry[2], now))
            else:
                _remove_job(self.scheduler, RETRY_PREFIX + report.name)


def _remove_job(scheduler: Any, job_id: str) -> None:
    from apscheduler.jobstores.base import JobLookupError

    with contextlib.suppress(JobLookupError, KeyError):
        scheduler.remove_job(job_id, jobstore=JOBSTORE)


def schedule_reports(
    scheduler: Any,
    config: ReportsConfig,
    snapshot_provider: Callable[[], Snapshot],
    history: Any,
    guard: SendGuard = LOCAL_GUARD,
) -> ReportService | None:
    """(Re)schedule every configured report on the daemon's scheduler; call at start and on reload.

    Returns the service whose methods are the jobs (None without reports). With no report configured,
    nothing is opened (a reload must not touch the state dir for reports that do not exist: with a full
    disk that would stop the daemon); jobs of reports scheduled earlier are removed from the scheduler.
    """
    from apscheduler.jobstores.base import ConflictingIdError
    from apscheduler.jobstores.memory import MemoryJobStore

    store = None
    if config.reports:  # opened first: on a full disk this raises before anything is changed (a refused reload)
        state_dir = Path(config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        store = SendStore.open(state_dir)
    names = {report.name for report in config.reports}
    metrics.forget_except(names)
    with contextlib.suppress(ValueError, ConflictingIdError):  # added by an earlier call (reload)
        scheduler.add_jobstore(MemoryJobStore(), alias=JOBSTORE)
    if store is None:
        for job in list(scheduler.get_jobs(jobstore=JOBSTORE)):
            _remove_job(scheduler, job.id)
        return None
    for report in config.reports:
        last = store.last_sent(report.name)
        metrics.seed(report.name, last.sent_at if last else None)
    service = ReportService(scheduler, config, snapshot_provider, history, store, guard)
    service.schedule()
    return service

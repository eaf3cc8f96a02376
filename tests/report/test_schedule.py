"""Scheduling: APScheduler 3 with run times kept in the send record; a restart across the send time sends once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from exporters.report import schedule_reports
from exporters.report.service import JOBSTORE, latest_period
from exporters.report.store import SendStore
from tests.report.conftest import make_config


def _wait_for_next_minute(margin: float) -> datetime:
    """The next minute boundary at least `margin` seconds away (a cron fires on whole minutes)."""
    now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (boundary - now).total_seconds() < margin:
        boundary += timedelta(minutes=1)
    return boundary


def _sleep_until(when: datetime) -> None:
    time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


def _scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone=UTC)


@pytest.mark.timeout(240)
def test_restart_across_the_send_time_sends_exactly_once(tmp_path, estate, smtp_server, certificate):
    fire = _wait_for_next_minute(margin=8)
    cron = f"{fire.minute} {fire.hour} * * *"  # daily, at the coming minute (UTC)
    config = make_config(
        tmp_path / "state", smtp_server, certificate, schedule=cron, timezone="UTC", misfire_grace_time="1h"
    )
    snapshot = estate.snapshot()

    # Daemon 1 schedules the report and stops before the send time.
    first = _scheduler()
    schedule_reports(first, config, lambda: snapshot, None)
    first.start()
    job = first.get_job("report:weekly", jobstore=JOBSTORE)
    assert job is not None and job.next_run_time == fire
    first.shutdown(wait=True)

    # The send time passes while no daemon runs.
    _sleep_until(fire + timedelta(seconds=3))
    assert smtp_server.handler.messages == []

    # Daemon 2 starts after the send time: the stored run time is kept, so the missed send happens once.
    second = _scheduler()
    schedule_reports(second, config, lambda: snapshot, None)
    second.start()
    try:
        assert smtp_server.handler.arrived.wait(90), "the missed send was skipped"
        time.sleep(3)
        assert len(smtp_server.handler.messages) == 1
        job = second.get_job("report:weekly", jobstore=JOBSTORE)
        assert job.next_run_time == fire + timedelta(days=1)
    finally:
        second.shutdown(wait=True)
    store = SendStore.open(config.state_dir)
    assert store.is_sent("weekly", fire)
    assert store.get("weekly", fire).attempts == 1

    # Daemon 3 (another restart, same period still the latest): nothing more goes out, on schedule or by hand.
    third = _scheduler()
    service = schedule_reports(third, config, lambda: snapshot, None)
    third.start()
    try:
        service.run_scheduled("weekly")  # what a duplicate trigger would do
        time.sleep(2)
    finally:
        third.shutdown(wait=True)
    assert len(smtp_server.handler.messages) == 1
    message = smtp_server.handler.messages[0].message
    assert message["X-Capacityd-Period"] == fire.isoformat()


def test_reload_keeps_unchanged_schedules_and_drops_removed_reports(tmp_path, estate, smtp_server, certificate):
    config = make_config(tmp_path / "state", smtp_server, certificate, schedule="30 6 * * 1", timezone="Europe/Berlin")
    scheduler = _scheduler()
    schedule_reports(scheduler, config, lambda: estate.snapshot(), None)
    scheduler.start()
    try:
        job = scheduler.get_job("report:weekly", jobstore=JOBSTORE)
        assert job.next_run_time.tzinfo is not None
        local = job.next_run_time.astimezone(job.trigger.timezone)
        assert (local.weekday(), local.hour, local.minute) == (0, 6, 30)
        # Reload with the same report: same job, same next run. Then with none: the job is gone.
        schedule_reports(scheduler, config, lambda: estate.snapshot(), None)
        assert scheduler.get_job("report:weekly", jobstore=JOBSTORE).next_run_time == job.next_run_time
        empty = config.model_copy(update={"reports": []})
        schedule_reports(scheduler, empty, lambda: estate.snapshot(), None)
    finally:
        scheduler.shutdown(wait=True)
    again = _scheduler()
    schedule_reports(again, empty, lambda: estate.snapshot(), None)
    again.start()
    try:
        assert again.get_job("report:weekly", jobstore=JOBSTORE) is None
    finally:
        again.shutdown(wait=True)


def test_a_failed_send_is_retried_by_a_persisted_job(tmp_path, estate, smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", "wrong")
    config = make_config(tmp_path / "state", smtp_server, certificate, retry_interval="2s", retry_for="8d")
    scheduler = _scheduler()
    snapshot = estate.snapshot()
    service = schedule_reports(scheduler, config, lambda: snapshot, None)
    scheduler.start()
    try:
        service.run_scheduled("weekly")
        assert smtp_server.handler.messages == []
        retry = scheduler.get_job("report-retry:weekly", jobstore=JOBSTORE)
        assert retry is not None
        monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", "s3cret-Pa55-do-not-log")
        assert smtp_server.handler.arrived.wait(60), "the retry did not send"
    finally:
        scheduler.shutdown(wait=True)
    period = latest_period(config.reports[0], datetime.now(UTC))
    record = SendStore.open(config.state_dir).get("weekly", period)
    assert record.status == "sent" and record.attempts == 2


def test_latest_period_in_the_reports_time_zone():
    from exporters.report.settings import ReportConfig

    report = ReportConfig(name="w", recipients=["a@b.c"], schedule="0 7 * * 1", timezone="Europe/Berlin")
    # Monday 2026-11-23 07:00 CET = 06:00 UTC.
    assert latest_period(report, datetime(2026, 11, 23, 6, 0, tzinfo=UTC)) == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert latest_period(report, datetime(2026, 11, 23, 5, 59, tzinfo=UTC)) == datetime(2026, 11, 16, 6, 0, tzinfo=UTC)
    # Summer time: 07:00 CEST = 05:00 UTC.
    assert latest_period(report, datetime(2026, 7, 1, tzinfo=UTC)) == datetime(2026, 6, 29, 5, 0, tzinfo=UTC)


def test_a_pending_retry_survives_a_restart(tmp_path, estate, smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", "wrong")
    config = make_config(tmp_path / "state", smtp_server, certificate, retry_interval="3s", retry_for="8d")
    snapshot = estate.snapshot()
    first = _scheduler()
    service = schedule_reports(first, config, lambda: snapshot, None)
    service.run_scheduled("weekly")  # fails; the retry is scheduled, then the daemon stops before it runs
    assert first.get_job("report-retry:weekly", jobstore=JOBSTORE) is not None
    del first  # never started: the daemon stopped before the retry was due
    monkeypatch.setenv("CAPACITYD_TEST_SMTP_PASSWORD", "s3cret-Pa55-do-not-log")
    second = _scheduler()
    schedule_reports(second, config, lambda: snapshot, None)
    second.start()
    try:
        assert second.get_job("report-retry:weekly", jobstore=JOBSTORE) is not None
        assert smtp_server.handler.arrived.wait(60), "the retry was lost across the restart"
    finally:
        second.shutdown(wait=True)


def test_no_report_configured_opens_nothing(tmp_path, estate):
    """A reload without reports must not open the report store: here the state dir cannot even be created
    (a file is in its way, as a full disk would refuse it); the old code raised and stopped the daemon."""
    from collector.app.config import parse_config

    blocked = tmp_path / "state"
    blocked.write_text("not a directory")
    config = parse_config({"state_dir": str(blocked / "inner")})
    scheduler = _scheduler()
    assert schedule_reports(scheduler, config, lambda: estate.snapshot(), None) is None
    assert schedule_reports(scheduler, config, lambda: estate.snapshot(), None) is None  # a reload
    assert scheduler.get_jobs() == []
    free = tmp_path / "free"
    schedule_reports(scheduler, parse_config({"state_dir": str(free)}), lambda: estate.snapshot(), None)
    assert not free.exists()

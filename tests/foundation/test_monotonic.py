"""Intervals and staleness on the monotonic clock, analysis health: driven by injected clocks.

The real-process proof (libfaketime stepping the daemon's wall clock) is in test_daemon_faults.py; these
pin the rules it relies on, with time under the test's control.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from collector.analyses import registry
from collector.analyses.registry import AnalysisContext, AnalysisHealth, RegisteredAnalysis, run_analyses
from collector.app.scheduler import MonotonicScheduler
from collector.estate import Estate
from tests.foundation.test_scheduler import frames


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def eventually(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def ticker():
    clock = FakeClock()
    scheduler = MonotonicScheduler(job_threads=4, clock=clock)
    scheduler.start()
    yield scheduler, clock
    scheduler.shutdown()


def test_jobs_run_on_the_clock_they_are_given(ticker):
    scheduler, clock = ticker
    runs: list[float] = []
    scheduler.add_job("a", lambda: runs.append(clock.now), 10)
    assert eventually(lambda: len(runs) == 1)
    clock.advance(9.9)
    time.sleep(1.2)  # the dispatcher re-reads the clock at least every second
    assert len(runs) == 1
    clock.advance(0.1)
    assert eventually(lambda: len(runs) == 2)
    assert runs[1] - runs[0] == pytest.approx(10)


def test_a_jump_of_the_clock_fires_once_not_a_burst(ticker):
    """A process suspended (or a dispatcher starved) for an hour runs a missed job once, then keeps pace."""
    scheduler, clock = ticker
    runs: list[float] = []
    scheduler.add_job("a", lambda: runs.append(clock.now), 10)
    assert eventually(lambda: len(runs) == 1)
    clock.advance(3600)
    assert eventually(lambda: len(runs) == 2)
    time.sleep(1.2)
    assert len(runs) == 2, "missed runs must be coalesced into one"
    clock.advance(9)
    time.sleep(1.2)
    assert len(runs) == 2
    clock.advance(1)
    assert eventually(lambda: len(runs) == 3)


def test_a_run_still_going_is_skipped_never_overlapped(ticker):
    scheduler, clock = ticker
    release = threading.Event()
    active: list[int] = []
    peak: list[int] = [0]

    def slow() -> None:
        active.append(1)
        peak[0] = max(peak[0], len(active))
        release.wait(10)
        active.pop()

    scheduler.add_job("slow", slow, 1)
    assert eventually(lambda: len(active) == 1)
    for _ in range(3):
        clock.advance(1)
        time.sleep(0.3)
        scheduler._wake.set()
    assert eventually(lambda: scheduler.get_job("slow").skipped >= 1)
    assert peak[0] == 1
    release.set()
    assert eventually(lambda: scheduler.get_job("slow").runs >= 1 and not active)


def test_removed_and_replaced_jobs(ticker):
    scheduler, clock = ticker
    calls: list[str] = []
    scheduler.add_job("a", lambda: calls.append("old"), 10)
    assert eventually(lambda: calls == ["old"])
    scheduler.add_job("a", lambda: calls.append("new"), 10, first_delay=5)
    clock.advance(5)
    assert eventually(lambda: calls == ["old", "new"])
    scheduler.remove_job("a")
    clock.advance(100)
    time.sleep(1.2)
    assert calls == ["old", "new"]
    with pytest.raises(ValueError):
        scheduler.add_job("b", lambda: None, 0)


def test_staleness_is_judged_on_the_monotonic_clock():
    """Polls that stop (not only polls that fail) turn a source stale after two intervals."""
    clock = FakeClock()
    estate = Estate(clock=clock)
    estate.add_source("a", "libvirt", timedelta(seconds=10))
    now = datetime.now(UTC)
    estate.record_success("a", frames("a", now), now, 0.1)
    (status,) = estate.snapshot().statuses
    assert status.up and not status.stale
    clock.advance(19)
    assert not estate.snapshot().statuses[0].stale
    clock.advance(2)  # 21 s without a poll, none failed: stale
    (status,) = estate.snapshot().statuses
    assert status.up and status.stale
    assert estate.snapshot().frames["sources"]["stale"].tolist() == [True]
    # a slow source (timeout beyond its interval) gets its timeout as grace
    estate.add_source("a", "libvirt", timedelta(seconds=10), timedelta(seconds=15))
    assert not estate.snapshot().statuses[0].stale
    clock.advance(15)
    assert estate.snapshot().statuses[0].stale
    estate.record_success("a", frames("a", now), now, 0.1)
    assert not estate.snapshot().statuses[0].stale
    estate.record_failure("a", "timeout", "slow", now, 8.0)
    assert estate.snapshot().statuses[0].stale


def test_wall_labels_follow_a_stepped_wall_clock():
    """A poll labelled before an hour's backward step is exported at its real age, not in the future."""
    clock = FakeClock()
    estate = Estate(clock=clock)
    estate.add_source("a", "libvirt", timedelta(seconds=10))
    before_step = datetime.now(UTC) + timedelta(hours=1)  # the wall clock read an hour ahead then
    estate.record_success("a", frames("a", before_step), before_step, 0.1)
    clock.advance(4)
    (status,) = estate.snapshot().statuses
    age = datetime.now(UTC) - status.last_success
    assert timedelta(seconds=3) < age < timedelta(seconds=6)
    assert status.last_attempt == status.last_success
    # no step: the recorded label is kept exactly
    on_time = datetime.now(UTC)
    estate.record_success("a", frames("a", on_time), on_time, 0.1)
    assert estate.snapshot().statuses[0].last_success == on_time
    # a given `now` (a test's or a backfill's) is never adjusted
    assert estate.snapshot(now=on_time + timedelta(days=3)).statuses[0].last_success == on_time


def test_a_failing_analysis_serves_its_last_good_frames_marked_stale(monkeypatch):
    clock = FakeClock()
    health = AnalysisHealth(clock=clock)
    good = Estate().snapshot().frames["sources"]
    broken = {"flag": False}

    def flaky(context: AnalysisContext):
        if broken["flag"]:
            raise RuntimeError("boom")
        return {"sources": good}

    def steady(context: AnalysisContext):
        return {}

    monkeypatch.setattr(
        registry,
        "ANALYSES",
        {
            "flaky": RegisteredAnalysis("flaky", flaky, False),
            "steady": RegisteredAnalysis("steady", steady, False),
        },
    )
    first = datetime.now(UTC)
    context = AnalysisContext(now=first, frames={}, history=None, config=None)
    produced, errors = run_analyses(context, health=health)
    assert errors == {} and produced["sources"] is good
    broken["flag"] = True
    clock.advance(30)
    later = AnalysisContext(now=first + timedelta(seconds=30), frames={}, history=None, config=None)
    produced, errors = run_analyses(later, health=health)
    assert errors == {"flaky": "RuntimeError: boom"}
    assert produced["sources"] is good  # the last good result is still served
    frame = health.frame(first + timedelta(seconds=30)).set_index("analysis")
    assert not frame.at["flaky", "success"] and frame.at["flaky", "stale"]
    assert frame.at["flaky", "last_success"] == first and frame.at["flaky", "last_error"] == "RuntimeError: boom"
    assert frame.at["steady", "success"] and not frame.at["steady", "stale"]
    assert frame.at["steady", "last_success"] == first + timedelta(seconds=30)
    # without a health record (collect_once without a daemon) a failure contributes nothing
    assert "sources" not in run_analyses(later)[0]


def test_the_exposition_turns_stale_when_polls_stop_without_any_new_poll(monkeypatch):
    """No poll arrives to trigger a refresh: the idle refresh still shows the source going stale."""
    from collector.app import daemon
    from exporters.prometheus.exposition import ExpositionCache

    monkeypatch.setattr(registry, "ANALYSES", {})
    monkeypatch.setattr(daemon, "IDLE_REFRESH_INTERVAL", 0.5)
    clock = FakeClock()
    estate = Estate(clock=clock)
    estate.add_source("a", "libvirt", timedelta(seconds=10))
    now = datetime.now(UTC)
    estate.record_success("a", frames("a", now), now, 0.1)
    cache = ExpositionCache()
    pipeline = daemon.Pipeline(None, estate, None, cache)
    pipeline.refresh()
    assert b'capacityd_source_stale{kind="libvirt",source="a"} 0.0' in cache.current.body
    stop = threading.Event()
    refresher = threading.Thread(target=pipeline.run_refresher, args=(stop, 0.1), daemon=True)
    refresher.start()
    try:
        clock.advance(25)  # two and a half intervals without a poll
        assert eventually(
            lambda: b'capacityd_source_stale{kind="libvirt",source="a"} 1.0' in cache.current.body, timeout=5
        )
    finally:
        stop.set()
        refresher.join(5)

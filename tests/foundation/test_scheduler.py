"""Scheduling isolation: a hung or failing source never delays another, polls never overlap."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

from collector.app.scheduler import MonotonicScheduler, SourceRunner, schedule_source
from collector.contract.schema import CAPACITY
from collector.estate import Estate
from collector.sources.base import PollResult, Source, SourceError


def frames(name: str, now: datetime):
    return {
        "capacity": CAPACITY.build(
            [
                dict(
                    timestamp=now,
                    source=name,
                    layer="hypervisor",
                    cloud="c",
                    pool="p",
                    host=name,
                    scope="host",
                    resource="cpu",
                    capacity=8.0,
                    reserved=0.0,
                    allocation_ratio=1.0,
                    allocatable=8.0,
                    allocated=1.0,
                    used=0.5,
                )
            ]
        )
    }


class ScriptedSource(Source):
    """A Source whose poll behaviour a test chooses: answer, fail, or hang until released."""

    kind = "libvirt"

    def __init__(self, name: str, behaviour: str = "ok"):
        super().__init__(SimpleNamespace(name=name))
        self.behaviour = behaviour
        self.release = threading.Event()
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def poll(self, now: datetime) -> PollResult:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.behaviour == "hang":
                self.release.wait(30)
            if self.behaviour == "fail":
                raise SourceError("unreachable", f"{self.name}: connection refused")
            if self.behaviour == "broken":
                bad = frames(self.name, now)["capacity"].assign(allocatable=99.0)
                return PollResult(frames={"capacity": bad})
            return PollResult(frames=frames(self.name, now), api_calls=3)
        finally:
            with self._lock:
                self.active -= 1


def make(estate: Estate, source: ScriptedSource, timeout: float = 0.5) -> SourceRunner:
    estate.add_source(source.name, "libvirt", timedelta(seconds=1))
    return SourceRunner(source, estate, timeout)


def status(estate: Estate, name: str):
    return next(s for s in estate.snapshot().statuses if s.name == name)


def test_timeout_then_still_running_then_recovery():
    estate = Estate()
    source = ScriptedSource("hung", "hang")
    runner = make(estate, source, timeout=0.3)
    started = time.monotonic()
    assert runner.run() is False
    assert time.monotonic() - started < 1.0
    assert status(estate, "hung").errors_total == {"timeout": 1}
    assert runner.run() is False  # previous call still stuck: no second concurrent poll
    assert status(estate, "hung").errors_total["still_running"] == 1
    assert source.calls == 1
    source.behaviour = "ok"
    source.release.set()
    time.sleep(0.1)
    assert runner.run() is True
    assert status(estate, "hung").up and source.max_active == 1
    runner.close()


def test_failure_keeps_last_good_frames_marked_stale():
    estate = Estate()
    source = ScriptedSource("flaky")
    runner = make(estate, source)
    assert runner.run()
    first = estate.snapshot()
    assert not status(estate, "flaky").stale
    source.behaviour = "fail"
    assert not runner.run()
    after = estate.snapshot()
    flaky = status(estate, "flaky")
    assert flaky.stale and not flaky.up and flaky.errors_total == {"unreachable": 1}
    assert "connection refused" in flaky.last_error
    assert after.frames["capacity"].equals(first.frames["capacity"])  # nothing lost
    row = after.frames["sources"].set_index("source").loc["flaky"]
    assert bool(row["stale"]) and not bool(row["up"])
    runner.close()


def test_invalid_frame_is_refused_before_it_reaches_anyone():
    estate = Estate()
    runner = make(estate, ScriptedSource("buggy", "broken"))
    assert not runner.run()
    buggy = status(estate, "buggy")
    assert buggy.errors_total == {"invalid_frame": 1}
    assert "capacity.allocatable row 0" in buggy.last_error
    assert estate.snapshot().frames["capacity"].empty
    runner.close()


def test_a_hung_source_never_delays_another_in_the_scheduler():
    estate = Estate()
    hung = ScriptedSource("hung", "hang")
    fast = ScriptedSource("fast")
    scheduler = MonotonicScheduler(job_threads=4)
    for source, timeout in ((hung, 5.0), (fast, 0.5)):
        runner = make(estate, source, timeout)
        schedule_source(scheduler, runner, interval=0.2, jitter=0.0)
    scheduler.start()
    try:
        time.sleep(1.5)
    finally:
        scheduler.shutdown(wait=False)
        hung.release.set()
    assert fast.calls >= 4, f"fast source polled only {fast.calls} times beside a hung one"
    assert hung.calls == 1 and hung.max_active == 1 and fast.max_active == 1
    assert status(estate, "fast").up

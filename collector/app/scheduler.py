"""Polling on a schedule: every source at its own interval, isolated from every other.

`MonotonicScheduler` fires one job per source (interval + jitter, never two runs of a job at once,
missed runs coalesced). It counts on the monotonic clock: a wall clock stepped back or forward (NTP,
a VM resumed, an operator's `date -s`) neither stops polling nor fires a burst; wall time is only the
label a poll's samples carry. APScheduler (`make_scheduler`) is kept for what really is wall-time
(the weekly report's cron). The job does not call the source itself: it hands the poll to the
source's own single worker thread and waits at most the source's timeout. A hung libvirt or HTTP
call therefore costs only that source's thread; the job returns, records a `timeout`, and later
runs report `still_running` until the stuck call comes back — no other source is ever
delayed, and polls of one source never overlap.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from collector.estate import Estate
from collector.sources.base import PollResult, Source, SourceError

log = logging.getLogger(__name__)

OnSuccess = Callable[[str, PollResult, datetime], None]


class SourceRunner:
    """Runs one source's polls on a dedicated thread with a timeout; records the outcome in the Estate."""

    def __init__(
        self,
        source: Source,
        estate: Estate,
        timeout: float,
        on_success: OnSuccess | None = None,
        executor: Any = None,
        on_failure: Callable[[str], None] | None = None,
    ):
        """`on_failure(name)` runs after a failure is recorded: the daemon re-renders /metrics, so
        `capacityd_source_up` 0 shows at once rather than at the next idle refresh (30 s)."""
        self.source = source
        self.estate = estate
        self.timeout = timeout
        self.on_success = on_success
        self.on_failure = on_failure
        # cluster: a collector's runners share one bounded pool (collector/app/cluster/pool.py)
        self._worker = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{source.name}")
        self._inflight: Future[PollResult] | None = None

    def run(self) -> bool:
        """Poll once; True on success. Never raises: every failure is recorded with a reason."""
        name = self.source.name
        when = datetime.now(UTC)
        if self._inflight is not None and not self._inflight.done():
            self.estate.record_failure(
                name, "still_running", f"the previous poll of {name} has not returned yet", when, 0.0
            )
            log.warning("source %s: previous poll still running (hung remote call?); skipping this run", name)
            if self.on_failure is not None:
                self.on_failure(name)
            return False
        started = time.monotonic()
        self._inflight = self._worker.submit(self.source.checked_poll, when)
        try:
            result = self._inflight.result(timeout=self.timeout)
        except FutureTimeout:
            self._inflight.cancel()  # cluster: a poll still queued in a shared pool is dropped, not run late
            self._fail(when, started, "timeout", f"poll did not finish within {self.timeout:g}s")
            return False
        except SourceError as error:
            self._fail(when, started, error.reason, str(error))
            return False
        except Exception as error:
            log.exception("source %s: unexpected error", name)
            self._fail(when, started, "internal_error", f"{type(error).__name__}: {error}")
            return False
        duration = time.monotonic() - started
        self.estate.record_success(name, result.frames, when, duration, result.skipped, result.api_calls)
        for note in result.notes:
            log.warning("source %s: %s", name, note)
        if result.skipped:
            log.info("source %s: skipped %s", name, dict(result.skipped))
        log.debug("source %s: polled in %.3fs", name, duration)
        if self.on_success is not None:
            self.on_success(name, result, when)
        return True

    def _fail(self, when: datetime, started: float, reason: str, message: str) -> None:
        duration = time.monotonic() - started
        self.estate.record_failure(self.source.name, reason, message, when, duration)
        log.error("source %s: poll failed (%s): %s", self.source.name, reason, message)
        if self.on_failure is not None:
            self.on_failure(self.source.name)

    def close(self) -> None:
        """Stop the worker without waiting for a hung call, then let the source release its connection."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._inflight is None or self._inflight.done():
            try:
                self.source.close()
            except Exception:
                log.debug("source %s: error while closing", self.source.name, exc_info=True)


def make_scheduler(job_threads: int) -> BackgroundScheduler:
    """APScheduler for wall-time jobs (report crons); interval jobs go on a `MonotonicScheduler`."""
    return BackgroundScheduler(
        timezone=UTC,
        executors={"default": JobExecutor(max_workers=max(4, job_threads))},
        job_defaults={"coalesce": True, "max_instances": 1},
    )


Clock = Callable[[], float]


@dataclass
class _Job:
    id: str
    func: Callable[[], object]
    interval: float
    jitter: float
    base: float
    """Monotonic time of the current period's start; the run fires at base + a random jitter."""
    due: float
    generation: int = 0
    running: bool = False
    runs: int = 0
    skipped: int = 0
    tags: dict[str, object] = field(default_factory=dict)


class MonotonicScheduler:
    """Interval jobs on the monotonic clock, run on a thread pool; one run of a job at a time.

    A run that is due while the previous one is still going is skipped (coalesced), and a dispatcher
    that wakes late (suspend, overload) schedules the next run one interval after now, never a burst.
    `clock` and `wait` are injectable so tests can drive time; by default they are `time.monotonic` and
    an Event wait, which CPython times on CLOCK_MONOTONIC.
    """

    def __init__(self, job_threads: int = 4, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(4, job_threads), thread_name_prefix="job")
        self._thread: threading.Thread | None = None

    def add_job(
        self, job_id: str, func: Callable[[], object], interval: float, *, jitter: float = 0.0, first_delay: float = 0.0
    ) -> None:
        """(Re)place job `job_id`: first run after `first_delay` seconds, then every `interval` seconds."""
        if not interval > 0:
            raise ValueError(f"job {job_id}: interval must be positive")
        now = self.clock()
        with self._lock:
            old = self._jobs.get(job_id)
            generation = old.generation + 1 if old else 0
            job = _Job(
                job_id,
                func,
                interval,
                max(0.0, jitter),
                base=now + first_delay,
                due=now + first_delay,
                generation=generation,
            )
            self._jobs[job_id] = job
            self._push(job)
        self._wake.set()

    def remove_job(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def get_job(self, job_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _push(self, job: _Job) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (job.due, self._seq, job.id, job.generation))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._dispatch, name="monotonic-scheduler", daemon=True)
        self._thread.start()

    def shutdown(self, wait: bool = False) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            ready: list[_Job] = []
            with self._lock:
                now = self.clock()
                while self._heap and self._heap[0][0] <= now:
                    _, _, job_id, generation = heapq.heappop(self._heap)
                    job = self._jobs.get(job_id)
                    if job is None or job.generation != generation:
                        continue  # removed or replaced
                    self._advance(job, now)
                    if job.running:
                        job.skipped += 1
                    else:
                        job.running = True
                        ready.append(job)
                    self._push(job)
                delay = self._heap[0][0] - now if self._heap else 1.0
            for job in ready:
                try:
                    self._pool.submit(self._run, job)
                except RuntimeError:  # shut down meanwhile
                    return
            self._wake.wait(timeout=min(max(delay, 0.001), 1.0))

    def _advance(self, job: _Job, now: float) -> None:
        """Next period: one interval after this one, or after now if the dispatcher fell behind."""
        job.base += job.interval
        if job.base <= now:
            job.base = now + job.interval
        job.due = job.base + (random.uniform(0, job.jitter) if job.jitter else 0.0)

    def _run(self, job: _Job) -> None:
        try:
            job.func()
        except Exception:
            log.exception("job %s failed", job.id)
        finally:
            with self._lock:
                job.running = False
                job.runs += 1


def schedule_source(scheduler: MonotonicScheduler, runner: SourceRunner, interval: float, jitter: float) -> None:
    """Poll now, then every `interval` seconds with up to `jitter` seconds of random delay."""
    scheduler.add_job(f"source:{runner.source.name}", runner.run, interval, jitter=jitter)

"""Polling on a schedule: every source at its own interval, isolated from every other.

APScheduler 3 fires one job per source (interval + jitter, `max_instances=1`, misfires coalesced).
The job does not call the source itself: it hands the poll to the source's own single worker thread
and waits at most the source's timeout. A hung libvirt or HTTP call therefore costs only that
source's thread; the job returns, records a `timeout`, and later runs report `still_running` until
the stuck call comes back — no other source is ever delayed, and polls of one source never overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from collector.estate import Estate
from collector.sources.base import PollResult, Source, SourceError

log = logging.getLogger(__name__)

OnSuccess = Callable[[str, PollResult, datetime], None]


class SourceRunner:
    """Runs one source's polls on a dedicated thread with a timeout; records the outcome in the Estate."""

    def __init__(self, source: Source, estate: Estate, timeout: float, on_success: OnSuccess | None = None,
                 executor: Any = None):
        self.source = source
        self.estate = estate
        self.timeout = timeout
        self.on_success = on_success
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

    def close(self) -> None:
        """Stop the worker without waiting for a hung call, then let the source release its connection."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._inflight is None or self._inflight.done():
            try:
                self.source.close()
            except Exception:
                log.debug("source %s: error while closing", self.source.name, exc_info=True)


def make_scheduler(job_threads: int) -> BackgroundScheduler:
    """A background scheduler whose job pool is large enough that one job never waits for another."""
    return BackgroundScheduler(
        timezone=UTC,
        executors={"default": JobExecutor(max_workers=max(4, job_threads))},
        job_defaults={"coalesce": True, "max_instances": 1},
    )


def schedule_source(scheduler: BackgroundScheduler, runner: SourceRunner, interval: float, jitter: float) -> None:
    """Poll now, then every `interval` seconds with up to `jitter` seconds of random delay."""
    scheduler.add_job(
        runner.run,
        IntervalTrigger(seconds=interval, jitter=jitter or None, timezone=UTC),
        id=f"source:{runner.source.name}",
        name=f"poll {runner.source.name}",
        next_run_time=datetime.now(UTC),
        misfire_grace_time=max(1, int(interval)),
        replace_existing=True,
    )

"""The daemon: wires config -> sources -> scheduler -> estate -> history -> analyses -> /metrics.

`Daemon` is what `capacityd run` and `capacityd demo` start; `collect_once` is the single
collection behind `capacityd once`, `forecast` and `report`. Both go through the same Source,
Estate and analysis code, so what a one-off command prints is what the daemon would export.

Over 500 lines on purpose: this is the one place that wires sources, store, analyses, exporters, reports, discovery
and the cluster roles together; each part's logic lives in its own package.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.registry import (
    AnalysisContext,
    AnalysisHealth,
    AnalysisOutcome,
    compute_analyses,
    load_builtin_analyses,
    record_outcomes,
    run_analyses,
)
from collector.app import memory
from collector.app.cluster.roles import Coordinator, exposition_cache  # cluster (issue 13)
from collector.app.config import Config, load_config
from collector.app.scheduler import MonotonicScheduler, SourceRunner, make_scheduler, schedule_source
from collector.app.worker import AnalysisWorker
from collector.contract.schema import BOOL, TIMESTAMP, Column, FrameSchema, FrameSet, register
from collector.contract.settings import ConfigError, SourceBase
from collector.estate import Estate, Snapshot, wall_label
from collector.sources import create_source
from collector.sources.base import PollResult
from exporters.prometheus.exposition import ExpositionCache, load_builtin_family_modules

log = logging.getLogger(__name__)

FORECAST_INTERVAL = timedelta(minutes=15)
COMPACT_INTERVAL = timedelta(hours=1)
REFRESH_MIN_INTERVAL = 1.0
"""Seconds between two recomputations of derived frames + exposition, however many polls arrive."""
IDLE_REFRESH_INTERVAL = 30.0
"""Seconds after which the exposition is refreshed even without a poll, so staleness shows when polls stop."""
WALL_STEP_TOLERANCE = 1.0
"""Seconds the wall clock may drift from the monotonic one between two checks before it counts as a step."""

CONFIG_RELOAD = register(
    FrameSchema(
        name="config_reload",
        doc="Outcome of the last configuration load (start or SIGHUP), derived by the daemon.",
        columns=(
            Column("successful", BOOL, "The last reload was applied (a refused one keeps the running config)."),
            Column("last_success", TIMESTAMP, "Time the running configuration was loaded.", nullable=True),
        ),
    )
)


class ReloadStatus:
    """Whether the last config load succeeded, and when the running config was loaded (monotonic + label)."""

    def __init__(self) -> None:
        self.successful = True
        self.last_success = datetime.now(UTC)
        self.last_success_mono = time.monotonic()

    def succeeded(self) -> None:
        self.successful = True
        self.last_success, self.last_success_mono = datetime.now(UTC), time.monotonic()

    def failed(self) -> None:
        self.successful = False

    def frame(self, now: datetime) -> pd.DataFrame:
        label = wall_label(self.last_success, self.last_success_mono, now, time.monotonic())
        return pd.DataFrame(
            {
                "successful": np.array([self.successful], dtype=bool),
                "last_success": pd.DatetimeIndex(pd.to_datetime([label], utc=True)).as_unit("ns"),
            }
        )


def open_history(config: Config, unavailable: HistoryUnavailable | None = None) -> Any | None:
    """The history store under state_dir, or None (logged, and counted in `unavailable`) when it cannot be opened.

    A full disk at start fails the open with "disk I/O error" (HistoryError): the daemon still starts and serves
    /metrics from memory, and `Daemon` retries the open on a backoff (`HistoryUnavailable`).
    """
    from collector.store.remote.backend import open_backend  # history.backend: embedded | remote
    from collector.store.schema import HistoryError

    try:
        history = open_backend(config.state_dir, config.history)
    except (OSError, HistoryError, sqlite3.Error) as error:
        if unavailable is None:
            log.warning("history disabled: cannot open %s: %s", config.state_dir, error)
        else:
            unavailable.failed(config.state_dir, error)
        return None
    if unavailable is not None:
        unavailable.opened()
    return history


HISTORY_ANALYSES = ("forecast", "reclaimable", "report_history")
"""Analyses that read history: marked stale in `analyses` while the store cannot write (or is not open)."""
REPORTS_RETRY = 30.0
"""Seconds between attempts to schedule reports whose send record could not be opened at start (full disk)."""
HISTORY_RETRY_MIN, HISTORY_RETRY_MAX = 2.0, 300.0
"""Backoff (seconds, doubling) between attempts to open a history store that could not be opened."""


class HistoryUnavailable:
    """Why history could not be opened, counted like the store's own write errors so the same metrics and
    alerts show it: capacityd_history_write_errors_total{reason} and capacityd_history_dropped_samples_total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self.dropped = 0
        self.failing: str | None = None

    @staticmethod
    def reason(state_dir: Path, error: BaseException) -> str:
        from collector.store.health import classify

        cause = error.__cause__ or error.__context__
        reason = classify(cause) if cause is not None else classify(error)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            reason = "disk_full"
        with contextlib.suppress(OSError):  # SQLite reports a full disk at open as a plain I/O error
            if reason in ("io", "other") and os.statvfs(state_dir).f_bavail == 0:
                reason = "disk_full"
        return reason

    def failed(self, state_dir: Path, error: BaseException) -> None:
        reason = self.reason(state_dir, error)
        with self._lock:
            first = self.failing is None
            self.errors[reason] += 1
            self.failing = reason
        if first:  # one line per episode; retries are only counted
            log.error(
                "history unavailable (%s): cannot open %s: %s; serving /metrics from memory, retrying",
                reason,
                state_dir,
                error,
            )

    def opened(self) -> None:
        with self._lock:
            was, self.failing = self.failing, None
        if was is not None:
            log.warning("history opened after %d failed attempts (%s)", sum(self.errors.values()), was)

    def dropped_rows(self, rows: int) -> None:
        with self._lock:
            self.dropped += rows

    def stats_frames(self) -> FrameSet:
        from collector.store.health import REASONS, HistoryStats

        with self._lock:
            stats = HistoryStats(
                write_errors={r: self.errors.get(r, 0) for r in REASONS},
                dropped_samples=self.dropped,
                rejected_samples={},
                last_write_success=None,
                failing=self.failing,
            )
        return {"history_stats": stats.frame()}


class Pipeline:
    """Turns the estate (+ history) into a snapshot with derived frames, and renders the exposition."""

    def __init__(
        self,
        config: Config,
        estate: Estate,
        history: Any | None,
        cache: ExpositionCache | None,
        worker: AnalysisWorker | None = None,
    ):
        self.config = config
        self.estate = estate
        self.history = history
        self.cache = cache
        self._derived: FrameSet = {}
        self._expensive: FrameSet = {}
        self.worker = worker
        """Where the expensive pass runs: a worker process (the daemon), or this process (one-off commands)."""
        self.analysis_errors: dict[str, str] = {}
        self.analysis_health = AnalysisHealth()
        self.reload_status: ReloadStatus | None = None
        self.history_unavailable: HistoryUnavailable | None = None
        self._lock = threading.Lock()  # the snapshot: one computation at a time
        self._expensive_lock = threading.Lock()  # one expensive pass at a time
        self._pending = threading.Event()
        self._requested = threading.Event()
        self.snapshot: Snapshot = estate.snapshot()

    def refresh(self, *, expensive: bool = False) -> Snapshot:
        """Recompute derived frames and re-render; concurrent callers coalesce into one extra pass.

        An expensive pass (forecasts, ...) runs one at a time and outside the lock of the cheap ones: polls,
        headroom and /metrics go on refreshing while it runs (for up to the worker's deadline if it hangs),
        and its frames join the snapshot when it ends.
        """
        if expensive:
            with self._expensive_lock:
                self._run_expensive()
        else:
            self._pending.set()
        while self._pending.is_set():
            if not self._lock.acquire(blocking=False):
                return self.snapshot  # the pass holding the lock picks our change up
            try:
                while self._pending.is_set():
                    self._pending.clear()
                    self.snapshot = self._compute()
            finally:
                self._lock.release()
        return self.snapshot

    def run_refresher(self, stop: threading.Event, min_interval: float = REFRESH_MIN_INTERVAL) -> None:
        """Background loop: refresh when polls asked for it, at most once per `min_interval` seconds.

        Polls only call `request_refresh` (cheap); with hundreds of sources the derived frames and the
        exposition are still recomputed a bounded number of times per second.
        """
        last = time.monotonic()
        wall_offset = time.time() - last
        while not stop.is_set():
            requested = self._requested.wait(timeout=0.5)
            # A stepped wall clock re-renders at once: the labels of the cached exposition were taken
            # on the old clock, and a backward step would leave them in the future.
            stepped = abs(time.time() - time.monotonic() - wall_offset) > WALL_STEP_TOLERANCE
            if not (requested or stepped or time.monotonic() - last >= IDLE_REFRESH_INTERVAL):
                continue
            if stepped:
                wall_offset = time.time() - time.monotonic()
                log.warning("the wall clock was stepped; polling goes on on the monotonic clock")
            self._requested.clear()
            started = last = time.monotonic()
            try:
                self.refresh()
            except Exception:
                log.exception("refresh failed")
            took = time.monotonic() - started
            # Big estates render slowly: keep refreshing to at most ~20 % of one core.
            stop.wait(max(min_interval, 5 * took) - took)

    def request_refresh(self) -> None:
        self._requested.set()

    def _health_frames(self, now: datetime) -> FrameSet:
        """The daemon's own health as frames (`analyses`, `config_reload`, `process_memory`), rendered by exporters
        like any other."""
        health: FrameSet = {"analyses": self._mark_history_stale(self.analysis_health.frame(now))}
        health["process_memory"] = memory.frame()
        worker = self.worker.frame() if self.worker is not None else None
        if worker is not None:
            health["analysis_worker"] = worker
        if self.reload_status is not None:
            health["config_reload"] = self.reload_status.frame(now)
        return health

    def history_failing(self) -> str | None:
        """Why history cannot be written right now (a write error reason), or None while it can."""
        if self.history is None:
            return self.history_unavailable.failing if self.history_unavailable is not None else None
        stats = getattr(self.history, "stats", None)
        return getattr(stats(), "failing", None) if stats is not None else None

    def _mark_history_stale(self, analyses: pd.DataFrame) -> pd.DataFrame:
        """While history cannot be written, what the history-based analyses show stops moving: mark them stale."""
        if self.history_failing() is None or analyses.empty:
            return analyses
        analyses = analyses.copy()
        analyses.loc[analyses["analysis"].isin(HISTORY_ANALYSES), "stale"] = True
        return analyses

    def _run_expensive(self) -> None:
        """One pass of the expensive analyses, in the worker process (or here, for one-off commands); then the
        snapshot is recomputed with its frames."""
        base = self.estate.snapshot()
        context = AnalysisContext(now=base.taken_at, frames=base.frames, history=self.history, config=self.config)
        fallback = self.analysis_health.last_good()
        if self.worker is not None:
            outcomes: list[AnalysisOutcome] = self.worker.run(context, fallback)
        else:
            outcomes = compute_analyses(context, expensive=True, fallback=fallback)
        with self._lock:
            frames, errors = record_outcomes(outcomes, self.analysis_health, context.now)
            self._expensive = frames
            self.analysis_errors.update(errors)
            self.snapshot = self._compute()

    def _compute(self) -> Snapshot:
        """The snapshot: the estate, the last expensive pass' frames, the cheap analyses run now, health frames."""
        base = self.estate.snapshot()
        context = AnalysisContext(now=base.taken_at, frames=base.frames, history=self.history, config=self.config)
        frames, errors = run_analyses(
            replace(context, frames={**base.frames, **self._expensive}), expensive=False, health=self.analysis_health
        )
        frames.update(self._health_frames(base.taken_at))
        self.analysis_errors.update(errors)
        if self.history is not None:
            stats = self.history.stats_frames()  # history_stats (store health)
        elif self.history_unavailable is not None:
            stats = self.history_unavailable.stats_frames()  # the store could not be opened (yet)
        else:
            stats = {}
        snapshot = Snapshot(
            taken_at=base.taken_at,
            frames={**base.frames, **self._expensive, **frames, **stats},
            statuses=base.statuses,
        )
        if self.cache is not None:
            self.cache.update(snapshot)
        return snapshot


def _timeout_seconds(source_config: SourceBase) -> float:
    return source_config.effective_timeout.total_seconds()


def collect_once(
    config: Config, *, history: Any | None = None, analyses: bool = True, progress: bool = False
) -> Snapshot:
    """Poll every configured source once (in parallel, each with its timeout) and return the snapshot.

    Nothing is written to history; `history` (if given) is only read by the analyses.
    """
    load_builtin_analyses()
    estate = Estate()
    runners = []
    for source_config in config.sources:
        estate.add_source(source_config.name, source_config.kind, source_config.interval)
        try:
            source = create_source(source_config)
        except Exception as error:  # noqa: BLE001 - report and go on with the other sources
            estate.record_failure(source_config.name, "config", str(error), datetime.now(UTC), 0.0)
            continue
        runners.append(SourceRunner(source, estate, _timeout_seconds(source_config)))
    started = time.monotonic()

    def run(runner: SourceRunner) -> None:
        ok = runner.run()
        if progress:
            _progress(f"{'polled' if ok else 'FAILED'} {runner.source.name} ({time.monotonic() - started:.1f}s)")

    from collector.app.targets import split_discovered  # issue 16: discovered sources poll after the others

    plain, discovered = split_discovered(runners, estate)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(runners)))) as pool:
        list(pool.map(run, plain))
        list(pool.map(run, discovered))
    for runner in runners:
        runner.close()
    pipeline = Pipeline(config, estate, history, cache=None)
    if not analyses:
        return estate.snapshot()
    if progress:
        _progress("computing headroom and forecasts")
    return pipeline.refresh(expensive=True)


def _progress(message: str) -> None:
    import sys

    if sys.stderr.isatty():
        print(f"capacityd: {message}", file=sys.stderr, flush=True)


class ReloadRefused(Exception):
    """A reload that could not be applied before anything changed: the running config stays whole."""


class Daemon:
    """The long-running service: polls on schedule, keeps history, serves /metrics, reloads on SIGHUP."""

    def __init__(self, config: Config, config_path: Path | None = None):
        memory.bound_arenas()  # before the daemon's threads allocate (collector/app/memory.py)
        memory.pin_thresholds()  # big buffers in mmaps, returned on free
        memory.log_allocator_settings()  # what the cli re-executed with, or the operator chose
        load_builtin_analyses()
        load_builtin_family_modules()
        self.config = config
        self.config_path = config_path
        self.estate = Estate()
        self.history_unavailable = HistoryUnavailable()
        self.history = open_history(config, self.history_unavailable)
        self.cluster = Coordinator(config.cluster, listen=config.listen)  # cluster: roles and sharding (issue 13)
        self.cache: ExpositionCache = exposition_cache(self.cluster, self.estate)  # cluster: role-gated
        self.worker = AnalysisWorker()  # the expensive pass runs in a fresh process (collector/app/worker.py)
        self.pipeline = Pipeline(config, self.estate, self.history, self.cache, self.worker)
        self.pipeline.history_unavailable = self.history_unavailable
        self.reload_status = ReloadStatus()
        self.pipeline.reload_status = self.reload_status
        source_count = len(config.sources)
        self.poll_pool = self.cluster.poll_pool()  # cluster: bounded pool for collectors (None: a thread each)
        self.scheduler = make_scheduler(job_threads=4)  # wall-time jobs only (report crons)
        # polls, forecasts, compaction (cluster: bounded like the pool for a collector)
        self.ticker = MonotonicScheduler(job_threads=self.cluster.job_threads(source_count + 16))
        self._pass_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="expensive-pass")
        """Every expensive pass (scheduled, first, a new leader's) runs on this one thread, one at a time, so a pass
        held up to the worker's deadline ties up no scheduler thread. (Keeping its allocations on one thread did not
        change the daemon's memory measurably: docs/operations.md, "Memory".)"""
        self.runners: dict[str, SourceRunner] = {}
        self.server: Any = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._rebalance_lock = threading.Lock()  # cluster
        self.first_forecast_done = threading.Event()

    # -- polling ---------------------------------------------------------------------------------

    def _on_success(self, name: str, result: PollResult, when: datetime) -> None:
        if self.history is not None:
            try:
                self.history.append(name, result.frames, when)
            except Exception:
                if self._stop.is_set():  # a poll that finished after stop() closed the store: expected, no trace
                    log.info("history: the poll of %s finished during shutdown and is not stored", name)
                else:
                    log.exception("history: could not store the poll of %s", name)
        elif self.history_unavailable.failing is not None:
            self.history_unavailable.dropped_rows(sum(len(frame) for frame in result.frames.values()))
        self.pipeline.request_refresh()

    def _start_source(self, source_config: Any) -> None:
        self.estate.add_source(
            source_config.name, source_config.kind, source_config.interval, source_config.effective_timeout
        )
        try:
            source = create_source(source_config)
        except Exception as error:  # noqa: BLE001 - one bad source never stops the others
            log.error("source %s: cannot be created: %s", source_config.name, error)
            self.estate.record_failure(source_config.name, "config", str(error), datetime.now(UTC), 0.0)
            return
        from collector.app.targets import is_fleet, start_fleet  # issue 16: discovered targets, own schedule

        if is_fleet(source):
            self.runners[source_config.name] = start_fleet(source, self.estate, source_config, self._on_success)  # type: ignore[arg-type,assignment]
            return
        runner = SourceRunner(
            source,
            self.estate,
            _timeout_seconds(source_config),
            self._on_success,
            executor=self.poll_pool,  # cluster: shared bounded pool (None: own thread)
            on_failure=lambda _name: self.pipeline.request_refresh(),
        )
        self.runners[source_config.name] = runner
        schedule_source(
            self.ticker,
            runner,
            source_config.interval.total_seconds(),
            source_config.effective_jitter.total_seconds(),
        )

    def _stop_source(self, name: str) -> None:
        runner = self.runners.pop(name, None)
        self.ticker.remove_job(f"source:{name}")
        if runner is not None:
            runner.close()
        self.estate.remove_source(name)

    # -- analyses and housekeeping ---------------------------------------------------------------

    def _forecast_job(self) -> None:
        """Hand one expensive pass to the pass thread and wait for it (errors reach the caller's log)."""
        try:
            future = self._pass_thread.submit(self._expensive_pass)
        except RuntimeError:  # the daemon is stopping
            return
        with contextlib.suppress(CancelledError):  # stop() dropped it before it started
            future.result()

    def _expensive_pass(self) -> None:
        self.pipeline.refresh(expensive=True)
        memory.trim("forecast")  # the job's pickle and the results it replaced are freed: give the pages back
        self.first_forecast_done.set()

    def _compact_job(self) -> None:
        if self.history is not None:
            self.history.compact(datetime.now(UTC))

    def _first_forecast_after_polls(self) -> None:
        """Run the first expensive pass as soon as every source has answered once (or failed)."""
        deadline = time.monotonic() + max((_timeout_seconds(s) for s in self.config.sources), default=0.0) + 5
        while time.monotonic() < deadline and not self._stop.is_set():
            statuses = self.estate.snapshot().statuses
            if all(s.last_attempt is not None for s in statuses):
                break
            self._stop.wait(0.2)
        self._forecast_job()

    def start(self) -> None:
        from exporters.prometheus.http import start_server

        self.cluster.set_targets(s.name for s in self.config.sources)  # cluster: shard ownership
        for source_config in self.config.sources:
            if self.cluster.owns(source_config.name):  # cluster: poll only owned targets
                self._start_source(source_config)
        forecast_every = FORECAST_INTERVAL.total_seconds()
        self.ticker.add_job("analyses:expensive", self._forecast_job, forecast_every, first_delay=forecast_every)
        self.ticker.add_job("history:compact", self._compact_job, COMPACT_INTERVAL.total_seconds())
        self.ticker.add_job("memory:trim", memory.trim, memory.TRIM_INTERVAL)
        if self.cluster.plans:  # cluster: collectors and standby planners send no reports
            self._start_reports()
        self.pipeline.refresh()
        self.cluster.start(
            on_members=self._rebalance,
            on_leader=self._on_leader,
            estate=self.estate,  # cluster
            on_poll=self._on_success,
            on_pulled=self._on_pulled,
        )
        host, port = self.config.listen_host_port
        self.server = start_server(self.cache, host, port, self.config.web_config_file, self.config.web)
        self.scheduler.start()
        self.ticker.start()
        threading.Thread(target=self.pipeline.run_refresher, args=(self._stop,), name="refresher", daemon=True).start()
        threading.Thread(target=self._first_forecast_after_polls, name="first-forecast", daemon=True).start()
        if self.history is None and self.history_unavailable.failing is not None:
            threading.Thread(target=self._retry_history, name="history-open", daemon=True).start()
        log.info(
            "capacityd serving /metrics on %s:%s with %d sources", host, self.server.port, len(self.config.sources)
        )

    def _retry_history(self) -> None:
        """Open history once it can be (room made on a full disk), retrying on a doubling backoff."""
        delay = HISTORY_RETRY_MIN
        while not self._stop.wait(delay):
            history = open_history(self.config, self.history_unavailable)
            if history is not None:
                self.history = self.pipeline.history = history
                self.pipeline.request_refresh()
                return
            delay = min(delay * 2, HISTORY_RETRY_MAX)

    # -- cluster hooks (issue 13; collector/app/cluster) -------------------------------------------

    def _rebalance(self, _members: list[str]) -> None:
        """The shard set changed: start the sources we now own, stop those that moved away."""
        with self._rebalance_lock:
            for source_config in self.config.sources:
                owned, running = self.cluster.owns(source_config.name), source_config.name in self.runners
                if owned and not running:
                    self._start_source(source_config)
                elif running and not owned:
                    self._stop_source(source_config.name)
            self.pipeline.request_refresh()

    def _on_leader(self, leading: bool) -> None:
        """Planner leadership changed: re-render /metrics at once (losing it drops every planning family)."""
        regate = getattr(self.cache, "regate", None)
        if regate is not None:
            regate()
        if leading:  # a send record that cannot be opened (full disk) is retried, as at start
            self._start_reports()
        else:
            self._schedule_reports(self.config.model_copy(update={"reports": []}))
        if leading:
            threading.Thread(target=self._forecast_job, name="leader-forecast", daemon=True).start()

    def _on_pulled(self) -> None:
        """Planner: a round of collectors' snapshots is in the estate; the first one gets forecasts at once."""
        self.pipeline.request_refresh()
        if self.cluster.first_complete_pull(self.estate):
            log.info("planner: first complete pull of every collector's sources; running forecasts now")
            threading.Thread(target=self._forecast_job, name="first-pull-forecast", daemon=True).start()

    def _schedule_reports(self, config: Config | None = None) -> None:  # cluster: config without reports unschedules
        try:
            from exporters.report import schedule_reports
        except ImportError:
            return
        guard = self.cluster.report_guard()  # cluster: sent once across planner fail-over (the planner Lease)
        schedule_reports(self.scheduler, config or self.config, lambda: self.pipeline.snapshot, self.history, guard)

    def _start_reports(self) -> None:
        """Schedule reports at start; a send record that cannot be opened (full disk) is retried, never fatal."""
        try:
            self._schedule_reports()
        except (OSError, sqlite3.Error) as error:
            log.error(
                "reports not scheduled: cannot open their send record in %s: %s; retrying every %.0f s",
                self.config.state_dir,
                error,
                REPORTS_RETRY,
            )
            self.ticker.add_job("reports:retry", self._retry_reports, REPORTS_RETRY, first_delay=REPORTS_RETRY)

    def _retry_reports(self) -> None:
        if self.cluster.plans:  # cluster: leadership lost meanwhile: _on_leader schedules them when it comes back
            try:
                self._schedule_reports()
            except (OSError, sqlite3.Error):
                return
            log.warning("reports scheduled: their send record in %s could be opened", self.config.state_dir)
        self.ticker.remove_job("reports:retry")

    def reload(self) -> None:
        """Re-read the config file: add, remove or replace changed sources; keep everything else.

        The whole file is validated (bounds included) before anything is applied; a refused file keeps
        the running config, is logged, and shows as `capacityd_config_last_reload_successful 0`.
        """
        if self.config_path is None:
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("reload refused, keeping the running config: %s", "; ".join(error.errors))
            self._reload_failed()
            return
        except Exception as error:  # noqa: BLE001 - load_config should only raise ConfigError; never die here
            log.error(
                "reload refused, keeping the running config: %s while loading %s",
                type(error).__name__,
                self.config_path,
            )
            self._reload_failed()
            return
        if new.web_config_file is not None:
            from exporters.prometheus.webconfig import WebConfigError, load_web_config

            try:
                load_web_config(new.web_config_file)
            except WebConfigError as error:
                log.error("reload refused, keeping the running config: web config: %s", "; ".join(error.errors))
                self._reload_failed()
                return
        try:
            applied = self._apply(new)
        except ReloadRefused as error:  # e.g. the reports' send record on a full disk: nothing was applied
            log.error("reload refused, keeping the running config: %s", error)
            self._reload_failed()
            return
        except Exception:
            log.exception("reload: applying %s failed part-way; sources kept as far as applied", self.config_path)
            self._reload_failed()
            return
        if not applied:
            self._reload_failed()
            return
        self.reload_status.succeeded()
        self.pipeline.refresh()
        log.info("configuration reloaded from %s (%d sources)", self.config_path, len(new.sources))

    def _reload_failed(self) -> None:
        self.reload_status.failed()
        self.pipeline.refresh()

    def _apply(self, new: Config) -> bool:
        """Apply a validated config; False if the web config could not be re-read (the rest is applied)."""
        if (new.listen, new.state_dir, new.web_config_file) != (
            self.config.listen,
            self.config.state_dir,
            self.config.web_config_file,
        ):
            log.warning("reload: listen, state_dir and web_config_file changes need a restart; ignored")
            new = new.model_copy(
                update={
                    "listen": self.config.listen,
                    "state_dir": self.config.state_dir,
                    "web_config_file": self.config.web_config_file,
                }
            )
        reports_config = new if self.cluster.plans else new.model_copy(update={"reports": []})  # cluster
        try:  # first: it may need the disk (send records); failing here, nothing has changed yet
            self._schedule_reports(reports_config)
        except (OSError, sqlite3.Error) as error:
            raise ReloadRefused(f"reports: cannot open their send record: {type(error).__name__}: {error}") from error
        old_sources = {s.name: s for s in self.config.sources}
        new_sources = {s.name: s for s in new.sources}
        for name, source_config in old_sources.items():
            if name not in new_sources or new_sources[name] != source_config:
                self._stop_source(name)
        self.config = new
        self.pipeline.config = new
        self.cluster.set_targets(new_sources)  # cluster
        for name, source_config in new_sources.items():
            if name not in self.runners and self.cluster.owns(name):  # cluster: owned only
                self._start_source(source_config)
        if self.server is not None and self.config.web_config_file is not None:
            from exporters.prometheus.webconfig import WebConfigError

            try:
                self.server.reload()  # rotated certificates and users, without rebinding
            except WebConfigError as error:
                log.error("reload: web config refused, keeping the running one: %s", "; ".join(error.errors))
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()  # a pass in progress ends now; its analyses keep their last good frames
        self._pass_thread.shutdown(wait=False, cancel_futures=True)
        self.ticker.shutdown(wait=False)
        self.cluster.stop()  # cluster: leave the shard set / release the planner Lease
        if self.poll_pool is not None:  # cluster
            self.poll_pool.close()
        self.scheduler.shutdown(wait=False)
        for name in list(self.runners):
            runner = self.runners.pop(name)
            runner.close()
        if self.server is not None:
            self.server.shutdown()
        if self.history is not None:
            self.history.close()

    def run_forever(self) -> int:
        """Start, tell systemd we are ready, and serve until SIGTERM/SIGINT; SIGHUP reloads."""
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.start()
        sd_notify("READY=1")
        try:
            while not self._stop.is_set():
                if self._reload.wait(timeout=0.5):
                    self._reload.clear()
                    sd_notify("RELOADING=1")
                    try:
                        self.reload()
                    except Exception:  # a reload never ends the daemon
                        log.exception("reload failed; the daemon goes on")
                        self.reload_status.failed()
                    sd_notify("READY=1")
        finally:
            sd_notify("STOPPING=1")
            self.stop()
        return 0


def sd_notify(state: str) -> None:
    """systemd's readiness protocol (Type=notify); a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.debug("sd_notify failed: %s", error)

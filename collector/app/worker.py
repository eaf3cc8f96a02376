"""The daemon's expensive analyses (forecasts, reclaimable, the report's history figures) run in a fresh
process each pass: `python -m collector.app.worker`.

Why a process: a pass allocates and frees hundreds of MiB of short-lived frames. Run in the daemon, it left
3-4 MiB more of touched heap resident after each pass for ~30 passes (7.5 h) before the daemon's RSS levelled
(docs/operations.md, "Memory"); the worker's heap leaves with it, so the daemon keeps only the results. And a
pass that hangs or dies (killed for memory, a crash in a native library) becomes failed analyses with a
reason, exported and alerted on like any other failure, instead of a hung or dead daemon.

Why not multiprocessing: `fork` copies a threaded process (a SQLite or stdio lock held by a poll's thread at
that instant stays locked forever in the child), and `spawn`/`forkserver` re-import the parent's main script
in the child. The protocol is small instead: the daemon writes one pickled `WorkerJob` to the worker's
stdin and reads one pickled `WorkerResult` from its stdout, within a deadline. The worker opens history
read-only itself (collector.store.readonly: the SQLite file, plus the TSDB when `history.backend: remote`),
loads the same analysis plugins, and logs to stderr like the daemon (the journal keeps both).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.registry import (
    ANALYSES,
    AnalysisContext,
    AnalysisOutcome,
    compute_analyses,
    load_builtin_analyses,
)
from collector.app.logs import LOG_FORMAT
from collector.contract.schema import FLOAT, Column, FrameSchema, FrameSet, register

log = logging.getLogger(__name__)

WORKER_DEADLINE = 30 * 60.0
"""Seconds a pass may take before its worker is killed and its analyses count as failed: twice the
forecast interval, far above the ~1 minute the pass takes at 100,000 hypervisors (docs/scale-out.md)."""


@dataclass(frozen=True)
class HistoryLocation:
    """Where the worker opens history: the SQLite file and the `history:` settings (never a secret's value)."""

    path: Path
    config: Any  # collector.store.settings.HistoryConfig


@dataclass(frozen=True)
class WorkerJob:
    now: datetime
    frames: FrameSet
    config: Any  # collector.app.config.Config
    history: HistoryLocation | None
    fallback: dict[str, FrameSet]
    """The last good frames of each analysis: what later analyses of the pass see when one fails."""
    log_level: int


@dataclass(frozen=True)
class WorkerResult:
    outcomes: list[AnalysisOutcome]
    peak_resident_bytes: int
    remote_read_errors: int
    """PromQL reads that failed in the worker (answered from the local file): added to the daemon's count."""


class WorkerError(Exception):
    """The worker gave no result: it could not start, died, was killed, missed its deadline or wrote garbage."""


ANALYSIS_WORKER = register(
    FrameSchema(
        name="analysis_worker",
        doc="The last pass of the expensive analyses, run in a worker process (derived by the daemon).",
        columns=(
            Column("duration_seconds", FLOAT, "Wall time of the pass: start, imports, analyses, the way back."),
            Column("peak_resident_bytes", FLOAT, "The worker's peak RSS (VmHWM); 0 when it gave no result."),
        ),
    )
)


def history_location(history: Any) -> HistoryLocation | None:
    """Where the daemon's history lives (collector.store History or RemoteHistory), or None without history."""
    if history is None:
        return None
    return HistoryLocation(Path(history.path), history.config)


class AnalysisWorker:
    """Runs each expensive pass in a fresh worker process; `stop()` kills a pass in progress."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = WORKER_DEADLINE if deadline is None else deadline
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._last: tuple[float, int] | None = None  # duration, peak resident bytes

    def run(self, context: AnalysisContext, fallback: Mapping[str, FrameSet]) -> list[AnalysisOutcome]:
        """The pass' outcomes; when the worker gives none, every expensive analysis fails with the reason."""
        job = WorkerJob(
            now=context.now,
            frames=context.frames,
            config=context.config,
            history=history_location(context.history),
            fallback=dict(fallback),
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        started = time.monotonic()
        try:
            result = self._run(job)
        except WorkerError as error:
            took = time.monotonic() - started
            with self._lock:
                self._last = (took, 0)
            if not self._stopping:
                log.error("analysis worker: %s", error)
            names = [registered.name for registered in ANALYSES.values() if registered.expensive]
            return [AnalysisOutcome(name, {}, f"WorkerError: {error}", took) for name in names]
        took = time.monotonic() - started
        if result.remote_read_errors and hasattr(context.history, "remote_stats"):
            context.history.remote_stats.add(read_errors=result.remote_read_errors)
        with self._lock:
            self._last = (took, result.peak_resident_bytes)
        log.info(
            "analysis worker: %d analyses in %.1f s, peak resident %.0f MiB",
            len(result.outcomes),
            took,
            result.peak_resident_bytes / 2**20,
        )
        return result.outcomes

    def _run(self, job: WorkerJob) -> WorkerResult:
        try:
            payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # a plugin's frame or setting that does not pickle
            raise WorkerError(f"cannot hand the pass to a worker: {type(error).__name__}: {error}") from error
        with self._lock:
            if self._stopping:
                raise WorkerError("the daemon is stopping")
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "collector.app.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=_worker_environment(),
                )
            except OSError as error:
                raise WorkerError(f"cannot start {sys.executable}: {error}") from error
            self._process = process
        # The deadline is a timer that kills the worker, not communicate()'s timeout, whose wait polls with
        # time.sleep: the pass' thread blocks in read() and waitpid() until the worker exits, however it ends.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                process.kill()

        timer = threading.Timer(self.deadline, expire)
        timer.daemon = True
        timer.start()
        try:
            out, _ = process.communicate(payload)
        except OSError as error:
            process.kill()
            process.wait()
            raise WorkerError(f"lost the worker: {type(error).__name__}: {error}") from error
        finally:
            timer.cancel()
            with self._lock:
                self._process = None
        if expired.is_set():
            raise WorkerError(f"no result within {self.deadline:.0f} s; killed")
        code = process.returncode
        if code != 0:
            raise WorkerError(_describe_exit(code))
        try:
            result = pickle.loads(out)
        except Exception as error:
            raise WorkerError(f"unreadable result ({len(out)} bytes): {type(error).__name__}: {error}") from error
        if not isinstance(result, WorkerResult):
            raise WorkerError(f"unexpected result: {type(result).__name__}")
        return result

    def stop(self) -> None:
        """Kill a pass in progress (its analyses keep their last good frames); no pass starts after this."""
        with self._lock:
            self._stopping = True
            process = self._process
        if process is not None and process.poll() is None:
            log.info("stopping: killing the analysis worker (pid %d)", process.pid)
            process.kill()

    def frame(self) -> pd.DataFrame | None:
        """The `analysis_worker` frame of the last pass, or None before the first."""
        with self._lock:
            last = self._last
        if last is None:
            return None
        return pd.DataFrame(
            {
                "duration_seconds": np.array([last[0]], dtype=float),
                "peak_resident_bytes": np.array([float(last[1])], dtype=float),
            }
        )


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory? see the kernel log)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code} (its traceback is in the log above)"


def _worker_environment() -> dict[str, str]:
    """The daemon's environment; a daemon run from a source tree puts that tree first on its worker's path, so the
    worker runs the same code (an installed package is found as usual: site-packages never goes ahead of the
    standard library)."""
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    installed = {Path(path).resolve() for path in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _peak_resident_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def main() -> int:
    """The worker: one job from stdin, one result to stdout, exit."""
    result_stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the result
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C to the daemon's terminal ends the pass, quietly
    job: WorkerJob = pickle.load(sys.stdin.buffer)
    logging.basicConfig(level=job.log_level, format=LOG_FORMAT, stream=sys.stderr)
    load_builtin_analyses()
    history = None
    if job.history is not None:
        from collector.store.readonly import open_read_only

        history = open_read_only(job.history.path, job.history.config)
    try:
        context = AnalysisContext(now=job.now, frames=job.frames, history=history, config=job.config)
        outcomes = compute_analyses(context, expensive=True, fallback=job.fallback)
    finally:
        if history is not None:
            history.close()
    stats = getattr(history, "remote_stats", None)
    result = WorkerResult(outcomes, _peak_resident_bytes(), int(stats.read_errors) if stats is not None else 0)
    pickle.dump(result, result_stream, protocol=pickle.HIGHEST_PROTOCOL)
    result_stream.close()
    return 0


if __name__ == "__main__":  # run under its real name, so the result unpickles as collector.app.worker's classes
    from collector.app.worker import main as worker_main

    sys.exit(worker_main())

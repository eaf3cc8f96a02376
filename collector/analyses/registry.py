"""Derived frames (headroom, forecasts, reclaimable, ...) computed from a snapshot and history.

An analysis is a small strategy: a function taking an `AnalysisContext` and returning frames whose
schemas it registered in collector.contract.schema. The daemon runs every registered analysis after polls
(and on its own schedule for the expensive ones), stores the result beside the source frames, and
the exporters read it from there. Analyses never poll anything themselves.

Each run's outcome is kept in an `AnalysisHealth` (success, duration, last success): a failing analysis
keeps its last good frames in the snapshot, marked stale in the `analyses` frame (the same convention
as a failing source), so a bug in one analysis is a metric and an alert, never a silent gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from collector.contract.schema import (
    BOOL,
    FLOAT,
    STRING,
    TIMESTAMP,
    Column,
    FrameSchema,
    FrameSet,
    register,
    validate_frame,
)
from collector.estate import wall_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisContext:
    now: datetime
    frames: FrameSet
    """The merged source frames of the current snapshot (capacity, consumers, hosts, flavors, ...)."""
    history: Any
    """collector.store.history.History (read-only use), or None when running without a state dir."""
    config: Any
    """collector.app.config.Config."""


Analysis = Callable[[AnalysisContext], FrameSet]


@dataclass(frozen=True)
class RegisteredAnalysis:
    name: str
    func: Analysis
    expensive: bool
    """Expensive analyses (forecasts) run on their own schedule instead of after every poll."""


ANALYSES: dict[str, RegisteredAnalysis] = {}


def analysis(name: str, *, expensive: bool = False) -> Callable[[Analysis], Analysis]:
    """Decorator registering an analysis under `name`."""

    def decorate(func: Analysis) -> Analysis:
        ANALYSES[name] = RegisteredAnalysis(name, func, expensive)
        return func

    return decorate


def load_builtin_analyses() -> None:
    """Import every analysis plugin (entry points `capacityd.analyses`); each registers with `@analysis`.

    The app calls this (collector.app.plugins loads the entry points): analyses never import the app.
    """
    from importlib.metadata import entry_points

    for entry_point in sorted(entry_points(group="capacityd.analyses"), key=lambda ep: ep.name):
        try:
            entry_point.load()
        except Exception as error:
            raise RuntimeError(
                f"analysis plugin {entry_point.name!r} ({entry_point.value}) cannot be loaded: "
                f"{type(error).__name__}: {error}"
            ) from error


ANALYSES_FRAME = register(
    FrameSchema(
        name="analyses",
        doc="Health of each analysis run by the daemon (derived by the daemon, not read from a remote system).",
        key=("analysis",),
        columns=(
            Column("analysis", STRING, "Analysis name (headroom, forecast, ...)."),
            Column("success", BOOL, "The last run succeeded."),
            Column("stale", BOOL, "The frames served for this analysis come from an earlier, successful run."),
            Column("duration_seconds", FLOAT, "Duration of the last run."),
            Column("last_success", TIMESTAMP, "Time of the last successful run.", nullable=True),
            Column("last_error", STRING, "Exception type and message of the last failure.", nullable=True),
        ),
    )
)


@dataclass
class AnalysisState:
    """The outcome of one analysis' latest run, and the frames of its latest successful one."""

    name: str
    success: bool = False
    duration_seconds: float = 0.0
    last_success: datetime | None = None
    last_success_mono: float | None = None
    last_error: str | None = None
    frames: FrameSet = field(default_factory=dict)


class AnalysisHealth:
    """Thread-safe record of every analysis' runs (the daemon keeps one for its lifetime)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, AnalysisState] = {}

    def record_success(self, name: str, frames: FrameSet, duration: float, when: datetime) -> None:
        with self._lock:
            state = self._states.setdefault(name, AnalysisState(name))
            state.success, state.duration_seconds, state.last_error = True, duration, None
            state.last_success, state.last_success_mono, state.frames = when, self.clock(), dict(frames)

    def record_failure(self, name: str, error: str, duration: float) -> FrameSet:
        """Record a failed run; returns the last good frames (served on, marked stale)."""
        with self._lock:
            state = self._states.setdefault(name, AnalysisState(name))
            state.success, state.duration_seconds, state.last_error = False, duration, error
            return dict(state.frames)

    def last_good(self) -> dict[str, FrameSet]:
        """The frames of each analysis' latest successful run (what a failed run falls back to)."""
        with self._lock:
            return {name: dict(state.frames) for name, state in self._states.items() if state.frames}

    def frame(self, now: datetime | None = None) -> pd.DataFrame:
        """The `analyses` frame: one row per analysis that ran at least once."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: s.name)
            mono = self.clock()
            rows = [
                (
                    s.name,
                    s.success,
                    not s.success and bool(s.frames),
                    s.duration_seconds,
                    wall_label(s.last_success, s.last_success_mono, now or datetime.now(UTC), mono),
                    s.last_error,
                )
                for s in states
            ]
        return pd.DataFrame(
            {
                "analysis": pd.array([r[0] for r in rows], dtype=STRING),
                "success": np.array([r[1] for r in rows], dtype=bool),
                "stale": np.array([r[2] for r in rows], dtype=bool),
                "duration_seconds": np.array([r[3] for r in rows], dtype=float),
                "last_success": pd.DatetimeIndex(pd.to_datetime([r[4] for r in rows], utc=True)).as_unit("ns"),
                "last_error": pd.array([r[5] for r in rows], dtype=STRING),
            }
        )


@dataclass(frozen=True)
class AnalysisOutcome:
    """One analysis' run: its frames, or the error that stopped it. Picklable: a pass may run in a worker process."""

    name: str
    frames: FrameSet
    error: str | None
    duration_seconds: float


def compute_analyses(
    context: AnalysisContext, *, expensive: bool | None = None, fallback: Mapping[str, FrameSet] | None = None
) -> list[AnalysisOutcome]:
    """Run analyses (all, or only cheap/expensive ones) in registration order; one failing never stops the others.

    Each analysis sees the frames of those run before it (the report's figures read headroom and forecasts);
    for one that failed, that is its `fallback` frames (its last good run), the frames the daemon goes on serving.
    Records nothing: the caller does (`record_outcomes`), in this process or after a worker returned.
    """
    frames: FrameSet = {}
    outcomes: list[AnalysisOutcome] = []
    for registered in ANALYSES.values():
        if expensive is not None and registered.expensive != expensive:
            continue
        started = time.monotonic()
        try:
            produced = registered.func(replace(context, frames={**context.frames, **frames}) if frames else context)
            for name, frame in produced.items():
                validate_frame(name, frame)
        except Exception as error:
            log.exception("analysis %s failed", registered.name)
            outcomes.append(
                AnalysisOutcome(registered.name, {}, f"{type(error).__name__}: {error}", time.monotonic() - started)
            )
            frames.update((fallback or {}).get(registered.name, {}))
            continue
        frames.update(produced)
        outcomes.append(AnalysisOutcome(registered.name, produced, None, time.monotonic() - started))
    return outcomes


def record_outcomes(
    outcomes: list[AnalysisOutcome], health: AnalysisHealth | None, when: datetime
) -> tuple[FrameSet, dict[str, str]]:
    """Merge a pass' outcomes into (frames, errors by analysis name), recording each in `health` if given.

    With `health`, a failed analysis contributes its last good frames (served on, marked stale) instead of nothing.
    """
    frames: FrameSet = {}
    errors: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.error is not None:
            errors[outcome.name] = outcome.error
            if health is not None:
                frames.update(health.record_failure(outcome.name, outcome.error, outcome.duration_seconds))
            continue
        frames.update(outcome.frames)
        if health is not None:
            health.record_success(outcome.name, outcome.frames, outcome.duration_seconds, when)
    return frames, errors


def run_analyses(
    context: AnalysisContext, *, expensive: bool | None = None, health: AnalysisHealth | None = None
) -> tuple[FrameSet, dict[str, str]]:
    """Run analyses in this process and record them; returns (frames, errors by analysis name).

    One failing analysis is logged and reported; it never stops the others. With `health`, each run is
    recorded there and a failed analysis contributes its last good frames instead of nothing.
    """
    fallback = health.last_good() if health is not None else None
    return record_outcomes(compute_analyses(context, expensive=expensive, fallback=fallback), health, context.now)

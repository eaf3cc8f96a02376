"""Derived frames (headroom, forecasts, reclaimable, ...) computed from a snapshot and history.

An analysis is a small strategy: a function taking an `AnalysisContext` and returning frames whose
schemas it registered in collector.schema. The daemon runs every registered analysis after polls
(and on its own schedule for the expensive ones), stores the result beside the source frames, and
the exporters read it from there. Analyses never poll anything themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.schema import FrameSet, validate_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisContext:
    now: datetime
    frames: FrameSet
    """The merged source frames of the current snapshot (capacity, consumers, hosts, flavors, ...)."""
    history: Any
    """collector.history.History (read-only use), or None when running without a state dir."""
    config: Any
    """collector.config.Config."""


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
    """Import the modules that register analyses (kept here so the list is in one place)."""
    import importlib

    for module in BUILTIN_ANALYSIS_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:  # a module not written yet must not break the daemon
            if error.name != module:
                raise


BUILTIN_ANALYSIS_MODULES: list[str] = [
    "collector.headroom",
    "collector.forecast",
]


def run_analyses(context: AnalysisContext, *, expensive: bool | None = None) -> tuple[FrameSet, dict[str, str]]:
    """Run analyses (all, or only cheap/expensive ones); returns (frames, errors by analysis name).

    One failing analysis is logged and reported; it never stops the others.
    """
    frames: FrameSet = {}
    errors: dict[str, str] = {}
    for registered in ANALYSES.values():
        if expensive is not None and registered.expensive != expensive:
            continue
        try:
            produced = registered.func(context)
            for name, frame in produced.items():
                validate_frame(name, frame)
            frames.update(produced)
        except Exception as error:
            log.exception("analysis %s failed", registered.name)
            errors[registered.name] = f"{type(error).__name__}: {error}"
    return frames, errors

"""Derived frames (headroom, forecasts, reclaimable, ...) computed from a snapshot and history.

An analysis is a small strategy: a function taking an `AnalysisContext` and returning frames whose
schemas it registered in collector.contract.schema. The daemon runs every registered analysis after polls
(and on its own schedule for the expensive ones), stores the result beside the source frames, and
the exporters read it from there. Analyses never poll anything themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from collector.contract.schema import FrameSet, validate_frame

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


def run_analyses(context: AnalysisContext, *, expensive: bool | None = None) -> tuple[FrameSet, dict[str, str]]:
    """Run analyses (all, or only cheap/expensive ones); returns (frames, errors by analysis name).

    One failing analysis is logged and reported; it never stops the others. Each analysis sees the frames
    of those registered before it in this run (the report's figures read headroom and forecasts).
    """
    frames: FrameSet = {}
    errors: dict[str, str] = {}
    for registered in ANALYSES.values():
        if expensive is not None and registered.expensive != expensive:
            continue
        try:
            produced = registered.func(replace(context, frames={**context.frames, **frames}) if frames else context)
            for name, frame in produced.items():
                validate_frame(name, frame)
            frames.update(produced)
        except Exception as error:
            log.exception("analysis %s failed", registered.name)
            errors[registered.name] = f"{type(error).__name__}: {error}"
    return frames, errors

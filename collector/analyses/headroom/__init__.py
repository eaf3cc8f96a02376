"""Headroom: how many more of each flavor and pod shape fit, where, and after the worst failure.

Registers the `headroom` analysis (collector/analyses/registry.py), run after every poll: the slot counts are
a few vectorized passes, and N+1 re-places each failure candidate's consumers incrementally. The
`reclaimable` analysis reads days of per-consumer usage from history, so it is an expensive one (it
runs on the forecast schedule).
Method and worked example: docs/headroom.md; frames: docs/schema.md ("Derived frames").
"""

from __future__ import annotations

from collector.analyses.headroom import frames as _frames
from collector.analyses.headroom.engine import HeadroomReport, compute_headroom
from collector.analyses.headroom.frames import HEADROOM, HEADROOM_HOSTS, RECLAIMABLE
from collector.analyses.headroom.reclaimable import reclaimable_frame
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.registry import AnalysisContext, analysis
from collector.contract.schema import FrameSet

__all__ = [
    "HEADROOM", "HEADROOM_HOSTS", "RECLAIMABLE", "HeadroomReport", "compute_headroom", "headroom_analysis",
    "reclaimable_analysis",
]


@analysis("headroom")
def headroom_analysis(context: AnalysisContext) -> FrameSet:
    """headroom and headroom_hosts frames of the current snapshot (after every poll)."""
    settings = getattr(context.config, "headroom", None)
    if settings is not None:
        _frames.HOST_METRICS_LIMIT = settings.host_metrics_limit
    report = compute_headroom(context.frames, context.config, context.now, reuse_failures=True)
    return {"headroom": report.headroom, "headroom_hosts": report.hosts}


@analysis("reclaimable", expensive=True)
def reclaimable_analysis(context: AnalysisContext) -> FrameSet:
    """reclaimable frame: reads days of per-consumer usage, so it runs on the expensive schedule."""
    settings = getattr(context.config, "headroom", None) or HeadroomConfig()
    return {"reclaimable": reclaimable_frame(context.frames, context.history, settings, context.now)}

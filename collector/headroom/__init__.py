"""Headroom: how many more of each flavor and pod shape fit, where, and after the worst failure.

Registers the `headroom` analysis (collector/analysis.py). It runs after every poll: the slot counts
are a few vectorized passes, and N+1 re-places each failure candidate's consumers incrementally.
Method and worked example: docs/headroom.md; frames: docs/schema.md ("Derived frames").
"""

from __future__ import annotations

from collector.analysis import AnalysisContext, analysis
from collector.headroom import frames as _frames
from collector.headroom.engine import HeadroomReport, compute_headroom
from collector.headroom.frames import HEADROOM, HEADROOM_HOSTS, RECLAIMABLE
from collector.headroom.reclaimable import reclaimable_frame
from collector.schema import FrameSet

__all__ = ["HEADROOM", "HEADROOM_HOSTS", "RECLAIMABLE", "HeadroomReport", "compute_headroom", "headroom_analysis"]


@analysis("headroom")
def headroom_analysis(context: AnalysisContext) -> FrameSet:
    """headroom, headroom_hosts and reclaimable frames of the current snapshot."""
    report = compute_headroom(context.frames, context.config, context.now)
    settings = getattr(context.config, "headroom", None)
    frames: FrameSet = {"headroom": report.headroom, "headroom_hosts": report.hosts}
    if settings is not None:
        _frames.HOST_METRICS_LIMIT = settings.host_metrics_limit
        frames["reclaimable"] = reclaimable_frame(context.frames, context.history, settings, context.now)
    else:
        frames["reclaimable"] = RECLAIMABLE.empty()
    return frames

"""Headroom: how many more of each flavor and pod shape fit, where, and after the worst failure.

Registers the `headroom` analysis (collector/analyses/registry.py), run after every poll: the slot counts are
a few vectorized passes, and N+1 re-places each failure candidate's consumers incrementally. The
`reclaimable` analysis reads days of per-consumer usage from history, so it is an expensive one (it
runs on the forecast schedule).
Method and worked example: docs/headroom.md; frames: docs/schema.md ("Derived frames").
"""

from __future__ import annotations

import logging

from collector.analyses.headroom.engine import HeadroomReport, compute_headroom
from collector.analyses.headroom.frames import HEADROOM, HEADROOM_HOSTS, RECLAIMABLE
from collector.analyses.headroom.reclaimable import reclaimable_frame
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.registry import AnalysisContext, analysis
from collector.contract.schema import FrameSet

log = logging.getLogger(__name__)

__all__ = [
    "HEADROOM",
    "HEADROOM_HOSTS",
    "RECLAIMABLE",
    "HeadroomReport",
    "compute_headroom",
    "headroom_analysis",
    "reclaimable_analysis",
]


@analysis("headroom")
def headroom_analysis(context: AnalysisContext) -> FrameSet:
    """headroom and headroom_hosts frames of the current snapshot (after every poll)."""
    settings = getattr(context.config, "headroom", None) or HeadroomConfig()
    report = compute_headroom(context.frames, context.config, context.now, reuse_failures=True)
    hosts = report.hosts
    if len(hosts) > settings.host_metrics_limit:
        # The per-host breakdown is the only part whose size is hosts x shapes: past the configured limit it is
        # left out here, where the setting lives, so every consumer of the frames (not only /metrics) sees the same.
        if _warned_limit != [len(hosts)]:
            log.warning(
                "headroom_hosts left out (capacity_headroom_host_slots): %d rows > headroom.host_metrics_limit %d",
                len(hosts),
                settings.host_metrics_limit,
            )
            _warned_limit[:] = [len(hosts)]
        hosts = hosts.iloc[0:0]
    return {"headroom": report.headroom, "headroom_hosts": hosts}


_warned_limit: list[int] = []
"""The size last warned about, so a steady oversize estate logs once, not after every poll."""


@analysis("reclaimable", expensive=True)
def reclaimable_analysis(context: AnalysisContext) -> FrameSet:
    """reclaimable frame: reads days of per-consumer usage, so it runs on the expensive schedule."""
    settings = getattr(context.config, "headroom", None) or HeadroomConfig()
    return {"reclaimable": reclaimable_frame(context.frames, context.history, settings, context.now)}

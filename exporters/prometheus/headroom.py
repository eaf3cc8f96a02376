"""Headroom families: slots per pool and shape, after the worst failure, per host; reclaimable capacity.

Built from the `headroom`, `headroom_hosts` and `reclaimable` frames (docs/metrics.md, "Headroom").
Each pool row carries `pool_kind` (az, aggregate, cloud, node_pool, cluster): an AZ, an aggregate
and the whole cloud overlap, so only `sum by` within one pool_kind is meaningful.
`capacity_headroom_host_slots` is per host and shape (hosts x shapes samples); the headroom analysis leaves the
`headroom_hosts` frame empty, with a warning, when it would exceed `headroom.host_metrics_limit` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pandas as pd
from prometheus_client.core import GaugeMetricFamily, Metric

from collector.estate import Snapshot
from exporters.prometheus.exposition import add_frame_samples, family_builder

log = logging.getLogger(__name__)

SLOT_LABELS = ["layer", "cloud", "pool", "pool_kind", "shape"]
FAILURE_LABELS = [*SLOT_LABELS, "failure_domain"]
HOST_LABELS = ["layer", "cloud", "pool", "host", "shape"]
RECLAIM_LABELS = ["layer", "cloud", "pool", "resource"]


ISOLATED_LABELS = ["layer", "cloud", "pool", "shape", "tenant"]


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    headroom, isolated = _split_isolated(snapshot.frames.get("headroom"))
    slots = GaugeMetricFamily(
        "capacity_headroom_slots",
        "How many more of a flavor or pod shape fit in the pool now, if only that shape were added.",
        labels=SLOT_LABELS,
    )
    add_frame_samples(slots, headroom, SLOT_LABELS, "slots")
    yield slots
    after = GaugeMetricFamily(
        "capacity_headroom_slots_after_failure",
        "N+1: the fewest slots of the shape left after any single failure of the pool, its consumers re-placed "
        "on the survivors (0 after a failure that strands any); failure_domain is the loss that leaves the fewest.",
        labels=FAILURE_LABELS,
    )
    add_frame_samples(after, headroom, FAILURE_LABELS, "slots_after_failure")
    yield after
    shortfall = GaugeMetricFamily(
        "capacity_headroom_failure_shortfall",
        "The most consumers any single failure of the pool leaves without a home; failure_domain is that failure "
        "(empty when none strands any). > 0: the pool is not N+1.",
        labels=FAILURE_LABELS,
    )
    add_frame_samples(shortfall, _shortfall_rows(headroom), FAILURE_LABELS, "shortfall")
    yield shortfall
    reserved = GaugeMetricFamily(
        "capacity_headroom_isolated_slots",
        "How many more of a flavor the project in `tenant` can still boot on the hosts of the tenant-isolation "
        "aggregate `pool` (filter_tenant_id); public rows leave those hosts out.",
        labels=ISOLATED_LABELS,
    )
    add_frame_samples(reserved, isolated, ISOLATED_LABELS, "slots")
    yield reserved
    per_host = GaugeMetricFamily(
        "capacity_headroom_host_slots",
        "How many more of a flavor or pod shape fit on this host.",
        labels=HOST_LABELS,
    )
    # headroom.host_metrics_limit is applied by the headroom analysis (the frame is empty past it)
    add_frame_samples(per_host, snapshot.frames.get("headroom_hosts"), HOST_LABELS, "slots")
    yield per_host
    reclaimable = GaugeMetricFamily(
        "capacity_reclaimable",
        "Capacity held by idle VMs and by pod requests above need (KRR-style), per pool (cores, bytes).",
        labels=RECLAIM_LABELS,
    )
    add_frame_samples(reclaimable, snapshot.frames.get("reclaimable"), RECLAIM_LABELS, "amount")
    yield reclaimable


def _split_isolated(headroom: pd.DataFrame | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(public rows, tenant-isolation aggregate rows): the latter have their own family with a tenant label."""
    if headroom is None or headroom.empty or "tenant" not in headroom.columns:
        return headroom, None
    tenant = headroom["tenant"].notna().to_numpy()
    return headroom[~tenant], headroom[tenant]


def _shortfall_rows(headroom: pd.DataFrame | None) -> pd.DataFrame | None:
    """The shortfall is labelled with the failure that strands the most, not the shape's own worst failure."""
    if headroom is None or headroom.empty or "shortfall_domain" not in headroom.columns:
        return headroom
    return headroom.assign(failure_domain=headroom["shortfall_domain"])

"""The headroom engine: frames in, `headroom` and `headroom_hosts` frames out (docs/headroom.md).

One pass per (layer, cloud): build the HostTable once, count slots for every shape on every host,
sum them per pool (AZ, each non-AZ aggregate, the cloud; node pool, the cluster) counting each host
once per pool, then run N+1 per pool. The Kubernetes-on-OpenStack rows (new worker VMs and the pod
slots they add) reuse the OpenStack tables. `what-if` calls the same function on changed frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.cross_layer import worker_rows
from collector.analyses.headroom.failure import FailureResult, n_plus_one
from collector.analyses.headroom.frames import HEADROOM, HEADROOM_HOSTS
from collector.analyses.headroom.model import (
    HostTable,
    SlotResult,
    build_host_tables,
    dominant_limit,
    pool_totals,
    slot_matrix,
    widen,
)
from collector.analyses.headroom.pods import common_shapes, configured_shapes, pod_classes, pod_shapes
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet
from collector.analyses.headroom.vm import (
    Aggregate,
    Flavor,
    Isolation,
    build_isolation,
    flavor_shapes,
    read_aggregates,
    read_flavors,
    vm_classes,
    vm_eligibility,
)

log = logging.getLogger(__name__)


@dataclass
class LayerState:
    """Everything computed for one (layer, cloud), kept for cross-layer rows and what-if."""

    table: HostTable
    shapes: ShapeSet
    result: SlotResult
    classes: ConsumerClasses | None
    flavors: list[Flavor] = field(default_factory=list)
    isolation: Isolation | None = None


@dataclass
class HeadroomReport:
    headroom: pd.DataFrame
    hosts: pd.DataFrame
    states: dict[tuple[str, str], LayerState]


@dataclass
class _CachedFailures:
    at: datetime
    shapes: tuple[str, ...]
    results: dict[tuple[str, str], FailureResult]


_FAILURE_CACHE: dict[tuple[str, str], _CachedFailures] = {}
"""Last N+1 results per (layer, cloud), reused by the daemon's analysis within headroom.failure_interval."""


def _reusable(
    key: tuple[str, str], names: list[str], settings: Any, now: datetime, reuse: bool
) -> dict[tuple[str, str], FailureResult] | None:
    interval = getattr(settings, "failure_interval", None)
    cached = _FAILURE_CACHE.get(key) if reuse and interval is not None else None
    if (
        cached is None
        or interval is None
        or cached.shapes != tuple(names)
        or not timedelta(0) <= now - cached.at < interval
    ):
        return None
    return cached.results


@dataclass
class _Rows:
    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in HEADROOM.column_names})

    def add(self, **values: Any) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name))


def _settings(config: Any) -> Any:
    from collector.analyses.headroom.settings import HeadroomConfig

    return getattr(config, "headroom", None) or HeadroomConfig()


def compute_headroom(
    frames: Mapping[str, pd.DataFrame], config: Any, now: datetime, *, reuse_failures: bool = False
) -> HeadroomReport:
    """Headroom of every OpenStack cloud and Kubernetes cluster in `frames`.

    `reuse_failures` (the daemon's analysis) lets N+1 results younger than `headroom.failure_interval`
    stand in for a recomputation; what-if and one-off commands always recompute.
    """
    settings = _settings(config)
    rows = _Rows()
    host_parts: list[pd.DataFrame] = []
    states: dict[tuple[str, str], LayerState] = {}
    consumers = frames.get("consumers")
    for cloud, table in build_host_tables(frames, "openstack").items():
        flavors = read_flavors(frames, cloud)
        aggregates = read_aggregates(frames, cloud)
        isolation = build_isolation(table, aggregates, settings.tenant_isolation)
        shapes = flavor_shapes(table, flavors, isolation)
        reused = _reusable(("openstack", cloud), shapes.names, settings, now, reuse_failures)
        classes = vm_classes(table, consumers, flavors, isolation) if settings.n_plus_one and not reused else None
        shapes.requests = widen(shapes.requests, len(table.resources))
        result = slot_matrix(shapes.requests, table, shapes.eligible)
        state = LayerState(table, shapes, result, classes, flavors, isolation)
        states[("openstack", cloud)] = state
        pools: list[tuple[str, str, np.ndarray, bool]] = [
            ("az", str(pool), table.pools == pool, True) for pool in np.unique(table.pools)
        ]
        zone_names = {str(p) for p in np.unique(table.pools)} | {z for z in table.zones if z}
        for uuid in sorted({a for memberships in table.aggregates for a in memberships}):
            aggregate = aggregates.get(uuid)
            if aggregate is not None and (aggregate.zone or aggregate.name in zone_names):
                continue  # an AZ's own aggregate: already reported as the AZ
            mask = np.array([uuid in memberships for memberships in table.aggregates], dtype=bool)
            if aggregate is None and any((mask == (table.pools == p)).all() for p in np.unique(table.pools)):
                continue  # unknown aggregate holding exactly one AZ's hosts: that AZ's own aggregate
            pools.append(("aggregate", aggregate.name if aggregate else uuid, mask, False))
        pools.append(("cloud", cloud, np.ones(table.size, dtype=bool), True))
        _remember(
            ("openstack", cloud),
            state,
            _pool_rows(rows, state, pools, settings, now, reused),
            now,
            reuse_failures and reused is None,
        )
        if settings.tenant_isolation != "off":
            _isolated_rows(rows, state, aggregates, now)
        host_parts.append(_host_rows(state, now))
    for cloud, table in build_host_tables(frames, "kubernetes").items():
        specs = configured_shapes(config)
        names = {s.name for s in specs}
        specs += [s for s in common_shapes(table, consumers, settings.common_shapes) if s.name not in names]
        shapes = pod_shapes(table, specs)
        reused = _reusable(("kubernetes", cloud), shapes.names, settings, now, reuse_failures)
        classes = pod_classes(table, consumers) if settings.n_plus_one and not reused else None
        shapes.requests = widen(shapes.requests, len(table.resources))
        result = slot_matrix(shapes.requests, table, shapes.eligible)
        state = LayerState(table, shapes, result, classes)
        states[("kubernetes", cloud)] = state
        pools = [("node_pool", str(pool), table.pools == pool, True) for pool in np.unique(table.pools)]
        pools.append(("cluster", cloud, np.ones(table.size, dtype=bool), True))
        _remember(
            ("kubernetes", cloud),
            state,
            _pool_rows(rows, state, pools, settings, now, reused),
            now,
            reuse_failures and reused is None,
        )
        host_parts.append(_host_rows(state, now))
    for values in worker_rows(frames, states, config, now):
        rows.add(**values)
    headroom = HEADROOM.empty()
    if rows.columns["layer"]:
        frame = pd.DataFrame(rows.columns)
        frame["timestamp"] = pd.Timestamp(now).as_unit("ns")  # one value: no per-row datetime parsing
        headroom = HEADROOM.coerce(frame)
    host_parts = [p for p in host_parts if len(p)]
    hosts = HEADROOM_HOSTS.coerce(pd.concat(host_parts, ignore_index=True)) if host_parts else HEADROOM_HOSTS.empty()
    return HeadroomReport(headroom, hosts, states)


def _remember(
    key: tuple[str, str], state: LayerState, results: dict[tuple[str, str], FailureResult], now: datetime, store: bool
) -> None:
    if store and results:
        _FAILURE_CACHE[key] = _CachedFailures(now, tuple(state.shapes.names), results)


def _pool_rows(
    rows: _Rows,
    state: LayerState,
    pools: list[tuple[str, str, np.ndarray, bool]],
    settings: Any,
    now: datetime,
    reused: dict[tuple[str, str], FailureResult] | None = None,
) -> dict[tuple[str, str], FailureResult]:
    """Add the rows of every pool; returns the N+1 results computed (or reused), by (pool_kind, pool)."""
    table, shapes, result = state.table, state.shapes, state.result
    results: dict[tuple[str, str], FailureResult] = {}
    if not len(shapes):
        return results
    eligible = shapes.eligible & table.active[None, :]
    per_pool: list[tuple[np.ndarray, FailureResult]] = []
    for kind, name, mask, failure in pools:
        totals, binds = pool_totals(result, shapes.requests, table, mask)
        limits = dominant_limit(result, mask, eligible, table.resources)
        for b in np.flatnonzero(binds):
            limits[b] = _shared_resource(table, shapes.requests[b], mask) or limits[b]
        host_counts = (eligible & mask[None, :]).sum(axis=1)
        after: Any = None
        if failure and reused is not None and (kind, name) in reused:
            last = reused[(kind, name)]  # an older evacuation: never more than fits now
            after = FailureResult(
                np.minimum(last.slots_after, totals), last.domain, last.shortfall, last.shortfall_domain
            )
        elif failure and state.classes is not None:
            spans_zones = len({z for z in table.zones[mask] if z}) >= 2
            if kind in ("cloud", "cluster") and not (settings.failure_domain == "zone" and spans_zones):
                after = _combine(per_pool, totals)
            else:
                after = n_plus_one(table, shapes, result, state.classes, mask, settings.failure_domain)
                if kind in ("az", "node_pool"):
                    per_pool.append((totals, after))
        for s, shape in enumerate(shapes.names):
            rows.add(
                timestamp=now,
                layer=table.layer,
                cloud=table.cloud,
                pool=name,
                pool_kind=kind,
                shape=shape,
                shape_kind=shapes.kind,
                slots=float(totals[s]),
                slots_after_failure=float(after.slots_after[s]) if after is not None else math.nan,
                failure_domain=after.domain[s] if after is not None else None,
                shortfall=float(after.shortfall[s]) if after is not None else math.nan,
                shortfall_domain=after.shortfall_domain if after is not None else None,
                limiting_resource=limits[s],
                hosts=float(host_counts[s]),
            )
        if after is not None:
            results[(kind, name)] = after
    return results


def _isolated_rows(rows: _Rows, state: LayerState, aggregates: Mapping[str, Aggregate], now: datetime) -> None:
    """Headroom of each tenant-isolation aggregate for each of its tenants (rows with `tenant` set).

    Public rows rightly leave out hosts that only some tenants may use; without these rows the capacity
    reserved for them is invisible to everyone. Each tenant's row counts the flavors it may boot
    (public ones and its private ones) on the aggregate's hosts, with the same isolation rules as a
    VM of that project. No N+1: the aggregate's hosts also belong to an AZ that has it.
    """
    table, isolation = state.table, state.isolation
    if isolation is None or not table.size:
        return
    active = table.active
    for uuid, aggregate in sorted(aggregates.items(), key=lambda item: item[1].name):
        if not aggregate.tenants:
            continue
        mask = np.array([uuid in memberships for memberships in table.aggregates], dtype=bool)
        if not mask.any():
            continue
        for tenant in sorted(aggregate.tenants):
            flavors = [f for f in state.flavors if f.constraints.projects is None or tenant in f.constraints.projects]
            if not flavors:
                continue
            constraints = [replace(f.constraints, projects=frozenset([tenant])) for f in flavors]
            eligible = vm_eligibility(table, constraints, isolation) & mask[None, :]
            requests = widen(table.request_matrix([f.requests for f in flavors]), len(table.resources))
            result = slot_matrix(requests, table, eligible)
            totals, binds = pool_totals(result, requests, table, mask)
            usable = eligible & active[None, :]
            limits = dominant_limit(result, mask, usable, table.resources)
            for b in np.flatnonzero(binds):
                limits[b] = _shared_resource(table, requests[b], mask) or limits[b]
            counts = usable.sum(axis=1)
            for s, flavor in enumerate(flavors):
                rows.add(
                    timestamp=now,
                    layer=table.layer,
                    cloud=table.cloud,
                    pool=aggregate.name,
                    pool_kind="isolated",
                    shape=flavor.name,
                    shape_kind="flavor",
                    slots=float(totals[s]),
                    slots_after_failure=math.nan,
                    failure_domain=None,
                    shortfall=math.nan,
                    limiting_resource=limits[s],
                    hosts=float(counts[s]),
                    tenant=tenant,
                )


def _combine(per_pool: list[tuple[np.ndarray, FailureResult]], totals: np.ndarray) -> FailureResult:
    """Cloud / cluster N+1 from its pools': per shape the failure that costs it most, wherever it is.

    Evacuated VMs stay in their AZ and pods in their node pool (where their nodeSelector sends them),
    so losing a host costs the cloud exactly what it costs the host's pool: each shape's N+1 is the
    cloud's slots less its largest loss over all pools' failures (ties to the first name), and the
    shortfall is the largest of the pools' shortfalls. A pool with a shortfall leaves the cloud 0 slots,
    as it leaves itself.
    """
    s_count = len(totals)
    slots_after = totals.astype(float).copy()
    domain: list[str | None] = [None] * s_count
    best_loss = np.full(s_count, -np.inf)
    shortfall, shortfall_domain = 0.0, None
    evaluated = 0
    for pool_totals_, result in per_pool:
        evaluated += result.evaluated
        loss = pool_totals_ - result.slots_after
        if len(result.shortfall) and result.shortfall[0] > 0:
            loss = totals.astype(float)  # a failure that strands consumers leaves no room, in the cloud either
        for s in range(s_count):
            name = result.domain[s]
            if name is None:
                continue
            current = domain[s]
            if current is None or loss[s] > best_loss[s] or (loss[s] == best_loss[s] and name < current):
                domain[s], best_loss[s] = name, loss[s]
                slots_after[s] = totals[s] - loss[s]
        pool_shortfall = float(result.shortfall[0]) if s_count else 0.0
        if result.shortfall_domain is not None and (
            pool_shortfall > shortfall
            or (
                pool_shortfall == shortfall
                and shortfall_domain is not None
                and result.shortfall_domain < shortfall_domain
            )
        ):
            shortfall, shortfall_domain = pool_shortfall, result.shortfall_domain
    return FailureResult(np.maximum(slots_after, 0.0), domain, np.full(s_count, shortfall), shortfall_domain, evaluated)


def _shared_resource(table: HostTable, request: np.ndarray, mask: np.ndarray) -> str | None:
    for r, amount in enumerate(request):
        if amount > 0 and table.shared[mask, r].any():
            return table.resources[r]
    return None


def _host_rows(state: LayerState, now: datetime) -> pd.DataFrame:
    table, shapes, result = state.table, state.shapes, state.result
    if not len(shapes) or not table.size:
        return pd.DataFrame()
    keep = shapes.eligible & table.active[None, :] & np.isfinite(result.slots)
    s_index, h_index = np.nonzero(keep)
    limiting = result.limiting[s_index, h_index]
    resources = np.array([*table.resources, None], dtype=object)
    return pd.DataFrame(
        {
            "timestamp": pd.Timestamp(now).as_unit("ns"),
            "layer": table.layer,
            "cloud": table.cloud,
            "pool": table.pools[h_index],
            "host": table.names[h_index],
            "shape": np.array(shapes.names, dtype=object)[s_index],
            "slots": result.slots[s_index, h_index],
            "limiting_resource": resources[np.where(limiting >= 0, limiting, len(table.resources))],
        }
    )

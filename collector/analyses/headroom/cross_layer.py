"""Kubernetes on OpenStack: how many more worker VMs the cloud can take, and the pod slots they add.

A cluster's nodes are Nova servers when their providerID names one (`hosts.nova_server_id` =
`consumers.id` of the OpenStack layer). The cluster's worker flavor is the most common flavor of
those servers, its project their most common project (tenant isolation applies to it), and its
OpenStack pool the AZs they run in. The new workers are counted like any flavor there.

A new worker is modelled on the existing workers of that flavor: the median allocatable of those
nodes, less the median of what DaemonSet and static pods hold on each (they come with every new
node). The pod slots a new worker adds per shape are counted on that template node, for shapes that
fit on at least one existing worker (taints and nodeSelector).

The rows live in a pool named `new:<flavor>` of kind node_pool (a node pool that does not exist yet):
one row of shape `<flavor>` (worker VMs that fit) and one row per pod shape (pod slots they add),
all with shape_kind `worker_vm`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.model import EPSILON, consumer_requests, dominant_limit, pool_totals, slot_matrix
from collector.analyses.headroom.pods import is_pinned
from collector.analyses.headroom.vm import VmConstraints, vm_eligibility


def _mode(values: list[str]) -> str | None:
    values = [v for v in values if v]
    return Counter(values).most_common(1)[0][0] if values else None


def worker_rows(
    frames: Mapping[str, pd.DataFrame], states: Mapping[tuple[str, str], Any], config: Any, now: datetime
) -> Iterator[dict[str, Any]]:
    hosts = frames.get("hosts")
    consumers = frames.get("consumers")
    if hosts is None or consumers is None or hosts.empty or consumers.empty:
        return
    nodes = hosts[(hosts["layer"] == "kubernetes") & hosts["nova_server_id"].notna()]
    servers = consumers[consumers["layer"] == "openstack"].drop_duplicates("id").set_index("id", drop=False)
    for cluster in sorted(set(nodes["cloud"].astype(str))):
        k8s = states.get(("kubernetes", cluster))
        if k8s is None:
            continue
        cluster_nodes = nodes[nodes["cloud"] == cluster]
        node_server = dict(
            zip(cluster_nodes["host"].astype(str), cluster_nodes["nova_server_id"].astype(str), strict=True)
        )
        known = [sid for sid in node_server.values() if sid in servers.index]
        if not known:
            continue
        workers = servers.loc[known]
        flavor = _mode(workers["flavor"].dropna().astype(str).tolist())
        os_cloud = _mode(workers["cloud"].astype(str).tolist())
        if flavor is None or os_cloud is None:
            continue
        openstack = states.get(("openstack", os_cloud))
        if openstack is None:
            continue
        of_flavor = workers[(workers["flavor"] == flavor) & (workers["cloud"] == os_cloud)]
        yield from _rows_for(cluster, flavor, of_flavor, node_server, openstack, k8s, frames, now)


def _rows_for(
    cluster: str,
    flavor: str,
    servers: pd.DataFrame,
    node_server: Mapping[str, str],
    openstack: Any,
    k8s: Any,
    frames: Mapping[str, pd.DataFrame],
    now: datetime,
) -> Iterator[dict[str, Any]]:
    table = openstack.table
    known = {f.name: f for f in openstack.flavors}
    base = known.get(flavor)
    requests = base.requests if base else consumer_requests(servers.iloc[0].to_dict(), "openstack")
    constraints = base.constraints if base else VmConstraints()
    project = _mode(servers["project"].dropna().astype(str).tolist())
    constraints = VmConstraints(
        constraints.required,
        constraints.forbidden,
        constraints.member_of,
        constraints.zone,
        frozenset([project]) if project else None,
    )
    request = table.request_matrix([requests])
    eligible = vm_eligibility(table, [constraints], openstack.isolation)
    result = slot_matrix(request, table, eligible)
    mask = np.isin(table.pools, servers["pool"].astype(str).unique())
    totals, _ = pool_totals(result, request, table, mask)
    vm_slots = float(totals[0])
    vm_limit = dominant_limit(result, mask, eligible & table.active[None, :], table.resources)[0]
    common = {
        "timestamp": now,
        "layer": "kubernetes",
        "cloud": cluster,
        "pool": f"new:{flavor}",
        "pool_kind": "node_pool",
        "shape_kind": "worker_vm",
        "slots_after_failure": math.nan,
        "failure_domain": None,
        "shortfall": math.nan,
    }
    yield {
        **common,
        "shape": flavor,
        "slots": vm_slots,
        "limiting_resource": vm_limit,
        "hosts": float((eligible[0] & table.active & mask).sum()),
    }
    worker_ids = set(servers["id"].astype(str))
    position = k8s.table.index()
    worker_nodes = np.array(
        sorted(position[n] for n, sid in node_server.items() if sid in worker_ids and n in position), dtype=np.int64
    )
    shapes = k8s.shapes
    if not len(worker_nodes) or not len(shapes):
        return
    free, resources = _template_free(k8s.table, worker_nodes, frames.get("consumers"))
    fits_somewhere = shapes.eligible[:, worker_nodes].any(axis=1)
    for s, shape in enumerate(shapes.names):
        q = shapes.requests[s][: len(resources)]
        asked = np.flatnonzero(q > 0)
        per_node, limit = 0.0, None
        if fits_somewhere[s] and len(asked):
            counts = np.floor(free[asked] / q[asked] + EPSILON)
            per_node = float(max(counts.min(), 0.0))
            limit = resources[int(asked[np.argmin(counts)])]
        yield {
            **common,
            "shape": shape,
            "slots": vm_slots * per_node,
            "limiting_resource": limit if vm_slots > 0 else vm_limit,
            "hosts": vm_slots,
        }


def _template_free(table: Any, workers: np.ndarray, consumers: pd.DataFrame | None) -> tuple[np.ndarray, list[str]]:
    """Free capacity of a fresh worker: median allocatable less the median per-node pinned-pod load."""
    resources = list(table.resources)
    allocatable = np.median(np.where(table.present[workers], table.allocatable[workers], 0.0), axis=0)
    pinned = np.zeros((len(workers), len(resources)))
    if consumers is not None and len(consumers):
        names = {str(table.names[h]): i for i, h in enumerate(workers)}
        frame = consumers[
            (consumers["layer"] == "kubernetes")
            & (consumers["cloud"] == table.cloud)
            & consumers["holds_capacity"].astype(bool)
            & consumers["host"].astype(str).isin(names)
        ]
        index = {r: j for j, r in enumerate(resources)}
        for record in frame.to_dict("records"):
            if not is_pinned(record):
                continue
            i = names[str(record["host"])]
            for resource, amount in consumer_requests(record, "kubernetes").items():
                j = index.get(resource)
                if j is not None:
                    pinned[i, j] += amount
    return np.clip(allocatable - np.median(pinned, axis=0), 0.0, None), resources

"""Frames of one Kubernetes poll: `capacity` (node x resource), `consumers` (pods), `hosts` (nodes).

Pure functions of the decoded tables and the kubelet usage, so they are tested without a cluster.
Conventions (docs/schema.md): base units; `reserved` = capacity - allocatable (what the kubelet keeps
for the system and eviction thresholds), allocation ratio 1; `allocated` = the effective requests of
the pods holding capacity on the node; `used` = kubelet usage (cpu, memory) or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from collector.contract.quantity import NANO
from collector.contract.schema import CAPACITY, CONSUMERS, HOSTS, FrameSet
from collector.sources.kubernetes.listing import NodeTable, PodTable, parse_provider_id
from collector.sources.kubernetes.settings import NodeLabelKeys

__all__ = ["FrameContext", "PodUsage", "build_frames", "holds_capacity", "node_pool"]

NAN = math.nan
DEFAULT_POOL = "default"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
# Older clusters (and some cloud providers) still set only the beta labels.
_LEGACY_LABELS = {
    "topology.kubernetes.io/zone": "failure-domain.beta.kubernetes.io/zone",
    "node.kubernetes.io/instance-type": "beta.kubernetes.io/instance-type",
}


@dataclass(frozen=True)
class FrameContext:
    now: datetime
    source: str
    cluster: str
    labels: NodeLabelKeys


@dataclass(frozen=True)
class PodUsage:
    """Kubelet usage as three columns aligned with the pod table (NaN where unknown): what the source
    builds, so no per-pod dict or tuple is made between the scrapes and the frame."""

    cpu: Sequence[float]
    memory: Sequence[float]
    cpu_seconds: Sequence[float]


def holds_capacity(phase: str, node: str | None) -> bool:
    """Finished pods hold nothing; a pod not bound to a node is demand, not allocation."""
    return node is not None and phase not in FINISHED_PHASES


def node_pool(labels: Mapping[str, str], keys: Sequence[str]) -> str:
    """The first configured pool label present on the node, else "default"."""
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return DEFAULT_POOL


def _label(labels: Mapping[str, str], key: str) -> str | None:
    value = labels.get(key)
    if value is None and key in _LEGACY_LABELS:
        value = labels.get(_LEGACY_LABELS[key])
    return value or None


def _float(nanos: int | None) -> float:
    """Nano-units -> base units (int / int true division: correctly rounded)."""
    return NAN if nanos is None else nanos / NANO


def build_frames(
    ctx: FrameContext,
    nodes: NodeTable,
    pods: PodTable,
    node_usage: Mapping[str, tuple[float, float]],
    pod_usage: Mapping[str, tuple[float, float, float]] | PodUsage,
) -> FrameSet:
    """node_usage: node -> (cpu cores, memory bytes); pod_usage: pod uid -> (cores, bytes, cpu seconds), or
    the same as columns aligned with `pods` (`PodUsage`).

    Missing usage is NaN. Returns validated `capacity`, `consumers` and `hosts` frames.
    """
    pool_keys = ctx.labels.pool
    pools = [node_pool(labels, pool_keys) for labels in nodes.labels]
    node_index = {name: i for i, name in enumerate(nodes.name)}

    # allocated: exact sums of the effective requests of the pods holding capacity on each node
    allocated: list[dict[str, int]] = [{} for _ in nodes.name]
    pod_count = [0] * len(nodes.name)
    for phase, node, requests in zip(pods.phase, pods.node, pods.requests, strict=True):
        if not holds_capacity(phase, node):
            continue
        index = node_index.get(node)  # type: ignore[arg-type]
        if index is None:
            continue  # bound to a node that is gone (or was skipped): counted on no node
        pod_count[index] += 1
        sums = allocated[index]
        for resource, amount in requests.items():
            sums[resource] = sums.get(resource, 0) + amount

    capacity_columns = _capacity_columns(ctx, nodes, pools, allocated, pod_count, node_usage)
    frames: FrameSet = {
        "capacity": CAPACITY.build(capacity_columns),
        "hosts": _hosts(ctx, nodes, pools),
        "consumers": _consumers(ctx, nodes, pods, pools, node_index, pod_usage),
    }
    return frames


def _capacity_columns(
    ctx: FrameContext,
    nodes: NodeTable,
    pools: list[str],
    allocated: list[dict[str, int]],
    pod_count: list[int],
    node_usage: Mapping[str, tuple[float, float]],
) -> dict[str, list[Any]]:
    host: list[str] = []
    pool: list[str] = []
    resource: list[str] = []
    capacity: list[float] = []
    reserved: list[float] = []
    allocatable: list[float] = []
    alloc: list[float] = []
    used: list[float] = []
    for i, name in enumerate(nodes.name):
        node_capacity, node_allocatable = nodes.capacity[i], nodes.allocatable[i]
        usage = node_usage.get(name)
        for res in sorted(node_capacity.keys() | node_allocatable.keys()):
            # res is in at least one of the two, so the fallback 0 is never used
            free = node_allocatable.get(res, node_capacity.get(res, 0))
            cap = node_capacity.get(res, free)
            cap = free if cap < free else cap  # allocatable never exceeds capacity
            host.append(name)
            pool.append(pools[i])
            resource.append(res)
            capacity.append(cap / NANO)
            reserved.append((cap - free) / NANO)
            allocatable.append(free / NANO)
            alloc.append(float(pod_count[i]) if res == "pods" else allocated[i].get(res, 0) / NANO)
            if usage is not None and res == "cpu":
                used.append(usage[0])
            elif usage is not None and res == "memory":
                used.append(usage[1])
            else:
                used.append(NAN)
    n = len(host)
    return {
        "timestamp": _constant_time(ctx.now, n),
        "source": [ctx.source] * n,
        "layer": ["kubernetes"] * n,
        "cloud": [ctx.cluster] * n,
        "pool": pool,
        "host": host,
        "scope": ["host"] * n,
        "resource": resource,
        "capacity": capacity,
        "reserved": reserved,
        "allocation_ratio": [1.0] * n,
        "allocatable": allocatable,
        "allocated": alloc,
        "used": used,
        "min_unit": [NAN] * n,
        "max_unit": [NAN] * n,
        "step_size": [NAN] * n,
    }


def _hosts(ctx: FrameContext, nodes: NodeTable, pools: list[str]) -> pd.DataFrame:
    n = len(nodes)
    keys = ctx.labels
    columns: dict[str, Sequence[Any]] = {
        "timestamp": [ctx.now] * n,
        "source": [ctx.source] * n,
        "layer": ["kubernetes"] * n,
        "cloud": [ctx.cluster] * n,
        "pool": pools,
        "host": nodes.name,
        "host_id": nodes.uid,
        "schedulable": [not flag for flag in nodes.unschedulable],
        "ready": nodes.ready,
        "zone": [_label(labels, keys.zone) for labels in nodes.labels],
        "aggregates": [None] * n,
        "traits": [sorted(f"{k}={v}" for k, v in labels.items()) for labels in nodes.labels],
        "taints": nodes.taints,
        "instance_type": [_label(labels, keys.instance_type) for labels in nodes.labels],
        "nova_server_id": [parse_provider_id(pid) for pid in nodes.provider_id],
        "hypervisor": [None] * n,
    }
    return HOSTS.build(columns)


def _consumers(
    ctx: FrameContext,
    nodes: NodeTable,
    pods: PodTable,
    pools: list[str],
    node_index: Mapping[str, int],
    pod_usage: Mapping[str, tuple[float, float, float]] | PodUsage,
) -> pd.DataFrame:
    """Column-wise: one comprehension per column, and the request/limit figures computed once per
    distinct (requests, limits) pair (the tables share those maps between the pods of a shape), so a
    pod costs a few lookups, not a dict of its own."""
    n = len(pods)
    pool_keys = ctx.labels.pool
    positions = [None if node is None else node_index.get(node) for node in pods.node]
    pool = [
        pools[i] if i is not None else node_pool(selector or {}, pool_keys)  # unscheduled: the pool it asks for
        for i, selector in zip(positions, pods.node_selector, strict=True)
    ]
    provider = [None if i is None else nodes.provider_id[i] for i in positions]
    holds = [
        node is not None and phase not in FINISHED_PHASES for phase, node in zip(pods.phase, pods.node, strict=True)
    ]
    lower = {phase: phase.lower() for phase in set(pods.phase)}

    figures: dict[tuple[int, int], tuple[float, float, float, float, dict[str, float]]] = {}

    def shape_figures(
        requests: dict[str, int], limits: dict[str, int]
    ) -> tuple[float, float, float, float, dict[str, float]]:
        key = (id(requests), id(limits))
        found = figures.get(key)
        if found is None:
            found = figures[key] = (
                requests.get("cpu", 0) / NANO,
                requests.get("memory", 0) / NANO,
                _float(limits.get("cpu")),
                _float(limits.get("memory")),
                {name: amount / NANO for name, amount in requests.items()},
            )
        return found

    per_pod = [shape_figures(r, lim) for r, lim in zip(pods.requests, pods.limits, strict=True)]
    cpu, memory, cpu_limit, memory_limit, resources = _columns(per_pod, 5)
    if isinstance(pod_usage, PodUsage):
        cpu_used, memory_used, cpu_seconds = pod_usage.cpu, pod_usage.memory, pod_usage.cpu_seconds
    else:
        nan_usage = (NAN, NAN, NAN)
        cpu_used, memory_used, cpu_seconds = _columns([pod_usage.get(uid, nan_usage) for uid in pods.uid], 3)
    names = [f"{ns}/{name}" for ns, name in zip(pods.namespace, pods.name, strict=True)]
    return CONSUMERS.build(
        {
            "timestamp": _constant_time(ctx.now, n),
            "source": [ctx.source] * n,
            "layer": ["kubernetes"] * n,
            "cloud": [ctx.cluster] * n,
            "pool": pool,
            "host": pods.node,
            "id": pods.uid,
            "name": names,
            "state": [lower[phase] for phase in pods.phase],
            "holds_capacity": holds,
            "project": pods.namespace,
            "flavor": pods.shape,
            "cpu": cpu,
            "memory": memory,
            "disk": np.full(n, NAN),
            "resources": resources,
            "cpu_limit": cpu_limit,
            "memory_limit": memory_limit,
            "cpu_used": cpu_used,
            "memory_used": memory_used,
            "cpu_time_seconds": cpu_seconds,
            "nova_instance_uuid": [None] * n,
            "libvirt_domain_uuid": [None] * n,
            "k8s_provider_id": provider,
        }
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of equal-width tuples -> `width` column lists (transposed in C by zip)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def _constant_time(now: datetime, n: int) -> pd.DatetimeIndex:
    """`n` copies of `now` as a UTC datetime64 column (a list of n datetime objects costs ~1 us each to convert)."""
    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return pd.DatetimeIndex([stamp]).repeat(n)

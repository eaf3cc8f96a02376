"""Builders of contract-conforming frames for the history tests, the crash writer and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import numpy as np
import pandas as pd

from collector.contract.schema import CAPACITY, CONSUMERS

RESOURCES = {"cpu": 64.0, "memory": 512 * 2.0**30, "disk": 4 * 2.0**40, "pods": 110.0}


def capacity_frame(
    when: datetime,
    *,
    source: str = "src",
    layer: str = "hypervisor",
    cloud: str = "c1",
    pools: Sequence[str] = ("az1",),
    hosts_per_pool: int = 4,
    resources: Sequence[str] = ("cpu", "memory"),
    allocated: float | np.ndarray = 0.5,
    used: float | np.ndarray = 0.25,
    host_prefix: str = "h",
) -> pd.DataFrame:
    """One row per (pool, host, resource); allocated/used are fractions of capacity (scalar or per row, NaN ok).

    The labels are built and validated once per shape; each call only sets the time and the values.
    """
    template = _capacity_template(source, layer, cloud, tuple(pools), hosts_per_pool, tuple(resources), host_prefix)
    capacity = template["capacity"].to_numpy()
    n = len(template)
    return template.assign(
        timestamp=pd.Timestamp(when).as_unit("ns"),
        allocated=capacity * np.broadcast_to(allocated, n),
        used=capacity * np.broadcast_to(used, n),
    )


@lru_cache(maxsize=64)
def _capacity_template(
    source: str, layer: str, cloud: str, pools: tuple[str, ...], hosts_per_pool: int, resources: tuple[str, ...],
    host_prefix: str,
) -> pd.DataFrame:  # fmt: skip
    when = datetime(2026, 1, 1)
    allocated, used = 0.5, 0.25
    pool_col, host_col, res_col, cap = [], [], [], []
    for pool in pools:
        for h in range(hosts_per_pool):
            for resource in resources:
                pool_col.append(pool)
                host_col.append(f"{host_prefix}{pool}-{h:04d}")
                res_col.append(resource)
                cap.append(RESOURCES[resource])
    capacity = np.asarray(cap)
    n = len(capacity)
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp(when).as_unit("ns"),
            "source": source,
            "layer": layer,
            "cloud": cloud,
            "pool": pool_col,
            "host": host_col,
            "scope": "host",
            "resource": res_col,
            "capacity": capacity,
            "reserved": np.zeros(n),
            "allocation_ratio": np.ones(n),
            "allocatable": capacity,
            "allocated": capacity * np.broadcast_to(allocated, n),
            "used": capacity * np.broadcast_to(used, n),
        }
    )
    return CAPACITY.coerce(frame)


def consumers_frame(
    when: datetime,
    *,
    source: str = "src",
    layer: str = "hypervisor",
    cloud: str = "c1",
    pool: str = "az1",
    count: int = 10,
    cpu_used: float | np.ndarray = 0.5,
    memory_used: float | np.ndarray = 2.0**30,
    hosts: int = 4,
    projects: int = 3,
) -> pd.DataFrame:
    """`count` running VMs/pods spread over hosts and projects, with the given usage (scalar or per row)."""
    template = _consumers_template(source, layer, cloud, pool, count, hosts, projects)
    return template.assign(
        timestamp=pd.Timestamp(when).as_unit("ns"),
        cpu_used=np.broadcast_to(cpu_used, count).astype(float),
        memory_used=np.broadcast_to(memory_used, count).astype(float),
    )


@lru_cache(maxsize=64)
def _consumers_template(
    source: str, layer: str, cloud: str, pool: str, count: int, hosts: int, projects: int
) -> pd.DataFrame:
    when, cpu_used, memory_used = datetime(2026, 1, 1), 0.5, 2.0**30
    i = np.arange(count)
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp(when).as_unit("ns"),
            "source": source,
            "layer": layer,
            "cloud": cloud,
            "pool": pool,
            "host": [f"h{pool}-{k % hosts:04d}" for k in i],
            "id": [f"{source}-vm-{k:06d}" for k in i],
            "name": [f"vm{k}" for k in i],
            "state": "running",
            "holds_capacity": True,
            "project": [f"project-{k % projects}" for k in i],
            "flavor": np.where(i % 2 == 0, "m1.small", "m1.large"),
            "cpu": np.where(i % 2 == 0, 1.0, 4.0),
            "memory": np.where(i % 2 == 0, 2.0**31, 2.0**33),
            "cpu_used": np.broadcast_to(cpu_used, count).astype(float),
            "memory_used": np.broadcast_to(memory_used, count).astype(float),
        }
    )
    return CONSUMERS.coerce(frame)

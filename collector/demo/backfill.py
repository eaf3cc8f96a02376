"""Eight weeks of past pool history for the demo estate, so forecasts have something to work on.

The past is derived from the same model the demo serves: a server counts from its `created_at`
on, so allocation steps up as it did when the servers were booted; measured use follows a daily and
weekly rhythm on top of that (busy weekdays, quiet nights). Rows use the source names the live
demo sources have, so the live polls continue the same series.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.demo.model import CLOUD, MIB, Estate, Host

GIB = 1024**3


def _rhythm(times: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Utilization multiplier in [0.55, 1.15]: daily peak mid-afternoon, quieter weekends, some noise."""
    rng = np.random.default_rng(seed)
    hours = times.hour.to_numpy() + times.minute.to_numpy() / 60
    daily = 0.5 + 0.5 * np.sin((hours - 9) / 24 * 2 * np.pi)
    weekend = np.where(times.dayofweek.to_numpy() >= 5, 0.75, 1.0)
    rhythm: np.ndarray = np.clip((0.65 + 0.4 * daily) * weekend + rng.normal(0, 0.03, len(times)), 0.3, 1.2)
    return rhythm


def backfill_rows(estate: Estate, weeks: int = 8, step: timedelta = timedelta(hours=1)) -> pd.DataFrame:
    """Pool rows (columns of History.pool_series plus `source`) for the hypervisor and OpenStack layers."""
    end = estate.now - step
    times = pd.date_range(end=end, periods=int(timedelta(weeks=weeks) / step), freq=step, tz="UTC")
    flavors = {f.name: f for f in estate.flavors}
    created = np.array([s.created_at.timestamp() for s in estate.servers])
    t = times.asi8 // 10**9
    alive = created[None, :] <= t[:, None]  # time x server
    rows: list[dict[str, Any]] = []

    def add(
        source: str,
        layer: str,
        pool: str,
        resource: str,
        capacity: float,
        allocatable: float,
        allocated: np.ndarray,
        used: np.ndarray | None,
        hosts: int,
    ) -> None:
        for i, ts in enumerate(times):
            rows.append(
                {
                    "timestamp": ts,
                    "source": source,
                    "layer": layer,
                    "cloud": CLOUD,
                    "pool": pool,
                    "resource": resource,
                    "capacity": capacity,
                    "allocatable": allocatable,
                    "allocated": float(allocated[i]),
                    "used": float(used[i]) if used is not None else np.nan,
                    "hosts": hosts,
                }
            )

    # hypervisor layer: one source per host; running and paused domains hold CPU and memory
    for index, host in enumerate(estate.hosts):
        on_host = np.array([s.host == host.name and s.status != "SHUTOFF" for s in estate.servers])
        vcpus = np.array([flavors[s.flavor].vcpus for s in estate.servers], dtype=float)
        ram = np.array([flavors[s.flavor].ram_mb * MIB for s in estate.servers], dtype=float)
        live = alive & on_host[None, :]
        cpu_alloc = live @ vcpus
        mem_alloc = live @ ram
        rhythm = _rhythm(times, seed=index)
        add(
            f"kvm-{host.name}",
            "hypervisor",
            host.zone,
            "cpu",
            host.cpus,
            host.cpus,
            cpu_alloc,
            np.minimum(cpu_alloc * 0.3 * rhythm, host.cpus),
            1,
        )
        add(
            f"kvm-{host.name}",
            "hypervisor",
            host.zone,
            "memory",
            host.memory_bytes,
            host.memory_bytes,
            mem_alloc,
            None,
            1,
        )

    # OpenStack layer: Placement's view per AZ; every server holds its allocation, shut off or not
    by_zone: dict[str, list[Host]] = defaultdict(list)
    for host in estate.hosts:
        by_zone[host.zone].append(host)
    for zone, hosts in by_zone.items():
        names = {h.name for h in hosts}
        in_zone = np.array([s.host in names for s in estate.servers])
        live = alive & in_zone[None, :]
        dedicated = np.array(
            [flavors[s.flavor].extra_specs.get("hw:cpu_policy") == "dedicated" for s in estate.servers]
        )
        vcpus = np.array([flavors[s.flavor].vcpus for s in estate.servers], dtype=float)
        ram = np.array([flavors[s.flavor].ram_mb * MIB for s in estate.servers], dtype=float)
        enabled = hosts  # Placement keeps a disabled host's inventory; headroom excludes it, not the totals
        vcpu_total = sum(h.vcpus for h in enabled)
        vcpu_allocatable = sum((h.vcpus - h.reserved_cpus) * h.cpu_allocation_ratio for h in enabled)
        pcpu_total = sum(h.pcpus for h in enabled)
        mem_total = sum(h.memory_bytes for h in enabled)
        mem_reserved = sum(h.reserved_memory_bytes for h in enabled)
        add(
            CLOUD,
            "openstack",
            zone,
            "vcpu",
            vcpu_total,
            vcpu_allocatable,
            live @ (vcpus * ~dedicated),
            None,
            len(hosts),
        )
        if pcpu_total:
            add(CLOUD, "openstack", zone, "pcpu", pcpu_total, pcpu_total, live @ (vcpus * dedicated), None, len(hosts))
        add(CLOUD, "openstack", zone, "memory", mem_total, mem_total - mem_reserved, live @ ram, None, len(hosts))
    return pd.DataFrame(rows)


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) per consumer, so each VM or workload keeps its character run to run."""
    return (int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 10_000) / 10_000


def usage_polls(
    consumers: pd.DataFrame, now: pd.Timestamp, days: dict[str, int]
) -> Iterator[tuple[str, datetime, pd.DataFrame]]:
    """Past polls of per-consumer usage, hour by hour: (source, when, consumers frame with usage set).

    Only layers that measure usage in production get it: libvirt domains (CPU) and pods (CPU and
    working set). About one VM in eight idles near zero; pod workloads use a workload-specific share of
    their requests, some far below it — what the reclaimable analysis is there to find.
    """
    live = consumers[consumers["holds_capacity"] & consumers["layer"].isin(["hypervisor", "kubernetes"])]
    if live.empty:
        return
    live = live[live["cpu"].fillna(0) > 0].reset_index(drop=True)
    key = np.where(
        live["layer"] == "kubernetes",
        live["project"].astype(str) + "/" + live["flavor"].astype(str),
        live["id"].astype(str),
    )
    share = np.array([_unit_hash(k) for k in key])
    is_vm = (live["layer"] == "hypervisor").to_numpy()
    cpu_share = np.where(is_vm, np.where(share < 0.125, 0.004, 0.1 + 0.5 * share), 0.08 + 0.6 * share)
    memory_share = 0.35 + 0.5 * share
    requested_cpu = live["cpu"].to_numpy(dtype=float)
    requested_memory = live["memory"].to_numpy(dtype=float, na_value=np.nan)
    for layer, layer_days in days.items():
        rows = (live["layer"] == layer).to_numpy()
        if not rows.any():
            continue
        times = pd.date_range(
            end=now.floor("h") - pd.Timedelta(minutes=30), periods=layer_days * 24, freq="h", tz="UTC"
        )
        rhythm = _rhythm(times, seed=len(layer))
        for position, when in enumerate(times):
            frame = live[rows].copy()
            frame["timestamp"] = when
            frame["cpu_used"] = requested_cpu[rows] * cpu_share[rows] * rhythm[position]
            if layer == "kubernetes":
                frame["memory_used"] = requested_memory[rows] * memory_share[rows]
            for source, part in frame.groupby("source", sort=False):
                yield str(source), when.to_pydatetime(), part.reset_index(drop=True)


def cluster_rows(capacity: pd.DataFrame, now: pd.Timestamp, weeks: int = 8) -> pd.DataFrame:
    """Eight weeks of Kubernetes pool totals ending at what the cluster reports now.

    Requests grew from about 60 % of today's over the period (teams onboarding in steps); usage follows
    the daily rhythm under the requests. Capacity is today's: the nodes have not changed.
    """
    kube = capacity[(capacity["layer"] == "kubernetes") & (capacity["scope"] == "host")]
    if kube.empty:
        return pd.DataFrame()
    totals = kube.groupby(["source", "cloud", "pool", "resource"], as_index=False).agg(
        capacity=("capacity", "sum"),
        allocatable=("allocatable", "sum"),
        allocated=("allocated", "sum"),
        used=("used", lambda v: v.sum(min_count=1)),
        hosts=("host", "nunique"),
    )
    times = pd.date_range(end=now.floor("h") - pd.Timedelta(hours=1), periods=weeks * 7 * 24, freq="h", tz="UTC")
    progress = np.linspace(0.0, 1.0, len(times))
    steps = 0.6 + 0.4 * np.floor(progress * 8) / 8  # onboarding in weekly steps
    frames = []
    for index, row in enumerate(totals.itertuples(index=False)):
        allocated = row.allocated * steps
        used = (
            allocated * 0.45 * _rhythm(times, seed=100 + index)
            if row.resource in ("cpu", "memory")
            else np.full(len(times), np.nan)
        )
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": times,
                    "source": row.source,
                    "layer": "kubernetes",
                    "cloud": row.cloud,
                    "pool": row.pool,
                    "resource": row.resource,
                    "capacity": row.capacity,
                    "allocatable": row.allocatable,
                    "allocated": allocated,
                    "used": used,
                    "hosts": row.hosts,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)

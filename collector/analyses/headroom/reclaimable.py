"""Reclaimable capacity: what idle VMs and over-requesting pods hold but do not need.

* An OpenStack VM is idle when, over `idle_window`, the 95th percentile of its hourly mean CPU use
  stays at or below `idle_cpu_threshold` cores. Its whole allocation (vCPUs, memory, disk, ...) could
  be won back. VM usage is read from the OpenStack layer, or from the hypervisor layer's domain of the
  same id (a libvirt domain uuid is the Nova server id).
* A pod's need follows KRR's `simple` strategy, per workload (namespace and owner, since pods come
  and go with rollouts): CPU = the `reclaim_cpu_percentile` of the hourly CPU maxima, memory = the
  maximum working set x `reclaim_memory_margin`, never below the floors. What a pod requests above
  that need is reclaimable.

Only consumers whose usage covers `min_coverage` of the window are judged: a VM booted yesterday
or a workload without metrics is not called idle. Amounts are summed per pool and resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.frames import RECLAIMABLE
from collector.analyses.headroom.model import consumer_requests

IDLE_PERCENTILE = 95.0


def _hours(window: Any) -> float:
    return max(float(window.total_seconds()) / 3600.0, 1.0)


def reclaimable_frame(frames: Mapping[str, pd.DataFrame], history: Any, settings: Any, now: datetime) -> pd.DataFrame:
    """The `reclaimable` frame (empty without history or consumers)."""
    consumers = frames.get("consumers")
    if history is None or consumers is None or consumers.empty:
        return RECLAIMABLE.empty()
    consumers = consumers[consumers["holds_capacity"].astype(bool)]
    parts: list[pd.DataFrame] = []
    vms = consumers[consumers["layer"] == "openstack"]
    if len(vms):
        # VM usage may come from the hypervisor layer, whose `cloud` is the libvirt source's estate label.
        usage = history.consumer_usage(layer=["openstack", "hypervisor"], start=now - settings.idle_window, end=now)
        parts.append(idle_vms(vms, usage, settings, now))
    pods = consumers[consumers["layer"] == "kubernetes"]
    for cluster in sorted(set(pods["cloud"].astype(str))):  # one cluster's usage in memory at a time
        usage = history.consumer_usage(layer="kubernetes", cloud=cluster, start=now - settings.reclaim_window, end=now)
        parts.append(overrequested_pods(pods[pods["cloud"] == cluster], usage, settings))
    parts = [p for p in parts if len(p)]
    if not parts:
        return RECLAIMABLE.empty()
    rows = pd.concat(parts, ignore_index=True)
    summed = rows.groupby(["layer", "cloud", "pool", "resource"], as_index=False).agg(
        amount=("amount", "sum"), consumers=("id", "nunique")
    )
    summed = summed[summed["amount"] > 0]
    summed.insert(0, "timestamp", pd.Timestamp(now).as_unit("ns"))
    return RECLAIMABLE.build(summed.to_dict("list"))


def idle_vms(vms: pd.DataFrame, usage: pd.DataFrame, settings: Any, now: datetime) -> pd.DataFrame:
    """One row per (idle VM, resource) with the amount it holds."""
    hours = _hours(settings.idle_window)
    usage = usage[usage["cpu_used_mean"].notna()]
    if usage.empty:
        return pd.DataFrame()
    # Prefer the OpenStack layer's own measurement of a VM; fall back to its libvirt domain.
    usage = usage.assign(rank=np.where(usage["layer"] == "openstack", 0, 1))
    best = usage.groupby("id")["rank"].transform("min")
    usage = usage[usage["rank"] == best]
    hourly = usage.groupby(["id", "hour"])["cpu_used_mean"].sum()
    stats = hourly.groupby(level="id").agg(
        hours="count", p95=lambda v: float(np.percentile(v.to_numpy(), IDLE_PERCENTILE))
    )
    idle = stats[(stats["hours"] >= settings.min_coverage * hours) & (stats["p95"] <= settings.idle_cpu_threshold)]
    rows = []
    for record in vms[vms["id"].astype(str).isin(idle.index.astype(str))].to_dict("records"):
        for resource, amount in consumer_requests(record, "openstack").items():
            rows.append(
                {
                    "layer": "openstack",
                    "cloud": record["cloud"],
                    "pool": record["pool"],
                    "id": record["id"],
                    "resource": resource,
                    "amount": amount,
                }
            )
    return pd.DataFrame(rows)


def overrequested_pods(pods: pd.DataFrame, usage: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """One row per (pod, resource) with its request above its workload's KRR-style need."""
    hours = _hours(settings.reclaim_window)
    if usage.empty:
        return pd.DataFrame()
    usage = usage.assign(project=usage["project"].fillna(""), flavor=usage["flavor"].fillna(""))
    by_hour = usage.groupby(["cloud", "project", "flavor", "hour"]).agg(
        cpu=("cpu_used_max", "max"), memory=("memory_used_max", "max")
    )
    need = by_hour.groupby(level=["cloud", "project", "flavor"]).agg(
        cpu_hours=("cpu", "count"),
        memory_hours=("memory", "count"),
        cpu=(
            "cpu",
            lambda v: (
                float(np.nanpercentile(v.to_numpy(), settings.reclaim_cpu_percentile)) if v.notna().any() else np.nan
            ),
        ),
        memory=("memory", "max"),
    )
    enough = settings.min_coverage * hours
    rows = []
    for record in pods.to_dict("records"):
        key = (record["cloud"], record.get("project") or "", record.get("flavor") or "")
        if key not in need.index:
            continue
        workload = need.loc[key]
        requested = {"cpu": record.get("cpu"), "memory": record.get("memory")}
        wanted = {}
        if workload["cpu_hours"] >= enough and not np.isnan(workload["cpu"]):
            wanted["cpu"] = max(float(workload["cpu"]), settings.reclaim_cpu_floor)
        if workload["memory_hours"] >= enough and not np.isnan(workload["memory"]):
            wanted["memory"] = max(
                float(workload["memory"]) * settings.reclaim_memory_margin, settings.reclaim_memory_floor
            )
        for resource, need_amount in wanted.items():
            request = requested[resource]
            if request is None or pd.isna(request):
                continue
            excess = float(request) - need_amount
            if excess > 0:
                rows.append(
                    {
                        "layer": "kubernetes",
                        "cloud": record["cloud"],
                        "pool": record["pool"],
                        "id": record["id"],
                        "resource": resource,
                        "amount": excess,
                    }
                )
    return pd.DataFrame(rows)

"""Nova hypervisors -> libvirt targets, from the frames an OpenStack source already polled.

The OpenStack source's `hosts` frame has one row per compute node (Placement root provider joined with
its Nova hypervisor); `openstack_aggregates` names the aggregate uuids. A disabled compute service
(`schedulable` false) stays a target (its VMs still run) and is marked disabled; a hypervisor deleted
from Nova leaves the list, so its target goes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from collector.contract.schema import FrameSet
from collector.sources.discovery.targets import Target, render, unique


def targets_from_frames(frames: FrameSet, openstack_source: str, template: str) -> tuple[list[Target], list[str]]:
    """One target per hypervisor of `openstack_source`, the template applied; and the duplicates dropped."""
    hosts = frames.get("hosts")
    if hosts is None or not len(hosts):
        return [], []
    hosts = hosts[hosts["source"] == openstack_source]
    names: dict[str, str] = {}
    aggregates_frame = frames.get("openstack_aggregates")
    if aggregates_frame is not None and len(aggregates_frame):
        mine = aggregates_frame[aggregates_frame["source"] == openstack_source]
        names = dict(zip(mine["uuid"].astype(str), mine["aggregate"].astype(str), strict=True))
    nova_side: dict[str, tuple[str | None, str | None]] = {}
    hypervisors = frames.get("openstack_hypervisors")
    if hypervisors is not None and len(hypervisors):
        mine = hypervisors[hypervisors["source"] == openstack_source]
        for name, ip, service in zip(mine["hypervisor_hostname"], mine["host_ip"], mine["service_host"], strict=True):
            nova_side[str(name)] = (_text(ip), _text(service))
    targets = []
    for row in hosts.itertuples(index=False):
        hostname = _text(row.hypervisor) or str(row.host)
        zone = _text(row.zone) or str(row.pool)
        aggregate_names = sorted({names.get(str(u), str(u)) for u in (_list(row.aggregates))})
        fields: dict[str, Any] = {
            "target": hostname,
            "hypervisor_hostname": hostname,
            "zone": zone,
            "availability_zone": zone,
            "aggregates": ",".join(aggregate_names),
            "cloud": str(row.cloud),
        }
        host_ip, service_host = nova_side.get(hostname, (None, None))
        if host_ip is not None:  # absent fields stay absent: a template using one fails naming it
            fields["host_ip"] = host_ip
        if service_host is not None:
            fields["service_host"] = service_host
        targets.append(
            Target(
                identity=hostname,
                uri=render(template, fields),
                pool=zone,
                disabled=not bool(row.schedulable),
                labels={"zone": zone, "aggregates": ",".join(aggregate_names)},
            )
        )
    return unique(targets)


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value) or None


def _list(value: Any) -> list[Any]:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return []
    return list(value)

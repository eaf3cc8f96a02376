"""Turning what Placement and Nova said into the normalized frames (docs/schema.md).

How the pieces join:

* A **compute host** is a root resource provider that is not a sharing provider. Its `host` is the
  provider name, which Nova sets to the hypervisor_hostname (libvirt's getHostname()); the Nova
  hypervisor with that name gives the nova-compute service (enabled/up) and the service host, the
  name Nova's aggregates list.
* **Nested providers** (vGPU, accelerators, NUMA, bandwidth) roll up into their root: one capacity
  row per resource class of the whole tree, summed (`allocation_ratio` then being the effective one,
  allocatable / (capacity - reserved); `min_unit` the smallest, `max_unit` the largest of the
  members; `step_size` kept when all agree, else NaN).
* **Sharing providers** (trait MISC_SHARES_VIA_AGGREGATE, e.g. shared DISK_GB) are `scope=pool` rows
  of the pool (AZ) whose aggregate they share with; they are never a host and have no hosts row.
* **Pools are availability zones**: a host is in exactly one AZ, so `sum by (pool)` never counts a
  host twice. Host aggregates overlap and are therefore not pools: each host lists the uuids of all
  its aggregates in `hosts.aggregates`, and the `openstack_aggregates` frame lists each aggregate's
  hosts — a per-aggregate total is a sum over that list, computed where needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from collector.contract.schema import (
    CAPACITY,
    CONSUMERS,
    FLAVORS,
    HOSTS,
    OPENSTACK_AGGREGATES,
    OPENSTACK_QUOTAS,
    FrameSet,
)
from collector.sources.openstack.hypervisors import hypervisors_frame
from collector.sources.openstack.nova import Aggregate, Flavor, NovaState, Server
from collector.sources.openstack.placement import DISABLED_TRAIT, SHARING_TRAIT, PlacementState, Provider

LAYER = "openstack"
MIB = 2**20
GIB = 2**30
SCALE = {"MEMORY_MB": MIB, "DISK_GB": GIB}
NAMES = {"MEMORY_MB": "memory", "DISK_GB": "disk"}

# Nova statuses whose server has no allocation in Placement (and is on no host).
RELEASED_STATUSES = {"SHELVED_OFFLOADED", "DELETED"}


def resource_name(resource_class: str) -> str:
    """Placement resource class -> capacity-frame resource name (VCPU -> vcpu, MEMORY_MB -> memory)."""
    return NAMES.get(resource_class, resource_class.lower())


def to_base_units(resource_class: str, amount: float) -> float:
    return float(amount) * SCALE.get(resource_class, 1)


@dataclass(frozen=True)
class FlavorRequest:
    """What a flavor asks Placement for (Nova's translation of flavor + extra specs)."""

    resources: dict[str, float]
    """Capacity-frame names, base units."""
    required_traits: list[str]
    forbidden_traits: list[str]


def parse_cpu_set(spec: str, vcpus: int) -> set[int]:
    """Nova's CPU set syntax ('0-3,^2'; a leading '^' alone means 'all but')."""
    include: set[int] = set()
    exclude: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        low, _, high = part.partition("-")
        target.update(range(int(low), int(high or low) + 1))
    if not include:
        include = set(range(vcpus))
    return include - exclude


def flavor_request(flavor: Flavor, boot_from_volume: bool = False) -> FlavorRequest:
    """Nova's flavor -> Placement request: VCPU/PCPU, MEMORY_MB, DISK_GB, resources[N]:*, trait[N]:*."""
    specs = flavor.extra_specs
    amounts: dict[str, float] = {}
    disk = (0 if boot_from_volume else flavor.disk_gb) + flavor.ephemeral_gb + math.ceil(flavor.swap_mb / 1024)
    policy = specs.get("hw:cpu_policy", "shared")
    if policy == "dedicated":
        amounts["PCPU"] = flavor.vcpus
    elif policy == "mixed" and "hw:cpu_dedicated_mask" in specs:
        dedicated = len(parse_cpu_set(specs["hw:cpu_dedicated_mask"], flavor.vcpus) & set(range(flavor.vcpus)))
        amounts["PCPU"] = dedicated
        amounts["VCPU"] = flavor.vcpus - dedicated
    else:
        amounts["VCPU"] = flavor.vcpus
    amounts["MEMORY_MB"] = flavor.ram_mb
    amounts["DISK_GB"] = disk
    required: set[str] = set()
    forbidden: set[str] = set()
    granular: dict[str, float] = defaultdict(float)
    for key, value in specs.items():
        prefix, _, name = key.partition(":")
        if not name:
            continue
        if prefix == "resources":  # un-numbered: overrides the flavor-derived amount (0 removes it)
            amounts[name] = _amount(value)
        elif prefix.startswith("resources") and prefix[len("resources") :].lstrip("_").isalnum():
            granular[name] += _amount(value)  # resources1:VGPU=1 -> its own request group
        elif prefix.startswith("trait"):
            if value == "required":
                required.add(name)
            elif value == "forbidden":
                forbidden.add(name)
    for name, amount in granular.items():
        amounts[name] = amounts.get(name, 0) + amount
    resources = {resource_name(rc): to_base_units(rc, amount) for rc, amount in sorted(amounts.items()) if amount > 0}
    return FlavorRequest(resources=resources, required_traits=sorted(required), forbidden_traits=sorted(forbidden))


def _amount(value: str) -> float:
    try:
        amount = float(value)
    except ValueError:
        return 0.0
    return amount if amount >= 0 and math.isfinite(amount) else 0.0


def flavor_member_of(flavor: Flavor, aggregates: list[Aggregate]) -> tuple[list[str], str | None]:
    """Aggregates the flavor is limited to by `aggregate_instance_extra_specs:<key>=<value>`, and its AZ.

    A host passes AggregateInstanceExtraSpecsFilter when, for every such key, one of its aggregates
    carries key=value; the list holds every aggregate that matches at least one of the pairs.
    """
    pairs = {
        key.split(":", 1)[1]: value
        for key, value in flavor.extra_specs.items()
        if key.startswith("aggregate_instance_extra_specs:")
    }
    zone = pairs.get("availability_zone")
    member_of = sorted({a.uuid for a in aggregates for key, value in pairs.items() if a.metadata.get(key) == value})
    return member_of, zone


@dataclass
class Topology:
    """Which host is which: joins Placement providers, Nova hypervisors and aggregates."""

    host_zone: dict[str, str]
    """Capacity-frame host (provider name) -> AZ."""
    host_aggregates: dict[str, list[str]]
    hypervisors: dict[str, Any]
    """Provider name -> Hypervisor."""
    aggregate_hosts: dict[str, list[str]]
    """Aggregate uuid -> capacity-frame host names."""


def topology(placement: PlacementState, nova: NovaState, default_zone: str) -> Topology:
    hypervisors = {h.hostname: h for h in nova.hypervisors}
    node_of_service: dict[str, list[str]] = defaultdict(list)
    for hv in nova.hypervisors:
        node_of_service[hv.service_host or hv.hostname].append(hv.hostname)
    service_zone: dict[str, str] = {}
    service_aggregates: dict[str, list[str]] = defaultdict(list)
    aggregate_hosts: dict[str, list[str]] = {}
    for aggregate in nova.aggregates:
        nodes = []
        for service_host in aggregate.hosts:
            service_aggregates[service_host].append(aggregate.uuid)
            if aggregate.zone:
                service_zone[service_host] = aggregate.zone
            nodes.extend(node_of_service.get(service_host, [service_host]))
        aggregate_hosts[aggregate.uuid] = sorted(nodes)
    host_zone: dict[str, str] = {}
    host_aggregates: dict[str, list[str]] = {}
    for provider in placement.providers.values():
        if not provider.is_root or SHARING_TRAIT in provider.traits:
            continue
        hypervisor = hypervisors.get(provider.name)
        service = (hypervisor.service_host if hypervisor else None) or provider.name
        host_zone[provider.name] = service_zone.get(service, default_zone)
        host_aggregates[provider.name] = sorted(service_aggregates.get(service, []))
    return Topology(host_zone, host_aggregates, hypervisors, aggregate_hosts)


def sharing_pool(provider: Provider, nova: NovaState, topo: Topology, default_zone: str) -> str:
    """The AZ a sharing provider serves: an AZ aggregate it shares with, else its members' common AZ."""
    by_uuid = {a.uuid: a for a in nova.aggregates}
    zones = sorted({z for u in provider.aggregates if u in by_uuid and (z := by_uuid[u].zone)})
    if not zones:
        members = {h for u in provider.aggregates for h in topo.aggregate_hosts.get(u, [])}
        zones = sorted({topo.host_zone[h] for h in members if h in topo.host_zone})
    return zones[0] if zones else default_zone


def _rollup(providers: list[Provider]) -> dict[str, dict[str, float]]:
    """Sum the inventories of a provider tree per resource class (see module docstring)."""
    rows: dict[str, dict[str, Any]] = {}
    for provider in providers:
        for rc, inventory in provider.inventories.items():
            scale = SCALE.get(rc, 1)
            total = inventory["total"] * scale
            reserved = inventory["reserved"] * scale
            allocatable = max(total - reserved, 0.0) * inventory["allocation_ratio"]
            row = rows.setdefault(
                rc,
                {
                    "capacity": 0.0,
                    "reserved": 0.0,
                    "allocatable": 0.0,
                    "allocated": 0.0,
                    "min_unit": math.inf,
                    "max_unit": 0.0,
                    "steps": set(),
                    "ratios": set(),
                },
            )
            row["capacity"] += total
            row["reserved"] += reserved
            row["allocatable"] += allocatable
            row["allocated"] += provider.usages.get(rc, 0.0) * scale
            row["min_unit"] = min(row["min_unit"], inventory["min_unit"] * scale)
            row["max_unit"] = max(row["max_unit"], inventory["max_unit"] * scale)
            row["steps"].add(inventory["step_size"] * scale)
            row["ratios"].add(inventory["allocation_ratio"])
    out: dict[str, dict[str, float]] = {}
    for rc, row in rows.items():
        usable = row["capacity"] - row["reserved"]
        if len(row["ratios"]) == 1:
            ratio = next(iter(row["ratios"]))
        else:
            ratio = row["allocatable"] / usable if usable > 0 else 1.0
        out[rc] = {
            "capacity": row["capacity"],
            "reserved": row["reserved"],
            "allocation_ratio": ratio,
            "allocatable": max(usable, 0.0) * ratio,
            "allocated": row["allocated"],
            "min_unit": row["min_unit"],
            "max_unit": row["max_unit"],
            "step_size": next(iter(row["steps"])) if len(row["steps"]) == 1 else math.nan,
        }
    return out


def build_frames(
    *,
    source: str,
    cloud: str,
    now: datetime,
    placement: PlacementState,
    nova: NovaState,
    default_zone: str,
) -> FrameSet:
    topo = topology(placement, nova, default_zone)
    trees: dict[str, list[Provider]] = defaultdict(list)
    for provider in placement.providers.values():
        trees[provider.root].append(provider)

    capacity: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
    for root_uuid, members in sorted(trees.items(), key=lambda kv: kv[0]):
        root = placement.providers.get(root_uuid)
        if root is None:
            continue  # root vanished mid-poll; its children were dropped with it
        sharing = SHARING_TRAIT in root.traits
        pool = sharing_pool(root, nova, topo, default_zone) if sharing else topo.host_zone[root.name]
        for rc, row in sorted(_rollup(members).items()):
            capacity.append(
                {
                    "timestamp": now,
                    "source": source,
                    "layer": LAYER,
                    "cloud": cloud,
                    "pool": pool,
                    "host": root.name,
                    "scope": "pool" if sharing else "host",
                    "resource": resource_name(rc),
                    "used": math.nan,
                    **row,
                }
            )
        if sharing:
            continue
        hypervisor = topo.hypervisors.get(root.name)
        traits = sorted(set().union(*(p.traits for p in members)))
        hosts.append(
            {
                "timestamp": now,
                "source": source,
                "layer": LAYER,
                "cloud": cloud,
                "pool": pool,
                "host": root.name,
                "host_id": root.uuid,
                "schedulable": bool(hypervisor and hypervisor.enabled) and DISABLED_TRAIT not in root.traits,
                "ready": bool(hypervisor and hypervisor.up),
                "zone": pool,
                "aggregates": topo.host_aggregates.get(root.name, []),
                "traits": traits,
                "taints": None,
                "instance_type": None,
                "nova_server_id": None,
                "hypervisor": hypervisor.hostname if hypervisor else None,
            }
        )

    consumers = [_consumer(s, source, cloud, now, topo, default_zone) for s in nova.servers]

    flavors = []
    for flavor in nova.flavors.values():
        request = flavor_request(flavor)
        member_of, zone = flavor_member_of(flavor, nova.aggregates)
        flavors.append(
            {
                "timestamp": now,
                "source": source,
                "cloud": cloud,
                "flavor": flavor.name,
                "flavor_id": flavor.id,
                "resources": request.resources,
                "required_traits": request.required_traits,
                "forbidden_traits": request.forbidden_traits,
                "member_of": member_of,
                "zone": zone,
                "is_public": flavor.is_public,
                "projects": flavor.projects,
            }
        )

    aggregates = [
        {
            "timestamp": now,
            "source": source,
            "cloud": cloud,
            "aggregate": a.name,
            "uuid": a.uuid,
            "zone": a.zone,
            "hosts": topo.aggregate_hosts.get(a.uuid, []),
            "metadata": dict(a.metadata),
            "projects": sorted(
                {p.strip() for k, v in a.metadata.items() if k.startswith("filter_tenant_id") for p in v.split(",")}
                - {""}
            ),
        }
        for a in nova.aggregates
    ]
    quotas = [
        {
            "timestamp": now,
            "source": source,
            "cloud": cloud,
            "project": q.project,
            "resource": q.resource,
            "limit": q.limit,
            "in_use": q.in_use,
            "reserved": q.reserved,
        }
        for q in nova.quotas
    ]
    return {
        "capacity": _frame(CAPACITY, capacity),
        "hosts": _frame(HOSTS, hosts),
        "consumers": _frame(CONSUMERS, consumers),
        "flavors": _frame(FLAVORS, flavors),
        "openstack_aggregates": _frame(OPENSTACK_AGGREGATES, aggregates),
        "openstack_quotas": _frame(OPENSTACK_QUOTAS, quotas),
        "openstack_hypervisors": hypervisors_frame(nova, source, cloud, now),  # issue 16: discovery fields
    }


def _frame(schema: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
    return schema.build(rows) if rows else schema.empty()


def _consumer(
    server: Server, source: str, cloud: str, now: datetime, topo: Topology, default_zone: str
) -> dict[str, Any]:
    placed = server.host is not None and server.status not in RELEASED_STATUSES
    request = flavor_request(server.flavor, server.boot_from_volume) if server.flavor else None
    resources = request.resources if request else None
    pool = topo.host_zone.get(server.host or "", server.zone or default_zone)
    return {
        "timestamp": now,
        "source": source,
        "layer": LAYER,
        "cloud": cloud,
        "pool": pool,
        "host": server.host if placed else None,
        "id": server.id,
        "name": server.name,
        "state": server.status.lower(),
        "holds_capacity": placed,
        "project": server.project,
        "flavor": server.flavor.name if server.flavor else None,
        "cpu": (resources.get("vcpu", 0.0) + resources.get("pcpu", 0.0)) if resources else math.nan,
        "memory": resources.get("memory", 0.0) if resources else math.nan,
        "disk": resources.get("disk", 0.0) if resources else math.nan,
        "resources": resources,
        "cpu_limit": math.nan,
        "memory_limit": math.nan,
        "cpu_used": math.nan,
        "memory_used": math.nan,
        "cpu_time_seconds": math.nan,
        "nova_instance_uuid": server.id,
        "libvirt_domain_uuid": server.id,
        "k8s_provider_id": None,
    }

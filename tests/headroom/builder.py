"""Hand-made estates for the headroom tests: frames built through the real schema (validated)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from collector.contract.schema import CAPACITY, CONSUMERS, FLAVORS, HOSTS, SCHEMAS, FrameSet

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GIB = 1024.0**3
MIB = 1024.0**2


@dataclass
class Inventory:
    capacity: float
    reserved: float = 0.0
    ratio: float = 1.0
    allocated: float | None = None
    """None: the sum of the consumers placed on the host."""
    max_unit: float | None = None
    min_unit: float | None = None
    step_size: float | None = None


def inv(capacity: float, reserved: float = 0.0, ratio: float = 1.0, **kw: Any) -> Inventory:
    return Inventory(capacity, reserved, ratio, **kw)


@dataclass
class Estate:
    layer: str = "openstack"
    cloud: str = "c1"
    capacity: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    flavors: list[dict[str, Any]] = field(default_factory=list)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    _inventories: list[tuple[str, str, str, str, str, Inventory]] = field(default_factory=list)

    def host(
        self,
        name: str,
        pool: str = "az1",
        *,
        resources: dict[str, Inventory | float],
        schedulable: bool = True,
        ready: bool = True,
        zone: str | None = None,
        aggregates: tuple[str, ...] = (),
        traits: tuple[str, ...] = (),
        taints: tuple[str, ...] = (),
        nova_server_id: str | None = None,
        layer: str | None = None,
        cloud: str | None = None,
    ) -> Estate:
        layer, cloud = layer or self.layer, cloud or self.cloud
        for resource, value in resources.items():
            spec = value if isinstance(value, Inventory) else Inventory(float(value))
            self._inventories.append((layer, cloud, pool, name, "host", resource, spec))  # type: ignore[arg-type]
        self.hosts.append(
            {
                "timestamp": NOW,
                "source": f"{layer}-{cloud}",
                "layer": layer,
                "cloud": cloud,
                "pool": pool,
                "host": name,
                "host_id": None,
                "schedulable": schedulable,
                "ready": ready,
                "zone": zone if zone is not None else (pool if layer == "openstack" else None),
                "aggregates": list(aggregates),
                "traits": list(traits),
                "taints": list(taints),
                "instance_type": None,
                "nova_server_id": nova_server_id,
                "hypervisor": None,
            }
        )
        return self

    def shared(self, name: str, pool: str, resource: str, spec: Inventory) -> Estate:
        self._inventories.append((self.layer, self.cloud, pool, name, "pool", resource, spec))  # type: ignore[arg-type]
        return self

    def flavor(
        self,
        name: str,
        resources: dict[str, float],
        *,
        required: tuple[str, ...] = (),
        forbidden: tuple[str, ...] = (),
        member_of: tuple[str, ...] = (),
        zone: str | None = None,
        is_public: bool = True,
        projects: tuple[str, ...] = (),
        cloud: str | None = None,
    ) -> Estate:
        self.flavors.append(
            {
                "timestamp": NOW,
                "source": "os",
                "cloud": cloud or self.cloud,
                "flavor": name,
                "flavor_id": f"id-{name}",
                "resources": dict(resources),
                "required_traits": list(required),
                "forbidden_traits": list(forbidden),
                "member_of": list(member_of),
                "zone": zone,
                "is_public": is_public,
                "projects": list(projects),
            }
        )
        return self

    def consumer(
        self,
        cid: str,
        host: str | None,
        resources: dict[str, float],
        *,
        flavor: str | None = None,
        project: str | None = None,
        holds: bool = True,
        pool: str | None = None,
        layer: str | None = None,
        cloud: str | None = None,
        cpu_used: float | None = None,
        memory_used: float | None = None,
    ) -> Estate:
        layer, cloud = layer or self.layer, cloud or self.cloud
        if pool is None:
            pool = next((h["pool"] for h in self.hosts if h["host"] == host and h["layer"] == layer), "az1")
        cpu = resources.get("vcpu", resources.get("pcpu", resources.get("cpu")))
        self.consumers.append(
            {
                "timestamp": NOW,
                "source": f"{layer}-{cloud}",
                "layer": layer,
                "cloud": cloud,
                "pool": pool,
                "host": host,
                "id": cid,
                "name": cid,
                "state": "active" if holds else "succeeded",
                "holds_capacity": holds,
                "project": project,
                "flavor": flavor,
                "cpu": cpu,
                "memory": resources.get("memory"),
                "disk": resources.get("disk"),
                "resources": dict(resources),
                "cpu_limit": None,
                "memory_limit": None,
                "cpu_used": cpu_used,
                "memory_used": memory_used,
                "cpu_time_seconds": None,
                "nova_instance_uuid": None,
                "libvirt_domain_uuid": None,
                "k8s_provider_id": None,
            }
        )
        return self

    def aggregate(self, uuid: str, name: str, *, zone: str | None = None, **metadata: str) -> Estate:
        self.aggregates.append(
            {"uuid": uuid, "name": name, "zone": zone, "metadata": dict(metadata), "cloud": self.cloud}
        )
        return self

    def frames(self) -> FrameSet:
        used: dict[tuple[str, str, str, str], float] = defaultdict(float)
        for c in self.consumers:
            if c["holds_capacity"] and c["host"]:
                for resource, amount in c["resources"].items():
                    used[(c["layer"], c["cloud"], c["host"], resource)] += amount
                if c["layer"] == "kubernetes" and "pods" not in c["resources"]:
                    used[(c["layer"], c["cloud"], c["host"], "pods")] += 1
        rows = []
        for layer, cloud, pool, host, scope, resource, spec in self._inventories:
            allocated = spec.allocated if spec.allocated is not None else used[(layer, cloud, host, resource)]
            rows.append(
                {
                    "timestamp": NOW,
                    "source": f"{layer}-{cloud}",
                    "layer": layer,
                    "cloud": cloud,
                    "pool": pool,
                    "host": host,
                    "scope": scope,
                    "resource": resource,
                    "capacity": spec.capacity,
                    "reserved": spec.reserved,
                    "allocation_ratio": spec.ratio,
                    "allocatable": max(spec.capacity - spec.reserved, 0) * spec.ratio,
                    "allocated": allocated,
                    "used": None,
                    "min_unit": spec.min_unit,
                    "max_unit": spec.max_unit,
                    "step_size": spec.step_size,
                }
            )
        frames: FrameSet = {
            "capacity": CAPACITY.build(rows) if rows else CAPACITY.empty(),
            "hosts": HOSTS.build(self.hosts) if self.hosts else HOSTS.empty(),
            "flavors": FLAVORS.build(self.flavors) if self.flavors else FLAVORS.empty(),
            "consumers": CONSUMERS.build(self.consumers) if self.consumers else CONSUMERS.empty(),
        }
        if self.aggregates:
            members: dict[str, list[str]] = defaultdict(list)
            for h in self.hosts:
                for uuid in h["aggregates"]:
                    members[uuid].append(h["host"])
            frames["openstack_aggregates"] = SCHEMAS["openstack_aggregates"].build(
                [
                    {
                        "timestamp": NOW,
                        "source": "os",
                        "cloud": a["cloud"],
                        "aggregate": a["name"],
                        "uuid": a["uuid"],
                        "zone": a["zone"],
                        "hosts": members[a["uuid"]],
                        "metadata": a["metadata"],
                        "projects": [v for k, v in a["metadata"].items() if k.startswith("filter_tenant_id")],
                    }
                    for a in self.aggregates
                ]
            )
        return frames


def row(headroom: pd.DataFrame, *, pool: str, shape: str, pool_kind: str | None = None) -> pd.Series:
    """The one headroom row for a pool and shape (fails loudly when absent or ambiguous)."""
    match = headroom[(headroom["pool"] == pool) & (headroom["shape"] == shape)]
    if pool_kind is not None:
        match = match[match["pool_kind"] == pool_kind]
    assert len(match) == 1, f"expected one row for pool={pool} shape={shape}, got {len(match)}:\n{headroom}"
    return match.iloc[0]

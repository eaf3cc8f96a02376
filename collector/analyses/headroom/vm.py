"""VM headroom: slots per flavor on every compute host, as Placement and Nova's filters would allow.

For flavor f and host h: slots = min over f's resource classes r of floor(free[h, r] / f[r]), where
free = (total - reserved) x allocation_ratio - used, 0 if f[r] is above h's max_unit (or below its
min_unit, or not a multiple of its step_size). A host counts only if it is enabled and up, has the
flavor's required traits and none of its forbidden ones (nor COMPUTE_STATUS_DISABLED), is in one of
the flavor's member_of aggregates and its zone, and tenant isolation (aggregates with
`filter_tenant_id` metadata) lets the flavor's projects in. Resources a host draws from a pool-level
(sharing) provider bound the pool's total rather than the host.

Everything is vectorized over hosts: a flavor x host x resource pass is a few numpy operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.model import HostTable, as_dict, as_list
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet, consumer_classes

DISABLED_TRAIT = "COMPUTE_STATUS_DISABLED"
TENANT_KEY = "filter_tenant_id"


@dataclass(frozen=True)
class VmConstraints:
    """Where a VM of some flavor (and project) may go."""

    required: frozenset[str] = frozenset()
    forbidden: frozenset[str] = frozenset()
    member_of: frozenset[str] = frozenset()
    zone: str | None = None
    projects: frozenset[str] | None = None
    """Tenants the VM may belong to; None = an arbitrary tenant (public flavor)."""


@dataclass
class Aggregate:
    uuid: str
    name: str
    zone: str | None
    tenants: frozenset[str]
    """Tenants of filter_tenant_id* metadata (empty: not an isolation aggregate)."""


@dataclass
class Isolation:
    """Tenant isolation by aggregate, in Nova's two flavours.

    hosts (AggregateMultiTenancyIsolation): a host in an isolation aggregate takes only those tenants;
    tenants (limit_tenants_to_placement_aggregate): a listed tenant lands only in its aggregates.
    """

    mode: str
    host_tenants: list[frozenset[str] | None]
    tenant_hosts: dict[str, np.ndarray] = field(default_factory=dict)
    _isolated: np.ndarray | None = field(default=None, repr=False)
    """Hosts in any isolation aggregate (computed once)."""

    def mask(self, projects: frozenset[str] | None, size: int) -> np.ndarray:
        everywhere = np.ones(size, dtype=bool)
        if self.mode == "off":
            return everywhere
        check_hosts = self.mode in ("hosts", "both")
        check_tenants = self.mode in ("tenants", "both")
        if self._isolated is None:
            self._isolated = np.array([t is not None for t in self.host_tenants], dtype=bool)
        isolated = self._isolated
        if not projects:
            return ~isolated if check_hosts else everywhere
        result = np.zeros(size, dtype=bool)
        nowhere = np.zeros(size, dtype=bool)
        for project in projects:
            allowed = everywhere
            if check_hosts:
                # tenant_hosts[project][h] is `project in host_tenants[h]` (build_isolation fills both):
                # one vector per project, not a Python pass over every host.
                allowed = ~isolated | self.tenant_hosts.get(project, nowhere)
            if check_tenants and project in self.tenant_hosts:
                allowed = allowed & self.tenant_hosts[project]
            result |= allowed
        return result


AGGREGATE_FRAMES = ("openstack_aggregates", "aggregates")


def read_aggregates(frames: Mapping[str, pd.DataFrame], cloud: str) -> dict[str, Aggregate]:
    """Aggregates of `cloud` from the OpenStack source's `openstack_aggregates` frame (absent: none known)."""
    frame = next((frames[n] for n in AGGREGATE_FRAMES if frames.get(n) is not None and len(frames[n])), None)
    if frame is None or "uuid" not in frame.columns:
        return {}
    if "cloud" in frame.columns:
        frame = frame[frame["cloud"].astype(str) == cloud]
    out: dict[str, Aggregate] = {}
    for record in frame.to_dict("records"):
        metadata = record.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        tenants = {str(t) for t in as_list(record.get("projects"))}
        for key, value in metadata.items():
            if str(key).startswith(TENANT_KEY) and value:
                tenants |= {t.strip() for t in str(value).split(",") if t.strip()}
        uuid = str(record["uuid"])
        name = record.get("aggregate", record.get("name"))
        zone = record.get("zone")
        zone = zone if isinstance(zone, str) and zone else metadata.get("availability_zone")
        out[uuid] = Aggregate(
            uuid,
            str(name) if isinstance(name, str) and name else uuid,
            str(zone) if isinstance(zone, str) and zone else None,
            frozenset(tenants),
        )
    return out


def build_isolation(table: HostTable, aggregates: Mapping[str, Aggregate], mode: str) -> Isolation:
    host_tenants: list[frozenset[str] | None] = []
    tenant_hosts: dict[str, np.ndarray] = {}
    isolating = {u: a for u, a in aggregates.items() if a.tenants}
    for i, memberships in enumerate(table.aggregates):
        tenants: set[str] | None = None
        for uuid in memberships & isolating.keys():
            tenants = (tenants or set()) | isolating[uuid].tenants
            for tenant in isolating[uuid].tenants:
                tenant_hosts.setdefault(tenant, np.zeros(table.size, dtype=bool))[i] = True
        host_tenants.append(frozenset(tenants) if tenants is not None else None)
    return Isolation(mode, host_tenants, tenant_hosts)


def _membership(sets: list[frozenset[str]], vocabulary: list[str]) -> np.ndarray:
    """(H, V) bool: host h has item v. Set intersection keeps it fast for hosts with many traits."""
    matrix = np.zeros((len(sets), len(vocabulary)), dtype=bool)
    if not vocabulary:
        return matrix
    index = {item: j for j, item in enumerate(vocabulary)}
    wanted = frozenset(vocabulary)
    for i, items in enumerate(sets):
        for item in items & wanted:
            matrix[i, index[item]] = True
    return matrix


def vm_eligibility(table: HostTable, constraints: list[VmConstraints], isolation: Isolation) -> np.ndarray:
    """(S, H) bool: hosts each constraint set allows (activity is applied by the slot arithmetic)."""
    traits = sorted({t for c in constraints for t in c.required | c.forbidden} | {DISABLED_TRAIT})
    aggregates = sorted({a for c in constraints for a in c.member_of})
    has_trait = _membership(table.traits, traits)
    in_aggregate = _membership(table.aggregates, aggregates)
    t_index = {t: j for j, t in enumerate(traits)}
    a_index = {a: j for j, a in enumerate(aggregates)}
    out = np.ones((len(constraints), table.size), dtype=bool)
    tenant_masks: dict[frozenset[str] | None, np.ndarray] = {}
    for s, c in enumerate(constraints):
        row = out[s]
        if c.required:
            row &= has_trait[:, [t_index[t] for t in c.required]].all(axis=1)
        row &= ~has_trait[:, [t_index[t] for t in c.forbidden | {DISABLED_TRAIT}]].any(axis=1)
        if c.member_of:
            row &= in_aggregate[:, [a_index[a] for a in c.member_of]].any(axis=1)
        if c.zone:
            row &= table.zones == c.zone
        if c.projects not in tenant_masks:
            tenant_masks[c.projects] = isolation.mask(c.projects, table.size)
        row &= tenant_masks[c.projects]
    return out


@dataclass
class Flavor:
    name: str
    requests: dict[str, float]
    constraints: VmConstraints


def read_flavors(frames: Mapping[str, pd.DataFrame], cloud: str) -> list[Flavor]:
    """The cloud's flavors (first of duplicate names), with what they ask for and where they may go."""
    frame = frames.get("flavors")
    if frame is None or frame.empty:
        return []
    frame = frame[frame["cloud"].astype(str) == cloud]
    seen: set[str] = set()
    out = []
    for record in frame.to_dict("records"):
        name = str(record["flavor"])
        if name in seen:
            continue
        seen.add(name)
        requests = as_dict(record.get("resources"))
        if not requests:
            continue
        zone = record.get("zone")
        projects = None
        if not bool(record.get("is_public", True)):
            projects = frozenset(str(p) for p in as_list(record.get("projects")))
        out.append(
            Flavor(
                name,
                requests,
                VmConstraints(
                    required=frozenset(str(t) for t in as_list(record.get("required_traits"))),
                    forbidden=frozenset(str(t) for t in as_list(record.get("forbidden_traits"))),
                    member_of=frozenset(str(a) for a in as_list(record.get("member_of"))),
                    zone=str(zone) if isinstance(zone, str) and zone else None,
                    projects=projects,
                ),
            )
        )
    return out


def flavor_shapes(table: HostTable, flavors: Iterable[Flavor], isolation: Isolation) -> ShapeSet:
    flavors = list(flavors)
    requests = table.request_matrix([f.requests for f in flavors])
    eligible = vm_eligibility(table, [f.constraints for f in flavors], isolation)
    return ShapeSet([f.name for f in flavors], "flavor", requests, eligible)


def vm_classes(
    table: HostTable, consumers: pd.DataFrame | None, flavors: Iterable[Flavor], isolation: Isolation
) -> ConsumerClasses:
    """The cloud's VMs grouped for re-placement: same flavor, project and size go together."""
    by_name = {f.name: f.constraints for f in flavors}
    # A project named in no isolation aggregate goes where any tenant goes: one class for all of them.
    isolated = set(isolation.tenant_hosts) | {t for ts in isolation.host_tenants if ts for t in ts}

    def tenant(record: Mapping[str, Any]) -> str:
        project = record.get("project")
        return str(project) if isinstance(project, str) and project in isolated else ""

    def key(frame: pd.DataFrame) -> list[np.ndarray]:
        flavors = frame["flavor"].astype(object).where(frame["flavor"].notna(), "").astype(str).to_numpy(dtype=object)
        projects = frame["project"].astype(object).where(frame["project"].isin(isolated), "").astype(str)
        return [flavors, projects.to_numpy(dtype=object)]

    def eligibility(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        distinct: dict[VmConstraints, int] = {}
        mask_of = np.zeros(len(records), dtype=np.int64)
        for k, record in enumerate(records):
            base = by_name.get(str(record.get("flavor") or ""), VmConstraints())
            project = tenant(record)
            projects = frozenset([project]) if project else None
            constraints = VmConstraints(base.required, base.forbidden, base.member_of, base.zone, projects)
            mask_of[k] = distinct.setdefault(constraints, len(distinct))
        return vm_eligibility(table, list(distinct), isolation), mask_of

    return consumer_classes(
        table, consumers, movable=lambda f: np.ones(len(f), dtype=bool), class_key=key, eligibility=eligibility
    )

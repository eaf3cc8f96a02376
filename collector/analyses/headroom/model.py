"""Dense, per-layer views of the frames that every headroom computation shares.

The frames are long (one row per host x resource); slot counting is a matrix problem (shapes x hosts
x resources). `HostTable` turns one layer of one cloud into aligned numpy arrays once, so the slot
counts of thousands of hosts and tens of shapes are a handful of vector operations, and N+1 can
re-run them for every failure candidate.

Free capacity is Placement's arithmetic, `(total - reserved) x allocation_ratio - used`, read as
`allocatable - allocated` from the capacity frame. Where `allocated` is unknown (NaN) it is rebuilt
from the consumers that hold capacity on the host, so an unknown never turns into "all free".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EPSILON = 1e-9
"""Slack for float division: 120.0 / 4.0 must floor to 30, not 29.999999."""


def as_list(value: Any) -> list[Any]:
    """A list from an object cell that may be None, NaN, a list, a tuple, a set or a numpy array."""
    if value is None:
        return []
    if isinstance(value, float) and math.isnan(value):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return list(value)
    if isinstance(value, Iterable):
        return list(value)
    return []


def as_dict(value: Any) -> dict[str, float]:
    """A {resource: amount} dict from an object cell (None/NaN -> empty)."""
    if isinstance(value, Mapping):
        out = {}
        for key, amount in value.items():
            try:
                number = float(amount)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number) and number > 0:
                out[str(key)] = number
        return out
    return {}


def _cell_str(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def consumer_requests(row: Mapping[str, Any], layer: str) -> dict[str, float]:
    """What one consumer holds, in capacity-frame resource names.

    The `resources` dict is authoritative; without it the cpu/memory/disk columns are mapped to the
    layer's names (`vcpu` on OpenStack). A pod always holds one of its node's `pods`.
    """
    requests = as_dict(row.get("resources"))
    if not requests:
        cpu, memory, disk = (row.get(k) for k in ("cpu", "memory", "disk"))
        for name, value in (
            ("vcpu" if layer == "openstack" else "cpu", cpu),
            ("memory", memory),
            ("disk" if layer != "kubernetes" else "ephemeral_storage", disk),
        ):
            if value is not None and not pd.isna(value) and float(value) > 0:
                requests[name] = float(value)
    if layer == "kubernetes":
        requests.setdefault("pods", 1.0)
    return requests


def fast_records(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict[str, Any]]:
    """Row dicts of some columns, NA as None; ~10x faster than `to_dict("records")` on wide frames."""
    names = [c for c in columns if c in frame.columns]
    values = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


@dataclass
class SharedProvider:
    """A pool-level provider (e.g. Placement sharing provider of DISK_GB) serving a pool's hosts."""

    free: float
    max_unit: float = math.inf
    min_unit: float = 0.0
    step_size: float = 0.0

    def admits(self, amount: float) -> bool:
        return _admits(amount, self.max_unit, self.min_unit, self.step_size)


def _admits(amount: float, max_unit: float, min_unit: float, step: float) -> bool:
    if amount > max_unit + EPSILON or amount < min_unit - EPSILON:
        return False
    return step <= 0 or _is_multiple(amount, step)


def _is_multiple(amount: Any, step: Any) -> Any:
    ratio = np.asarray(amount, dtype=float) / np.where(np.asarray(step) > 0, step, 1.0)
    return np.abs(ratio - np.round(ratio)) <= 1e-6 * np.maximum(1.0, np.abs(ratio))


@dataclass
class HostTable:
    """One layer of one cloud as aligned arrays: H hosts x R resources."""

    layer: str
    cloud: str
    names: np.ndarray
    pools: np.ndarray
    zones: np.ndarray
    active: np.ndarray
    """Schedulable and ready: only these take new consumers."""
    resources: list[str]
    allocatable: np.ndarray
    allocated: np.ndarray
    present: np.ndarray
    """The host has its own inventory of the resource."""
    shared: np.ndarray
    """The host lacks the resource but its pool has a pool-level provider of it."""
    max_unit: np.ndarray
    min_unit: np.ndarray
    step_size: np.ndarray
    traits: list[frozenset[str]]
    aggregates: list[frozenset[str]]
    taints: list[tuple[str, ...]]
    shared_providers: dict[tuple[str, str], SharedProvider] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def free(self) -> np.ndarray:
        free: np.ndarray = np.clip(self.allocatable - self.allocated, 0.0, None)
        return free

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def resource_index(self, name: str) -> int | None:
        try:
            return self.resources.index(name)
        except ValueError:
            return None

    def request_matrix(self, requests: list[Mapping[str, float]]) -> np.ndarray:
        """(len(requests), R) matrix; resources the layer does not know are appended (as absent)."""
        for request in requests:
            for name in request:
                if name not in self.resources:
                    self._add_resource(name)
        matrix = np.zeros((len(requests), len(self.resources)))
        position = {name: i for i, name in enumerate(self.resources)}
        for row, request in enumerate(requests):
            for name, amount in request.items():
                matrix[row, position[name]] = amount
        return matrix

    def _add_resource(self, name: str) -> None:
        """A resource some shape asks for but no host has: every host has 0 of it."""
        self.resources.append(name)
        h = self.size
        zeros, falses = np.zeros((h, 1)), np.zeros((h, 1), dtype=bool)
        self.allocatable = np.hstack([self.allocatable, zeros])
        self.allocated = np.hstack([self.allocated, zeros])
        self.present = np.hstack([self.present, falses])
        self.shared = np.hstack([self.shared, falses])
        self.max_unit = np.hstack([self.max_unit, np.full((h, 1), np.inf)])
        self.min_unit = np.hstack([self.min_unit, zeros])
        self.step_size = np.hstack([self.step_size, zeros])

    def copy(self) -> HostTable:
        return HostTable(
            layer=self.layer,
            cloud=self.cloud,
            names=self.names.copy(),
            pools=self.pools.copy(),
            zones=self.zones.copy(),
            active=self.active.copy(),
            resources=list(self.resources),
            allocatable=self.allocatable.copy(),
            allocated=self.allocated.copy(),
            present=self.present.copy(),
            shared=self.shared.copy(),
            max_unit=self.max_unit.copy(),
            min_unit=self.min_unit.copy(),
            step_size=self.step_size.copy(),
            traits=list(self.traits),
            aggregates=list(self.aggregates),
            taints=list(self.taints),
            shared_providers={k: SharedProvider(**v.__dict__) for k, v in self.shared_providers.items()},
        )

    def shared_bound(self, pool: str, request: np.ndarray) -> float:
        """How many of `request` the pool-level providers of `pool` can still serve (inf: no bound)."""
        bound = math.inf
        for r, amount in enumerate(request):
            if amount <= 0:
                continue
            provider = self.shared_providers.get((pool, self.resources[r]))
            if provider is None:
                continue
            if not provider.admits(amount):
                return 0.0
            bound = min(bound, math.floor(provider.free / amount + EPSILON))
        return bound


def _frame(frames: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    frame = frames.get(name)
    return frame if frame is not None and len(frame) else None


def build_host_tables(frames: Mapping[str, pd.DataFrame], layer: str) -> dict[str, HostTable]:
    """One HostTable per cloud of `layer`, from the capacity, hosts and consumers frames."""
    capacity = _frame(frames, "capacity")
    hosts = _frame(frames, "hosts")
    consumers = _frame(frames, "consumers")
    clouds: set[str] = set()
    if capacity is not None:
        capacity = capacity[capacity["layer"] == layer]
        clouds |= set(capacity["cloud"].astype(str))
    if hosts is not None:
        hosts = hosts[hosts["layer"] == layer]
        clouds |= set(hosts["cloud"].astype(str))
    if consumers is not None:
        consumers = consumers[
            (consumers["layer"] == layer) & consumers["holds_capacity"].astype(bool) & consumers["host"].notna()
        ]
    return {
        cloud: _build_table(
            layer,
            cloud,
            None if capacity is None else capacity[capacity["cloud"] == cloud],
            None if hosts is None else hosts[hosts["cloud"] == cloud],
            None if consumers is None else consumers[consumers["cloud"] == cloud],
        )
        for cloud in sorted(clouds)
    }


def _build_table(
    layer: str,
    cloud: str,
    capacity: pd.DataFrame | None,
    hosts: pd.DataFrame | None,
    consumers: pd.DataFrame | None,
) -> HostTable:
    host_rows = capacity[capacity["scope"] == "host"] if capacity is not None else None
    pool_rows = capacity[capacity["scope"] == "pool"] if capacity is not None else None
    names: list[str] = []
    pool_of: dict[str, str] = {}
    if hosts is not None:
        for name, pool in zip(hosts["host"].astype(str), hosts["pool"].astype(str), strict=True):
            if name not in pool_of:
                names.append(name)
                pool_of[name] = pool
    if host_rows is not None:
        for name, pool in zip(host_rows["host"].astype(str), host_rows["pool"].astype(str), strict=True):
            if name not in pool_of:
                names.append(name)
                pool_of[name] = pool
    names.sort()
    position = {name: i for i, name in enumerate(names)}
    resources = sorted(set(host_rows["resource"].astype(str))) if host_rows is not None else []
    if pool_rows is not None:
        resources = sorted(set(resources) | set(pool_rows["resource"].astype(str)))
    r_pos = {name: i for i, name in enumerate(resources)}
    h, r = len(names), len(resources)
    allocatable = np.zeros((h, r))
    allocated = np.zeros((h, r))
    unknown = np.zeros((h, r), dtype=bool)
    present = np.zeros((h, r), dtype=bool)
    max_unit = np.full((h, r), np.inf)
    min_unit = np.zeros((h, r))
    step_size = np.zeros((h, r))
    if host_rows is not None and len(host_rows):
        hi = host_rows["host"].astype(str).map(position).to_numpy()
        ri = host_rows["resource"].astype(str).map(r_pos).to_numpy()
        allocatable[hi, ri] = host_rows["allocatable"].to_numpy(dtype=float)
        values = host_rows["allocated"].to_numpy(dtype=float, na_value=np.nan)
        unknown[hi, ri] = np.isnan(values)
        allocated[hi, ri] = np.nan_to_num(values, nan=0.0)
        present[hi, ri] = True
        for column, target, default in (
            ("max_unit", max_unit, np.inf),
            ("min_unit", min_unit, 0.0),
            ("step_size", step_size, 0.0),
        ):
            data = host_rows[column].to_numpy(dtype=float, na_value=np.nan)
            target[hi, ri] = np.where(np.isnan(data), default, data)
    if unknown.any() and consumers is not None:
        _fill_unknown_allocations(allocated, unknown, consumers, layer, position, r_pos)
    pools = np.array([pool_of[name] for name in names], dtype=object)
    zones = np.array([""] * h, dtype=object)
    active = np.ones(h, dtype=bool)
    traits: list[frozenset[str]] = [frozenset()] * h
    aggregates: list[frozenset[str]] = [frozenset()] * h
    taints: list[tuple[str, ...]] = [()] * h
    if hosts is not None:
        records = fast_records(
            hosts.drop_duplicates("host"), ("host", "schedulable", "ready", "zone", "traits", "aggregates", "taints")
        )
        for record in records:
            i = position[str(record["host"])]
            active[i] = bool(record["schedulable"]) and bool(record["ready"])
            zones[i] = _cell_str(record.get("zone"))
            traits[i] = frozenset(str(t) for t in as_list(record.get("traits")))
            aggregates[i] = frozenset(str(a) for a in as_list(record.get("aggregates")))
            taints[i] = tuple(str(t) for t in as_list(record.get("taints")))
    table = HostTable(
        layer=layer,
        cloud=cloud,
        names=np.array(names, dtype=object),
        pools=pools,
        zones=zones,
        active=active,
        resources=resources,
        allocatable=allocatable,
        allocated=allocated,
        present=present,
        shared=np.zeros((h, r), dtype=bool),
        max_unit=max_unit,
        min_unit=min_unit,
        step_size=step_size,
        traits=traits,
        aggregates=aggregates,
        taints=taints,
    )
    if pool_rows is not None and len(pool_rows):
        _attach_shared_providers(table, pool_rows)
    return table


def _fill_unknown_allocations(
    allocated: np.ndarray,
    unknown: np.ndarray,
    consumers: pd.DataFrame,
    layer: str,
    position: dict[str, int],
    r_pos: dict[str, int],
) -> None:
    for record in fast_records(consumers, ("host", "resources", "cpu", "memory", "disk")):
        i = position.get(str(record["host"]))
        if i is None:
            continue
        for name, amount in consumer_requests(record, layer).items():
            j = r_pos.get(name)
            if j is not None and unknown[i, j]:
                allocated[i, j] += amount


def _attach_shared_providers(table: HostTable, pool_rows: pd.DataFrame) -> None:
    """Hosts of a pool without their own inventory of a resource draw it from the pool's provider."""
    grouped = pool_rows.assign(
        free=(pool_rows["allocatable"] - pool_rows["allocated"].fillna(0.0)).clip(lower=0.0)
    ).groupby(["pool", "resource"], observed=True)
    for (pool, resource), rows in grouped:
        # Several sharing providers of one resource in a pool: one request lands on one of them.
        max_units = rows["max_unit"].fillna(np.inf).to_numpy(dtype=float)
        provider = SharedProvider(
            free=float(rows["free"].sum()),
            max_unit=float(max_units.max()),
            min_unit=float(rows["min_unit"].fillna(0.0).min()),
            step_size=float(rows["step_size"].fillna(0.0).max()),
        )
        table.shared_providers[(str(pool), str(resource))] = provider
        j = table.resources.index(str(resource))
        in_pool = table.pools == str(pool)
        table.shared[:, j] = table.shared[:, j] | (in_pool & ~table.present[:, j])


def widen(matrix: np.ndarray, width: int) -> np.ndarray:
    """Pad a request matrix with zero columns for resources added to the table after it was built."""
    if matrix.shape[1] >= width:
        return matrix
    return np.hstack([matrix, np.zeros((matrix.shape[0], width - matrix.shape[1]))])


# --- slot arithmetic --------------------------------------------------------------------------------


@dataclass
class SlotResult:
    """Slots of S shapes on H hosts: counts (0 where ineligible) and the binding resource's index."""

    slots: np.ndarray
    limiting: np.ndarray
    uses_shared: np.ndarray
    """(S, H): the shape draws at least one resource on this host from a pool-level provider."""


def slot_matrix(
    requests: np.ndarray, table: HostTable, eligible: np.ndarray, free: np.ndarray | None = None
) -> SlotResult:
    """Slots per shape and host: min over requested resources of floor(free / request).

    A request above the host's max_unit (or below min_unit, or off the step_size) fits nowhere on that
    host, as in Placement. A resource the host draws from a pool-level provider does not bound the
    host; the pool bound is applied when summing (`pool_totals`). Shapes asking for nothing get 0.
    """
    free = table.free if free is None else free
    requests = widen(requests, len(table.resources))
    s_count, h_count = requests.shape[0], table.size
    slots = np.full((s_count, h_count), np.inf)
    limiting = np.full((s_count, h_count), -1, dtype=np.int64)
    uses_shared = np.zeros((s_count, h_count), dtype=bool)
    for r in range(requests.shape[1]):
        asked = np.flatnonzero(requests[:, r] > 0)
        if not len(asked):
            continue
        q = requests[asked, r][:, None]
        admissible = (q <= table.max_unit[None, :, r] * (1 + EPSILON)) & (q >= table.min_unit[None, :, r] - EPSILON)
        steps = table.step_size[None, :, r]
        admissible &= (steps <= 0) | _is_multiple(q, steps)
        counts = np.floor(free[None, :, r] / q + EPSILON)
        counts = np.where(table.present[None, :, r] & admissible, counts, 0.0)
        shared = np.broadcast_to(table.shared[None, :, r], counts.shape)
        counts = np.where(shared, np.inf, counts)
        uses_shared[asked] |= shared
        current = slots[asked]
        better = counts < current
        slots[asked] = np.where(better, counts, current)
        limiting[asked] = np.where(better, r, limiting[asked])
    slots = np.where(eligible & table.active[None, :], slots, 0.0)
    asks_nothing = ~(requests > 0).any(axis=1)
    slots[asks_nothing] = 0.0
    return SlotResult(slots=slots, limiting=limiting, uses_shared=uses_shared)


def pool_totals(
    result: SlotResult,
    requests: np.ndarray,
    table: HostTable,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Total slots per shape over the hosts in `mask`, each host counted once, pool bounds applied.

    Returns (totals (S,), bound_binds (S,) bool: a pool-level provider was the binding limit).
    """
    requests = widen(requests, len(table.resources))
    s_count = requests.shape[0]
    totals = np.zeros(s_count)
    binds = np.zeros(s_count, dtype=bool)
    if not mask.any():
        return totals, binds
    for pool in np.unique(table.pools[mask]):
        in_pool = mask & (table.pools == pool)
        slots = result.slots[:, in_pool]
        shared = result.uses_shared[:, in_pool]
        local = np.where(shared, 0.0, slots).sum(axis=1)
        via_shared = np.where(shared, slots, 0.0).sum(axis=1)
        if shared.any():
            bounds = np.array(
                [table.shared_bound(str(pool), requests[s]) if shared[s].any() else math.inf for s in range(s_count)]
            )
            binds |= bounds < via_shared
            via_shared = np.minimum(via_shared, bounds)
        totals += local + np.where(np.isinf(via_shared), 0.0, via_shared)
    return totals, binds


def dominant_limit(
    result: SlotResult, mask: np.ndarray, eligible: np.ndarray, resources: list[str]
) -> list[str | None]:
    """Per shape, the resource binding on most eligible hosts of `mask` (None when no host is eligible)."""
    out: list[str | None] = []
    for s in range(result.limiting.shape[0]):
        chosen = result.limiting[s, mask & eligible[s] & np.isfinite(result.slots[s])]
        chosen = chosen[chosen >= 0]
        if not len(chosen):
            out.append(None)
            continue
        values, counts = np.unique(chosen, return_counts=True)
        out.append(resources[int(values[np.argmax(counts)])])
    return out

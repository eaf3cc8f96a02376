"""The libvirt source's frames: `capacity`, `consumers` and `hosts` (docs/schema.md), built column-wise.

What one poll read (a `DomainRow` per domain, the node's `NodeFacts`) becomes the three contract
frames here. Built per column rather than through `FrameSchema.build` (row by row, ~100 ms on a
1000-domain host); `Source.checked_poll` validates the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from collector.contract.schema import BOOL, CAPACITY, CONSUMERS, FLOAT, HOSTS, STRING, TIMESTAMP, FrameSchema
from collector.sources.libvirt.connection import Connection
from collector.sources.libvirt.nova_metadata import KIB, NAN, DomainDefinition
from collector.sources.libvirt.stats import DOMAIN_STATES, CpuSample, cpu_rate, guest_memory_used


@dataclass(frozen=True)
class DomainFacts:
    """What a domain's definition contributes to its consumers row, derived once per XML read.

    A warm poll copies these instead of re-deriving them (1000 domains x every poll).
    """

    name: str
    project: str | None
    flavor: str | None
    vcpus: int | None
    max_memory_bytes: float
    current_memory_bytes: float
    disk: float
    nova_instance_uuid: str | None

    @classmethod
    def of(cls, uuid: str, definition: DomainDefinition) -> DomainFacts:
        nova = definition.nova
        return cls(
            name=definition.name or uuid,
            project=nova.project_id if nova else None,
            flavor=nova.flavor if nova else None,
            vcpus=definition.vcpus,
            max_memory_bytes=definition.max_memory_bytes,
            current_memory_bytes=definition.current_memory_bytes,
            disk=nova.local_disk_bytes if nova is not None else NAN,
            nova_instance_uuid=uuid if nova else None,
        )


@dataclass(slots=True)
class DomainRow:
    dom: Any
    """The virDomain returned with the stats (used to read its XML when not cached)."""
    dom_id: int
    stats: dict[str, Any]
    facts: DomainFacts | None = None


@dataclass
class NodeFacts:
    cpus: int
    memory_bytes: float
    cpu_used: float
    memory_used: float
    notes: list[str] = field(default_factory=list)


_STRING_DTYPE = pd.StringDtype()  # the contract's "string" (a dtype object: no lookup by name per column)


def typed_frame(
    schema: FrameSchema, columns: dict[str, Any], rows: int, optional: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """A frame in the contract's column order and dtypes from per-column values, built column-wise.

    `FrameSchema.build` converts row by row through generic casts, which costs ~100 ms on a
    1000-domain host; here each column becomes its array in one step. Scalars are broadcast; missing
    nullable columns are null. Keys the schema does not have are an error, except those in `optional`
    (columns proposed for the contract, dropped until it has them). No validation here:
    `Source.checked_poll` validates what the poll returns.
    """
    unknown = columns.keys() - set(schema.column_names) - optional
    if unknown:
        raise ValueError(f"{schema.name}: no such column(s) in the contract: {', '.join(sorted(unknown))}")
    data: dict[str, Any] = {}
    for column in schema.columns:
        value = columns.get(column.name)
        if isinstance(value, list | tuple | np.ndarray):
            if len(value) != rows:
                raise ValueError(f"{schema.name}.{column.name}: {len(value)} values for {rows} rows")
        elif column.dtype == TIMESTAMP and value is not None and rows:
            # One instant for every row: converted once, not once per row.
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            data[column.name] = pd.DatetimeIndex(np.full(rows, stamp.as_unit("ns").asm8)).tz_localize("UTC")
            continue
        else:
            value = [value] * rows
        if column.dtype == TIMESTAMP:
            data[column.name] = pd.DatetimeIndex(value, tz="UTC").as_unit("ns") if rows else pd.Series(dtype=TIMESTAMP)
        elif column.dtype == FLOAT:
            data[column.name] = np.asarray(value, dtype=np.float64)
        elif column.dtype == BOOL:
            data[column.name] = np.asarray(value, dtype=bool)
        elif column.dtype == STRING:
            data[column.name] = pd.array(value, dtype=_STRING_DTYPE)
        else:
            array = np.empty(rows, dtype=object)
            array[:] = value
            data[column.name] = array
    return pd.DataFrame(data, index=pd.RangeIndex(rows))


def build_frames(
    config: Any,
    source: str,
    link: Connection,
    now: datetime,
    rows: dict[str, DomainRow],
    node: NodeFacts,
    stats_at: float,
    previous_samples: dict[str, CpuSample],
) -> tuple[dict[str, pd.DataFrame], dict[str, CpuSample]]:
    """The three frames, built column-wise: one tuple per domain, then one array per column.

    Returns the frames and this poll's CPU samples (the next poll's `previous_samples`).
    """
    cfg = config
    host = link.hostname
    allocated_cpu = 0.0
    allocated_memory = 0.0
    samples: dict[str, CpuSample] = {}
    states = DOMAIN_STATES
    records: list[tuple[Any, ...]] = []
    append = records.append
    for uuid, row in rows.items():
        stats, facts = row.stats, row.facts
        assert facts is not None
        get = stats.get
        state_code = get("state.state")
        state = states.get(state_code, "nostate") if state_code is not None else "nostate"
        active = row.dom_id != -1
        vcpus = get("vcpu.current", facts.vcpus)
        vcpus_f = float(vcpus) if vcpus is not None else NAN
        max_kib = get("balloon.maximum")
        memory = float(max_kib) * KIB if max_kib is not None else facts.max_memory_bytes
        cpu_ns = get("cpu.time")
        cpu_used = NAN
        if cpu_ns is not None and active:
            sample = CpuSample(stats_at, int(cpu_ns), row.dom_id)
            cpu_used = cpu_rate(previous_samples.get(uuid), sample)
            samples[uuid] = sample
        disk = facts.disk
        resources: dict[str, float] = (
            {"cpu": vcpus_f, "memory": memory} if disk != disk else {"cpu": vcpus_f, "memory": memory, "disk": disk}
        )  # disk != disk: NaN, the flavor has no disk sizes
        if active:
            if vcpus_f == vcpus_f:
                allocated_cpu += vcpus_f
            if memory == memory:
                allocated_memory += memory
        # Current balloon size: what the guest holds now (an allocation, not usage). Filled into
        # the `memory_balloon` column when the schema has it; ignored otherwise.
        current_kib = get("balloon.current")
        append(
            (
                uuid,
                facts.name,
                state,
                active,
                facts.project,
                facts.flavor,
                vcpus_f,
                memory,
                disk,
                resources,
                cpu_used,
                guest_memory_used(stats) if active else NAN,
                float(cpu_ns) / 1e9 if cpu_ns is not None else NAN,
                facts.nova_instance_uuid,
                float(current_kib) * KIB if current_kib is not None else facts.current_memory_bytes,
            )
        )
    n = len(records)
    names = (
        "id",
        "name",
        "state",
        "holds_capacity",
        "project",
        "flavor",
        "cpu",
        "memory",
        "disk",
        "resources",
        "cpu_used",
        "memory_used",
        "cpu_time_seconds",
        "nova_instance_uuid",
        "memory_balloon",
    )
    consumers: dict[str, Any] = (
        dict(zip(names, zip(*records, strict=True), strict=True)) if n else {name: [] for name in names}
    )
    consumers["libvirt_domain_uuid"] = consumers["id"]
    common = {
        "timestamp": now,
        "source": source,
        "layer": "hypervisor",
        "cloud": cfg.cloud,
        "pool": cfg.pool,
        "host": host,
    }
    consumer_frame = typed_frame(CONSUMERS, {**common, **consumers}, n, optional=frozenset({"memory_balloon"}))
    capacity_frame = typed_frame(
        CAPACITY,
        {
            **common,
            "scope": "host",
            "resource": ["cpu", "memory"],
            "capacity": [float(node.cpus), node.memory_bytes],
            "reserved": 0.0,
            "allocation_ratio": 1.0,
            "allocatable": [float(node.cpus), node.memory_bytes],
            "allocated": [allocated_cpu, allocated_memory],
            "used": [node.cpu_used, node.memory_used],
        },
        2,
    )
    hosts_frame = typed_frame(
        HOSTS,
        {
            **common,
            "host_id": link.host_uuid,
            "schedulable": True,
            "ready": True,
        },
        1,
    )
    return {"capacity": capacity_frame, "consumers": consumer_frame, "hosts": hosts_frame}, samples

"""The normalized frame contract every source produces and every consumer reads (docs/schema.md).

A source returns a `FrameSet`: a mapping of frame name -> pandas DataFrame. The core frames are
`capacity` (what each host or pool has) and `consumers` (VMs and pods that hold part of it);
`hosts` carries per-host facts the headroom engine filters on; sources add frames of their own
(e.g. OpenStack's `flavors`) by declaring a `FrameSchema` here, so there is one place to read them all.

Units are base units: cores for CPU, bytes for memory and disk, plain counts otherwise.
Timestamps are UTC. `validate_frame` rejects a frame that breaks the contract and names the
column and the first offending row, so a bug in a source surfaces where it was made.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LAYERS = ("hypervisor", "openstack", "kubernetes")
SCOPES = ("host", "pool")

# Resource names are lowercase snake case; the unit follows from the name.
CORE_RESOURCES = {"cpu", "vcpu", "pcpu"}
BYTE_RESOURCES = {"memory", "disk", "ephemeral_storage"}
RESOURCE_PATTERN = r"^[a-z][a-z0-9_]*$"

TIMESTAMP = "datetime64[ns, UTC]"
STRING = "string"
FLOAT = "float64"
INT = "int64"
BOOL = "bool"
OBJECT = "object"  # lists / dicts (traits, taints, resource requests)


def resource_unit(resource: str) -> str:
    """The base unit of a resource name (documented in docs/schema.md)."""
    if resource in CORE_RESOURCES:
        return "cores"
    if resource in BYTE_RESOURCES:
        return "bytes"
    return "count"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    non_negative: bool = False
    pattern: str | None = None
    allow_inf: bool = False
    """FLOAT columns only: +/-inf is a legitimate value (e.g. "not within the horizon" seconds)."""


@dataclass(frozen=True)
class FrameSchema:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def empty(self) -> pd.DataFrame:
        """A zero-row frame with the right columns and dtypes, from zero-length arrays built once (building them
        from dtype names is slow).

        Not a `copy()` of one cached frame: pandas records every copy in the cached frame's copy-on-write
        reference list and prunes the dead entries only every 500 copies, so a frame copied at every refresh held a
        sawtooth of dead weakrefs (one of the daemon's slow memory cycles, docs/operations.md "Memory")."""
        return pd.DataFrame({name: array.copy() for name, array in _empty_arrays(self).items()}, copy=False)

    def build(self, records: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Any]]) -> pd.DataFrame:
        """Build a conforming frame from records (list of dicts) or columns (dict of lists).

        Missing nullable columns are filled with nulls; dtypes are coerced; the result is validated.
        """
        frame = pd.DataFrame(records if isinstance(records, Mapping) else list(records))
        return self.coerce(frame)

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Cast a frame to the contract's dtypes and column order (missing nullable columns -> null)."""
        out: dict[str, pd.Series] = {}
        n = len(frame)
        for column in self.columns:
            if column.name in frame.columns:
                series = frame[column.name]
            elif column.nullable:
                series = pd.Series([None] * n, index=frame.index, dtype=OBJECT)
            else:
                raise SchemaError(self.name, column.name, None, "required column is missing")
            out[column.name] = _cast(series, column, self.name)
        result = pd.DataFrame(out, index=frame.index).reset_index(drop=True)
        validate_frame(self.name, result)
        return result


@functools.cache
def _empty_arrays(schema: FrameSchema) -> dict[str, Any]:
    return {c.name: pd.Series(dtype=c.dtype).array for c in schema.columns}


class SchemaError(ValueError):
    """A frame that breaks the contract; names the frame, column and (first) row."""

    def __init__(self, frame: str, column: str | None, row: int | None, problem: str):
        self.frame, self.column, self.row, self.problem = frame, column, row, problem
        where = f"{frame}.{column}" if column else frame
        if row is not None:
            where += f" row {row}"
        super().__init__(f"{where}: {problem}")


def _cast(series: pd.Series, column: Column, frame: str) -> pd.Series:
    try:
        if column.dtype == TIMESTAMP:
            return pd.to_datetime(series, utc=True).dt.as_unit("ns")
        if column.dtype == FLOAT:
            return pd.to_numeric(series, errors="raise").astype(FLOAT)
        if column.dtype == INT:
            return series.astype(INT)
        if column.dtype == BOOL:
            if series.isna().any():
                raise ValueError("null in a boolean column")
            return series.astype(BOOL)
        if column.dtype == STRING:
            return series.astype(STRING)
        return series.astype(OBJECT)
    except (TypeError, ValueError) as error:
        bad = _first_uncastable(series, column)
        raise SchemaError(frame, column.name, bad, f"cannot be read as {column.dtype}: {error}") from None


def _first_uncastable(series: pd.Series, column: Column) -> int | None:
    for position, value in enumerate(series.tolist()):
        try:
            if column.dtype in (FLOAT, INT):
                float(value)
            elif column.dtype == BOOL and value is None:
                return position
        except (TypeError, ValueError):
            return position
    return None


C = Column

_COMMON_HEAD = (
    C("timestamp", TIMESTAMP, "When the source read this row (UTC)."),
    C("source", STRING, "Name of the configured source that produced the row."),
    C("layer", STRING, "hypervisor | openstack | kubernetes", choices=LAYERS),
    C("cloud", STRING, "Cloud (OpenStack / hypervisor estate) or Kubernetes cluster."),
    C("pool", STRING, "AZ, node pool, or configured pool; hosts partition into pools (no overlap)."),
)

CAPACITY = FrameSchema(
    name="capacity",
    doc="One row per host (or pool-level provider) and resource: what it has and what is taken.",
    key=("source", "host", "resource"),
    columns=(
        *_COMMON_HEAD,
        C("host", STRING, "Hypervisor / compute host / node name; for scope=pool, the provider's name."),
        C("scope", STRING, "host, or pool for pool-level providers such as shared storage", choices=SCOPES),
        C("resource", STRING, "cpu, vcpu, pcpu, memory, disk, pods, ephemeral_storage, ...", pattern=RESOURCE_PATTERN),
        C("capacity", FLOAT, "Physical/total amount (base units).", non_negative=True),
        C("reserved", FLOAT, "Held back for the host itself.", non_negative=True),
        C("allocation_ratio", FLOAT, "Overcommit factor (1.0 where there is none).", non_negative=True),
        C("allocatable", FLOAT, "(capacity - reserved) x allocation_ratio: what may be handed out.", non_negative=True),
        C("allocated", FLOAT, "Sum of what consumers were given (NaN = unknown).", nullable=True, non_negative=True),
        C(
            "used",
            FLOAT,
            "Measured usage (NaN = not measurable, e.g. no balloon stats).",
            nullable=True,
            non_negative=True,
        ),
        C("min_unit", FLOAT, "Smallest single request (Placement); NaN where not applicable.", nullable=True),
        C("max_unit", FLOAT, "Largest single request (Placement); NaN where not applicable.", nullable=True),
        C("step_size", FLOAT, "Requests must be multiples of this (Placement); NaN where n/a.", nullable=True),
    ),
)

CONSUMERS = FrameSchema(
    name="consumers",
    doc="One row per VM, libvirt domain or pod: its size, where it runs, and keys to the other layers.",
    key=("source", "id"),
    columns=(
        *_COMMON_HEAD,
        C("host", STRING, "Where it runs (null: not placed, e.g. a Pending pod).", nullable=True),
        C("id", STRING, "Server id / domain uuid / pod uid."),
        C("name", STRING, "Human name (server name, domain name, namespace/pod)."),
        C("state", STRING, "Lowercase native state: running, paused, shutoff, active, pending, succeeded, ..."),
        C("holds_capacity", BOOL, "Counts against allocation (shut-off Nova VMs do; finished pods do not)."),
        C("project", STRING, "OpenStack project id or Kubernetes namespace.", nullable=True),
        C("flavor", STRING, "Flavor name or pod shape (owner kind/name).", nullable=True),
        C("cpu", FLOAT, "Cores requested (vCPUs, effective pod CPU request).", nullable=True, non_negative=True),
        C("memory", FLOAT, "Bytes requested.", nullable=True, non_negative=True),
        C("disk", FLOAT, "Bytes of disk requested.", nullable=True, non_negative=True),
        C("resources", OBJECT, "Every requested resource as {resource: amount} (base units).", nullable=True),
        C("cpu_limit", FLOAT, "CPU limit in cores (pods); NaN if none.", nullable=True),
        C("memory_limit", FLOAT, "Memory limit in bytes (pods); NaN if none.", nullable=True),
        C("cpu_used", FLOAT, "Cores in use (rate between polls); NaN = unknown.", nullable=True, non_negative=True),
        C(
            "memory_used",
            FLOAT,
            "Bytes in use (guest-reported / working set); NaN = unknown.",
            nullable=True,
            non_negative=True,
        ),
        C(
            "memory_balloon",
            FLOAT,
            "Current balloon size in bytes (hypervisor layer): what the guest holds now; an allocation, not usage.",
            nullable=True,
            non_negative=True,
        ),
        C("cpu_time_seconds", FLOAT, "Cumulative CPU time counter (for rates); NaN = unknown.", nullable=True),
        C("nova_instance_uuid", STRING, "Link: Nova server id.", nullable=True),
        C("libvirt_domain_uuid", STRING, "Link: libvirt domain uuid (= Nova server id under Nova).", nullable=True),
        C("k8s_provider_id", STRING, "Link: node providerID (pods: of their node).", nullable=True),
    ),
)

HOSTS = FrameSchema(
    name="hosts",
    doc="One row per host/node: scheduling facts and links to the layer below.",
    key=("source", "host"),
    columns=(
        *_COMMON_HEAD,
        C("host", STRING, "Host name, as in the capacity frame."),
        C("host_id", STRING, "Stable id: resource provider uuid, node uid, libvirt host uuid.", nullable=True),
        C("schedulable", BOOL, "False when disabled (Nova service / trait) or cordoned (node)."),
        C("ready", BOOL, "False when down (Nova service down, node NotReady, libvirt unreachable)."),
        C("zone", STRING, "Availability zone / topology zone.", nullable=True),
        C("aggregates", OBJECT, "List of aggregate uuids the host belongs to (OpenStack).", nullable=True),
        C("traits", OBJECT, "List of traits (OpenStack) or labels as 'key=value' (Kubernetes).", nullable=True),
        C("taints", OBJECT, "List of 'key=value:Effect' taints (Kubernetes).", nullable=True),
        C("instance_type", STRING, "Node instance type / flavor name.", nullable=True),
        C("nova_server_id", STRING, "Link: the Nova server this node runs on (from providerID).", nullable=True),
        C("hypervisor", STRING, "Link: the hypervisor host name a Nova compute node is.", nullable=True),
    ),
)

FLAVORS = FrameSchema(
    name="flavors",
    doc="What each OpenStack flavor asks Placement for; the headroom engine's VM shapes.",
    key=("source", "flavor_id"),
    columns=(
        C("timestamp", TIMESTAMP, "When read (UTC)."),
        C("source", STRING, "Source name."),
        C("cloud", STRING, "Cloud."),
        C("flavor", STRING, "Flavor name."),
        C("flavor_id", STRING, "Flavor id."),
        C("resources", OBJECT, "{resource: amount} in capacity-frame names and base units (vcpu/pcpu, bytes)."),
        C("required_traits", OBJECT, "List of traits a host must have."),
        C("forbidden_traits", OBJECT, "List of traits a host must not have."),
        C("member_of", OBJECT, "List of aggregate uuids the flavor is limited to (empty: any).", nullable=True),
        C("zone", STRING, "Availability zone the flavor is limited to.", nullable=True),
        C("is_public", BOOL, "Public flavor (False: limited to `projects`)."),
        C("projects", OBJECT, "Project ids with access to a private flavor.", nullable=True),
    ),
)

SCHEMAS: dict[str, FrameSchema] = {s.name: s for s in (CAPACITY, CONSUMERS, HOSTS, FLAVORS)}


def register(schema: FrameSchema) -> FrameSchema:
    """Declare an additional frame (a source's own, or a derived one such as headroom)."""
    existing = SCHEMAS.get(schema.name)
    if existing is not None and existing != schema:
        raise ValueError(f"frame {schema.name!r} is already declared differently")
    SCHEMAS[schema.name] = schema
    return schema


FrameSet = dict[str, pd.DataFrame]


def validate_frame(name: str, frame: pd.DataFrame) -> None:
    """Raise SchemaError naming the column and first row that break the contract of frame `name`."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise SchemaError(name, None, None, "no such frame in the schema")
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        raise SchemaError(name, missing[0], None, "required column is missing")
    names = set(schema.column_names)
    extra = [c for c in frame.columns if c not in names]
    if extra:
        raise SchemaError(name, str(extra[0]), None, "column not in the contract (declare it in schema.py)")
    # Checks run on each column's array, not on Series: a Series per check costs more than the check
    # itself on the small frames most polls produce (this runs on every poll of every source).
    for column in schema.columns:
        series = frame[column.name]
        if str(series.dtype) != column.dtype:
            raise SchemaError(name, column.name, None, f"dtype {series.dtype}, expected {column.dtype}")
        array = series.array
        nulls: np.ndarray | None = None
        if not column.nullable and column.dtype != BOOL:
            nulls = np.asarray(array.isna(), dtype=bool)
            if nulls.any():
                raise SchemaError(name, column.name, _row(frame, nulls), "null in a required column")
        if column.dtype == FLOAT:
            values = array.to_numpy(dtype=float, na_value=np.nan)
            infinite = np.isinf(values)
            if infinite.any() and not column.allow_inf:
                raise SchemaError(name, column.name, _row(frame, infinite), "infinite value")
            if column.non_negative:
                negative = values < 0
                if negative.any():
                    raise SchemaError(name, column.name, _row(frame, negative), "negative value")
        if column.choices is not None:
            if nulls is None:
                nulls = np.asarray(array.isna(), dtype=bool)
            bad = ~np.asarray(array.isin(list(column.choices)), dtype=bool) & ~nulls
            if bad.any():
                row = _row(frame, bad)
                raise SchemaError(
                    name, column.name, row, f"{series.iloc[row]!r} is not one of {', '.join(column.choices)}"
                )
        if column.pattern is not None and len(series):
            # re.match per distinct value, as Series.str.match does per row; nulls pass.
            match = _compiled(column.pattern).match
            distinct = pd.unique(array.to_numpy(dtype=object, na_value=None))
            failing = {v for v in distinct if v is not None and match(v) is None}
            if failing:
                row = _row(frame, np.asarray(array.isin(list(failing)), dtype=bool))
                raise SchemaError(name, column.name, row, f"{series.iloc[row]!r} does not match {column.pattern}")
    if name == "capacity" and len(frame):
        _check_allocatable(frame)
    if schema.key and len(frame) > 1:
        # Distinct string keys (the usual case) are confirmed with a set of tuples (<NA> is one
        # object, so equal to itself, as duplicated() counts it); only when there are duplicates
        # does pandas find the first one.
        if all(str(frame[k].dtype) == STRING for k in schema.key):
            keys = zip(*(frame[k].to_numpy(dtype=object) for k in schema.key), strict=True)
            if len(set(keys)) == len(frame):
                return
        duplicated = frame.duplicated(list(schema.key)).to_numpy()
        if duplicated.any():
            raise SchemaError(name, ",".join(schema.key), _row(frame, duplicated), "duplicate key")


def _check_allocatable(frame: pd.DataFrame) -> None:
    def values(column: str) -> np.ndarray:
        return np.asarray(frame[column].to_numpy(dtype=float, na_value=np.nan), dtype=float)

    expected = np.clip((values("capacity") - values("reserved")) * values("allocation_ratio"), 0, None)
    wrong = ~np.isclose(values("allocatable"), expected, rtol=1e-6, atol=1e-6)
    if wrong.any():
        raise SchemaError(
            "capacity", "allocatable", _row(frame, wrong), "is not (capacity - reserved) x allocation_ratio"
        )


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _row(frame: pd.DataFrame, mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def validate(frames: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in frames.items():
        validate_frame(name, frame)


def concat(frame_sets: Iterable[Mapping[str, pd.DataFrame]]) -> FrameSet:
    """Merge several sources' frame sets into one (frame by frame), keeping contract dtypes."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for frames in frame_sets:
        for name, frame in frames.items():
            if len(frame):
                parts.setdefault(name, []).append(frame)
    merged: FrameSet = {}
    for name, schema in SCHEMAS.items():
        pieces = parts.get(name)
        if not pieces:
            merged[name] = schema.empty()
        elif len(pieces) == 1:
            merged[name] = pieces[0]
        else:
            frame = pd.concat(pieces, ignore_index=True)
            merged[name] = frame.astype({c.name: c.dtype for c in schema.columns})
    return merged


# --- OpenStack source frames (collector/sources/openstack; documented in docs/schema.md) ---------------

OPENSTACK_AGGREGATES = register(
    FrameSchema(
        name="openstack_aggregates",
        doc="One row per Nova host aggregate: zone, hosts and the metadata scheduling filters read.",
        key=("source", "uuid"),
        columns=(
            C("timestamp", TIMESTAMP, "When read (UTC)."),
            C("source", STRING, "Source name."),
            C("cloud", STRING, "Cloud."),
            C("aggregate", STRING, "Aggregate name."),
            C("uuid", STRING, "Aggregate uuid (= the Placement aggregate uuid; Nova >= 2.41)."),
            C("zone", STRING, "Availability zone the aggregate defines, if any.", nullable=True),
            C("hosts", OBJECT, "Host names (capacity-frame `host`) in the aggregate."),
            C("metadata", OBJECT, "All metadata as {key: value}."),
            C("projects", OBJECT, "Project ids from filter_tenant_id* metadata (empty: no tenant isolation)."),
        ),
    )
)

OPENSTACK_QUOTAS = register(
    FrameSchema(
        name="openstack_quotas",
        doc="Nova quota per project with servers: limit, in use, reserved (cpu cores, memory bytes, instances).",
        key=("source", "project", "resource"),
        columns=(
            C("timestamp", TIMESTAMP, "When read (UTC)."),
            C("source", STRING, "Source name."),
            C("cloud", STRING, "Cloud."),
            C("project", STRING, "Project id."),
            C("resource", STRING, "cpu | memory | instances", pattern=RESOURCE_PATTERN),
            C("limit", FLOAT, "Quota limit in base units (NaN: unlimited).", nullable=True, non_negative=True),
            C("in_use", FLOAT, "In use, base units.", non_negative=True),
            C("reserved", FLOAT, "Reserved by in-flight operations, base units.", non_negative=True),
        ),
    )
)

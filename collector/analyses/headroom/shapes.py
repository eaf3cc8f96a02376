"""Shapes (what we count slots for) and consumer classes (what N+1 has to re-place).

A `ShapeSet` is S shapes with their requests (S x R) and the hosts each may go to (S x H). A
`ConsumerClasses` groups the consumers already placed on a table's hosts into classes of identical
request and constraints: first-fit of identical items is a fill in host order, so re-placing a class
is one cumulative sum instead of a loop per consumer.

Memory grows with the work, not with classes x hosts: how many consumers of each class a host holds
is kept sparse (one entry per (host, class) pair that holds any), and eligibility is one host mask
per distinct constraint set, shared by every class with those constraints. (A dense classes x hosts
matrix raised MemoryError at 100k hypervisors and 60k classes in one cloud.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.model import HostTable, fast_records


@dataclass
class ShapeSet:
    names: list[str]
    kind: str
    """flavor | pod_shape"""
    requests: np.ndarray
    eligible: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class ConsumerClasses:
    requests: np.ndarray
    """(K, R) what one consumer of the class holds."""
    masks: np.ndarray
    """(U, H) the distinct host masks of the classes' constraints (hosts a consumer may be re-placed on)."""
    mask_of: np.ndarray
    """(K,) row of `masks` of each class."""
    held_host: np.ndarray
    """(E,) host of each (host, class) pair holding consumers, sorted by host then class."""
    held_class: np.ndarray
    """(E,) class of each pair."""
    held_count: np.ndarray
    """(E,) how many consumers of the class the host holds now."""
    pools: np.ndarray
    """(K,) pool the class's consumers live in (pool-level providers are per pool)."""
    labels: list[str]
    member_labels: np.ndarray | None = None
    """(N,) consumers-frame index label of every member, grouped by class (what-if moves them)."""
    member_hosts: np.ndarray | None = None
    """(N,) host index of every member, aligned with `member_labels`."""
    member_bounds: np.ndarray | None = None
    """(K + 1,) class k's members are [member_bounds[k], member_bounds[k + 1])."""
    host_bounds: np.ndarray = field(init=False)
    """(H + 1,) host h's pairs are [host_bounds[h], host_bounds[h + 1]) of the held_* arrays."""

    def __post_init__(self) -> None:
        self.host_bounds = np.searchsorted(self.held_host, np.arange(self.size + 1))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """Hosts (H)."""
        return int(self.masks.shape[1])

    @classmethod
    def empty(cls, resources: int, hosts: int) -> ConsumerClasses:
        none = np.zeros(0, dtype=np.int64)
        return cls(
            np.zeros((0, resources)),
            np.zeros((0, hosts), dtype=bool),
            none,
            none,
            none,
            none,
            np.array([], dtype=object),
            [],
        )

    @classmethod
    def single(cls, request: np.ndarray, eligible: np.ndarray, pool: str, label: str) -> ConsumerClasses:
        """One class of new consumers (what-if `add`): none placed yet."""
        none = np.zeros(0, dtype=np.int64)
        return cls(
            np.atleast_2d(request),
            np.atleast_2d(eligible).astype(bool),
            np.zeros(1, dtype=np.int64),
            none,
            none,
            none,
            np.array([pool], dtype=object),
            [label],
        )

    def eligible_of(self, k: int) -> np.ndarray:
        """(H,) hosts class k may be re-placed on."""
        row: np.ndarray = self.masks[self.mask_of[k]]
        return row

    def eligible_block(self, ks: np.ndarray, hosts: np.ndarray) -> np.ndarray:
        """(len(ks), len(hosts)) eligibility of some classes on some hosts, without the full matrix."""
        block: np.ndarray = self.masks[np.ix_(self.mask_of[ks], hosts)]
        return block

    def eligible_matrix(self) -> np.ndarray:
        """(K, H) dense eligibility: for small estates and tests only (K x H bytes)."""
        matrix: np.ndarray = self.masks[self.mask_of]
        return matrix

    def counts_matrix(self) -> np.ndarray:
        """(K, H) dense counts: for small estates and tests only (8 K x H bytes)."""
        matrix = np.zeros((len(self), self.size), dtype=np.int64)
        matrix[self.held_class, self.held_host] = self.held_count
        return matrix

    def held_on(self, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs held on `hosts` (indices): (position in `hosts`, class, count) per pair."""
        hosts = np.asarray(hosts, dtype=np.int64)
        starts, stops = self.host_bounds[hosts], self.host_bounds[hosts + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        position = np.repeat(np.arange(len(hosts)), lengths)
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
        return position, self.held_class[offsets], self.held_count[offsets]

    def displaced(self, dead: np.ndarray) -> np.ndarray:
        """(K,) consumers of each class held on `dead` (a host mask or host indices)."""
        dead = np.asarray(dead)
        hosts = np.flatnonzero(dead) if dead.dtype == bool else dead.astype(np.int64).reshape(-1)
        _, ks, counts = self.held_on(hosts)
        return np.bincount(ks, weights=counts, minlength=len(self)).astype(np.int64)

    def held_total(self, hosts: np.ndarray) -> int:
        """How many consumers `hosts` (indices) hold in all."""
        _, _, counts = self.held_on(hosts)
        return int(counts.sum())

    def loaded(self) -> np.ndarray:
        """(H,) the host holds at least one consumer."""
        loaded: np.ndarray = np.diff(self.host_bounds) > 0
        return loaded

    def members(self, k: int) -> list[tuple[Any, int]]:
        """(consumers-frame index label, host index) of each member of class k."""
        if self.member_labels is None or self.member_hosts is None or self.member_bounds is None:
            return []
        start, stop = int(self.member_bounds[k]), int(self.member_bounds[k + 1])
        return list(zip(self.member_labels[start:stop].tolist(), self.member_hosts[start:stop].tolist(), strict=True))


_CLASS_COLUMNS = ("layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory", "disk", "resources")
"""What grouping needs of a consumer row (reading only these keeps 150k pods fast)."""


def _dict_cells(values: list[Any]) -> tuple[pd.DataFrame | None, np.ndarray]:
    """The non-empty dict cells of `values` as columns (keys in first-seen order), and which rows had one.

    pyarrow converts the dicts in C (a struct array), 4x faster than `DataFrame.from_records`; a key
    holding numbers in some rows and text in others does not convert, and falls back to pandas.
    """
    cells = [v if isinstance(v, dict) and v else None for v in values]
    has_dict = np.fromiter((c is not None for c in cells), dtype=bool, count=len(cells))
    if not has_dict.any():
        return None, has_dict
    try:
        import pyarrow as pa

        array = pa.array(cells)
        if not pa.types.is_struct(array.type):
            raise TypeError(array.type)
        columns = {array.type.field(i).name: array.field(i).to_pandas() for i in range(array.type.num_fields)}
        return pd.DataFrame(columns), has_dict
    except Exception:  # noqa: BLE001 - mixed types in one key: pandas' slower, forgiving path
        return pd.DataFrame.from_records([c if c is not None else {} for c in cells]), has_dict


def request_table(frame: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Each row's request as columns (one per resource, 0 where not asked), built column-wise.

    Same rules as `consumer_requests`: the `resources` dict where there is one, else cpu/memory/disk
    mapped to the layer's names; a pod always holds one `pods`. Bad amounts (negative, NaN, text) are 0.
    """
    values = frame["resources"].tolist() if "resources" in frame.columns else [None] * len(frame)
    parsed, has_dict = _dict_cells(values)
    if parsed is None:
        table = pd.DataFrame(index=frame.index)
    else:
        parsed.index = frame.index
        table = parsed.apply(pd.to_numeric, errors="coerce") if len(parsed.columns) else parsed
    table.columns = [str(c) for c in table.columns]
    if (~has_dict).any():
        names = {
            "cpu": "vcpu" if layer == "openstack" else "cpu",
            "memory": "memory",
            "disk": "ephemeral_storage" if layer == "kubernetes" else "disk",
        }
        for column, name in names.items():
            if column not in frame.columns:
                continue
            fallback = frame[column].to_numpy(dtype=float, na_value=np.nan)
            current = table[name].to_numpy(dtype=float) if name in table.columns else np.zeros(len(frame))
            table[name] = np.where(has_dict, current, fallback)
    table = table.astype(float).fillna(0.0)
    table = table.where(np.isfinite(table.to_numpy(dtype=float)) & (table.to_numpy(dtype=float) > 0), 0.0)
    if layer == "kubernetes":
        pods = table["pods"].to_numpy(dtype=float) if "pods" in table.columns else np.zeros(len(frame))
        table["pods"] = np.where(pods > 0, pods, 1.0)
    return table.astype(float)


def strict_requests(frame: pd.DataFrame, layer: str) -> pd.DataFrame:
    """`consumer_requests` of every row, column-wise (0 where a row does not ask for a resource).

    Unlike `request_table`, a dict holding no usable amount (all bad) falls back to the cpu/memory
    columns, and a fallback amount is kept whenever it is above 0: the per-record rules exactly, for
    shape medians. Only the `resources`, `cpu` and `memory` columns are read.
    """
    values = frame["resources"].tolist() if "resources" in frame.columns else [None] * len(frame)
    parsed, has_dict = _dict_cells(values)
    if parsed is None:
        table = pd.DataFrame(index=frame.index)
    else:
        parsed.index = frame.index
        table = parsed.apply(pd.to_numeric, errors="coerce").astype(float) if len(parsed.columns) else parsed
        table.columns = [str(c) for c in table.columns]
        data = table.to_numpy(dtype=float)
        table = table.where(np.isfinite(data) & (data > 0), 0.0)
        has_dict &= (table.to_numpy(dtype=float) > 0).any(axis=1) if len(table.columns) else False
        table = table.where(has_dict[:, None] & np.ones(table.shape, dtype=bool), 0.0)
    names = {"cpu": "vcpu" if layer == "openstack" else "cpu", "memory": "memory"}
    for column, name in names.items():
        if column not in frame.columns:
            continue
        fallback = frame[column].to_numpy(dtype=float, na_value=np.nan)
        fallback = np.where(~has_dict & (fallback > 0), fallback, 0.0)
        current = table[name].to_numpy(dtype=float) if name in table.columns else np.zeros(len(frame))
        table[name] = np.where(has_dict, current, fallback)
    if layer == "kubernetes":
        pods = table["pods"].to_numpy(dtype=float) if "pods" in table.columns else np.zeros(len(frame))
        table["pods"] = np.where(pods > 0, pods, 1.0)
    return table.astype(float)


def group_codes(columns: Sequence[np.ndarray | pd.Series | Sequence[Hashable]]) -> np.ndarray:
    """One group number per row for the rows' combined key, numbered in order of first appearance.

    Vectorised `groupby(columns, sort=False).ngroup()`: each column is factorised (hashing in C), and
    the codes are combined pairwise and re-factorised so the combined number never overflows.
    """
    combined: np.ndarray | None = None
    for column in columns:
        codes, uniques = pd.factorize(pd.Series(column) if not isinstance(column, pd.Series) else column)
        codes = codes.astype(np.int64)
        if combined is None:
            combined = codes
        else:
            combined, _ = pd.factorize(combined * max(len(uniques), 1) + codes)
            combined = combined.astype(np.int64)
    if combined is None:
        return np.zeros(0, dtype=np.int64)
    numbered: np.ndarray = pd.factorize(combined)[0].astype(np.int64)
    return numbered


EligibilityFn = Callable[[Sequence[Mapping[str, Any]]], tuple[np.ndarray, np.ndarray]]
"""Representatives -> ((U, H) distinct host masks, (K,) mask of each representative)."""


def consumer_classes(
    table: HostTable,
    consumers: pd.DataFrame | None,
    *,
    movable: Callable[[pd.DataFrame], np.ndarray],
    class_key: Callable[[pd.DataFrame], Sequence[np.ndarray]],
    eligibility: EligibilityFn,
) -> ConsumerClasses:
    """Group the table's placed consumers into classes, column-wise (no Python per consumer).

    `movable(frame)` masks the rows that would be re-placed; `class_key(frame)` gives the columns that
    say which consumers are interchangeable (same request and pool are added here); `eligibility(
    representatives)` returns the distinct host masks and each representative's mask.
    """
    empty = ConsumerClasses.empty(len(table.resources), table.size)
    if consumers is None or consumers.empty:
        return empty
    selected = (
        (consumers["layer"] == table.layer).to_numpy(dtype=bool, na_value=False)
        & (consumers["cloud"] == table.cloud).to_numpy(dtype=bool, na_value=False)
        & consumers["holds_capacity"].astype(bool).to_numpy(dtype=bool)
        & consumers["host"].notna().to_numpy(dtype=bool)
    )
    rows = np.flatnonzero(selected)
    if not len(rows):
        return empty
    columns = [consumers.columns.get_loc(c) for c in _CLASS_COLUMNS if c in consumers.columns]
    frame = consumers.iloc[rows, columns]
    names = frame["host"].astype(str).to_numpy(dtype=object)
    hosts = pd.Index(table.names, dtype=object).get_indexer(names).astype(np.int64)
    keep = (hosts >= 0) & np.asarray(movable(frame), dtype=bool)
    if not keep.any():
        return empty
    if not keep.all():
        frame, hosts = frame.iloc[np.flatnonzero(keep)], hosts[keep]
    requests = request_table(frame, table.layer)
    values = requests.to_numpy(dtype=float)
    asks = (values > 0).any(axis=1)  # a consumer holding nothing has nothing to re-place
    if not asks.any():
        return empty
    if not asks.all():
        frame, hosts, values = frame.iloc[np.flatnonzero(asks)], hosts[asks], values[asks]
    asked = (values > 0).any(axis=0)
    resource_names = [c for c, a in zip(requests.columns, asked, strict=True) if a]
    values = values[:, asked]
    pools = table.pools[hosts]
    codes = group_codes([*(values[:, j] for j in range(values.shape[1])), *class_key(frame), pools])
    k_count = int(codes.max()) + 1
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k_count + 1))
    first = order[bounds[:-1]]
    pairs, counts = np.unique(hosts * k_count + codes, return_counts=True)
    representatives = fast_records(frame.iloc[first], _CLASS_COLUMNS)
    matrix = table.request_matrix(
        [{r: float(a) for r, a in zip(resource_names, row, strict=True) if a > 0} for row in values[first].tolist()]
    )
    masks, mask_of = eligibility(representatives)
    return ConsumerClasses(
        matrix,
        np.asarray(masks, dtype=bool),
        np.asarray(mask_of, dtype=np.int64),
        pairs // k_count,
        pairs % k_count,
        counts.astype(np.int64),
        pools[first].astype(object),
        [str(r.get("flavor") or "?") for r in representatives],
        frame.index.to_numpy()[order],
        hosts[order],
        bounds,
    )

"""Shapes (what we count slots for) and consumer classes (what N+1 has to re-place), as matrices.

A `ShapeSet` is S shapes with their requests (S x R) and the hosts each may go to (S x H). A
`ConsumerClasses` groups the consumers already placed on a table's hosts into classes of identical
request and constraints, with how many of each sit on each host (K x H): first-fit of identical items
is a fill in host order, so re-placing a class is one cumulative sum instead of a loop per consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
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
    eligible: np.ndarray
    """(K, H) hosts a consumer of the class may be re-placed on."""
    counts: np.ndarray
    """(K, H) how many consumers of the class each host holds now."""
    pools: np.ndarray
    """(K,) pool the class's consumers live in (pool-level providers are per pool)."""
    labels: list[str]
    members: list[list[tuple[Any, int]]] | None = None
    """Per class: (consumers-frame index label, host index) of each member, for moving them (what-if)."""

    _held: dict[int, list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def held_by_host(self) -> dict[int, list[tuple[int, int]]]:
        """host index -> [(class, count)] of what it holds (computed once, shared by every pool's N+1)."""
        if self._held is None:
            held: dict[int, list[tuple[int, int]]] = {}
            ks, hs = np.nonzero(self.counts)
            values = self.counts[ks, hs].tolist()
            for k, h, n in zip(ks.tolist(), hs.tolist(), values, strict=True):
                held.setdefault(h, []).append((k, n))
            self._held = held
        return self._held


_CLASS_COLUMNS = ("layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory", "disk", "resources")
"""What grouping needs of a consumer row (reading only these keeps 150k pods fast)."""


def request_table(frame: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Each row's request as columns (one per resource, 0 where not asked), built column-wise.

    Same rules as `consumer_requests`: the `resources` dict where there is one, else cpu/memory/disk
    mapped to the layer's names; a pod always holds one `pods`. Bad amounts (negative, NaN, text) are 0.
    """
    values = frame["resources"].tolist() if "resources" in frame.columns else [None] * len(frame)
    has_dict = np.fromiter((isinstance(v, dict) and bool(v) for v in values), dtype=bool, count=len(values))
    table = pd.DataFrame.from_records(
        [v if ok else {} for v, ok in zip(values, has_dict, strict=True)], index=frame.index
    )
    table = table.apply(pd.to_numeric, errors="coerce") if len(table.columns) else table
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
    table = table.fillna(0.0)
    table = table.where(np.isfinite(table.to_numpy(dtype=float)) & (table.to_numpy(dtype=float) > 0), 0.0)
    if layer == "kubernetes":
        pods = table["pods"].to_numpy(dtype=float) if "pods" in table.columns else np.zeros(len(frame))
        table["pods"] = np.where(pods > 0, pods, 1.0)
    return table.astype(float)


def consumer_classes(
    table: HostTable,
    consumers: pd.DataFrame | None,
    *,
    movable: Callable[[pd.DataFrame], np.ndarray],
    class_key: Callable[[pd.DataFrame], Sequence[Hashable]],
    eligibility: Callable[[Sequence[Mapping[str, Any]]], np.ndarray],
) -> ConsumerClasses:
    """Group the table's placed consumers into classes, column-wise (150k pods in well under a second).

    `movable(frame)` masks the rows that would be re-placed; `class_key(frame)` says which consumers
    are interchangeable (same request and pool are added here); `eligibility(representatives)`
    returns the (K, H) host mask for one representative record per class.
    """
    empty = ConsumerClasses(
        np.zeros((0, len(table.resources))),
        np.zeros((0, table.size), dtype=bool),
        np.zeros((0, table.size), dtype=np.int64),
        np.array([], dtype=object),
        [],
        [],
    )
    if consumers is None or consumers.empty:
        return empty
    frame = consumers[
        (consumers["layer"] == table.layer)
        & (consumers["cloud"] == table.cloud)
        & consumers["holds_capacity"].astype(bool)
        & consumers["host"].notna()
    ]
    if frame.empty:
        return empty
    hosts = frame["host"].astype(str).map(table.index()).to_numpy(dtype=float, na_value=np.nan)
    keep = ~np.isnan(hosts) & np.asarray(movable(frame), dtype=bool)
    frame, hosts = frame[keep], hosts[keep].astype(np.int64)
    if frame.empty:
        return empty
    requests = request_table(frame, table.layer)
    asks = (requests > 0).any(axis=1).to_numpy()  # a consumer holding nothing has nothing to re-place
    frame, hosts, requests = frame[asks], hosts[asks], requests[asks]
    if frame.empty:
        return empty
    requests = requests.loc[:, (requests > 0).any(axis=0)]
    pools = table.pools[hosts]
    grouping = requests.assign(_key=pd.Series(class_key(frame), index=frame.index, dtype=object).map(repr), _pool=pools)
    codes = grouping.groupby(list(grouping.columns), sort=False).ngroup().to_numpy()
    k_count = int(codes.max()) + 1 if len(codes) else 0
    counts = np.zeros((k_count, table.size), dtype=np.int64)
    np.add.at(counts, (codes, hosts), 1)
    first = np.unique(codes, return_index=True)[1]
    representatives = fast_records(frame.iloc[first], _CLASS_COLUMNS)
    firsts = requests.iloc[first]
    matrix = table.request_matrix([{r: float(a) for r, a in row.items() if a > 0} for row in firsts.to_dict("records")])
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k_count + 1))
    labels_all, hosts_all = frame.index.to_numpy()[order], hosts[order]
    members = [
        list(
            zip(
                labels_all[bounds[k] : bounds[k + 1]].tolist(),
                hosts_all[bounds[k] : bounds[k + 1]].tolist(),
                strict=True,
            )
        )
        for k in range(k_count)
    ]
    labels = [str(r.get("flavor") or "?") for r in representatives]
    return ConsumerClasses(matrix, eligibility(representatives), counts, pools[first].astype(object), labels, members)

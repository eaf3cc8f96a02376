"""Shapes (what we count slots for) and consumer classes (what N+1 has to re-place), as matrices.

A `ShapeSet` is S shapes with their requests (S x R) and the hosts each may go to (S x H). A
`ConsumerClasses` groups the consumers already placed on a table's hosts into classes of identical
request and constraints, with how many of each sit on each host (K x H): first-fit of identical items
is a fill in host order, so re-placing a class is one cumulative sum instead of a loop per consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from collector.headroom.model import HostTable, consumer_requests, fast_records


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

    def __len__(self) -> int:
        return len(self.labels)


_CLASS_COLUMNS = ("layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory", "disk", "resources")
"""What grouping needs of a consumer row (reading only these keeps 150k pods fast)."""


def consumer_classes(
    table: HostTable,
    consumers: pd.DataFrame | None,
    *,
    movable: Callable[[Mapping[str, Any]], bool],
    class_key: Callable[[Mapping[str, Any]], Hashable],
    eligibility: Callable[[list[Mapping[str, Any]]], np.ndarray],
) -> ConsumerClasses:
    """Group the table's placed consumers into classes.

    `class_key(record)` says which consumers are interchangeable (same request is added here);
    `eligibility(representatives)` returns the (K, H) host mask for one representative per class.
    """
    empty = ConsumerClasses(np.zeros((0, len(table.resources))), np.zeros((0, table.size), dtype=bool),
                            np.zeros((0, table.size), dtype=np.int64), np.array([], dtype=object), [])
    if consumers is None or consumers.empty:
        return empty
    position = table.index()
    frame = consumers[(consumers["layer"] == table.layer) & (consumers["cloud"] == table.cloud)
                      & consumers["holds_capacity"].astype(bool) & consumers["host"].notna()]
    keys: dict[Hashable, int] = {}
    representatives: list[Mapping[str, Any]] = []
    requests: list[dict[str, float]] = []
    hosts_of: list[list[int]] = []
    members: list[list[tuple[Any, int]]] = []
    for label, record in zip(frame.index, fast_records(frame, _CLASS_COLUMNS), strict=True):
        h = position.get(str(record["host"]))
        if h is None or not movable(record):
            continue
        request = consumer_requests(record, table.layer)
        if not request:
            continue
        key = (class_key(record), tuple(sorted(request.items())), str(table.pools[h]))
        k = keys.get(key)
        if k is None:
            k = keys[key] = len(representatives)
            representatives.append(record)
            requests.append(request)
            hosts_of.append([])
            members.append([])
        hosts_of[k].append(h)
        members[k].append((label, h))
    if not representatives:
        return empty
    matrix = table.request_matrix(requests)
    counts = np.zeros((len(representatives), table.size), dtype=np.int64)
    for k, hosts in enumerate(hosts_of):
        np.add.at(counts[k], np.array(hosts, dtype=np.int64), 1)
    pools = np.array([key[2] for key in keys], dtype=object)
    labels = [str(representatives[k].get("flavor") or "?") for k in range(len(representatives))]
    return ConsumerClasses(matrix, eligibility(representatives), counts, pools, labels, members)

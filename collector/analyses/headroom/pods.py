"""Pod headroom: slots per pod shape on every node, as the scheduler's resource fit would allow.

slots = min over requested resources (cpu, memory, ephemeral_storage, extended, and one of `pods`)
of floor((allocatable - requested) / request). Cordoned (unschedulable) and NotReady nodes take no
pods; a node whose NoSchedule/NoExecute taints the shape does not tolerate, or whose labels miss the
shape's nodeSelector, is not eligible.

Shapes come from the config (`shapes:`) and from the cluster itself: the most common owners seen
(`consumers.flavor`, e.g. `Deployment/web`) with their median effective requests. Tolerations of a
seen shape are not in the frames; it is taken to tolerate the taints of the nodes it already runs on.
DaemonSet and static pods are not shapes (one per node by construction) and do not move on failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from collector.analyses.headroom.model import HostTable
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet, consumer_classes, strict_requests

BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
PINNED_OWNERS = ("DaemonSet/", "StaticPod/", "Node/")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """'key=value:Effect' or 'key:Effect' (the hosts frame's form)."""
        body, _, effect = text.rpartition(":")
        if not body:
            body, effect = effect, ""
        key, _, value = body.partition("=")
        return cls(key, value, effect)


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass
class PodShapeSpec:
    """A shape to count: effective requests (capacity-frame names, incl. pods: 1) and placement rules."""

    name: str
    requests: dict[str, float]
    tolerations: tuple[Toleration, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerated_taints: frozenset[str] | None = None
    """Seen shapes: taint strings of the nodes the shape runs on (tolerated by inference)."""


def is_pinned(record: Mapping[str, Any]) -> bool:
    """DaemonSet and static pods belong to their node: they are neither shapes nor re-placed."""
    return str(record.get("flavor") or "").startswith(PINNED_OWNERS)


def _blocking(taints: Iterable[str]) -> list[tuple[str, Taint]]:
    out = []
    for text in taints:
        taint = Taint.parse(text)
        if taint.effect in BLOCKING_EFFECTS:
            out.append((text, taint))
    return out


def pod_eligibility(table: HostTable, shapes: list[PodShapeSpec]) -> np.ndarray:
    """(S, H) bool: nodes whose taints the shape tolerates and whose labels match its nodeSelector."""
    out = np.ones((len(shapes), table.size), dtype=bool)
    blocking = [(h, _blocking(taints)) for h, taints in enumerate(table.taints) if taints]
    for s, shape in enumerate(shapes):
        for h, taints in blocking:
            for text, taint in taints:
                if shape.tolerated_taints is not None and text in shape.tolerated_taints:
                    continue
                if not any(t.tolerates(taint) for t in shape.tolerations):
                    out[s, h] = False
                    break
        if shape.node_selector:
            wanted = frozenset(f"{k}={v}" for k, v in shape.node_selector.items())
            out[s] &= np.fromiter((wanted <= labels for labels in table.traits), dtype=bool, count=table.size)
    return out


def configured_shapes(config: Any) -> list[PodShapeSpec]:
    """Shapes from the config's `shapes:` section."""
    shapes = getattr(config, "shapes", None) or {}
    return [
        PodShapeSpec(
            name=name,
            requests=shape.requests(),
            tolerations=tuple(Toleration(t.key, t.operator, t.value, t.effect) for t in shape.tolerations),
            node_selector=dict(shape.node_selector),
        )
        for name, shape in shapes.items()
    ]


def common_shapes(table: HostTable, consumers: pd.DataFrame | None, top: int) -> list[PodShapeSpec]:
    """The `top` most common owners' pods on this cluster, with their median requests.

    Column-wise: owners are counted by factorised code, and the top owners' requests are read in one
    pass (`strict_requests`, the rules of `consumer_requests`), not one record at a time.
    """
    if consumers is None or consumers.empty or top <= 0:
        return []
    selected = (
        (consumers["layer"] == "kubernetes").to_numpy(dtype=bool, na_value=False)
        & (consumers["cloud"] == table.cloud).to_numpy(dtype=bool, na_value=False)
        & consumers["holds_capacity"].astype(bool).to_numpy(dtype=bool)
        & consumers["flavor"].notna().to_numpy(dtype=bool)
    )
    rows = np.flatnonzero(selected)
    if not len(rows):
        return []
    codes, owners = pd.factorize(consumers["flavor"].iloc[rows].astype(str).to_numpy(dtype=object))
    pinned = np.array([str(o).startswith(PINNED_OWNERS) for o in owners], dtype=bool)
    counts = np.bincount(codes, minlength=len(owners))
    counts[pinned] = 0
    ranked = sorted(
        ((str(owners[i]), int(counts[i])) for i in np.flatnonzero(counts)), key=lambda item: (-item[1], item[0])
    )[:top]
    if not ranked:
        return []
    chosen = np.array([owners.tolist().index(name) for name, _ in ranked], dtype=np.int64)
    in_top = np.isin(codes, chosen)
    frame = consumers.iloc[rows[in_top]]
    top_codes = codes[in_top]
    requests = strict_requests(frame, "kubernetes")
    values = requests.to_numpy(dtype=float)
    hosts = pd.Index(table.names, dtype=object).get_indexer(
        frame["host"].astype(object).where(frame["host"].notna(), None).to_numpy(dtype=object)
    )
    out = []
    for (name, _), code in zip(ranked, chosen.tolist(), strict=True):
        mine = top_codes == code
        present = (values[mine] > 0).any(axis=0)  # keys some pod of the owner asks for
        median = {str(k): float(np.median(values[mine, j])) for j, k in enumerate(requests.columns) if present[j]}
        median = dict(sorted(median.items()))
        median["pods"] = 1.0
        taints: set[str] = set()
        for h in np.unique(hosts[mine]).tolist():
            if h >= 0:
                taints.update(table.taints[h])
        out.append(PodShapeSpec(name, {k: v for k, v in median.items() if v > 0}, tolerated_taints=frozenset(taints)))
    return out


def pod_shapes(table: HostTable, specs: list[PodShapeSpec]) -> ShapeSet:
    requests = table.request_matrix([s.requests for s in specs])
    return ShapeSet([s.name for s in specs], "pod_shape", requests, pod_eligibility(table, specs))


def pod_classes(table: HostTable, consumers: pd.DataFrame | None) -> ConsumerClasses:
    """Movable pods grouped for re-placement; a class tolerates the taints its owner already runs on."""
    taints_by_owner: dict[str, set[str]] = {}
    tainted = {str(table.names[h]): table.taints[h] for h in range(table.size) if table.taints[h]}
    if consumers is not None and not consumers.empty and tainted:
        frame = consumers[
            (consumers["layer"] == "kubernetes")
            & (consumers["cloud"] == table.cloud)
            & consumers["host"].isin(list(tainted))
        ]
        pairs = set(zip(frame["flavor"].fillna("").astype(str), frame["host"].astype(str), strict=True))
        for owner_name, host in pairs:
            taints_by_owner.setdefault(owner_name, set()).update(tainted[host])

    def owner(record: Mapping[str, Any]) -> str:
        return str(record.get("flavor") or "")

    def key(frame: pd.DataFrame) -> list[np.ndarray]:
        keys = frame["flavor"].astype(object).where(frame["flavor"].notna(), "").astype(str)
        return [keys.to_numpy(dtype=object)]

    def movable(frame: pd.DataFrame) -> np.ndarray:
        # Per distinct owner, not per pod: a few hundred startswith calls for 150k pods.
        codes, owners = pd.factorize(frame["flavor"].astype(object).where(frame["flavor"].notna(), ""))
        pinned = np.array([str(o).startswith(PINNED_OWNERS) for o in owners], dtype=bool)
        return ~pinned[codes] if len(owners) else np.ones(len(frame), dtype=bool)

    def eligibility(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        distinct: dict[frozenset[str], int] = {}
        mask_of = np.zeros(len(records), dtype=np.int64)
        for k, record in enumerate(records):
            tolerated = frozenset(taints_by_owner.get(owner(record), ()))
            mask_of[k] = distinct.setdefault(tolerated, len(distinct))
        specs = [PodShapeSpec("", {}, tolerated_taints=tolerated) for tolerated in distinct]
        return pod_eligibility(table, specs), mask_of

    return consumer_classes(table, consumers, movable=movable, class_key=key, eligibility=eligibility)

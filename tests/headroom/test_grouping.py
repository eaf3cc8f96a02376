"""Consumer grouping (collector.analyses.headroom.shapes) is right and its memory grows with the work.

* the vectorised grouping (pyarrow dict cells, factorised keys, sparse held pairs, one mask per distinct
  constraint set) equals a straightforward per-consumer grouping on random estates, pods and VMs, with
  bad amounts, empty dicts, unknown hosts, pinned owners and released consumers;
* grouping + N+1 on one pool never holds a classes x hosts matrix: with 16x the classes on the same
  hosts and VMs, traced peak memory stays put (the dense layout took ~26 bytes per class x host).
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.analyses.headroom.failure import n_plus_one
from collector.analyses.headroom.model import HostTable, build_host_tables, consumer_requests, slot_matrix, widen
from collector.analyses.headroom.pods import PINNED_OWNERS, PodShapeSpec, common_shapes, pod_classes, pod_eligibility
from collector.analyses.headroom.shapes import ConsumerClasses
from collector.analyses.headroom.vm import (
    Isolation,
    VmConstraints,
    build_isolation,
    flavor_shapes,
    read_aggregates,
    read_flavors,
    vm_classes,
    vm_eligibility,
)
from tests.headroom.builder import GIB, Estate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AMOUNTS = [1.0, 2.0, 0.5, 4 * GIB, 0.0, -1.0, math.nan, None, "2", "abc", 3]
KEYS = ["cpu", "memory", "pods", "vcpu", "disk", "nvidia.com/gpu"]
resources_cell = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(AMOUNTS), max_size=4),
)
consumer_spec = st.fixed_dictionaries(
    {
        "host": st.sampled_from(["n0", "n1", "n2", "n3", "ghost", None]),
        "owner": st.sampled_from(["Deployment/a", "Deployment/b", "DaemonSet/ds", "StatefulSet/s", None]),
        "project": st.sampled_from(["p1", "p2", "tenant-x", None]),
        "holds": st.sampled_from([True, True, True, False]),
        "resources": resources_cell,
        "cpu": st.sampled_from([None, math.nan, 1.0, 2.0, -1.0]),
        "memory": st.sampled_from([None, 2 * GIB, 0.0]),
        "disk": st.sampled_from([None, 10 * GIB]),
    }
)


def _number(value: Any) -> float:
    """One amount, as pandas' to_numeric(errors="coerce") reads it."""
    number = pd.to_numeric(pd.Series([value], dtype=object), errors="coerce").astype(float).iloc[0]
    return float(number) if math.isfinite(number) and number > 0 else 0.0


def _request(record: dict[str, Any], layer: str) -> dict[str, float]:
    """The straightforward per-consumer request: the resources dict if non-empty, else cpu/memory/disk."""
    cell = record.get("resources")
    if isinstance(cell, dict) and cell:
        request = {str(k): _number(v) for k, v in cell.items()}
    else:
        names = {
            "cpu": "vcpu" if layer == "openstack" else "cpu",
            "memory": "memory",
            "disk": "ephemeral_storage" if layer == "kubernetes" else "disk",
        }
        request = {name: _number(record.get(column)) for column, name in names.items()}
    if layer == "kubernetes" and request.get("pods", 0.0) <= 0:
        request["pods"] = 1.0
    return {k: v for k, v in request.items() if v > 0}


def reference_classes(
    table: HostTable, consumers: pd.DataFrame, key: Any, movable: Any, eligible: Any
) -> list[dict[str, Any]]:
    """Per consumer, in frame order: one class per (request, key, pool), numbered by first appearance."""
    position = table.index()
    classes: dict[Any, dict[str, Any]] = {}
    for label, record in consumers.to_dict("index").items():
        host = record.get("host")
        if record["layer"] != table.layer or record["cloud"] != table.cloud or not record["holds_capacity"]:
            continue
        if host is None or host is pd.NA or str(host) not in position or not movable(record):
            continue
        request = _request(record, table.layer)
        if not request:
            continue
        h = position[str(host)]
        pool = str(table.pools[h])
        group = classes.setdefault(
            (frozenset(request.items()), key(record), pool),
            {"request": request, "pool": pool, "record": record, "members": [], "counts": np.zeros(table.size, int)},
        )
        group["members"].append((label, h))
        group["counts"][h] += 1
    out = list(classes.values())
    for group in out:
        group["label"] = str(group["record"].get("flavor") or "?")
        group["eligible"] = eligible(group["record"])
    return out


def assert_same(table: HostTable, classes: ConsumerClasses, reference: list[dict[str, Any]]) -> None:
    assert len(classes) == len(reference)
    counts, eligible = classes.counts_matrix(), classes.eligible_matrix()
    for k, expected in enumerate(reference):
        request = {table.resources[r]: float(a) for r, a in enumerate(classes.requests[k]) if a > 0}
        assert request == expected["request"]
        assert classes.pools[k] == expected["pool"]
        assert classes.labels[k] == expected["label"]
        assert classes.members(k) == expected["members"]
        assert counts[k].tolist() == expected["counts"].tolist()
        assert eligible[k].tolist() == expected["eligible"].tolist()
    assert classes.loaded().tolist() == (counts.sum(axis=0) > 0).tolist()
    dead = np.arange(table.size) % 2 == 0
    assert classes.displaced(dead).tolist() == counts[:, dead].sum(axis=1).tolist()


def _with_consumers(e: Estate, specs: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The estate's frames with the raw consumer cells the strategy drew (bad amounts included)."""
    for i, spec in enumerate(specs):
        e.consumer(f"c{i}", spec["host"], {}, flavor=spec["owner"], project=spec["project"], holds=spec["holds"])
    frames = dict(e.frames())
    consumers = frames["consumers"].copy()
    for column in ("cpu", "memory", "disk"):
        consumers[column] = [math.nan if s[column] is None else s[column] for s in specs]
    consumers["resources"] = pd.Series([s["resources"] for s in specs], index=consumers.index, dtype=object)
    consumers.index = pd.Index([f"row{i}" for i in range(len(specs))])
    frames["consumers"] = consumers
    return frames


@SETTINGS
@given(st.lists(consumer_spec, min_size=1, max_size=40), st.lists(st.booleans(), min_size=4, max_size=4))
def test_pod_grouping_equals_the_straightforward_one(specs: list[dict[str, Any]], tainted: list[bool]) -> None:
    e = Estate(layer="kubernetes", cloud="k1")
    for i, taint in enumerate(tainted):
        e.host(
            f"n{i}",
            "pool-a" if i < 2 else "pool-b",
            resources={"cpu": 8.0, "memory": 32 * GIB, "pods": 110.0},
            taints=("dedicated=gpu:NoSchedule",) if taint else (),
        )
    frames = _with_consumers(e, specs)
    table = build_host_tables(frames, "kubernetes")["k1"]
    consumers = frames["consumers"]
    classes = pod_classes(table, consumers)

    taints_of: dict[str, set[str]] = {}
    for record in consumers.to_dict("records"):
        h = table.index().get(str(record["host"]))
        if h is not None and table.taints[h]:
            taints_of.setdefault(str(record["flavor"] or ""), set()).update(table.taints[h])

    def owner(record: dict[str, Any]) -> str:
        return str(record.get("flavor") or "")

    def eligible(record: dict[str, Any]) -> np.ndarray:
        spec = PodShapeSpec(owner(record), {}, tolerated_taints=frozenset(taints_of.get(owner(record), ())))
        row: np.ndarray = pod_eligibility(table, [spec])[0]
        return row

    reference = reference_classes(table, consumers, owner, lambda r: not owner(r).startswith(PINNED_OWNERS), eligible)
    assert_same(table, classes, reference)


@SETTINGS
@given(st.lists(consumer_spec, min_size=1, max_size=40), st.sampled_from(["both", "hosts", "off"]))
def test_vm_grouping_equals_the_straightforward_one(specs: list[dict[str, Any]], mode: str) -> None:
    e = Estate()
    for i in range(4):
        e.host(
            f"n{i}",
            "az1" if i < 3 else "az2",
            resources={"vcpu": 16.0, "memory": 64 * GIB, "disk": 400 * GIB},
            aggregates=("agg-x",) if i == 0 else (),
        )
    e.aggregate("agg-x", "tenant-x-hosts", filter_tenant_id="tenant-x")
    frames = _with_consumers(e, specs)
    table = build_host_tables(frames, "openstack")["c1"]
    isolation: Isolation = build_isolation(table, read_aggregates(frames, "c1"), mode)
    consumers = frames["consumers"]
    classes = vm_classes(table, consumers, read_flavors(frames, "c1"), isolation)
    isolated = set(isolation.tenant_hosts) | {t for ts in isolation.host_tenants if ts for t in ts}

    def tenant(record: dict[str, Any]) -> str:
        project = record.get("project")
        return str(project) if isinstance(project, str) and project in isolated else ""

    def eligible(record: dict[str, Any]) -> np.ndarray:
        projects = frozenset([tenant(record)]) if tenant(record) else None
        row: np.ndarray = vm_eligibility(table, [VmConstraints(projects=projects)], isolation)[0]
        return row

    reference = reference_classes(
        table, consumers, lambda r: (str(r.get("flavor") or ""), tenant(r)), lambda r: True, eligible
    )
    assert_same(table, classes, reference)


def _tenant_pool(hosts: int, tenants: int, vms: int) -> dict[str, pd.DataFrame]:
    """One AZ; `tenants` isolation aggregates of 2 hosts each, every VM in its tenant's aggregate or public."""
    e = Estate()
    for i in range(hosts):
        tenant = i // 2 if i < 2 * tenants else None
        e.host(
            f"h{i:05d}",
            "az1",
            resources={"vcpu": 256.0, "memory": 1024 * GIB},
            aggregates=(f"agg-{tenant}",) if tenant is not None else (),
        )
    for t in range(tenants):
        e.aggregate(f"agg-{t}", f"tenant-{t}", filter_tenant_id=f"t{t}")
    for f in range(10):
        e.flavor(f"f{f}", {"vcpu": float(1 + f % 4), "memory": (1 + f) * GIB})
    for n in range(vms):
        h = (n * 7919) % hosts
        f = n % 10
        tenant = h // 2 if h < 2 * tenants else None
        e.consumer(
            f"vm{n}",
            f"h{h:05d}",
            {"vcpu": float(1 + f % 4), "memory": (1 + f) * GIB},
            flavor=f"f{f}",
            project=f"t{tenant}" if tenant is not None else "public",
        )
    return dict(e.frames())


def _peak(frames: dict[str, pd.DataFrame]) -> tuple[int, int, int]:
    """Traced peak bytes of grouping + N+1 of the pool, with the class and host counts."""
    table = build_host_tables(frames, "openstack")["c1"]
    flavors = read_flavors(frames, "c1")
    isolation = build_isolation(table, read_aggregates(frames, "c1"), "both")
    shapes = flavor_shapes(table, flavors, isolation)
    shapes.requests = widen(shapes.requests, len(table.resources))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    tracemalloc.start()
    try:
        classes = vm_classes(table, frames["consumers"], flavors, isolation)
        n_plus_one(table, shapes, result, classes, np.ones(table.size, dtype=bool))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, len(classes), table.size


def test_memory_grows_with_the_work_not_with_classes_times_hosts() -> None:
    few, few_classes, hosts = _peak(_tenant_pool(hosts=2000, tenants=10, vms=4000))
    many, many_classes, _ = _peak(_tenant_pool(hosts=2000, tenants=300, vms=4000))
    assert many_classes >= 8 * few_classes  # the same hosts and VMs, many more classes
    # The dense layout held 8 bytes of counts per class x host (and as much again of fit): it cannot fit here.
    assert many < 8 * many_classes * hosts, (many, many_classes, hosts)
    assert many < 2 * few + 2**20, (few, many)


def reference_common_shapes(table: HostTable, consumers: pd.DataFrame, top: int) -> list[PodShapeSpec]:
    """The `top` most common owners, record by record (`consumer_requests` per pod, medians with numpy)."""
    frame = consumers[
        (consumers["layer"] == "kubernetes")
        & (consumers["cloud"] == table.cloud)
        & consumers["holds_capacity"].astype(bool)
        & consumers["flavor"].notna()
    ]
    frame = frame[~frame["flavor"].astype(str).str.startswith(PINNED_OWNERS)]
    counts = frame["flavor"].astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    out = []
    for name, _ in ranked:
        pods = frame[frame["flavor"] == name]
        requests = [consumer_requests(r, "kubernetes") for r in pods[["resources", "cpu", "memory"]].to_dict("records")]
        keys = sorted({k for r in requests for k in r})
        median = {k: float(np.median([r.get(k, 0.0) for r in requests])) for k in keys}
        median["pods"] = 1.0
        taints: set[str] = set()
        for host in set(pods["host"].dropna().astype(str)):
            h = table.index().get(host)
            if h is not None:
                taints.update(table.taints[h])
        out.append(PodShapeSpec(name, {k: v for k, v in median.items() if v > 0}, tolerated_taints=frozenset(taints)))
    return out


@SETTINGS
@given(
    st.lists(consumer_spec, min_size=1, max_size=40),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.integers(1, 4),
)
def test_common_shapes_equal_the_per_record_ones(specs: list[dict[str, Any]], tainted: list[bool], top: int) -> None:
    e = Estate(layer="kubernetes", cloud="k1")
    for i, taint in enumerate(tainted):
        e.host(
            f"n{i}",
            "pool-a",
            resources={"cpu": 8.0, "memory": 32 * GIB, "pods": 110.0},
            taints=("dedicated=gpu:NoSchedule",) if taint else (),
        )
    frames = _with_consumers(e, specs)
    table = build_host_tables(frames, "kubernetes")["k1"]
    computed = common_shapes(table, frames["consumers"], top)
    expected = reference_common_shapes(table, frames["consumers"], top)
    assert [(s.name, list(s.requests.items()), s.tolerated_taints) for s in computed] == [
        (s.name, list(s.requests.items()), s.tolerated_taints) for s in expected
    ]

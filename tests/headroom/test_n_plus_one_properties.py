"""N+1 per shape is right by construction (hypothesis, random estates).

* a shape's N+1 is the minimum of its slots over every single failure: never above its slots after
  ANY failure, and equal to one of them; the shortfall is the maximum over failures, reported apart;
* the pruned / vectorised N+1 equals the brute force (every candidate re-placed one by one) and an
  independent reference (the plain cumulative-sum re-placement and a full slot recount);
* adding an empty host never lowers N+1 nor raises the shortfall. (Adding consumers can raise N+1 under
  a greedy evacuation: pinned as an expected failure with its counterexample.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collector.analyses.headroom import compute_headroom, failure
from collector.analyses.headroom.failure import FailureResult, n_plus_one, replace_consumers
from collector.analyses.headroom.model import HostTable, build_host_tables, pool_totals, slot_matrix, widen
from collector.analyses.headroom.pods import PodShapeSpec, pod_classes, pod_shapes
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet
from collector.analyses.headroom.vm import build_isolation, flavor_shapes, read_flavors, vm_classes
from collector.app.config import Config
from tests.headroom.builder import GIB, MIB, NOW, Estate, inv

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLAVORS = {"tiny": (1, 1), "small": (1, 2), "medium": (2, 4), "large": (4, 8), "xlarge": (8, 16)}

host_spec = st.fixed_dictionaries(
    {
        "cpus": st.integers(2, 24),
        "ratio": st.sampled_from([1.0, 2.0]),
        "memory": st.integers(4, 64),
        "pool": st.sampled_from(["az1", "az2"]),
        "ssd": st.booleans(),
        "enabled": st.sampled_from([True, True, True, False]),
        "shared_disk": st.booleans(),
    }
)
vm_spec = st.tuples(st.integers(0, 9), st.sampled_from(sorted(FLAVORS)))


def vm_estate(hosts: list[dict], vms: list[tuple[int, str]], with_shared: bool = False) -> Estate:
    """VMs are kept only where they fit, as Placement would have allowed; optional shared disk per AZ."""
    e = Estate()
    free: dict[int, dict[str, float]] = {}
    for i, spec in enumerate(hosts):
        resources = {"vcpu": inv(spec["cpus"], ratio=spec["ratio"]), "memory": inv(spec["memory"] * GIB)}
        if not (with_shared and spec["shared_disk"]):
            resources["disk"] = inv(400 * GIB)
        e.host(
            f"h{i:02d}",
            spec["pool"],
            resources=resources,
            schedulable=spec["enabled"],
            traits=("CUSTOM_SSD",) if spec["ssd"] else (),
        )
        free[i] = {"vcpu": spec["cpus"] * spec["ratio"], "memory": spec["memory"] * GIB, "disk": 400 * GIB}
    if with_shared:
        for pool in ("az1", "az2"):
            e.shared(f"nfs-{pool}", pool, "disk", inv(600 * GIB))
    for name, (cpus, memory) in FLAVORS.items():
        e.flavor(
            name,
            {"vcpu": cpus, "memory": memory * GIB, "disk": 20 * GIB},
            required=("CUSTOM_SSD",) if name == "medium" else (),
        )
    for n, (h, name) in enumerate(vms):
        if h >= len(hosts):
            continue
        cpus, memory = FLAVORS[name]
        request = {"vcpu": float(cpus), "memory": memory * GIB, "disk": 20 * GIB}
        if all(free[h][r] >= a for r, a in request.items()):
            for r, a in request.items():
                free[h][r] -= a
            e.consumer(f"vm{n:03d}", f"h{h:02d}", request, flavor=name)
    return e


def vm_parts(e: Estate) -> tuple[HostTable, ShapeSet, ConsumerClasses]:
    frames = e.frames()
    table = build_host_tables(frames, "openstack")["c1"]
    isolation = build_isolation(table, {}, "both")
    flavors = read_flavors(frames, "c1")
    shapes = flavor_shapes(table, flavors, isolation)
    classes = vm_classes(table, frames["consumers"], flavors, isolation)
    shapes.requests = widen(shapes.requests, len(table.resources))
    return table, shapes, classes


def every_failure(
    table: HostTable, shapes: ShapeSet, classes: ConsumerClasses, mask: np.ndarray
) -> list[tuple[str, np.ndarray, float]]:
    """Independent reference: every candidate host re-placed with `replace_consumers`, slots recounted."""
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    counts = classes.counts_matrix()
    loaded = counts.sum(axis=0) > 0 if len(classes) else np.zeros(table.size, dtype=bool)
    out = []
    for h in np.flatnonzero(mask & (loaded | (result.slots > 0).any(axis=0))):
        targets = mask.copy()
        targets[h] = False
        displaced = counts[:, h] if len(classes) else np.zeros(0, dtype=np.int64)
        outcome = replace_consumers(table, classes, displaced, targets)
        survivors = table.copy()
        for (pool, resource), left in outcome.shared_free.items():
            survivors.shared_providers[(pool, resource)].free = max(left, 0.0)
        after = slot_matrix(shapes.requests, survivors, shapes.eligible, free=outcome.free)
        totals, _ = pool_totals(after, shapes.requests, survivors, targets)
        out.append((str(table.names[h]), totals, float(outcome.unplaced.sum())))
    return out


def expected(failures: list[tuple[str, np.ndarray, float]], s_count: int) -> tuple[list, list, float, str | None]:
    slots: list[float | None] = [None] * s_count
    names: list[str | None] = [None] * s_count
    for name, totals, homeless in sorted(failures, key=lambda f: f[0]):
        totals = totals * 0.0 if homeless else totals  # a failure that strands consumers leaves no room
        for s in range(s_count):
            if slots[s] is None or totals[s] < slots[s]:
                slots[s], names[s] = float(totals[s]), name
    worst = max((f[2] for f in failures), default=0.0)
    domain = min((f[0] for f in failures if f[2] == worst), default=None) if worst > 0 else None
    return slots, names, worst, domain


def same(a: FailureResult, b: FailureResult) -> bool:
    return (
        a.slots_after.tolist() == b.slots_after.tolist()
        and a.domain == b.domain
        and a.shortfall.tolist() == b.shortfall.tolist()
        and a.shortfall_domain == b.shortfall_domain
    )


@SETTINGS
@given(st.lists(host_spec, min_size=1, max_size=10), st.lists(vm_spec, max_size=60), st.booleans())
def test_n_plus_one_is_the_minimum_over_every_failure_and_pruning_is_exact(
    hosts: list[dict], vms: list, with_shared: bool
) -> None:
    table, shapes, classes = vm_parts(vm_estate(hosts, vms, with_shared))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    for pool in np.unique(table.pools):
        mask = table.pools == pool
        pruned = n_plus_one(table, shapes, result, classes, mask)
        brute = n_plus_one(table, shapes, result, classes, mask, exhaustive=True)
        assert same(pruned, brute), (pruned, brute)
        failures = every_failure(table, shapes, classes, mask)
        slots, names, worst, domain = expected(failures, len(shapes))
        for s in range(len(shapes)):
            if slots[s] is None:
                assert pruned.domain[s] is None
                continue
            # never above the slots left after ANY single failure, and equal to the worst of them
            assert all(pruned.slots_after[s] <= max(totals[s], 0.0) for _, totals, _ in failures)
            assert all(pruned.slots_after[s] == 0 for _, _, homeless in failures if homeless)
            assert (pruned.slots_after[s], pruned.domain[s]) == (max(slots[s], 0.0), names[s])
        assert (float(pruned.shortfall[0]) if len(shapes) else 0.0, pruned.shortfall_domain) == (
            worst if len(shapes) else 0.0,
            domain if len(shapes) else pruned.shortfall_domain,
        )


small_host = st.fixed_dictionaries(
    {
        "cpus": st.integers(2, 8),
        "ratio": st.sampled_from([1.0, 2.0]),
        "memory": st.integers(4, 24),
        "pool": st.just("az1"),
        "ssd": st.booleans(),
        "enabled": st.sampled_from([True, True, True, False]),
        "shared_disk": st.just(False),
    }
)


@SETTINGS
@given(st.lists(small_host, min_size=2, max_size=10), st.lists(vm_spec, min_size=5, max_size=60), st.integers(1, 4))
def test_spilled_load_lockstep_equals_brute_force(hosts: list[dict], vms: list, front: int) -> None:
    """Small, loaded hosts: a lost host's VMs spill over several survivors (the lockstep path), with a
    short prefix so some candidates run past it and fall back one by one."""
    table, shapes, classes = vm_parts(vm_estate(hosts, vms))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    mask = table.pools == "az1"
    saved = failure.FRONT
    try:
        failure.FRONT = front
        pruned = n_plus_one(table, shapes, result, classes, mask)
    finally:
        failure.FRONT = saved
    brute = n_plus_one(table, shapes, result, classes, mask, exhaustive=True)
    assert same(pruned, brute), (pruned, brute)
    slots, names, worst, _ = expected(every_failure(table, shapes, classes, mask), len(shapes))
    for s in range(len(shapes)):
        if slots[s] is not None:
            assert (pruned.slots_after[s], pruned.domain[s]) == (max(slots[s], 0.0), names[s])
    assert float(pruned.shortfall[0]) == worst


def test_spill_over_several_hosts_is_evaluated_at_once() -> None:
    """Six hosts with room for one more large each, three larges on each: a lost host's three go to three
    survivors. Every candidate takes the lockstep path, and the answer is the brute force's."""
    hosts = [dict(cpus=16, ratio=1.0, memory=32, pool="az1", ssd=False, enabled=True, shared_disk=False)] * 6
    vms = [(h, "large") for h in range(6) for _ in range(3)]
    table, shapes, classes = vm_parts(vm_estate(hosts, vms))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    mask = table.pools == "az1"
    pruned = n_plus_one(table, shapes, result, classes, mask)
    brute = n_plus_one(table, shapes, result, classes, mask, exhaustive=True)
    assert same(pruned, brute), (pruned, brute)
    assert (pruned.evaluated, pruned.at_once) == (6, 6)
    large = shapes.names.index("large")
    assert pruned.slots_after[large] == 6 - 1 - 3  # one slot per host, the lost one's gone, three taken


pod_spec = st.tuples(
    st.integers(0, 11),
    st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    st.sampled_from([128, 512, 1024, 4096]),
    st.integers(0, 3),
)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([2.0, 4.0, 8.0]), st.sampled_from([8, 16, 32]), st.sampled_from(["a", "b"])),
        min_size=1,
        max_size=12,
    ),
    st.lists(pod_spec, max_size=80),
)
def test_pod_n_plus_one_pruned_equals_brute_force(nodes: list[tuple], pods: list[tuple]) -> None:
    """Pods: many small consumers per node, the case the one-receiver shortcut is built for."""
    e = Estate(layer="kubernetes", cloud="k1")
    free = {}
    for i, (cpu, memory, pool) in enumerate(nodes):
        e.host(f"n{i:02d}", pool, resources={"cpu": inv(cpu), "memory": inv(memory * GIB), "pods": inv(20)})
        free[i] = [cpu, memory * GIB, 20.0]
    for n, (i, cpu, memory, owner) in enumerate(pods):
        if i >= len(nodes):
            continue
        ask = [cpu, memory * MIB, 1.0]
        if all(f >= a for f, a in zip(free[i], ask, strict=True)):
            free[i] = [f - a for f, a in zip(free[i], ask, strict=True)]
            e.consumer(
                f"p{n:03d}",
                f"n{i:02d}",
                {"cpu": cpu, "memory": memory * MIB},
                flavor=f"Deployment/app-{owner}-{cpu}-{memory}",
                layer="kubernetes",
            )
    frames = e.frames()
    table = build_host_tables(frames, "kubernetes")["k1"]
    specs = [
        PodShapeSpec(f"s{c}-{m}", {"cpu": c, "memory": m * MIB}) for c, m in ((0.25, 512), (1.0, 2048), (2.0, 1024))
    ]
    shapes = pod_shapes(table, specs)
    shapes.requests = widen(shapes.requests, len(table.resources))
    classes = pod_classes(table, frames["consumers"])
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    for pool in np.unique(table.pools):
        mask = table.pools == pool
        pruned = n_plus_one(table, shapes, result, classes, mask)
        brute = n_plus_one(table, shapes, result, classes, mask, exhaustive=True)
        assert same(pruned, brute), (pruned, brute)
        slots, names, worst, _ = expected(every_failure(table, shapes, classes, mask), len(shapes))
        for s in range(len(shapes)):
            if slots[s] is not None:
                assert (pruned.slots_after[s], pruned.domain[s]) == (max(slots[s], 0.0), names[s])
        assert float(pruned.shortfall[0]) == worst


def n1(e: Estate) -> dict[tuple[str, str, str], tuple[float, float]]:
    frame = compute_headroom(e.frames(), Config(), NOW).headroom
    frame = frame[frame["slots_after_failure"].notna()]
    return {(r.pool_kind, r.pool, r.shape): (r.slots_after_failure, r.shortfall) for r in frame.itertuples()}


@pytest.mark.xfail(
    strict=True,
    reason="first-fit evacuation is greedy: more load can steer an evacuee onto a "
    "host where it costs a constrained shape less (see docstring)",
)
def test_adding_consumers_never_raises_n_plus_one() -> None:
    """The issue's property, on the smallest counterexample hypothesis found: false for any greedy evacuation.

    SSD hosts h00 (8 vCPU, 16 GiB) and h03 (10, 20) with an xlarge (8, 16) on h03; medium needs SSD.
    Losing h03 sends the xlarge first-fit to h00 and leaves 0 medium slots. Add a large (4, 8) on h00:
    the xlarge no longer fits there and lands on h02 (no SSD), and h00 keeps 2 medium slots, so every
    failure leaves at least 1. Making N+1 monotone needs a re-placement that optimises per shape
    (an integer program), not name-order first fit; until then this stays a known, pinned limitation.
    """
    hosts = [
        dict(cpus=4, ratio=2.0, memory=16, pool="az1", ssd=True, enabled=True, shared_disk=False),
        dict(cpus=2, ratio=1.0, memory=4, pool="az1", ssd=False, enabled=True, shared_disk=False),
        dict(cpus=4, ratio=2.0, memory=16, pool="az1", ssd=False, enabled=True, shared_disk=False),
        dict(cpus=5, ratio=2.0, memory=20, pool="az1", ssd=True, enabled=True, shared_disk=False),
    ]
    before = n1(vm_estate(hosts, [(3, "xlarge")]))
    after = n1(vm_estate(hosts, [(3, "xlarge"), (0, "large")]))
    assert before[("az", "az1", "medium")][0] == 0
    for key, (slots, _) in before.items():
        assert after[key][0] <= slots, (key, slots, after[key])


@SETTINGS
@given(
    st.lists(host_spec, min_size=1, max_size=8),
    st.lists(vm_spec, max_size=40),
    host_spec,
    st.sampled_from(["h00a", "h99"]),
)
def test_adding_an_empty_host_never_lowers_n_plus_one(hosts: list[dict], vms: list, extra: dict, name: str) -> None:
    e = vm_estate(hosts, vms)
    before = n1(e)
    assume(any(h["pool"] == extra["pool"] for h in hosts))
    resources = {
        "vcpu": inv(extra["cpus"], ratio=extra["ratio"]),
        "memory": inv(extra["memory"] * GIB),
        "disk": inv(400 * GIB),
    }
    e.host(
        name,
        extra["pool"],
        resources=resources,
        schedulable=extra["enabled"],
        traits=("CUSTOM_SSD",) if extra["ssd"] else (),
    )
    after = n1(e)
    for key, (slots, shortfall) in before.items():
        assert after[key][0] >= slots, (key, slots, after[key])
        assert after[key][1] <= shortfall, (key, shortfall, after[key])


@SETTINGS
@given(
    st.lists(small_host, min_size=2, max_size=10),
    st.lists(vm_spec, min_size=5, max_size=60),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
)
def test_blockwise_fitting_hosts_equal_the_plain_re_placement(
    hosts: list[dict], vms: list, front: int, block: int, columns: int
) -> None:
    """Each class's fitting hosts are found in blocks of classes x hosts (memory bounded), and a walk past
    the precomputed head scans on block by block: with blocks of 1-3, both N+1 computations still equal
    the plain cumulative-sum re-placement of every failure."""
    table, shapes, classes = vm_parts(vm_estate(hosts, vms))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    mask = table.pools == "az1"
    saved = failure.FRONT, failure._Evacuation.BLOCK, failure._Evacuation.COLUMNS
    try:
        failure.FRONT, failure._Evacuation.BLOCK, failure._Evacuation.COLUMNS = front, block, columns
        pruned = n_plus_one(table, shapes, result, classes, mask)
        brute = n_plus_one(table, shapes, result, classes, mask, exhaustive=True)
        evacuation = failure._Evacuation(table, classes, mask)
        evacuation._prepare()
        everywhere = np.arange(len(evacuation.columns))
        for k in evacuation.relevant.tolist():
            # every fitting host today, in name order: the head, then the block-by-block scan
            fitting = evacuation.columns[evacuation.fit(np.array([k]), everywhere)[0] > 0].tolist()
            assert list(evacuation.targets(k)) == fitting
            row = evacuation.row_of[k]
            assert evacuation.heads[row, : evacuation.head_len[row]].tolist() == fitting[: front + 1]
    finally:
        failure.FRONT, failure._Evacuation.BLOCK, failure._Evacuation.COLUMNS = saved
    slots, names, worst, _ = expected(every_failure(table, shapes, classes, mask), len(shapes))
    for computed in (pruned, brute):
        for s in range(len(shapes)):
            if slots[s] is not None:
                assert (computed.slots_after[s], computed.domain[s]) == (max(slots[s], 0.0), names[s])
        assert float(computed.shortfall[0]) == worst


@SETTINGS
@given(
    st.lists(small_host, min_size=2, max_size=10),
    st.lists(vm_spec, min_size=5, max_size=60),
    st.lists(st.sampled_from(["za", "zb", "zc"]), min_size=10, max_size=10),
)
def test_zone_failures_pruned_equal_brute_force(hosts: list[dict], vms: list, zones: list[str]) -> None:
    """A pool spanning zones loses a whole zone: several hosts' consumers at once (the branch-and-bound
    path, bounds and displaced counts summed over the zone's hosts)."""
    e = vm_estate(hosts, vms)
    for i, host in enumerate(e.hosts):
        host["zone"] = zones[i]
    table, shapes, classes = vm_parts(e)
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    mask = table.pools == "az1"
    pruned = n_plus_one(table, shapes, result, classes, mask, "zone")
    brute = n_plus_one(table, shapes, result, classes, mask, "zone", exhaustive=True)
    assert same(pruned, brute), (pruned, brute)
    if len({z for z in table.zones[mask] if z}) < 2:
        return  # one zone: host failures, covered above
    counts = classes.counts_matrix()
    failures = []
    for zone in sorted({z for z in table.zones[mask] if z}):
        dead = mask & (table.zones == zone)
        targets = mask & ~dead
        outcome = replace_consumers(table, classes, counts[:, dead].sum(axis=1), targets)
        after = slot_matrix(shapes.requests, table, shapes.eligible, free=outcome.free)
        totals, _ = pool_totals(after, shapes.requests, table, targets)
        failures.append((zone, totals, float(outcome.unplaced.sum())))
    slots, names, worst, domain = expected(failures, len(shapes))
    for s in range(len(shapes)):
        if slots[s] is not None:
            assert (pruned.slots_after[s], pruned.domain[s]) == (max(slots[s], 0.0), names[s])
    assert (float(pruned.shortfall[0]), pruned.shortfall_domain) == (worst, domain)

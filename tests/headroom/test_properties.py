"""Properties of the headroom engine on random small estates (hypothesis).

* adding capacity never lowers slots; adding consumers never raises them;
* N+1 never exceeds N;
* re-placement never puts more on a host than it can hold.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.failure import n_plus_one, replace_consumers
from collector.analyses.headroom.model import HostTable, build_host_tables, pool_totals, slot_matrix, widen
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.headroom.shapes import ConsumerClasses, ShapeSet
from collector.analyses.headroom.vm import build_isolation, flavor_shapes, read_flavors, vm_classes
from collector.app.config import Config
from tests.headroom.builder import GIB, NOW, Estate, inv

FLAVORS = {"tiny": (1, 1), "small": (1, 2), "medium": (2, 4), "large": (4, 8), "pinned": (2, 4)}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

host_spec = st.fixed_dictionaries(
    {
        "cpus": st.integers(2, 32),
        "ratio": st.sampled_from([1.0, 2.0, 4.0]),
        "memory": st.integers(4, 128),
        "pcpus": st.integers(0, 8),
        "pool": st.sampled_from(["az1", "az2"]),
        "ssd": st.booleans(),
        "enabled": st.booleans(),
        "max_unit": st.one_of(st.none(), st.integers(1, 8)),
    }
)
vm_spec = st.tuples(st.integers(0, 7), st.sampled_from(sorted(FLAVORS)))


def build(
    hosts: list[dict],
    vms: list[tuple[int, str]],
    extra_memory: dict[int, float] | None = None,
    placed_as: list[dict] | None = None,
) -> Estate:
    """An estate of `hosts`; VMs are kept only where they fit (as Placement would have allowed).

    `placed_as`: decide which VMs exist as on these hosts (the estate before capacity was added), so
    added capacity does not also add the VMs that only fit on it.
    """
    e = Estate()
    free = {}
    for i, spec in enumerate(hosts):
        memory = spec["memory"] + (extra_memory or {}).get(i, 0.0)
        resources = {
            "vcpu": inv(spec["cpus"], ratio=spec["ratio"], max_unit=spec["max_unit"]),
            "memory": inv(memory * GIB),
        }
        if spec["pcpus"]:
            resources["pcpu"] = inv(spec["pcpus"])
        e.host(
            f"h{i}",
            spec["pool"],
            resources=resources,
            schedulable=spec["enabled"],
            traits=("CUSTOM_SSD",) if spec["ssd"] else (),
        )
        free[i] = {"vcpu": spec["cpus"] * spec["ratio"], "pcpu": float(spec["pcpus"]), "memory": memory * GIB}
    if placed_as is not None:
        free = {
            i: {"vcpu": spec["cpus"] * spec["ratio"], "pcpu": float(spec["pcpus"]), "memory": spec["memory"] * GIB}
            for i, spec in enumerate(placed_as)
        }
    for name, (cpus, memory) in FLAVORS.items():
        cpu_class = "pcpu" if name == "pinned" else "vcpu"
        e.flavor(name, {cpu_class: cpus, "memory": memory * GIB}, required=("CUSTOM_SSD",) if name == "medium" else ())
    for n, (h, name) in enumerate(vms):
        if h >= len(free):
            continue
        cpus, memory = FLAVORS[name]
        cpu_class = "pcpu" if name == "pinned" else "vcpu"
        request = {cpu_class: float(cpus), "memory": memory * GIB}
        if all(free[h][r] >= a for r, a in request.items()):
            for r, a in request.items():
                free[h][r] -= a
            e.consumer(f"vm{n}", f"h{h}", request, flavor=name)
    return e


def slots(e: Estate) -> dict[tuple[str, str, str], float]:
    frame = compute_headroom(e.frames(), Config(headroom=HeadroomConfig(n_plus_one=False)), NOW).headroom
    return {(r.pool_kind, r.pool, r.shape): r.slots for r in frame.itertuples()}


@SETTINGS
@given(st.lists(host_spec, min_size=1, max_size=6), st.lists(vm_spec, max_size=25), st.data())
def test_adding_capacity_never_lowers_slots(hosts: list[dict], vms: list, data: st.DataObject) -> None:
    before = slots(build(hosts, vms))
    grow = data.draw(st.integers(0, len(hosts) - 1))
    # The same VMs throughout: only capacity is added.
    more_memory = build(hosts, vms, {grow: float(data.draw(st.integers(1, 64)))}, placed_as=hosts)
    after = slots(more_memory)
    assert all(after[key] >= value for key, value in before.items())
    bigger = [dict(h) for h in hosts]
    bigger[grow]["cpus"] += data.draw(st.integers(1, 16))
    after = slots(build(bigger, vms, placed_as=hosts))
    assert all(after[key] >= value for key, value in before.items())
    with_new_host = build([*hosts, data.draw(host_spec)], vms, placed_as=hosts)
    after = slots(with_new_host)
    assert all(after[key] >= value for key, value in before.items())


@SETTINGS
@given(st.lists(host_spec, min_size=1, max_size=6), st.lists(vm_spec, max_size=25), st.lists(vm_spec, max_size=10))
def test_adding_consumers_never_raises_slots(hosts: list[dict], vms: list, more: list) -> None:
    before = slots(build(hosts, vms))
    after = slots(build(hosts, vms + more))
    assert all(after[key] <= value for key, value in before.items())


@SETTINGS
@given(st.lists(host_spec, min_size=1, max_size=6), st.lists(vm_spec, max_size=30), st.sampled_from(["host", "zone"]))
def test_n_plus_one_never_exceeds_n(hosts: list[dict], vms: list, domain: str) -> None:
    frame = compute_headroom(
        build(hosts, vms).frames(), Config(headroom=HeadroomConfig(failure_domain=domain)), NOW
    ).headroom
    computed = frame[frame["slots_after_failure"].notna()]
    assert (computed["slots_after_failure"] <= computed["slots"]).all()
    assert (computed["shortfall"] >= 0).all()


@SETTINGS
@given(st.lists(host_spec, min_size=2, max_size=6), st.lists(vm_spec, max_size=30), st.data())
def test_replacement_never_overfills_a_host(hosts: list[dict], vms: list, data: st.DataObject) -> None:
    frames = build(hosts, vms).frames()
    table = build_host_tables(frames, "openstack")["c1"]
    classes = vm_classes(table, frames["consumers"], read_flavors(frames, "c1"), build_isolation(table, {}, "off"))
    if not len(classes):
        return
    dead = data.draw(st.integers(0, table.size - 1))
    targets = np.ones(table.size, dtype=bool)
    targets[dead] = False
    displaced = classes.counts_matrix()[:, dead]
    assert (classes.displaced(np.array([dead])) == displaced).all()
    outcome = replace_consumers(table, classes, displaced, targets)
    placed = outcome.placed_matrix(len(classes))
    load = placed.T @ classes.requests[:, : len(table.resources)]
    assert (load <= table.free + 1e-6).all(), "a host got more than its free capacity"
    assert (outcome.free >= -1e-6).all()
    assert (placed[:, dead] == 0).all() and (placed[:, ~table.active] == 0).all()
    assert (placed.sum(axis=1) + outcome.unplaced == displaced).all()
    # every placement honours the class's constraints
    assert not (placed > 0)[~classes.eligible_matrix()].any()


def _reference_n_plus_one(
    table: HostTable, shapes: ShapeSet, classes: ConsumerClasses, mask: np.ndarray
) -> list[tuple[float, float, str] | None]:
    """Every host of the pool evaluated with the plain re-placement and a full slot recount.

    Per shape: (minus the most homeless over all failures, the fewest slots left, the failure leaving them).
    """
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    best: list[tuple[float, float, str] | None] = [None] * len(shapes)
    counts = classes.counts_matrix()
    loaded = counts.sum(axis=0) > 0
    for h in np.flatnonzero(mask & (loaded | (result.slots > 0).any(axis=0))):
        targets = mask.copy()
        targets[h] = False
        outcome = replace_consumers(table, classes, counts[:, h], targets)
        after = slot_matrix(shapes.requests, table, shapes.eligible, free=outcome.free)
        totals, _ = pool_totals(after, shapes.requests, table, targets)
        shortfall = float(outcome.unplaced.sum())
        for s in range(len(shapes)):
            # N+1 is the fewest slots over every failure; one that strands consumers leaves none
            key = (-shortfall, 0.0 if shortfall else totals[s], str(table.names[h]))
            if best[s] is None or key[1:] < best[s][1:]:
                best[s] = (min(key[0], best[s][0]) if best[s] else key[0], *key[1:])
            elif key[0] < best[s][0]:
                best[s] = (key[0], *best[s][1:])
    return best


@SETTINGS
@given(st.lists(host_spec, min_size=1, max_size=6), st.lists(vm_spec, max_size=30))
def test_fast_n_plus_one_equals_evaluating_every_host_the_plain_way(hosts: list[dict], vms: list) -> None:
    frames = build(hosts, vms).frames()
    table = build_host_tables(frames, "openstack")["c1"]
    isolation = build_isolation(table, {}, "both")
    flavors = read_flavors(frames, "c1")
    shapes = flavor_shapes(table, flavors, isolation)
    classes = vm_classes(table, frames["consumers"], flavors, isolation)
    shapes.requests = widen(shapes.requests, len(table.resources))
    result = slot_matrix(shapes.requests, table, shapes.eligible)
    for pool in np.unique(table.pools):
        mask = table.pools == pool
        fast = n_plus_one(table, shapes, result, classes, mask)
        reference = _reference_n_plus_one(table, shapes, classes, mask)
        for s in range(len(shapes)):
            if reference[s] is None:
                assert fast.domain[s] is None
                continue
            shortfall, after, name = reference[s]  # the most homeless over all failures; the fewest slots
            assert (fast.shortfall[s], fast.slots_after[s], fast.domain[s]) == (-shortfall, max(after, 0.0), name)

"""N+1 with re-placement, on hand-computed estates."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from collector.analyses.headroom import compute_headroom, engine
from collector.analyses.headroom.failure import replace_consumers
from collector.analyses.headroom.model import build_host_tables
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.headroom.vm import build_isolation, read_flavors, vm_classes
from collector.app.config import Config, parse_config
from tests.headroom.builder import GIB, NOW, Estate, inv, row

LARGE = {"vcpu": 4.0, "memory": 8 * GIB}


def host(e: Estate, name: str, pool: str = "az1", memory: float = 64.5, **kw) -> Estate:
    # memory allocatable = memory - 0.5 GiB reserved; vcpu 16 x 4 = 64
    return e.host(
        name, pool, resources={"vcpu": inv(16, ratio=4.0), "memory": inv(memory * GIB, reserved=0.5 * GIB)}, **kw
    )


def test_losing_a_loaded_host_re_places_its_vms_which_is_not_subtracting_its_free_room() -> None:
    e = Estate()
    host(e, "cmp1")
    host(e, "cmp2")
    for i in range(5):
        e.consumer(f"vm{i}", "cmp1", LARGE, flavor="m1.large")
    e.flavor("m1.large", LARGE)
    h = compute_headroom(e.frames(), Config(), NOW).headroom
    r = row(h, pool="az1", shape="m1.large")
    # now: cmp1 (64-40)/8 = 3, cmp2 64/8 = 8 -> 11. Losing cmp2 by subtraction would leave 3; losing
    # cmp1 by subtraction would leave 8. With re-placement, cmp1's 5 VMs land on cmp2: (64-40)/8 = 3.
    assert r["slots"] == 11
    assert r["slots_after_failure"] == 3 and r["failure_domain"] in ("cmp1", "cmp2") and r["shortfall"] == 0


def test_shortfall_when_the_survivors_cannot_absorb() -> None:
    e = Estate()
    host(e, "a", memory=32.5)  # 32 GiB allocatable = 4 large
    host(e, "b", memory=32.5)
    for i in range(3):
        e.consumer(f"a{i}", "a", LARGE, flavor="m1.large")
    for i in range(2):
        e.consumer(f"b{i}", "b", LARGE, flavor="m1.large")
    e.flavor("m1.large", LARGE)
    r = row(compute_headroom(e.frames(), Config(), NOW).headroom, pool="az1", shape="m1.large")
    # now 1 + 2 = 3. Lose a: 3 VMs onto b's 2 free slots -> 1 homeless. Lose b: 2 onto a's 1 -> 1.
    assert r["slots"] == 3
    assert r["shortfall"] == 1 and r["slots_after_failure"] == 0


def test_re_placement_honors_traits_and_disabled_hosts() -> None:
    e = Estate()
    host(e, "ssd1", traits=("CUSTOM_SSD",))
    host(e, "ssd2", traits=("CUSTOM_SSD",))
    host(e, "plain")
    host(e, "off", traits=("CUSTOM_SSD",), schedulable=False)
    for i in range(6):
        e.consumer(f"s{i}", "ssd1", LARGE, flavor="ssd.large")
    e.flavor("ssd.large", LARGE, required=("CUSTOM_SSD",))
    e.flavor("m1.large", LARGE)
    h = compute_headroom(e.frames(), Config(), NOW).headroom
    ssd = row(h, pool="az1", shape="ssd.large")
    # ssd1 2 + ssd2 8 = 10; lose ssd1: its 6 can only go to ssd2 (not plain, not the disabled host): 8-6 = 2
    assert ssd["slots"] == 10 and ssd["slots_after_failure"] == 2 and ssd["failure_domain"] == "ssd1"
    large = row(h, pool="az1", shape="m1.large")
    # m1.large: 2 + 8 + 8 = 18; lose ssd1 -> 8 - 6 + 8 = 10; lose ssd2 or plain -> 10. Worst = 10.
    assert large["slots"] == 18 and large["slots_after_failure"] == 10


def test_zone_failure_domain_for_pools_spanning_zones() -> None:
    e = Estate(layer="kubernetes", cloud="k1")
    for name, zone in (("a1", "za"), ("a2", "za"), ("b1", "zb")):
        e.host(name, "workers", zone=zone, resources={"cpu": inv(8), "memory": inv(32 * GIB), "pods": inv(110)})
    for i in range(4):
        e.consumer(f"p{i}", "b1", {"cpu": 1.0, "memory": GIB}, flavor="Deployment/web", layer="kubernetes")
    e.consumer("ds", "b1", {"cpu": 1.0, "memory": GIB}, flavor="DaemonSet/agent", layer="kubernetes")
    config = parse_config({"shapes": {"one": {"cpu": 1}}, "headroom": {"failure_domain": "zone", "common_shapes": 0}})
    r = row(compute_headroom(e.frames(), config, NOW).headroom, pool="workers", shape="one")
    # now 8 + 8 + 3 = 19. Lose zb: 4 web pods (not the DaemonSet pod) move to za: 16 - 4 = 12.
    # Lose za: nothing to move, 3 left. Worst: za.
    assert r["slots"] == 19
    assert r["failure_domain"] == "za" and r["slots_after_failure"] == 3
    host_mode = compute_headroom(
        e.frames(), parse_config({"shapes": {"one": {"cpu": 1}}, "headroom": {"common_shapes": 0}}), NOW
    ).headroom
    r = row(host_mode, pool="workers", shape="one")
    # Host mode: lose a1 -> 8 + 3 = 11; lose b1 -> 4 move onto a1: 4 + 8 = 12. Worst: a1 (or a2).
    assert r["slots_after_failure"] == 11 and r["failure_domain"] in ("a1", "a2")


def test_pods_on_a_tainted_node_only_move_to_nodes_with_that_taint() -> None:
    e = Estate(layer="kubernetes", cloud="k1")
    e.host(
        "gpu1",
        "gpu",
        resources={"cpu": inv(8), "memory": inv(32 * GIB), "pods": inv(110)},
        taints=("gpu=true:NoSchedule",),
    )
    e.host(
        "gpu2",
        "gpu",
        resources={"cpu": inv(8), "memory": inv(32 * GIB), "pods": inv(110)},
        taints=("gpu=true:NoSchedule",),
    )
    e.host("cpu1", "gpu", resources={"cpu": inv(8), "memory": inv(32 * GIB), "pods": inv(110)})
    for i in range(6):
        e.consumer(f"t{i}", "gpu1", {"cpu": 1.0, "memory": GIB}, flavor="Job/train", layer="kubernetes")
    for i in range(3):
        e.consumer(f"u{i}", "gpu2", {"cpu": 1.0, "memory": GIB}, flavor="Job/train", layer="kubernetes")
    config = Config(headroom=HeadroomConfig(common_shapes=1))
    r = row(compute_headroom(e.frames(), config, NOW).headroom, pool="gpu", shape="Job/train")
    # train (tolerates gpu taint, seen there) fits gpu1 2 + gpu2 5 + cpu1 8 = 15.
    # Lose gpu1: 6 pods move first-fit (name order: cpu1, gpu2) -> cpu1 takes 6: 2 left; gpu2 5 -> 7.
    # Lose gpu2: 3 pods -> cpu1: 5 + gpu1 2 = 7. Lose cpu1: 7. Worst: 7 (first found: cpu1).
    assert r["slots"] == 15 and r["slots_after_failure"] == 7 and r["shortfall"] == 0


def test_replacement_never_overfills_a_host() -> None:
    e = Estate()
    host(e, "a", memory=32.5)
    host(e, "b", memory=40.5)  # 40 GiB: room for 5 larges
    host(e, "c", memory=16.5)  # room for 2
    for i in range(7):
        e.consumer(f"x{i}", "a", LARGE if i < 3 else {"vcpu": 1.0, "memory": 2 * GIB}, flavor="mixed")
    frames = e.frames()
    table = build_host_tables(frames, "openstack")["c1"]
    flavors = read_flavors(frames, "c1")
    classes = vm_classes(table, frames["consumers"], flavors, build_isolation(table, {}, "off"))
    dead = table.index()["a"]
    targets = np.ones(table.size, dtype=bool)
    targets[dead] = False
    outcome = replace_consumers(table, classes, classes.displaced(np.array([dead])), targets)
    placed = outcome.placed_matrix(len(classes))
    load = placed.T @ classes.requests
    assert (load <= table.free + 1e-6).all()
    assert outcome.unplaced.sum() == 0  # 3 x 8 + 4 x 2 = 32 GiB fits in 40 + 16
    assert placed.sum() == 7


def test_failure_interval_reuses_recent_results_capped_at_current_slots() -> None:
    engine._FAILURE_CACHE.clear()
    e = Estate()
    host(e, "cmp1")
    host(e, "cmp2")
    for i in range(5):
        e.consumer(f"vm{i}", "cmp1", LARGE, flavor="m1.large")
    e.flavor("m1.large", LARGE)
    config = Config(headroom=HeadroomConfig(failure_interval=timedelta(minutes=5)))
    first = row(compute_headroom(e.frames(), config, NOW, reuse_failures=True).headroom, pool="az1", shape="m1.large")
    assert (first["slots"], first["slots_after_failure"]) == (11, 3)
    for i in range(6):  # cmp2 fills up: 8 - 6 = 2 slots left there, 5 in all
        e.consumer(f"new{i}", "cmp2", LARGE, flavor="m1.large")
    soon = row(
        compute_headroom(e.frames(), config, NOW + timedelta(minutes=1), reuse_failures=True).headroom,
        pool="az1",
        shape="m1.large",
    )
    assert soon["slots"] == 5 and soon["slots_after_failure"] == 3  # the older N+1, never above slots
    later = row(
        compute_headroom(e.frames(), config, NOW + timedelta(minutes=6), reuse_failures=True).headroom,
        pool="az1",
        shape="m1.large",
    )
    # recomputed: lose cmp1 -> 5 VMs onto cmp2's 2 free slots: 3 homeless
    assert later["shortfall"] == 3 and later["slots_after_failure"] == 0
    fresh = row(compute_headroom(e.frames(), config, NOW + timedelta(minutes=1)).headroom, pool="az1", shape="m1.large")
    assert fresh["shortfall"] == 3  # what-if and one-off commands always recompute
    engine._FAILURE_CACHE.clear()

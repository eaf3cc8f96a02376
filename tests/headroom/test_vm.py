"""VM headroom on hand-computed estates: every expected count is worked out in the comment beside it."""

from __future__ import annotations

import pandas as pd

from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.settings import HeadroomConfig
from collector.app.config import Config
from tests.headroom.builder import GIB, NOW, Estate, inv, row

STD = {"vcpu": 4.0, "memory": 8 * GIB, "disk": 80 * GIB}


def standard_host(e: Estate, name: str, pool: str = "az1", **kw) -> Estate:
    # vcpu: (16 - 0) x 4 = 64; memory: (64 - 0.5) GiB x 1.0 = 63.5 GiB; disk 1000 GiB
    return e.host(
        name,
        pool,
        resources={"vcpu": inv(16, ratio=4.0), "memory": inv(64 * GIB, reserved=0.5 * GIB), "disk": inv(1000 * GIB)},
        **kw,
    )


def headroom(e: Estate, **settings) -> pd.DataFrame:
    config = Config(headroom=HeadroomConfig(**settings)) if settings else Config()
    return compute_headroom(e.frames(), config, NOW).headroom


def test_placement_arithmetic_reserved_and_ratio() -> None:
    e = Estate()
    # vcpu: (20 - 4) x 2.0 - 10 = 22 free; memory: (40 - 8) x 1.5 - 12 = 36 GiB free
    e.host(
        "h1",
        resources={
            "vcpu": inv(20, reserved=4, ratio=2.0, allocated=10.0),
            "memory": inv(40 * GIB, reserved=8 * GIB, ratio=1.5, allocated=12 * GIB),
        },
    )
    e.flavor("a", {"vcpu": 2, "memory": 4 * GIB})  # min(22/2=11, 36/4=9) = 9, memory
    e.flavor("b", {"vcpu": 4, "memory": 2 * GIB})  # min(22/4=5, 36/2=18) = 5, vcpu
    h = headroom(e)
    assert row(h, pool="az1", shape="a")["slots"] == 9
    assert row(h, pool="az1", shape="a")["limiting_resource"] == "memory"
    assert row(h, pool="az1", shape="b")["slots"] == 5
    assert row(h, pool="az1", shape="b")["limiting_resource"] == "vcpu"


def test_max_unit_trap_a_big_flavor_fits_nowhere_on_a_host_with_room() -> None:
    e = Estate()
    # h1 has 256 vcpu free but max_unit 16: a 32-vCPU request fits nowhere there, however much is free.
    e.host("h1", resources={"vcpu": inv(64, ratio=4.0, max_unit=16), "memory": inv(512 * GIB)})
    e.host("h2", resources={"vcpu": inv(64, ratio=1.0, max_unit=64), "memory": inv(512 * GIB)})
    e.flavor("huge", {"vcpu": 32, "memory": 64 * GIB})  # h1: 0 (max_unit); h2: min(64/32, 512/64) = 2
    e.flavor("big", {"vcpu": 16, "memory": 64 * GIB})  # h1: min(256/16=16, 8) = 8; h2: min(4, 8) = 4
    h = headroom(e)
    assert row(h, pool="az1", shape="huge")["slots"] == 2
    assert row(h, pool="az1", shape="big")["slots"] == 12


def test_min_unit_and_step_size() -> None:
    e = Estate()
    e.host("h1", resources={"vcpu": inv(64), "memory": inv(64 * GIB, min_unit=1 * GIB, step_size=1 * GIB)})
    e.flavor("odd", {"vcpu": 1, "memory": 1.5 * GIB})  # not a multiple of the 1 GiB step: 0
    e.flavor("tiny", {"vcpu": 1, "memory": 0.5 * GIB})  # below min_unit: 0
    e.flavor("ok", {"vcpu": 1, "memory": 2 * GIB})  # 64/2 = 32 by memory, 64 by vcpu
    h = headroom(e)
    assert row(h, pool="az1", shape="odd")["slots"] == 0
    assert row(h, pool="az1", shape="tiny")["slots"] == 0
    assert row(h, pool="az1", shape="ok")["slots"] == 32


def test_pcpu_trap_dedicated_flavors_need_pcpu_inventory() -> None:
    e = Estate()
    # shared host: only VCPU; pinned host: 8 shared VCPU (x4 = 32) and 24 PCPU (ratio 1, 4 used)
    e.host("shared", resources={"vcpu": inv(32, ratio=4.0), "memory": inv(256 * GIB)})
    e.host("pinned", resources={"vcpu": inv(8, ratio=4.0), "pcpu": inv(24), "memory": inv(256 * GIB)})
    e.consumer("p1", "pinned", {"pcpu": 4, "memory": 8 * GIB}, flavor="c1.pinned")
    e.flavor("c1.pinned", {"pcpu": 4, "memory": 8 * GIB})  # shared: 0 (no PCPU); pinned: (24-4)/4 = 5
    e.flavor("m1.large", {"vcpu": 4, "memory": 8 * GIB})  # shared: 128/4=32 -> memory 256/8=32; pinned: 32/4=8
    h = headroom(e)
    assert row(h, pool="az1", shape="c1.pinned")["slots"] == 5
    assert row(h, pool="az1", shape="c1.pinned")["hosts"] == 2  # both eligible; one has no PCPU at all
    assert row(h, pool="az1", shape="m1.large")["slots"] == 32 + 8
    hosts = compute_headroom(e.frames(), Config(), NOW).hosts
    shared_pinned = hosts[(hosts["host"] == "shared") & (hosts["shape"] == "c1.pinned")].iloc[0]
    assert shared_pinned["slots"] == 0 and shared_pinned["limiting_resource"] == "pcpu"


def test_shared_storage_bounds_the_pool_not_the_host_and_is_not_a_host() -> None:
    e = Estate()
    for name in ("h1", "h2"):  # no local disk: they draw DISK from the AZ's sharing provider
        e.host(name, "az2", resources={"vcpu": inv(16, ratio=4.0), "memory": inv(128 * GIB)})
    e.shared("shared-storage-az2", "az2", "disk", inv(1000 * GIB, allocated=520 * GIB))
    e.host("h3", "az1", resources={"vcpu": inv(16, ratio=4.0), "memory": inv(128 * GIB), "disk": inv(200 * GIB)})
    e.flavor("m1.large", STD)
    # per host by cpu/memory: min(64/4=16, 128/8=16) = 16; az2 hosts 32 in all, but the shared
    # provider has 480 GiB free: floor(480/80) = 6. az1: h3 is bound by its own disk: 200/80 = 2.
    h = headroom(e)
    az2 = row(h, pool="az2", shape="m1.large")
    assert az2["slots"] == 6 and az2["limiting_resource"] == "disk" and az2["hosts"] == 2
    assert row(h, pool="az1", shape="m1.large")["slots"] == 2
    assert row(h, pool="c1", shape="m1.large", pool_kind="cloud")["slots"] == 8
    flavor_without_disk = Estate()
    for name in ("h1", "h2"):
        flavor_without_disk.host(name, "az2", resources={"vcpu": inv(16, ratio=4.0), "memory": inv(128 * GIB)})
    flavor_without_disk.shared("s", "az2", "disk", inv(1000 * GIB, allocated=1000 * GIB))
    flavor_without_disk.flavor("bfv", {"vcpu": 4, "memory": 8 * GIB})  # boot from volume: no disk, no bound
    assert row(headroom(flavor_without_disk), pool="az2", shape="bfv")["slots"] == 32


def test_nested_gpu_flavor_needs_the_trait_and_a_whole_vgpu_per_child() -> None:
    e = Estate()
    # The GPU host's two pGPU children (1 VGPU each) are folded into the root: vgpu 2, max_unit 1.
    e.host(
        "gpu1",
        resources={"vcpu": inv(48, ratio=4.0), "memory": inv(256 * GIB), "vgpu": inv(2, max_unit=1)},
        traits=("CUSTOM_GPU_A100",),
    )
    e.host("cpu1", resources={"vcpu": inv(48, ratio=4.0), "memory": inv(256 * GIB)})
    e.consumer("g0", "gpu1", {"vcpu": 8, "memory": 32 * GIB, "vgpu": 1}, flavor="g1.gpu")
    e.flavor("g1.gpu", {"vcpu": 8, "memory": 32 * GIB, "vgpu": 1}, required=("CUSTOM_GPU_A100",))
    e.flavor("g2.gpu", {"vcpu": 8, "memory": 32 * GIB, "vgpu": 2}, required=("CUSTOM_GPU_A100",))
    e.flavor("m1.xlarge", {"vcpu": 8, "memory": 16 * GIB}, forbidden=("CUSTOM_GPU_A100",))
    h = headroom(e)
    g1 = row(h, pool="az1", shape="g1.gpu")
    assert g1["slots"] == 1 and g1["limiting_resource"] == "vgpu" and g1["hosts"] == 1  # 2 - 1 used
    assert row(h, pool="az1", shape="g2.gpu")["slots"] == 0  # 2 VGPU above a child's max_unit of 1
    # the GPU host is forbidden to m1.xlarge: only cpu1, min(192/8 = 24, 256/16 = 16) = 16
    assert row(h, pool="az1", shape="m1.xlarge")["slots"] == 16


def test_host_in_two_aggregates_counted_once_per_pool() -> None:
    e = Estate()
    e.aggregate("agg-ssd", "ssd")
    e.aggregate("agg-fast", "fast")
    standard_host(e, "h1", aggregates=("agg-ssd", "agg-fast"))  # 63.5/8 = 7 m1.large
    standard_host(e, "h2", aggregates=("agg-ssd",))  # 7
    standard_host(e, "h3")  # 7
    e.flavor("m1.large", STD)
    e.flavor("ssd.large", STD, member_of=("agg-ssd",))
    h = headroom(e)
    assert row(h, pool="ssd", shape="m1.large", pool_kind="aggregate")["slots"] == 14
    assert row(h, pool="fast", shape="m1.large", pool_kind="aggregate")["slots"] == 7
    assert row(h, pool="az1", shape="m1.large", pool_kind="az")["slots"] == 21
    assert row(h, pool="c1", shape="m1.large", pool_kind="cloud")["slots"] == 21
    assert row(h, pool="c1", shape="ssd.large", pool_kind="cloud")["slots"] == 14
    assert row(h, pool="fast", shape="ssd.large", pool_kind="aggregate")["slots"] == 7


def test_disabled_and_down_hosts_take_nothing() -> None:
    e = Estate()
    standard_host(e, "up")
    standard_host(e, "disabled", schedulable=False)
    standard_host(e, "down", ready=False)
    standard_host(e, "trait-disabled", traits=("COMPUTE_STATUS_DISABLED",))
    e.flavor("m1.large", STD)
    r = row(headroom(e), pool="az1", shape="m1.large")
    assert r["slots"] == 7 and r["hosts"] == 1


def test_required_forbidden_traits_zone_and_private_flavor_tenant_isolation() -> None:
    e = Estate()
    e.aggregate("agg-gamma", "gamma-only", filter_tenant_id="project-gamma")
    standard_host(e, "h1", traits=("CUSTOM_SSD",))
    standard_host(e, "h2", aggregates=("agg-gamma",))
    standard_host(e, "h3", "az2")
    e.flavor("ssd", STD, required=("CUSTOM_SSD",))  # h1 only: 7
    e.flavor("no-ssd", STD, forbidden=("CUSTOM_SSD",))  # h3 (h2 isolated for other tenants): 7
    e.flavor("az2-only", STD, zone="az2")  # h3: 7
    e.flavor("gamma", STD, is_public=False, projects=("project-gamma",))  # confined to h2: 7
    h = headroom(e)
    assert row(h, pool="c1", shape="ssd", pool_kind="cloud")["slots"] == 7
    assert row(h, pool="c1", shape="no-ssd", pool_kind="cloud")["slots"] == 7
    assert row(h, pool="c1", shape="az2-only", pool_kind="cloud")["slots"] == 7
    gamma = row(h, pool="c1", shape="gamma", pool_kind="cloud")
    assert gamma["slots"] == 7 and gamma["hosts"] == 1
    # Isolation off: the public no-ssd flavor may use h2 as well; gamma may go anywhere.
    h = headroom(e, tenant_isolation="off")
    assert row(h, pool="c1", shape="no-ssd", pool_kind="cloud")["slots"] == 14
    assert row(h, pool="c1", shape="gamma", pool_kind="cloud")["slots"] == 21
    # Only host exclusivity: gamma may still land on non-isolated hosts.
    h = headroom(e, tenant_isolation="hosts")
    assert row(h, pool="c1", shape="gamma", pool_kind="cloud")["slots"] == 21
    assert row(h, pool="c1", shape="no-ssd", pool_kind="cloud")["slots"] == 7


def test_unknown_allocation_is_rebuilt_from_consumers_not_taken_as_free() -> None:
    e = Estate()
    e.host("h1", resources={"vcpu": inv(16, ratio=4.0), "memory": inv(64 * GIB, allocated=float("nan"))})
    for i in range(4):
        e.consumer(f"vm{i}", "h1", {"vcpu": 4, "memory": 8 * GIB}, flavor="m1.large")
    e.flavor("m1.large", {"vcpu": 4, "memory": 8 * GIB})
    # memory allocated unknown -> 4 x 8 = 32 GiB from the consumers: (64 - 32)/8 = 4
    frames = e.frames()
    assert frames["capacity"]["allocated"].isna().any()
    assert row(compute_headroom(frames, Config(), NOW).headroom, pool="az1", shape="m1.large")["slots"] == 4


def test_flavor_asking_for_an_unknown_resource_fits_nowhere() -> None:
    e = Estate()
    standard_host(e, "h1")
    e.flavor("fpga", {"vcpu": 1, "memory": GIB, "custom_fpga": 1})
    r = row(headroom(e), pool="az1", shape="fpga")
    assert r["slots"] == 0 and r["limiting_resource"] == "custom_fpga"


def test_headroom_hosts_frame_lists_each_eligible_host() -> None:
    e = Estate()
    standard_host(e, "h1")
    standard_host(e, "h2", schedulable=False)
    e.consumer("vm", "h1", STD, flavor="m1.large")
    e.flavor("m1.large", STD)
    hosts = compute_headroom(e.frames(), Config(), NOW).hosts
    assert hosts[["host", "shape", "slots", "limiting_resource"]].to_dict("records") == [
        {"host": "h1", "shape": "m1.large", "slots": 6.0, "limiting_resource": "memory"}
    ]


def test_isolated_aggregate_capacity_is_shown_to_its_tenants() -> None:
    """Public rows leave isolated hosts out; `isolated` rows count them for each of their tenants."""
    e = Estate()
    e.aggregate("agg-res", "reserved", filter_tenant_id="project-gamma", filter_tenant_id2="project-delta")
    standard_host(e, "h1")
    standard_host(e, "h2", aggregates=("agg-res",))
    standard_host(e, "h3", aggregates=("agg-res",))
    for i in range(3):  # 24 GiB of h2 taken: 39.5 GiB left -> 4 std
        e.consumer(f"g{i}", "h2", STD, flavor="std", project="project-gamma")
    e.flavor("std", STD)
    e.flavor("gamma", STD, is_public=False, projects=("project-gamma",))
    h = headroom(e)
    assert row(h, pool="c1", shape="std", pool_kind="cloud")["slots"] == 7  # h1 only: the public pool
    assert pd.isna(row(h, pool="c1", shape="std", pool_kind="cloud")["tenant"])
    isolated = h[h["pool_kind"] == "isolated"].set_index(["tenant", "shape"])
    assert isolated.loc[("project-gamma", "std"), "slots"] == 4 + 7
    assert isolated.loc[("project-gamma", "std"), "hosts"] == 2
    assert isolated.loc[("project-gamma", "gamma"), "slots"] == 4 + 7  # its private flavor too
    assert isolated.loc[("project-delta", "std"), "slots"] == 4 + 7
    assert ("project-delta", "gamma") not in isolated.index  # not delta's flavor
    assert set(isolated["pool"]) == {"reserved"} and isolated["slots_after_failure"].isna().all()
    assert "isolated" not in set(headroom(e, tenant_isolation="off")["pool_kind"])

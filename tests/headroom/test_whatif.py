"""What-if: scenario parsing with clear errors, and what each scenario does to headroom and forecasts."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.whatif import (
    AddConsumers,
    AddHosts,
    RemoveHosts,
    ScaleDemand,
    ScenarioError,
    apply_scenarios,
    parse_scenario,
    run_whatif,
    shift_series,
)
from collector.app.commands.forecast import build_document, render_table
from collector.app.config import Config
from tests.headroom.builder import GIB, NOW, Estate, inv, row

LARGE = {"vcpu": 4.0, "memory": 8 * GIB}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("add 10 hosts like compute-01", AddHosts(10, "compute-01")),
        ("+10 hosts like compute-01", AddHosts(10, "compute-01")),
        ("ADD 1 host LIKE cmp1", AddHosts(1, "cmp1")),
        ("remove 2 hosts like compute-03", RemoveHosts(2, "compute-03")),
        ("-2 hosts like compute-03", RemoveHosts(2, "compute-03")),
        ("+200 m1.large", AddConsumers(200, "m1.large")),
        ("add 5 Deployment/web", AddConsumers(5, "Deployment/web")),
        ("+20% demand", ScaleDemand(20.0)),
        ("-12.5 % demand", ScaleDemand(-12.5)),
        ("  +200   m1.large ", AddConsumers(200, "m1.large")),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse_scenario(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty what-if scenario"),
        ("add ten hosts like x", "'ten' is not a whole number"),
        ("+0 m1.large", "'0' is not a whole number of at least 1"),
        ("+1.5 m1.large", "'1.5' is not a whole number"),
        ("+abc% demand", "'abc' is not a percentage"),
        ("-100% demand", "more than -100 %"),
        ("make it bigger", "cannot read what-if 'make it bigger'; use one of"),
    ],
)
def test_parse_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as error:
        parse_scenario(text)
    assert message in str(error.value)


def estate() -> Estate:
    e = Estate()
    for name in ("cmp1", "cmp2", "cmp3"):
        e.host(name, resources={"vcpu": inv(16, ratio=4.0), "memory": inv(64.5 * GIB, reserved=0.5 * GIB)})
    e.host("big", resources={"vcpu": inv(32, ratio=4.0), "memory": inv(128.5 * GIB, reserved=0.5 * GIB)})
    for i in range(5):
        e.consumer(f"vm{i}", "cmp1", LARGE, flavor="m1.large", project="p")
    for i in range(2):
        e.consumer(f"w{i}", "cmp2", LARGE, flavor="m1.large", project="p")
    e.flavor("m1.large", LARGE)
    return e


def test_add_hosts_like_a_host_adds_its_empty_copies() -> None:
    result = run_whatif(estate().frames(), [parse_scenario("add 2 hosts like cmp3")], Config(), NOW)
    before = row(result.before.headroom, pool="az1", shape="m1.large")
    after = row(result.after.headroom, pool="az1", shape="m1.large")
    assert before["slots"] == 3 + 6 + 8 + 16  # 33
    assert after["slots"] == 33 + 2 * 8
    effect = result.effects[0]
    assert effect.capacity_delta[("openstack", "c1", "az1", "vcpu")] == 2 * 64
    assert effect.capacity_delta[("openstack", "c1", "az1", "memory")] == 2 * 64 * GIB


def test_add_consumers_places_them_first_fit_and_reports_the_homeless() -> None:
    frames, effects = apply_scenarios(estate().frames(), [parse_scenario("+10 m1.large")], Config())
    placed = frames["consumers"][frames["consumers"]["state"] == "planned"]
    # first fit in name order: big (16), then cmp1 (3)...: all 10 land on big
    assert len(placed) == 10 and set(placed["host"]) == {"big"}
    assert effects[0].demand_delta[("openstack", "c1", "az1", "memory")] == 10 * 8 * GIB
    result = run_whatif(estate().frames(), [parse_scenario("+40 m1.large")], Config(), NOW)
    assert result.effects[0].unplaced == 40 - 33
    assert row(result.after.headroom, pool="az1", shape="m1.large")["slots"] == 0


def test_remove_hosts_re_places_their_consumers_and_drops_the_homeless() -> None:
    # cmp1 holds 5 VMs; removing it and the like-sized, least-loaded cmp3 leaves cmp2 (6 free) and big (16)
    frames, effects = apply_scenarios(estate().frames(), [parse_scenario("remove 2 hosts like cmp1")], Config())
    assert set(frames["hosts"]["host"]) == {"cmp2", "big"}
    moved = frames["consumers"].set_index("id").loc[[f"vm{i}" for i in range(5)], "host"]
    assert set(moved) <= {"big", "cmp2"} and effects[0].unplaced == 0
    allocated = frames["capacity"].set_index(["host", "resource"])["allocated"]
    assert allocated[("big", "memory")] + allocated[("cmp2", "memory")] == 7 * 8 * GIB
    assert "removed cmp1, cmp3" in effects[0].notes
    with pytest.raises(ScenarioError, match="only 3 host"):
        apply_scenarios(estate().frames(), [parse_scenario("remove 4 hosts like cmp1")], Config())
    with pytest.raises(ScenarioError, match="no host named 'nope'"):
        apply_scenarios(estate().frames(), [parse_scenario("remove 1 hosts like nope")], Config())


def test_unknown_shape_names_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match=r"no flavor or pod shape named 'm9.huge' \(known: m1.large\)"):
        apply_scenarios(estate().frames(), [parse_scenario("+1 m9.huge")], Config())


def test_scale_demand_scales_allocations() -> None:
    result = run_whatif(estate().frames(), [parse_scenario("+100% demand")], Config(), NOW)
    # cmp1 40 -> 80 GiB (full), cmp2 16 -> 32: 4 left, cmp3 8, big 16
    assert row(result.after.headroom, pool="az1", shape="m1.large")["slots"] == 4 + 8 + 16
    assert result.effects[0].demand_factor == 2.0


def test_shift_series_moves_limits_and_values() -> None:
    times = pd.date_range(NOW - timedelta(hours=3), NOW, freq="h")
    rows = []
    for basis, values in (("allocated", [10.0, 20.0, 30.0, 40.0]), ("used", [5.0, 10.0, 15.0, 20.0])):
        for t, v in zip(times, values, strict=True):
            rows.append(
                {
                    "layer": "openstack",
                    "cloud": "c1",
                    "pool": "az1",
                    "resource": "vcpu",
                    "basis": basis,
                    "timestamp": t,
                    "value": v,
                    "limit": 100.0,
                }
            )
    series = pd.DataFrame(rows)
    _, effects = apply_scenarios(
        estate().frames(), [parse_scenario("add 1 hosts like cmp3"), parse_scenario("+2 m1.large")], Config()
    )
    shifted = shift_series(series, effects)
    assert (shifted["limit"] == 164.0).all()
    allocated = shifted[shifted["basis"] == "allocated"]["value"].to_numpy()
    used = shifted[shifted["basis"] == "used"]["value"].to_numpy()
    np.testing.assert_allclose(allocated, [18, 28, 38, 48])  # +2 x 4 vCPU
    np.testing.assert_allclose(used, [9, 14, 19, 24])  # x the pool's used share 20/40
    _, effects = apply_scenarios(estate().frames(), [parse_scenario("+50% demand")], Config())
    np.testing.assert_allclose(shift_series(series, effects)["value"].to_numpy()[:4], [15, 30, 45, 60])


def test_forecast_document_and_table_show_before_and_after() -> None:
    result = run_whatif(estate().frames(), [parse_scenario("add 1 hosts like big")], Config(), NOW)
    document = build_document(result, scenarios_given=True)
    entry = next(e for e in document["headroom"] if e["pool_kind"] == "az")
    assert entry["before"]["slots"] == 33 and entry["after"]["slots"] == 49
    text = render_table(document)
    assert "add 1 hosts like big" in text and "33 (N+1" in text and "49 (N+1" in text
    assert "no history" in text


def test_worked_example_of_docs_headroom() -> None:
    e = Estate()
    for name in ("cmp1", "cmp2"):
        e.host(name, resources={"vcpu": inv(16, ratio=4.0), "memory": inv(64.5 * GIB, reserved=0.5 * GIB)})
    for i in range(5):
        e.consumer(f"vm{i}", "cmp1", LARGE, flavor="m1.large")
    e.flavor("m1.large", LARGE)
    result = run_whatif(e.frames(), [parse_scenario("add 1 hosts like cmp2")], Config(), NOW)
    before = row(result.before.headroom, pool="az1", shape="m1.large")
    assert (before["slots"], before["slots_after_failure"], before["failure_domain"]) == (11, 3, "cmp1")
    after = row(result.after.headroom, pool="az1", shape="m1.large")
    assert (after["slots"], after["slots_after_failure"]) == (19, 11)


def test_new_vms_on_shared_storage_are_charged_to_the_sharing_provider() -> None:
    e = Estate()
    for name in ("h1", "h2"):
        e.host(name, "az2", resources={"vcpu": inv(16, ratio=4.0), "memory": inv(128 * GIB)})
    e.shared("shared-az2", "az2", "disk", inv(1000 * GIB, allocated=520 * GIB))
    e.flavor("m1.large", {"vcpu": 4.0, "memory": 8 * GIB, "disk": 80 * GIB})
    frames, effects = apply_scenarios(e.frames(), [parse_scenario("+10 m1.large")], Config(), NOW)
    # 480 GiB free on the provider: 6 VMs of 80 GiB fit, 4 find no room although the hosts have plenty
    assert effects[0].unplaced == 4
    provider = frames["capacity"].set_index("host").loc["shared-az2"]
    assert provider["allocated"] == 520 * GIB + 6 * 80 * GIB
    after = compute_headroom(frames, Config(), NOW).headroom
    assert row(after, pool="az2", shape="m1.large")["slots"] == 0


def test_new_and_homeless_vms_shift_the_hypervisor_layer_forecast_too() -> None:
    """What-if used to move only the OpenStack series: the hypervisors under the new VMs saw nothing."""
    e = estate()
    for name in ("cmp1", "cmp2", "cmp3", "big"):
        e.host(
            name,
            resources={"cpu": inv(16, allocated=8.0), "memory": inv(64 * GIB, allocated=32 * GIB)},
            layer="hypervisor",
        )
    frames = e.frames()
    capacity = frames["capacity"]
    hypervisor = capacity["layer"] == "hypervisor"
    capacity.loc[hypervisor & (capacity["resource"] == "cpu"), "used"] = 2.0  # a quarter of allocated vCPUs busy
    capacity.loc[hypervisor & (capacity["resource"] == "memory"), "used"] = 32 * GIB
    _, effects = apply_scenarios(frames, [parse_scenario("+2 m1.large")], Config())
    assert effects[0].demand_delta[("hypervisor", "c1", "az1", "cpu")] == 2 * 4
    assert effects[0].demand_delta[("hypervisor", "c1", "az1", "memory")] == 2 * 8 * GIB
    times = pd.date_range(NOW - timedelta(hours=1), NOW, freq="h")
    series = pd.DataFrame(
        [
            {
                "layer": "hypervisor",
                "cloud": "c1",
                "pool": "az1",
                "resource": "cpu",
                "basis": "used",
                "timestamp": t,
                "value": 8.0,
                "limit": 64.0,
            }
            for t in times
        ]
    )
    # hypervisor CPU is forecast on used: 8 new vCPUs x the pool's used/allocated share 8/32
    np.testing.assert_allclose(shift_series(series, effects)["value"].to_numpy(), [10.0, 10.0])
    # 16 new VMs fill big (first in name order); then the three small hosts go and their 7 VMs are homeless
    _, effects = apply_scenarios(
        frames, [parse_scenario("+16 m1.large"), parse_scenario("remove 3 hosts like cmp1")], Config()
    )
    assert effects[1].unplaced == 7
    assert effects[1].demand_delta[("hypervisor", "c1", "az1", "memory")] == -7 * 8 * GIB

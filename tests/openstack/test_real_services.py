"""End to end against REAL Placement 16 and REAL Nova 34: the frames must say what the services hold.

The cloud (tests/services/openstack.py: build_test_cloud): az1 = compute-01..04 (01 CUSTOM_SSD, 03
GPU host with a nested VGPU child, 04 disabled, 02 also in the `gamma-only` tenant aggregate); az2 =
compute-05 (PCPU, aggregate `pinned`) and compute-06, both without local disk, served by a sharing
DISK_GB provider. Seven servers booted through Nova, one stopped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from collector.sources.base import SourceError
from collector.sources.openstack.client import OpenStackClient, make_connector
from tests.openstack.conftest import make_source
from tests.services.openstack import PROJECTS, TEST_HOSTS, RealCloud

pytestmark = pytest.mark.slow
GIB, MIB = 2**30, 2**20


@pytest.fixture(scope="module")
def polled(real_cloud: RealCloud):
    source = make_source(real_cloud.clouds_yaml, real_cloud.cloud, page_size=2)
    result = source.checked_poll(datetime.now(UTC))
    yield source, result
    source.close()


def _placement_truth(cloud: RealCloud) -> dict[str, dict]:
    """Every provider with its inventories and usages, read straight from Placement."""
    truth = {}
    for rp in cloud.placement.call("GET", "/resource_providers")["resource_providers"]:
        uuid = rp["uuid"]
        truth[rp["name"]] = {
            "rp": rp,
            "inventories": cloud.placement.call("GET", f"/resource_providers/{uuid}/inventories")["inventories"],
            "usages": cloud.placement.call("GET", f"/resource_providers/{uuid}/usages")["usages"],
            "traits": cloud.placement.call("GET", f"/resource_providers/{uuid}/traits")["traits"],
        }
    return truth


def test_capacity_matches_placement_inventories_and_usages(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    capacity = result.frames["capacity"].set_index(["host", "resource"])
    truth = _placement_truth(real_cloud)
    for spec in TEST_HOSTS:
        for rc, inventory in truth[spec.name]["inventories"].items():
            scale = {"MEMORY_MB": MIB, "DISK_GB": GIB}.get(rc, 1)
            name = {"MEMORY_MB": "memory", "DISK_GB": "disk"}.get(rc, rc.lower())
            row = capacity.loc[(spec.name, name)]
            assert row["capacity"] == inventory["total"] * scale
            assert row["reserved"] == inventory["reserved"] * scale
            assert row["allocation_ratio"] == inventory["allocation_ratio"]
            assert row["allocatable"] == pytest.approx(
                (inventory["total"] - inventory["reserved"]) * scale * inventory["allocation_ratio"]
            )
            assert row["allocated"] == truth[spec.name]["usages"][rc] * scale
            assert (row["min_unit"], row["max_unit"], row["step_size"]) == (
                inventory["min_unit"] * scale,
                inventory["max_unit"] * scale,
                inventory["step_size"] * scale,
            )
            assert math.isnan(row["used"])  # Placement measures nothing
    # az2 hosts have no local disk: it is the sharing provider's
    assert ("compute-05", "disk") not in capacity.index and ("compute-06", "disk") not in capacity.index
    assert capacity.loc[("compute-05", "pcpu"), "capacity"] == 24
    assert capacity.loc[("compute-05", "pcpu"), "allocated"] == 4  # c1.pinned (hw:cpu_policy=dedicated)
    assert capacity.loc[("compute-06", "vcpu"), "allocation_ratio"] == 2.0


def test_nested_gpu_child_rolls_up_into_its_compute_host(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    capacity = result.frames["capacity"]
    truth = _placement_truth(real_cloud)
    child = truth["compute-03_pgpu0"]
    assert child["rp"]["parent_provider_uuid"] == truth["compute-03"]["rp"]["uuid"]
    assert "compute-03_pgpu0" not in set(capacity["host"]) and "compute-03_pgpu0" not in set(
        result.frames["hosts"]["host"]
    )
    vgpu = capacity[(capacity.host == "compute-03") & (capacity.resource == "vgpu")].iloc[0]
    assert (vgpu["capacity"], vgpu["allocated"], vgpu["scope"]) == (2, child["usages"]["VGPU"], "host")
    assert child["usages"]["VGPU"] == 1  # the g1.gpu server


def test_sharing_provider_is_a_pool_row_of_its_az_never_a_host(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    capacity, hosts = result.frames["capacity"], result.frames["hosts"]
    shared = capacity[capacity.host == "shared-storage-az2"]
    assert list(shared["resource"]) == ["disk"] and list(shared["scope"]) == ["pool"]
    assert list(shared["pool"]) == ["az2"]
    assert shared.iloc[0]["capacity"] == 10000 * GIB and shared.iloc[0]["reserved"] == 100 * GIB
    assert shared.iloc[0]["max_unit"] == 2000 * GIB
    # disk of the three az2 servers (20 + 40 + 20 GB) sits on the sharing provider
    assert shared.iloc[0]["allocated"] == 80 * GIB
    assert "shared-storage-az2" not in set(hosts["host"])
    assert set(capacity[capacity.scope == "host"]["host"]) == {h.name for h in TEST_HOSTS}


def test_hosts_frame_scheduling_facts(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    hosts = result.frames["hosts"].set_index("host")
    truth = _placement_truth(real_cloud)
    aggregates = real_cloud.aggregates
    for spec in TEST_HOSTS:
        row = hosts.loc[spec.name]
        assert row["host_id"] == truth[spec.name]["rp"]["uuid"]
        assert row["hypervisor"] == spec.name
        assert row["ready"]
        expected = sorted(a["uuid"] for a in aggregates.values() if spec.name in a["hosts"])
        assert row["aggregates"] == expected
    assert not hosts.loc["compute-04", "schedulable"]
    assert "COMPUTE_STATUS_DISABLED" in hosts.loc["compute-04", "traits"]
    assert "COMPUTE_STATUS_DISABLED" in truth["compute-04"]["traits"]  # Nova put it there
    assert all(hosts.loc[h.name, "schedulable"] for h in TEST_HOSTS if h.name != "compute-04")
    assert "CUSTOM_SSD" in hosts.loc["compute-01", "traits"]
    assert "CUSTOM_GPU_A100" in hosts.loc["compute-03", "traits"]
    assert hosts["zone"].to_dict() == {
        h.name: ("az2" if h.name in ("compute-05", "compute-06") else "az1") for h in TEST_HOSTS
    }


def test_pools_partition_hosts_although_aggregates_overlap(polled) -> None:
    _, result = polled
    capacity, hosts = result.frames["capacity"], result.frames["hosts"]
    # compute-02 (az1 + gamma-only), -03 (az1 + gpu), -05 (az2 + pinned) sit in two aggregates each ...
    assert (hosts["aggregates"].map(len) == 2).sum() == 3
    # ... yet every host is in exactly one pool, so per-pool sums count each host once
    assert (capacity[capacity.scope == "host"].groupby("host")["pool"].nunique() == 1).all()
    vcpu = capacity[capacity.resource == "vcpu"]
    assert vcpu.groupby("pool")["capacity"].sum().to_dict() == {"az1": 16 + 16 + 32 + 16, "az2": 8 + 32}
    per_aggregate = result.frames["openstack_aggregates"].set_index("aggregate")["hosts"].to_dict()
    assert per_aggregate["gamma-only"] == ["compute-02"] and len(per_aggregate["az1"]) == 4


def test_consumers_are_the_servers_nova_holds(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    consumers = result.frames["consumers"].set_index("name")
    servers = real_cloud.nova.call("GET", "/servers/detail?all_tenants=1")["servers"]
    assert set(consumers.index) == {s["name"] for s in servers}  # paged 2 at a time
    for server in servers:
        row = consumers.loc[server["name"]]
        assert row["id"] == row["nova_instance_uuid"] == row["libvirt_domain_uuid"] == server["id"]
        assert row["host"] == server["OS-EXT-SRV-ATTR:hypervisor_hostname"]
        assert row["project"] == server["tenant_id"]
        assert row["state"] == server["status"].lower()
        assert row["holds_capacity"]
    assert consumers.loc["alpha-off", "state"] == "shutoff"
    large = consumers.loc["alpha-1"]
    assert (large["flavor"], large["cpu"], large["memory"], large["disk"]) == ("m1.large", 4, 8 * GIB, 80 * GIB)
    assert consumers.loc["beta-pinned", "resources"] == {"pcpu": 4.0, "memory": 8 * GIB, "disk": 40 * GIB}
    assert consumers.loc["beta-gpu", "resources"]["vgpu"] == 1


def test_placement_usage_equals_what_the_servers_asked_for(polled) -> None:
    """Nova's placement claims and the consumers' flavor translation agree, host by host."""
    _, result = polled
    consumers, capacity = result.frames["consumers"], result.frames["capacity"]
    asked = pd.DataFrame(
        [{"host": c.host, "resource": r, "amount": a} for c in consumers.itertuples() for r, a in c.resources.items()]
    )
    expected = asked.groupby(["host", "resource"])["amount"].sum()
    held = capacity[capacity.scope == "host"].set_index(["host", "resource"])["allocated"]
    # every host row (local disk included: az2 hosts have none, their disk is the sharing provider's)
    for key, amount in held.items():
        assert amount == expected.get(key, 0.0), key


def test_flavors_frame_is_the_request_each_flavor_makes(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    flavors = result.frames["flavors"].set_index("flavor")
    pinned = flavors.loc["c1.pinned"]
    assert pinned["resources"] == {"pcpu": 4.0, "memory": 8 * GIB, "disk": 40 * GIB}
    assert pinned["member_of"] == [real_cloud.aggregates["pinned"]["uuid"]]
    gpu = flavors.loc["g1.gpu"]
    assert gpu["resources"] == {"vcpu": 4.0, "memory": 16 * GIB, "disk": 40 * GIB, "vgpu": 1.0}
    assert gpu["required_traits"] == ["CUSTOM_GPU_A100"] and gpu["forbidden_traits"] == []
    private = flavors.loc["p1.gamma"]
    assert not private["is_public"] and private["projects"] == [PROJECTS["gamma"]]
    assert flavors.loc["m1.small", "is_public"] and flavors.loc["m1.small", "member_of"] == []
    assert flavors.loc["m1.small", "flavor_id"] == real_cloud.flavors["m1.small"]


def test_aggregates_and_quotas_frames(real_cloud: RealCloud, polled) -> None:
    _, result = polled
    aggregates = result.frames["openstack_aggregates"].set_index("aggregate")
    assert aggregates.loc["gamma-only", "projects"] == [PROJECTS["gamma"]]
    assert (
        aggregates.loc["az2", "zone"] == "az2" and aggregates.loc["az2", "uuid"] == real_cloud.aggregates["az2"]["uuid"]
    )
    quotas = result.frames["openstack_quotas"].set_index(["project", "resource"])
    nova = real_cloud.nova.call("GET", f"/os-quota-sets/{PROJECTS['alpha']}/detail", microversion="2.57")
    assert quotas.loc[(PROJECTS["alpha"], "cpu"), "in_use"] == nova["quota_set"]["cores"]["in_use"] == 4 + 4 + 1 + 1
    assert quotas.loc[(PROJECTS["alpha"], "memory"), "limit"] == nova["quota_set"]["ram"]["limit"] * MIB


def test_second_poll_reuses_unchanged_providers_and_sees_a_new_server(real_cloud: RealCloud) -> None:
    source = make_source(real_cloud.clouds_yaml, real_cloud.cloud, name="second-poll")
    try:
        first = source.checked_poll(datetime.now(UTC))
        again = source.checked_poll(datetime.now(UTC))
        assert again.api_calls < first.api_calls
        pd.testing.assert_frame_equal(
            first.frames["capacity"].drop(columns="timestamp"), again.frames["capacity"].drop(columns="timestamp")
        )
        calls_quiet = again.api_calls
        # A new server changes one host's generation: only that host is re-read.
        server = real_cloud.nova.boot("late-1", real_cloud.flavors["m1.small"], PROJECTS["beta"], "az1")
        after = source.checked_poll(datetime.now(UTC))
        host = server["OS-EXT-SRV-ATTR:hypervisor_hostname"]
        assert "late-1" in set(after.frames["consumers"]["name"])
        row = after.frames["capacity"].set_index(["host", "resource"]).loc[(host, "memory")]
        before = first.frames["capacity"].set_index(["host", "resource"]).loc[(host, "memory")]
        assert row["allocated"] == before["allocated"] + 2048 * MIB
        # re-reads: inventories + usages of the one changed provider, plus the trait lookups
        assert after.api_calls <= calls_quiet + 2 + 8
    finally:
        source.close()


def test_unsupported_microversion_is_a_clear_error_from_real_services(real_cloud: RealCloud) -> None:
    client = OpenStackClient(real_cloud.cloud, make_connector(real_cloud.cloud, None, real_cloud.clouds_yaml, 30))
    try:
        with pytest.raises(SourceError) as placement_error:
            client.get("placement", "/resource_providers", microversion=(1, 99))
        assert placement_error.value.reason == "unsupported_version"
        assert "HTTP 406" in str(placement_error.value) and "1.0..1.39" in str(placement_error.value)
        with pytest.raises(SourceError) as nova_error:
            client.get("compute", "/flavors/detail", microversion=(2, 999))
        assert nova_error.value.reason == "unsupported_version" and "2.104" in str(nova_error.value)
        with pytest.raises(SourceError) as missing:
            client.get("placement", "/resource_providers/2ed02727-59a1-573c-b7ea-211cc773be63/inventories")
        assert missing.value.reason == "not_found"
        assert "No resource provider with uuid 2ed02727-59a1-573c-b7ea-211cc773be63" in str(missing.value)
        assert client.microversion("compute") == (2, 104) and client.microversion("placement") == (1, 39)
    finally:
        client.close()

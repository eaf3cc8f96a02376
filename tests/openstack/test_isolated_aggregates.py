"""Capacity reserved for isolated tenants, end to end against REAL Placement and REAL Nova.

The test cloud (tests/services/openstack.py) puts compute-02 in the `gamma-only` aggregate with
`filter_tenant_id` = project gamma. With the default `tenant_isolation: both`, public rows rightly leave
compute-02 out; the `isolated` rows (and `capacity_headroom_isolated_slots`) must show gamma what its
reserved host can still take, counted from what Placement itself says is free there.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.analyses.headroom import compute_headroom
from collector.app.config import parse_config
from collector.estate import Snapshot
from exporters.prometheus.exposition import load_builtin_family_modules, render
from tests.openstack.conftest import make_source
from tests.services.openstack import PROJECTS, RealCloud

pytestmark = pytest.mark.slow
FLAVORS = {  # Placement requests of the test cloud's flavors that compute-02 could host
    "m1.small": {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20},
    "m1.large": {"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 80},
    "p1.gamma": {"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 20},
}


def _placement_slots(cloud: RealCloud, host: str) -> dict[str, int]:
    """Slots per flavor on `host` straight from Placement's inventories and usages."""
    providers = cloud.placement.call("GET", "/resource_providers")["resource_providers"]
    uuid = next(rp["uuid"] for rp in providers if rp["name"] == host)
    inventories = cloud.placement.call("GET", f"/resource_providers/{uuid}/inventories")["inventories"]
    usages = cloud.placement.call("GET", f"/resource_providers/{uuid}/usages")["usages"]
    free = {
        rc: (inv["total"] - inv["reserved"]) * inv["allocation_ratio"] - usages.get(rc, 0)
        for rc, inv in inventories.items()
    }
    return {
        name: min(math.floor(free[rc] / amount) for rc, amount in request.items()) for name, request in FLAVORS.items()
    }


def test_tenant_sees_its_reserved_hosts_while_public_rows_leave_them_out(real_cloud: RealCloud) -> None:
    now = datetime.now(UTC)
    source = make_source(real_cloud.clouds_yaml, real_cloud.cloud)
    try:
        frames = source.checked_poll(now).frames
    finally:
        source.close()
    headroom = compute_headroom(frames, parse_config({}), now).headroom
    gamma = PROJECTS["gamma"]
    isolated = headroom[headroom["pool_kind"] == "isolated"]
    assert set(isolated["pool"]) == {"gamma-only"} and set(isolated["tenant"]) == {gamma}
    rows = isolated.set_index("shape")
    expected = _placement_slots(real_cloud, "compute-02")
    assert expected["m1.small"] > 0  # the reserved host has room: the point of the row
    for flavor, slots in expected.items():
        assert rows.loc[flavor, "slots"] == slots, flavor
        assert rows.loc[flavor, "hosts"] == 1
    assert rows.loc["c1.pinned", "slots"] == 0  # needs the `pinned` aggregate: not on compute-02
    # Public rows: compute-02 is gamma's only, so an arbitrary tenant's m1.small has az1's other active
    # hosts (compute-01, compute-03; compute-04 is disabled) and not a slot more.
    public = headroom[headroom["tenant"].isna()]
    az1_small = public[(public["pool_kind"] == "az") & (public["pool"] == "az1") & (public["shape"] == "m1.small")]
    assert az1_small["hosts"].tolist() == [2.0]
    others = sum(_placement_slots(real_cloud, host)["m1.small"] for host in ("compute-01", "compute-03"))
    assert az1_small["slots"].tolist() == [float(others)]
    # ... and the metric a dashboard reads, with the tenant as a label (public families unchanged)
    load_builtin_family_modules()
    text = render(Snapshot(taken_at=now, frames={**frames, "headroom": headroom}, statuses=())).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    reserved = {
        (s.labels["pool"], s.labels["tenant"], s.labels["shape"]): s.value
        for s in families["capacity_headroom_isolated_slots"].samples
    }
    assert reserved[("gamma-only", gamma, "m1.small")] == expected["m1.small"]
    assert all("tenant" not in s.labels for s in families["capacity_headroom_slots"].samples)
    keys = [
        (s.labels["pool_kind"], s.labels["pool"], s.labels["shape"])
        for s in families["capacity_headroom_slots"].samples
    ]
    assert len(keys) == len(set(keys))

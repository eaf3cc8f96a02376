"""The demo part and the stand-in it serves: same code path as production, shapes of the real services."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import requests

from collector.app.config import parse_config
from collector.demo import openstack as demo_openstack
from collector.demo.model import build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from collector.sources import create_source
from tests.openstack.conftest import make_source
from tests.openstack.test_contract import bundle, load


def test_demo_part_serves_the_estate_to_the_real_source(tmp_path: Path) -> None:
    context: dict = {"estate": build_estate()}
    part = demo_openstack.start(tmp_path, context)
    try:
        assert Path(context["openstack"]["clouds_yaml"]).is_file()
        assert context["openstack"]["cloud"] == "demo-cloud" and context["openstack"]["region"] == "RegionOne"
        config = parse_config({"sources": part.sources})
        (source_config,) = config.sources
        assert (source_config.kind, source_config.name, source_config.interval.total_seconds()) == (
            "openstack",
            "demo-cloud",
            30,
        )
        result = create_source(source_config).checked_poll(datetime.now(UTC))
    finally:
        part.stop()
    frames = result.frames
    estate = context["estate"]
    hosts = frames["hosts"].set_index("host")
    assert set(hosts.index) == {h.name for h in estate.hosts}
    assert not hosts.loc["compute-05", "schedulable"] and hosts["ready"].all()
    capacity = frames["capacity"].set_index(["host", "resource"])
    assert capacity.loc[("compute-06", "vgpu"), "capacity"] == 2  # nested child rolled up
    assert capacity.loc[("compute-09", "pcpu"), "capacity"] == 48
    assert capacity.loc[("shared-storage-az2", "disk"), "scope"] == "pool"
    assert capacity.loc[("shared-storage-az2", "disk"), "pool"] == "az2"
    assert len(frames["consumers"]) == len(estate.servers)
    assert result.api_calls and result.api_calls > 10


def test_demand_grows_while_the_demo_runs(tmp_path: Path) -> None:
    now = [time.time()]
    cloud = from_demo_estate(build_estate(), start=now[0], growth_every=60, clock=lambda: now[0])
    server = StandinServer(cloud).start()
    try:
        server.write_clouds_yaml(tmp_path / "clouds.yaml", "demo-cloud")
        source = make_source(tmp_path / "clouds.yaml", "demo-cloud")
        first = source.checked_poll(datetime.now(UTC))
        seen = len(server.requests)
        now[0] += 5 * 60 + 1
        later = source.checked_poll(datetime.now(UTC))
        reads = [path for _, path in server.requests[seen:] if path.endswith(("/inventories", "/usages"))]
    finally:
        server.stop()
    assert len(later.frames["consumers"]) == len(first.frames["consumers"]) + 5
    allocated = [f.frames["capacity"].query("resource == 'memory'")["allocated"].sum() for f in (first, later)]
    assert allocated[1] > allocated[0]
    # only the providers the five new servers landed on were re-read (2 GETs each), not all of them
    touched = {rp for s in cloud.servers if 0 < s.visible_from <= now[0] for rp in s.allocations}
    assert 0 < len(touched) < len(cloud.providers)
    assert sorted(reads) == sorted(
        f"/placement/resource_providers/{rp}/{what}" for rp in touched for what in ("inventories", "usages")
    )
    assert later.api_calls < first.api_calls


@pytest.fixture(scope="module")
def standin():
    server = StandinServer(from_demo_estate(build_estate(), growth_count=0)).start()
    yield server
    server.stop()


def _get(url: str, version: str, token: str = "admin") -> requests.Response:
    return requests.get(url, headers={"X-Auth-Token": token, "OpenStack-API-Version": version}, timeout=10)


def test_standin_406_bodies_match_the_real_services(standin: StandinServer) -> None:
    real = load("placement_error_406_bad-microversion__live-placement-16.0.0.json")["errors"][0]
    answer = _get(f"{standin.placement_url}/resource_providers", "placement 1.99")
    assert answer.status_code == 406
    mine = answer.json()["errors"][0]
    assert set(mine) == set(real) and mine["max_version"] == real["max_version"] == "1.39"
    nova = _get(f"{standin.compute_url}/flavors/detail", "compute 2.200")
    assert nova.status_code == 406 and "maximum is 2.104" in nova.json()["computeFault"]["message"]


def test_standin_404_and_401_bodies(standin: StandinServer) -> None:
    real = load("placement_error_404_rp-not-found__live-placement-16.0.0.json")["errors"][0]
    answer = _get(
        f"{standin.placement_url}/resource_providers/2ed02727-59a1-573c-b7ea-211cc773be63/inventories", "placement 1.39"
    )
    assert answer.status_code == 404 and set(answer.json()["errors"][0]) == set(real)
    assert _get(f"{standin.compute_url}/os-aggregates", "compute 2.90", token="nope").status_code == 401


@pytest.mark.parametrize(
    ("path", "version", "capture", "key"),
    [
        ("/resource_providers", "placement 1.39", "placement GET /resource_providers @1.39", "resource_providers"),
        ("/os-hypervisors/detail", "compute 2.88", "nova GET /v2.1/os-hypervisors/detail @2.88", "hypervisors"),
        ("/os-hypervisors/detail", "compute 2.87", "nova GET /v2.1/os-hypervisors/detail @2.87", "hypervisors"),
        ("/os-hypervisors/detail", "compute 2.1", "nova GET /v2.1/os-hypervisors/detail @2.1", "hypervisors"),
        (
            "/servers/detail?all_tenants=1",
            "compute 2.47",
            "nova GET /v2.1/servers/detail?all_tenants=1 @2.47",
            "servers",
        ),
        ("/servers/detail?all_tenants=1", "compute 2.1", "nova GET /v2.1/servers/detail?all_tenants=1 @2.1", "servers"),
        (
            "/flavors/detail?is_public=None",
            "compute 2.61",
            "nova GET /v2.1/flavors/detail?is_public=None @2.61",
            "flavors",
        ),
        ("/os-aggregates", "compute 2.41", "nova GET /v2.1/os-aggregates @2.41", "aggregates"),
    ],
)
def test_standin_answers_carry_the_fields_of_the_live_captures(
    standin: StandinServer, path: str, version: str, capture: str, key: str
) -> None:
    """Every field the real service returned at that microversion is there (the collector reads a subset)."""
    base = standin.placement_url if version.startswith("placement") else standin.compute_url
    answer = _get(base + path, version)
    assert answer.status_code == 200
    assert answer.headers["OpenStack-API-Version"] == version
    real_item = bundle()[capture][key][0]
    mine = answer.json()[key][0]
    missing = (
        set(real_item)
        - set(mine)
        - {
            "host_status",
            "locked",
            "description",
            "tags",
            "config_drive",
            "key_name",
            "progress",
            "OS-DCF:diskConfig",
            "OS-SRV-USG:launched_at",
            "OS-SRV-USG:terminated_at",
            "OS-EXT-SRV-ATTR:hostname",
            "OS-EXT-SRV-ATTR:kernel_id",
            "OS-EXT-SRV-ATTR:launch_index",
            "OS-EXT-SRV-ATTR:ramdisk_id",
            "OS-EXT-SRV-ATTR:reservation_id",
            "OS-EXT-SRV-ATTR:root_device_name",
            "OS-EXT-SRV-ATTR:user_data",
        }
    )
    assert not missing, f"stand-in lacks {sorted(missing)}"
    if key == "flavors":
        assert "extra_specs" in mine
    if key == "hypervisors":
        assert ("vcpus" in mine) == ("vcpus" in real_item)
        assert type(mine["id"]) is type(real_item["id"])
    json.dumps(mine)


def test_down_compute_and_orphan_provider(tmp_path: Path) -> None:
    """A nova-compute that stopped reporting is not ready; a provider Nova does not know is kept, flagged."""
    from collector.demo.standins.openstack import Provider

    cloud = from_demo_estate(build_estate(), growth_count=0)
    next(h for h in cloud.hypervisors if h.hostname == "compute-02").up = False
    cloud.providers["0rphan00-0000-4000-8000-000000000000"] = Provider(
        "0rphan00-0000-4000-8000-000000000000",
        "compute-99",
        {"VCPU": {"total": 8, "reserved": 0, "min_unit": 1, "max_unit": 8, "step_size": 1, "allocation_ratio": 4.0}},
    )
    server = StandinServer(cloud).start()
    try:
        server.write_clouds_yaml(tmp_path / "clouds.yaml", "demo-cloud")
        result = make_source(tmp_path / "clouds.yaml", "demo-cloud").checked_poll(datetime.now(UTC))
    finally:
        server.stop()
    hosts = result.frames["hosts"].set_index("host")
    assert not hosts.loc["compute-02", "ready"] and hosts.loc["compute-02", "schedulable"]
    orphan = hosts.loc["compute-99"]
    assert not orphan["ready"] and not orphan["schedulable"] and orphan["hypervisor"] is pd.NA
    assert orphan["zone"] == "nova"  # in no AZ aggregate: the default zone

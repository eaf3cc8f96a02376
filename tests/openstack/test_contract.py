"""Contract tests: the readers and frame builder on REAL captured bodies, microversion by microversion.

Fixtures are in tests/fixtures/openstack (provenance in its README.md): live captures of Nova
34 + Placement 16 describing ONE consistent cloud (compute-01/02 in az1, compute-02 disabled,
compute-03 in az2 and the tenant aggregate `beta-dedicated`; 8 servers, vm-03 SHUTOFF), upstream
api_samples, and Placement error bodies. `FixtureClient` answers the exact GETs the readers make
from those captures; a GET that was not captured fails the test, so the set of calls is checked too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from collector.sources.base import SourceError
from collector.sources.openstack.client import _error_detail
from collector.sources.openstack.frames import build_frames, flavor_request
from collector.sources.openstack.nova import HOST_FIELD, Flavor, NovaReader
from collector.sources.openstack.placement import PlacementReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openstack"  # vendored captures, provenance in README
GIB, MIB = 2**30, 2**20
BUNDLE = "cloud_snapshot_bundle__live-nova-34.0.0.json"


def load(name: str) -> Any:
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"fixture {path} is missing (tests/fixtures/openstack/README.md lists them)")
    return json.loads(path.read_text())


def bundle() -> dict[str, Any]:
    return {key: value["body"] for key, value in load(BUNDLE)["responses"].items()}


class FixtureClient:
    """Stands in for OpenStackClient: answers GETs from captured bodies, counts them, fails on others."""

    def __init__(self, versions: dict[str, tuple[int, int]], responses: dict[tuple[str, str], Any]):
        self.cloud_label = "fixture"
        self.versions = versions
        self.responses = responses
        self.calls = 0
        self.asked: list[str] = []

    def microversion(self, service: str) -> tuple[int, int]:
        return self.versions[service]

    def get(self, service: str, path: str, *, microversion: tuple[int, int] | None = None, ok_404: bool = False):
        self.calls += 1
        self.asked.append(f"{service} {path}")
        url = urlsplit(path)
        params = [(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k not in ("limit", "marker")]
        key = (service, url.path + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else ""))
        if key in self.responses:
            answer = self.responses[key]
            return answer(path) if callable(answer) else answer
        raise AssertionError(f"not captured: {service} GET {path}")


def nova_responses(
    servers_mv: str, flavors_mv: str = "2.104", hypervisors_mv: str = "2.88", aggregates_mv: str = "2.104"
) -> dict[tuple[str, str], Any]:
    b = bundle()
    flavors_61 = b["nova GET /v2.1/flavors/detail?is_public=None @2.61"]["flavors"]
    responses: dict[tuple[str, str], Any] = {
        ("compute", "/os-hypervisors/detail"): b[f"nova GET /v2.1/os-hypervisors/detail @{hypervisors_mv}"],
        ("compute", "/servers/detail?all_tenants=1"): b[f"nova GET /v2.1/servers/detail?all_tenants=1 @{servers_mv}"],
        ("compute", "/flavors/detail?is_public=None"): b[f"nova GET /v2.1/flavors/detail?is_public=None @{flavors_mv}"],
        ("compute", "/os-aggregates"): b[f"nova GET /v2.1/os-aggregates @{aggregates_mv}"],
    }
    for flavor in flavors_61:  # before 2.61 extra specs are one call per flavor (captured at 2.61 in bulk)
        responses[("compute", f"/flavors/{flavor['id']}/os-extra_specs")] = {"extra_specs": flavor["extra_specs"]}
        if not flavor["os-flavor-access:is_public"]:
            responses[("compute", f"/flavors/{flavor['id']}/os-flavor-access")] = {
                "flavor_access": [{"flavor_id": flavor["id"], "tenant_id": "beta0000000000000000000000000000"}]
            }
    return responses


def placement_responses() -> dict[tuple[str, str], Any]:
    """Placement answers of the same cloud; trait look-ups are derived from the captured per-RP traits."""
    b = bundle()
    listing = b["placement GET /resource_providers @1.39"]
    responses: dict[tuple[str, str], Any] = {("placement", "/resource_providers"): listing}
    traits: dict[str, list[str]] = {}
    for rp in listing["resource_providers"]:
        uuid = rp["uuid"]
        for what in ("inventories", "usages"):
            responses[("placement", f"/resource_providers/{uuid}/{what}")] = b[
                f"placement GET /resource_providers/{uuid}/{what} @1.39"
            ]
        traits[uuid] = b[f"placement GET /resource_providers/{uuid}/traits @1.39"]["traits"]
    custom = sorted({t for ts in traits.values() for t in ts if t.startswith("CUSTOM_")})
    responses[("placement", "/traits?associated=true&name=startswith:CUSTOM_")] = {"traits": custom}
    for trait in {t for ts in traits.values() for t in ts} | {"MISC_SHARES_VIA_AGGREGATE"}:
        responses[("placement", f"/resource_providers?required={trait}")] = {
            "resource_providers": [rp for rp in listing["resource_providers"] if trait in traits[rp["uuid"]]]
        }
    return responses


def _frames(servers_mv: str, nova_version: tuple[int, int], **kwargs: str):
    nova = FixtureClient({"compute": nova_version}, nova_responses(servers_mv, **kwargs))
    placement = FixtureClient({"placement": (1, 39)}, placement_responses())
    nova_state = NovaReader(nova, quotas=False).read()  # type: ignore[arg-type]
    placement_state = PlacementReader(placement, concurrency=1).read()  # type: ignore[arg-type]
    frames = build_frames(
        source="live", cloud="live", now=_now(), placement=placement_state, nova=nova_state, default_zone="nova"
    )
    return frames, nova, placement


def _now():
    from datetime import UTC, datetime

    return datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("mv", "version"), [("2.1", (2, 1)), ("2.47", (2, 47)), ("2.96", (2, 96)), ("2.104", (2, 104))]
)
def test_servers_read_the_same_at_every_microversion(mv: str, version: tuple[int, int]) -> None:
    """2.1 names the flavor by id (sizes from the flavor list); from 2.47 the flavor is embedded."""
    flavors_mv = "2.1" if version < (2, 61) else "2.104"
    frames, nova, _ = _frames(
        mv, version, flavors_mv=flavors_mv, hypervisors_mv="2.87" if version < (2, 88) else "2.88", aggregates_mv="2.41"
    )
    consumers = frames["consumers"].set_index("name")
    assert len(consumers) == 8
    assert consumers.loc["vm-03", "state"] == "shutoff" and consumers.loc["vm-03", "holds_capacity"]
    xlarge = consumers.loc["vm-07"]
    assert (xlarge["flavor"], xlarge["cpu"], xlarge["memory"], xlarge["disk"]) == ("m1.xlarge", 8, 16 * GIB, 160 * GIB)
    assert consumers.loc["vm-00", "host"] == "compute-01" and consumers.loc["vm-07", "pool"] == "az2"
    extra_spec_calls = [a for a in nova.asked if "os-extra_specs" in a]
    assert bool(extra_spec_calls) == (version < (2, 61))


@pytest.mark.parametrize("mv", ["2.1", "2.53", "2.87", "2.88"])
def test_hypervisors_at_each_microversion(mv: str) -> None:
    """Stats fields (gone at 2.88) are never used; ids become the provider uuid at 2.53."""
    body = bundle()[f"nova GET /v2.1/os-hypervisors/detail @{mv}"]
    version = tuple(int(x) for x in mv.split("."))
    client = FixtureClient({"compute": version}, {("compute", "/os-hypervisors/detail"): body})
    hypervisors = NovaReader(client)._hypervisors(version)  # type: ignore[arg-type]
    assert [(h.hostname, h.service_host, h.enabled, h.up) for h in hypervisors] == [
        ("compute-01", "compute-01", True, True),
        ("compute-02", "compute-02", False, True),
        ("compute-03", "compute-03", True, True),
    ]
    placement_uuids = {
        rp["name"]: rp["uuid"] for rp in bundle()["placement GET /resource_providers @1.39"]["resource_providers"]
    }
    if version >= (2, 53):
        assert {h.hostname: h.id for h in hypervisors} == placement_uuids
    else:
        assert all(h.id.isdigit() for h in hypervisors)
    assert ("vcpus" in body["hypervisors"][0]) == (version < (2, 88))


def test_frames_from_one_consistent_live_snapshot() -> None:
    frames, _, placement = _frames("2.104", (2, 104))
    capacity = frames["capacity"].set_index(["host", "resource"])
    # FakeDriver: 1000 vcpus (ratio 4.0), 800000 MB (512 reserved), 600000 GB
    assert capacity.loc[("compute-01", "vcpu"), "allocatable"] == 4000
    assert capacity.loc[("compute-01", "memory"), "reserved"] == 512 * MIB
    assert capacity.loc[("compute-01", "disk"), "capacity"] == 600000 * GIB
    assert capacity.loc[("compute-01", "vcpu"), "allocated"] == 8  # two m1.large
    hosts = frames["hosts"].set_index("host")
    assert not hosts.loc["compute-02", "schedulable"] and hosts.loc["compute-01", "schedulable"]
    assert hosts.loc["compute-03", "zone"] == "az2" and len(hosts.loc["compute-03", "aggregates"]) == 2
    aggregates = frames["openstack_aggregates"].set_index("aggregate")
    assert aggregates.loc["beta-dedicated", "projects"] == ["beta0000000000000000000000000000"]
    flavors = frames["flavors"].set_index("flavor")
    assert flavors.loc["private.large", "forbidden_traits"] == ["HW_CPU_X86_AVX2"]
    assert not flavors.loc["private.large", "is_public"]
    assert flavors.loc["bfv.medium", "resources"] == {"vcpu": 2.0, "memory": 4096 * MIB}  # disk 0: no DISK_GB
    # 1 list + 1 custom-trait list + 2 trait look-ups (disabled, sharing) + inventories/usages of 3 hosts
    assert placement.calls == 1 + 1 + 2 + 3 * 2
    # usage in Placement equals the servers' flavors, host by host
    consumers = frames["consumers"]
    for host, group in consumers.groupby("host"):
        assert capacity.loc[(host, "memory"), "allocated"] == group["memory"].sum()


def test_paging_follows_the_next_link_with_the_last_id_as_marker() -> None:
    first = load("nova_os-hypervisors_detail_v2.33.json")  # upstream sample: limit=1 with a next link
    seen: list[str] = []

    def page(path: str) -> dict:
        seen.append(path)
        return first if "marker" not in path else {"hypervisors": []}

    client = FixtureClient({"compute": (2, 33)}, {("compute", "/os-hypervisors/detail"): page})
    reader = NovaReader(client, page_size=1)  # type: ignore[arg-type]
    hypervisors = reader._hypervisors((2, 33))
    assert [h.hostname for h in hypervisors] == ["host1"]
    assert seen == ["/os-hypervisors/detail?limit=1", "/os-hypervisors/detail?limit=1&marker=2"]


@pytest.mark.parametrize(
    "name",
    [
        "nova_servers_detail_v2.1.json",
        "nova_servers_detail_v2.47.json",
        "nova_servers_detail_v2.73.json",
        "nova_servers_detail_v2.96.json",
        "nova_servers_detail_v2.100.json",
    ],
)
def test_upstream_server_samples_parse(name: str) -> None:
    body = load(name)
    for server in body["servers"]:  # 2.96 / 2.100 were generated as a project member: see the next test
        server.setdefault(HOST_FIELD, None)
    flavors = load("nova_flavors_detail_v2.61.json")
    version = (2, int(name.split("_v2.")[1].split(".")[0]))
    client = FixtureClient(
        {"compute": version},
        {  # the samples carry a next link: the 2nd page is empty
            ("compute", "/servers/detail?all_tenants=1"): lambda path: {"servers": []} if "marker" in path else body,
            ("compute", "/flavors/detail?is_public=None"): flavors,
        },
    )
    reader = NovaReader(client, quotas=False)  # type: ignore[arg-type]
    known = reader._flavors((2, 61))
    servers = reader._servers(version, known, type("S", (), {"skipped": {}, "notes": []})())
    assert servers and all(s.flavor is not None for s in servers)
    assert all(s.flavor.vcpus >= 1 for s in servers if s.flavor)


@pytest.mark.parametrize("name", ["nova_servers_detail_v2.96.json", "nova_servers_detail_v2.100.json"])
def test_servers_listed_without_their_host_fail_forbidden(name: str) -> None:
    """Nova omits OS-EXT-SRV-ATTR:* (200, no 403) when policy hides them: the servers would all look unplaced."""
    body = load(name)
    assert all(HOST_FIELD not in server for server in body["servers"])
    version = (2, int(name.split("_v2.")[1].split(".")[0]))
    pages = {("compute", "/servers/detail?all_tenants=1"): lambda path: {"servers": []} if "marker" in path else body}
    client = FixtureClient({"compute": version}, pages)
    reader = NovaReader(client, quotas=False)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as caught:
        reader._servers(version, {}, type("S", (), {"skipped": {}, "notes": []})())
    assert caught.value.reason == "forbidden"
    assert "os_compute_api:os-extended-server-attributes" in str(caught.value)


def test_aggregates_without_uuid_before_2_41_get_a_stable_stand_in_id() -> None:
    client = FixtureClient(
        {"compute": (2, 1)}, {("compute", "/os-aggregates"): load("nova_os-aggregates_list_v2.1.json")}
    )
    aggregates = NovaReader(client)._aggregates((2, 1))  # type: ignore[arg-type]
    assert aggregates and all(a.uuid.startswith("nova-aggregate-") for a in aggregates)
    client = FixtureClient(
        {"compute": (2, 41)}, {("compute", "/os-aggregates"): load("nova_os-aggregates_list_v2.41.json")}
    )
    assert all("-" in a.uuid and not a.uuid.startswith("nova-") for a in NovaReader(client)._aggregates((2, 41)))


def test_placement_live_bundle_nested_and_sharing_providers() -> None:
    """Placement-only capture: nested GPU child under compute-04, sharing DISK_GB provider in az2."""
    data = load("placement_live_bundle_v1.39__live-placement-16.0.0.json")
    responses = {key: value["body"] for key, value in data["responses"].items()}
    ids = data["_ids"]["resource_providers"]
    listing = responses["GET /resource_providers @1.39"]
    gpu = ids["compute-04.example.net_pci_0000_81_00_0"]
    child = next(rp for rp in listing["resource_providers"] if rp["uuid"] == gpu)
    assert child["parent_provider_uuid"] == child["root_provider_uuid"] == ids["compute-04.example.net"]
    old = responses["GET /resource_providers @1.14"]["resource_providers"][0]
    assert "root_provider_uuid" in old  # 1.14 is where parent/root appear
    inventories = responses[f"GET /resource_providers/{gpu}/inventories @1.39"]
    request = flavor_request(Flavor("x", "gpu", 16, 65536, 200, 0, 0, {"resources1:CUSTOM_NVIDIA_A100": "1"}, True))
    assert request.resources["custom_nvidia_a100"] == 1 and request.resources["vcpu"] == 16
    assert "CUSTOM_NVIDIA_A100" in inventories["inventories"]


class _Response:
    def __init__(self, body: Any, status: int):
        self._body, self.status_code, self.text = body, status, json.dumps(body)

    def json(self) -> Any:
        return self._body


def test_placement_error_bodies_are_quoted() -> None:
    not_found = _error_detail(_Response(load("placement_error_404_rp-not-found__live-placement-16.0.0.json"), 404))
    assert "No resource provider with uuid 2ed02727-59a1-573c-b7ea-211cc773be63 found" in not_found
    bad_version = _error_detail(
        _Response(load("placement_error_406_bad-microversion__live-placement-16.0.0.json"), 406)
    )
    assert "Unacceptable version header: 1.99" in bad_version and "1.0..1.39" in bad_version
    assert (
        _error_detail(_Response({"itemNotFound": {"code": 404, "message": "Flavor x could not be found."}}, 404))
        == "Flavor x could not be found."
    )


def test_flavor_translation_follows_nova() -> None:
    def flavor(specs: dict[str, str], vcpus: int = 4, disk: int = 40, eph: int = 0, swap: int = 0) -> Flavor:
        return Flavor("id", "f", vcpus, 8192, disk, eph, swap, specs, True)

    assert flavor_request(flavor({"hw:cpu_policy": "dedicated"})).resources["pcpu"] == 4
    mixed = flavor_request(flavor({"hw:cpu_policy": "mixed", "hw:cpu_dedicated_mask": "^0"})).resources
    assert (mixed["pcpu"], mixed["vcpu"]) == (3, 1)
    assert flavor_request(flavor({}, eph=10, swap=1536)).resources["disk"] == (40 + 10 + 2) * GIB
    assert "disk" not in flavor_request(flavor({}, disk=20), boot_from_volume=True).resources
    overridden = flavor_request(flavor({"resources:VCPU": "0", "resources:CUSTOM_BAREMETAL_GOLD": "1"})).resources
    assert "vcpu" not in overridden and overridden["custom_baremetal_gold"] == 1
    traits = flavor_request(flavor({"trait:CUSTOM_A": "required", "trait1:CUSTOM_B": "forbidden"}))
    assert traits.required_traits == ["CUSTOM_A"] and traits.forbidden_traits == ["CUSTOM_B"]


def test_a_truncated_placement_answer_is_malformed() -> None:
    client = FixtureClient({"placement": (1, 39)}, {("placement", "/resource_providers"): {"providers": []}})
    with pytest.raises(SourceError) as error:
        PlacementReader(client).read()  # type: ignore[arg-type]
    assert error.value.reason == "malformed_response" and "resource_providers" in str(error.value)

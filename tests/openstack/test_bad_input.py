"""Bad input: unreachable cloud, 401, 5xx, malformed bodies, hanging endpoints, vanished providers.

Served by the Nova + Placement stand-in (the demo's; real services' shapes and error bodies) with
injected faults, polled through the unchanged openstacksdk. Each failure must be a SourceError with
a low-cardinality reason and a message that names the cloud and what was wrong (and no secret);
the daemon's Estate then keeps the last good frames and marks them stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.demo.model import build_estate
from collector.demo.standins.openstack import StandinServer, from_demo_estate
from collector.estate import Estate
from collector.sources.base import SourceError
from collector.sources.openstack.settings import OpenStackSourceConfig
from collector.sources.openstack.source import OpenStackSource
from tests.openstack.conftest import make_source
from tests.services.openstack import free_port, write_clouds_yaml

CLOUD = "faulty"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinServer]:
    server = StandinServer(from_demo_estate(build_estate(), growth_count=0)).start()
    server.write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD)
    try:
        yield server
    finally:
        server.stop()


def _source(tmp_path: Path, sleeps: list[float] | None = None, **config: object):
    return make_source(tmp_path / "clouds.yaml", CLOUD, sleeps=sleeps, **config)


def _count(server: StandinServer, fragment: str) -> int:
    return sum(1 for _, path in server.requests if fragment in path)


def test_a_healthy_poll_first(standin: StandinServer, tmp_path: Path) -> None:
    result = _source(tmp_path).checked_poll(datetime.now(UTC))
    assert len(result.frames["hosts"]) == 10 and not result.skipped
    assert result.api_calls == len(standin.requests)  # every HTTP request is counted, discovery included


def test_unreachable_cloud_retries_with_backoff_then_names_the_cloud(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/v2.1")
    sleeps: list[float] = []
    with pytest.raises(SourceError) as error:
        _source(tmp_path, sleeps).poll(datetime.now(UTC))
    assert error.value.reason == "unreachable"
    assert f"cloud {CLOUD}" in str(error.value) and "4 attempt(s)" in str(error.value)
    assert sleeps == [0.5, 1.0, 2.0]


def test_expired_token_is_refreshed_once(standin: StandinServer, tmp_path: Path) -> None:
    standin.inject("compute", r"/os-hypervisors/detail", status=401, times=1)
    result = _source(tmp_path).checked_poll(datetime.now(UTC))
    assert len(result.frames["hosts"]) == 10
    assert _count(standin, "/os-hypervisors/detail") == 2


def test_rejected_credentials_are_a_clear_auth_error_without_the_token(tmp_path: Path) -> None:
    server = StandinServer(from_demo_estate(build_estate(), growth_count=0), token="right-token").start()
    try:
        secret = "s3cr3t-expired-token-value"
        write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, server.placement_url, server.compute_url, token=secret)
        with pytest.raises(SourceError) as error:
            _source(tmp_path).poll(datetime.now(UTC))
        assert error.value.reason == "auth_failed"
        assert "HTTP 401" in str(error.value) and "twice" in str(error.value)
        assert "requires authentication" in str(error.value)  # the service's own words
        assert secret not in str(error.value)
    finally:
        server.stop()


def test_503_is_retried_with_backoff(standin: StandinServer, tmp_path: Path) -> None:
    standin.inject("placement", r"^/placement/resource_providers$", status=503, times=2)
    sleeps: list[float] = []
    result = _source(tmp_path, sleeps).checked_poll(datetime.now(UTC))
    assert len(result.frames["capacity"]) > 0
    assert sleeps == [0.5, 1.0]


def test_persistent_500_gives_up_with_the_path_and_status(standin: StandinServer, tmp_path: Path) -> None:
    standin.inject("compute", r"/flavors/detail", status=500, times=100)
    sleeps: list[float] = []
    with pytest.raises(SourceError) as error:
        _source(tmp_path, sleeps).poll(datetime.now(UTC))
    assert error.value.reason == "server_error"
    message = str(error.value)
    assert "compute GET /flavors/detail" in message and "HTTP 500" in message and "Injected failure" in message
    assert sleeps == [0.5, 1.0, 2.0] and _count(standin, "/flavors/detail") == 4


@pytest.mark.parametrize(
    ("service", "pattern", "body", "needle"),
    [
        ("compute", r"/os-aggregates", b"<html>proxy error</html>", "not JSON"),
        ("placement", r"^/placement/resource_providers$", b'{"resource_providers": "oops"}', "resource_providers"),
        ("compute", r"/servers/detail", b"[1, 2, 3]", "expected a JSON object"),
        ("compute", r"/os-hypervisors/detail", b'{"hypervisors": [{"id": "x"}]}', "hypervisor entry lacks"),
    ],
)
def test_malformed_answers_are_named(
    standin: StandinServer, tmp_path: Path, service: str, pattern: str, body: bytes, needle: str
) -> None:
    standin.inject(service, pattern, status=200, body=body, times=10)
    with pytest.raises(SourceError) as error:
        _source(tmp_path).poll(datetime.now(UTC))
    assert error.value.reason == "malformed_response"
    assert needle in str(error.value) and f"cloud {CLOUD}" in str(error.value)


@pytest.mark.parametrize("total", ["-5", "NaN", '"lots"', "Infinity"])
def test_impossible_inventory_numbers_are_rejected(standin: StandinServer, tmp_path: Path, total: str) -> None:
    host = next(p for p in standin.cloud.providers.values() if p.name == "compute-02")
    inventory = '"reserved": 0, "min_unit": 1, "max_unit": 8, "step_size": 1, "allocation_ratio": 4.0'
    body = f'{{"resource_provider_generation": 1, "inventories": {{"VCPU": {{"total": {total}, {inventory}}}}}}}'
    body = body.encode()
    standin.inject("placement", rf"/resource_providers/{host.uuid}/inventories", status=200, body=body)
    with pytest.raises(SourceError) as error:
        _source(tmp_path).poll(datetime.now(UTC))
    assert error.value.reason == "malformed_response"
    assert "compute-02" in str(error.value) and "VCPU.total" in str(error.value)


def test_provider_deleted_between_list_and_read_is_skipped_and_counted(standin: StandinServer, tmp_path: Path) -> None:
    host = next(p for p in standin.cloud.providers.values() if p.name == "compute-07")
    not_found = json.dumps(
        {
            "errors": [
                {
                    "status": 404,
                    "title": "Not Found",
                    "code": "placement.undefined_code",
                    "request_id": "req-x",
                    "detail": "The resource could not be found.\n\n No resource provider with uuid "
                    f"{host.uuid} found  ",
                }
            ]
        }
    ).encode()
    standin.inject("placement", rf"/resource_providers/{host.uuid}/usages", status=404, body=not_found)
    result = _source(tmp_path).checked_poll(datetime.now(UTC))
    assert result.skipped == {"provider_vanished": 1}
    assert any("compute-07" in note and "deleted" in note for note in result.notes)
    assert "compute-07" not in set(result.frames["capacity"]["host"])
    assert len(result.frames["hosts"]) == 9


def test_a_hanging_endpoint_times_out_within_the_poll_budget(standin: StandinServer, tmp_path: Path) -> None:
    standin.inject("compute", r"/os-aggregates", status=200, delay=3.0, times=5)
    source = _source(tmp_path, timeout="1500ms")
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        source.poll(datetime.now(UTC))
    assert error.value.reason == "timeout" and "/os-aggregates" in str(error.value)
    assert time.monotonic() - started < 8


def test_an_older_nova_is_read_through_its_own_microversion(standin: StandinServer, tmp_path: Path) -> None:
    """Nova capped at 2.46: flavor ids instead of embedded flavors, extra_specs per flavor call."""
    standin.versions["compute"] = ((2, 1), (2, 46))
    result = _source(tmp_path).checked_poll(datetime.now(UTC))
    consumers = result.frames["consumers"]
    assert consumers["flavor"].notna().all() and (consumers["cpu"] > 0).all()
    pinned = result.frames["flavors"].set_index("flavor").loc["c1.pinned"]
    assert "pcpu" in pinned["resources"]
    assert _count(standin, "/os-extra_specs") == len(standin.cloud.flavors)


def test_failed_cloud_goes_stale_while_another_cloud_stays_fresh(standin: StandinServer, tmp_path: Path) -> None:
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir(), bad_dir.mkdir()
    standin.write_clouds_yaml(good_dir / "clouds.yaml", CLOUD)
    other = StandinServer(from_demo_estate(build_estate(), growth_count=0)).start()
    other.write_clouds_yaml(bad_dir / "clouds.yaml", CLOUD)
    good = make_source(good_dir / "clouds.yaml", CLOUD, name="cloud-a")
    bad = make_source(bad_dir / "clouds.yaml", CLOUD, name="cloud-b")
    estate = Estate()
    for source in (good, bad):
        estate.add_source(source.name, "openstack", timedelta(seconds=60))
    t0 = datetime.now(UTC)
    for source in (good, bad):
        result = source.checked_poll(t0)
        estate.record_success(source.name, result.frames, t0, 0.1, result.skipped, result.api_calls)
    other.stop()  # cloud-b goes away
    t1 = t0 + timedelta(seconds=60)
    result = good.checked_poll(t1)
    estate.record_success("cloud-a", result.frames, t1, 0.1, result.skipped, result.api_calls)
    with pytest.raises(SourceError) as error:
        bad.checked_poll(t1)
    estate.record_failure("cloud-b", error.value.reason, str(error.value), t1, 0.1)
    snapshot = estate.snapshot(t1)
    health = snapshot.frames["sources"].set_index("source")
    assert health.loc["cloud-a", "up"] and not health.loc["cloud-a", "stale"]
    assert not health.loc["cloud-b", "up"] and health.loc["cloud-b", "stale"]
    assert health["last_error"].isna()["cloud-a"]
    assert error.value.reason == "unreachable" and f"cloud {CLOUD}" in health.loc["cloud-b", "last_error"]
    hosts = snapshot.frames["hosts"]
    assert set(hosts["source"]) == {"cloud-a", "cloud-b"}  # cloud-b's last good frames are kept ...
    assert (hosts[hosts.source == "cloud-b"]["timestamp"] == t0).all()  # ... with their old timestamp


def test_clouds_yaml_from_os_client_config_file(
    standin: StandinServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `clouds_yaml:` key: openstacksdk's own search, led by $OS_CLIENT_CONFIG_FILE."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    source = OpenStackSource(OpenStackSourceConfig(kind="openstack", cloud=CLOUD, interval="60s"))
    assert len(source.checked_poll(datetime.now(UTC)).frames["hosts"]) == 10


def test_os_environment_variables_without_a_cloud_entry(
    standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "OS_AUTH_TYPE": "admin_token",
        "OS_TOKEN": standin.token,
        "OS_ENDPOINT": standin.placement_url,
        "OS_REGION_NAME": "RegionOne",
        "OS_PLACEMENT_ENDPOINT_OVERRIDE": standin.placement_url,
        "OS_COMPUTE_ENDPOINT_OVERRIDE": standin.compute_url,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", "/nonexistent/clouds.yaml")
    source = OpenStackSource(OpenStackSourceConfig(kind="openstack", name="from-env", interval="60s"))
    assert source.cloud == "default"
    assert len(source.checked_poll(datetime.now(UTC)).frames["hosts"]) == 10


@pytest.mark.parametrize("problem", ["missing file", "unknown cloud"])
def test_broken_cloud_configuration_is_a_config_error(standin: StandinServer, tmp_path: Path, problem: str) -> None:
    if problem == "missing file":
        config = {"cloud": CLOUD, "clouds_yaml": str(tmp_path / "nope.yaml")}
    else:
        config = {"cloud": "no-such-cloud", "clouds_yaml": str(tmp_path / "clouds.yaml")}
    source = OpenStackSource(OpenStackSourceConfig(kind="openstack", interval="60s", **config))
    with pytest.raises(SourceError) as error:
        source.poll(datetime.now(UTC))
    assert error.value.reason == "config"
    assert ("nope.yaml" if problem == "missing file" else "no-such-cloud") in str(error.value)

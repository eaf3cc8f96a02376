"""Nova-discovered libvirt targets, end to end against REAL Placement 16 + Nova 34 (fake-driver computes).

Three computes: compute-a and compute-b in AZ `az1` (compute-b also in aggregate `gpu`), compute-c
in no AZ aggregate. The OpenStack source polls the real services; its frames are the inventory of a
libvirt source with `discover: {from: nova, uri: test://<dir>/{hypervisor_hostname}.xml}`; each
target is a real libvirt test-driver connection. Disabling compute-c relabels its target, deleting
compute-a's service removes its target at the next poll while the others keep their data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.app.config import parse_config
from collector.sources.base import SourceError
from collector.sources.discovery.fleet import TargetFleet
from tests.discovery.conftest import write_node
from tests.openstack.conftest import make_source
from tests.services.openstack import HostSpec, Nova, Placement, write_clouds_yaml

pytestmark = pytest.mark.slow
HOSTS = [
    HostSpec("compute-a", vcpus=16, memory_mb=32768, disk_gb=100),
    HostSpec("compute-b", vcpus=16, memory_mb=32768, disk_gb=100),
    HostSpec("compute-c", vcpus=8, memory_mb=16384, disk_gb=100),
]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nova, Path]]:
    work = tmp_path_factory.mktemp("nova-discovery")
    placement = Placement(work / "placement").start()
    nova = Nova(work / "nova", placement, HOSTS)
    try:
        nova.start()
        nova.create_aggregate("az1", ["compute-a", "compute-b"], zone="az1")
        nova.create_aggregate("gpu", ["compute-b"], metadata={"gpu": "true"})
        clouds = write_clouds_yaml(work / "clouds.yaml", "disc", placement.url, nova.url)
        yield nova, clouds
    finally:
        nova.stop()
        placement.stop()


def _fleet(nodes: Path) -> TargetFleet:
    config = parse_config(
        {
            "sources": [
                {
                    "kind": "libvirt",
                    "name": "kvm",
                    "discover": {
                        "from": "nova",
                        "uri": f"test://{nodes}/{{hypervisor_hostname}}.xml",
                        "max_concurrency": 2,
                    },
                },
            ]
        }
    )
    fleet = config.sources[0].create_source()
    assert isinstance(fleet, TargetFleet)
    return fleet


def test_targets_follow_the_nova_hypervisor_list(cloud: tuple[Nova, Path], tmp_path: Path) -> None:
    nova, clouds = cloud
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    for spec in HOSTS:
        write_node(nodes, spec.name)
    openstack = make_source(clouds, "disc", name="nova")
    inventory: dict[str, object] = {}
    fleet = _fleet(nodes)
    fleet.set_inventory(lambda: inventory.get("frames"))  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(SourceError, match="'nova' has not been polled yet"):
            fleet.poll(datetime.now(UTC))
        inventory["frames"] = openstack.checked_poll(datetime.now(UTC)).frames

        # One target per hypervisor, the template applied, AZ and aggregates from Nova.
        changes = fleet.refresh()
        assert sorted(changes.added) == ["compute-a", "compute-b", "compute-c"]
        targets = {i: s.target for i, s in fleet.states.items()}
        assert targets["compute-b"].uri == f"test://{nodes}/compute-b.xml"
        assert targets["compute-a"].pool == targets["compute-b"].pool == "az1"
        assert targets["compute-b"].labels["aggregates"] == "az1,gpu"
        assert targets["compute-c"].pool == "nova"  # Nova's default AZ
        result = fleet.checked_poll(datetime.now(UTC))
        hosts = result.frames["hosts"].set_index("host")
        assert sorted(hosts.index) == ["compute-a", "compute-b", "compute-c"]
        assert hosts.loc["compute-a", "pool"] == "az1" and bool(hosts.loc["compute-a", "schedulable"])
        consumers = result.frames["consumers"]
        assert consumers.groupby("host").size().to_dict() == {"compute-a": 5, "compute-b": 5, "compute-c": 5}
        assert set(result.frames["targets"]["state"]) == {"active"}

        # Disabling a compute service relabels its target; it is still polled.
        nova.disable_compute("compute-c")
        inventory["frames"] = openstack.checked_poll(datetime.now(UTC)).frames
        result = fleet.checked_poll(datetime.now(UTC))
        table = result.frames["targets"].set_index("target")
        assert table.loc["compute-c", "state"] == "disabled" and bool(table.loc["compute-c", "up"])
        assert not bool(result.frames["hosts"].set_index("host").loc["compute-c", "schedulable"])
        assert (result.frames["consumers"]["host"] == "compute-c").sum() == 5

        # Deleting a compute service removes its target at the next poll; the others keep their data.
        service = nova.call("GET", "/os-services?binary=nova-compute&host=compute-a")["services"][0]
        nova.call("DELETE", f"/os-services/{service['id']}", microversion="2.53")
        deadline = time.monotonic() + 30
        while True:
            inventory["frames"] = openstack.checked_poll(datetime.now(UTC)).frames
            hosts_now = set(inventory["frames"]["hosts"]["host"])  # type: ignore[index]
            if "compute-a" not in hosts_now or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "compute-a" not in hosts_now
        result = fleet.checked_poll(datetime.now(UTC))
        table = result.frames["targets"].set_index("target")
        assert table.loc["compute-a", "state"] == "gone"
        assert fleet.states["compute-a"].source is None  # its connection was closed
        assert "compute-a" not in set(result.frames["capacity"]["host"])
        assert "compute-a" not in set(result.frames["consumers"]["host"])
        assert set(result.frames["hosts"]["host"]) == {"compute-b", "compute-c"}
        assert int(table.loc["compute-b", "polls_total"]) == 3  # history of the others untouched
    finally:
        fleet.close()
        openstack.close()


def test_show_targets_polls_nova_once(cloud: tuple[Nova, Path], tmp_path: Path) -> None:
    from collector.app.targets import target_rows

    nova, clouds = cloud
    config = parse_config(
        {
            "sources": [
                {"kind": "openstack", "name": "nova", "cloud": "disc", "clouds_yaml": str(clouds)},
                {
                    "kind": "libvirt",
                    "name": "kvm",
                    "discover": {"from": "nova", "uri": "qemu+tls://{hypervisor_hostname}/system"},
                },
                {
                    "kind": "libvirt",
                    "name": "orphan",
                    "discover": {"from": "nowhere", "uri": "qemu+tls://{target}/system"},
                },
            ]
        }
    )
    rows = {(r["source"], r["target"]): r for r in target_rows(config)}
    assert rows[("kvm", "compute-b")]["uri"] == "qemu+tls://compute-b/system"
    assert rows[("kvm", "compute-b")]["pool"] == "az1"
    assert "not a source" in rows[("orphan", "-")]["state"]
    truth = {h["hypervisor_hostname"]: h for h in nova.call("GET", "/os-hypervisors/detail")["hypervisors"]}
    config = parse_config(
        {
            "sources": [
                {"kind": "openstack", "name": "nova", "cloud": "disc", "clouds_yaml": str(clouds)},
                {
                    "kind": "libvirt",
                    "name": "kvm",
                    "discover": {
                        "from": "nova",
                        "uri": "qemu+ssh://{service_host}@{host_ip}/system?az={zone}&aggs={aggregates}",
                    },
                },
            ]
        }
    )
    rows = {(r["source"], r["target"]): r for r in target_rows(config)}
    assert truth["compute-b"]["host_ip"]  # Nova reports one; the template must carry exactly it
    assert rows[("kvm", "compute-b")]["uri"] == (
        f"qemu+ssh://{truth['compute-b']['service']['host']}@{truth['compute-b']['host_ip']}/system?az=az1&aggs=az1,gpu"
    )


def test_the_daemon_wiring_feeds_discovery_from_the_estate(cloud: tuple[Nova, Path], tmp_path: Path) -> None:
    """start_fleet (what the daemon calls): the inventory is the OpenStack source's frames in the Estate."""
    from datetime import timedelta

    from collector.app.targets import start_fleet
    from collector.estate import Estate

    _, clouds = cloud
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    for spec in HOSTS:
        write_node(nodes, spec.name)
    config = parse_config(
        {
            "sources": [
                {"kind": "openstack", "name": "nova", "cloud": "disc", "clouds_yaml": str(clouds)},
                {
                    "kind": "libvirt",
                    "name": "kvm",
                    "interval": "2s",
                    "discover": {
                        "from": "nova",
                        "uri": f"test://{nodes}/{{hypervisor_hostname}}.xml",
                        "refresh_interval": "1s",
                    },
                },
            ]
        }
    )
    estate = Estate()
    for source_config in config.sources:
        estate.add_source(source_config.name, source_config.kind, timedelta(seconds=2))
    appended: list[set[str]] = []
    runner = start_fleet(
        config.sources[1].create_source(),
        estate,
        config.sources[1],
        lambda name, result, when: appended.append(set(result.frames["hosts"]["host"])),
    )
    try:
        time.sleep(1.5)
        kvm = next(s for s in estate.snapshot().statuses if s.name == "kvm")
        assert not kvm.up and "has not been polled yet" in (kvm.last_error or "")
        openstack = make_source(clouds, "disc", name="nova")
        try:
            estate.record_success("nova", openstack.checked_poll(datetime.now(UTC)).frames, datetime.now(UTC), 0.1)
        finally:
            openstack.close()
        nova_hosts = set(estate.snapshot().frames["hosts"].query("source == 'nova'")["host"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            kvm = next(s for s in estate.snapshot().statuses if s.name == "kvm")
            if kvm.up and set(kvm.frames["hosts"]["host"]) == nova_hosts and appended and appended[-1] == nova_hosts:
                break
            time.sleep(0.3)
        assert kvm.up and set(kvm.frames["hosts"]["host"]) == nova_hosts
        assert appended[-1] == nova_hosts  # history gets whole-source appends (every target in one)
    finally:
        runner.close()

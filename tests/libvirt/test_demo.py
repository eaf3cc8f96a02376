"""The libvirt demo part: the demo estate's hosts as test-driver nodes, polled by the real source."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from collector.app.config import parse_config
from collector.demo import libvirt as demo_libvirt
from collector.demo.model import CLOUD, MIB, build_estate
from collector.sources import create_source

STATES = {"ACTIVE": "running", "PAUSED": "paused", "SHUTOFF": "shutoff"}


def test_demo_hosts_are_served_by_the_test_driver(tmp_path: Path) -> None:
    estate = build_estate()
    context = {"estate": estate}
    part = demo_libvirt.start(tmp_path, context)
    assert set(context["libvirt_nodes"]) == {h.name for h in estate.hosts}
    config = parse_config({"sources": part.sources})  # the generated entries are valid config
    assert len(config.sources) == len(estate.hosts)
    servers = {s.id: s for s in estate.servers}
    flavors = {f.name: f for f in estate.flavors}
    seen = 0
    for source_config in config.sources:
        assert source_config.cloud == CLOUD
        assert source_config.interval.total_seconds() == 15
        host = estate.host(source_config.name.removeprefix("kvm-"))
        assert source_config.pool == host.zone
        assert source_config.uri == f"test://{context['libvirt_nodes'][host.name]}"
        source = create_source(source_config)
        try:
            frames = source.checked_poll(datetime.now(UTC)).frames
        finally:
            source.close()
        consumers = frames["consumers"]
        seen += len(consumers)
        for row in consumers.itertuples():
            server = servers[row.id]
            assert server.host == host.name == row.host
            assert row.state == STATES[server.status]
            assert (row.flavor, row.project) == (server.flavor, server.project)
            assert row.cpu == flavors[server.flavor].vcpus
            assert row.memory == flavors[server.flavor].ram_mb * MIB
            assert row.name.startswith("instance-")
        active = [s for s in estate.servers_on(host.name) if s.status != "SHUTOFF"]
        capacity = frames["capacity"].set_index("resource")
        assert capacity.loc["cpu", "capacity"] == host.cpus
        assert capacity.loc["memory", "capacity"] == host.memory_bytes
        assert capacity.loc["cpu", "allocated"] == sum(flavors[s.flavor].vcpus for s in active)
        assert capacity.loc["memory", "allocated"] == sum(flavors[s.flavor].ram_mb * MIB for s in active)
    assert seen == len(estate.servers)

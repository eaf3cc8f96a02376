"""The libvirt source end to end on libvirt's own test driver (real libvirt library, generated nodes)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from collector.contract.schema import validate
from collector.sources.libvirt import SOURCE, LibvirtSource
from collector.sources.libvirt.source import GIB, KIB, MIB
from tests.libvirt.conftest import TESTDATA

STATE_NAMES = {1: "running", 3: "paused", 5: "shutoff"}


def _poll(source: LibvirtSource) -> Any:
    result = source.checked_poll(datetime.now(UTC))
    validate(result.frames)
    return result


def test_package_exports_the_source() -> None:
    assert SOURCE is LibvirtSource
    assert SOURCE.kind == "libvirt"


def test_1000_domain_node_all_domains_and_states(
    node_1000: tuple[Path, dict[str, Any]], make_source: Callable[..., LibvirtSource]
) -> None:
    path, summary = node_1000
    source = make_source(f"test://{path}", cloud="lab", pool="az9")
    result = _poll(source)
    consumers = result.frames["consumers"]
    assert len(consumers) == summary["n_domains"] == 1000, "listAllDomains, not the 512-capped listing"
    assert consumers["id"].is_unique
    assert dict(Counter(consumers["state"])) == summary["by_state"]
    assert dict(Counter(consumers["flavor"])) == summary["by_flavor"]
    assert consumers["holds_capacity"].sum() == summary["by_state"]["running"] + summary["by_state"]["paused"]
    assert result.skipped == Counter()

    capacity = result.frames["capacity"].set_index("resource")
    node = summary["node"]
    assert capacity.loc["cpu", "capacity"] == node["cpus"]
    assert capacity.loc["memory", "capacity"] == node["memory_kib"] * KIB
    assert capacity.loc["cpu", "allocated"] == summary["sum_vcpus_active"]
    assert capacity.loc["memory", "allocated"] == summary["sum_ram_mib_active"] * MIB
    assert (capacity["allocatable"] == capacity["capacity"]).all()
    assert set(capacity["host"]) == {"kvm-1000"}, "a test node is named after its file"
    assert set(capacity["pool"]) == {"az9"} and set(consumers["cloud"]) == {"lab"}
    # The test driver reports no usage: unknown stays NaN, never 0 and never the balloon size.
    assert capacity["used"].isna().all()
    assert consumers["memory_used"].isna().all()
    assert consumers["cpu_used"].isna().all()

    first = summary["domains"][0]
    row = consumers.set_index("id").loc[first["uuid"]]
    assert row["name"] == first["name"]
    assert row["state"] == STATE_NAMES[first["state"]]
    assert row["flavor"] == first["flavor"]
    assert row["cpu"] == first["vcpus"]
    assert row["memory"] == first["ram_mib"] * MIB
    assert row["disk"] == first["disk_gb"] * GIB
    assert row["nova_instance_uuid"] == row["libvirt_domain_uuid"] == first["uuid"]


def test_1000_domain_node_steady_state_is_a_few_calls(
    node_1000: tuple[Path, dict[str, Any]], make_source: Callable[..., LibvirtSource]
) -> None:
    path, _ = node_1000
    source = make_source(f"test://{path}")
    first = _poll(source)
    assert first.api_calls is not None and first.api_calls >= 1000, "first poll reads every domain's XML once"
    second = _poll(source)
    # getAllDomainStats (lists every domain and reads its stats) + getInfo; the XML cache serves the rest.
    assert second.api_calls == 2
    assert len(second.frames["consumers"]) == 1000
    assert source.connect_attempts == 1, "one long-lived connection"


def test_5_domain_node_matches_its_summary(
    node_5: tuple[Path, dict[str, Any]], make_source: Callable[..., LibvirtSource]
) -> None:
    path, summary = node_5
    result = _poll(make_source(f"test://{path}"))
    consumers = result.frames["consumers"].set_index("name")
    assert len(consumers) == 5
    for domain in summary["domains"]:
        row = consumers.loc[domain["name"]]
        assert row["id"] == domain["uuid"]
        assert row["state"] == STATE_NAMES[domain["state"]]
        assert row["flavor"] == domain["flavor"]
        assert row["cpu"] == domain["vcpus"]
        assert row["memory"] == domain["ram_mib"] * MIB, "maximum memory, not the current balloon"
        assert bool(row["holds_capacity"]) == (domain["state"] != 5)
        assert math.isnan(row["memory_used"]), "the balloon size is never reported as usage"
    capacity = result.frames["capacity"].set_index("resource")
    assert capacity.loc["cpu", "allocated"] == summary["sum_vcpus_active"]
    assert capacity.loc["memory", "allocated"] == summary["sum_ram_mib_active"] * MIB
    hosts = result.frames["hosts"]
    assert len(hosts) == 1
    assert hosts.loc[0, "host"] == "test-node-5"
    assert bool(hosts.loc[0, "schedulable"]) and bool(hosts.loc[0, "ready"])


def test_nova_metadata_both_namespace_versions(make_source: Callable[..., LibvirtSource]) -> None:
    result = _poll(make_source(f"test://{TESTDATA / 'node-nova-versions.xml'}"))
    rows = result.frames["consumers"].set_index("name")
    v11 = rows.loc["instance-00000101"]
    assert (v11["flavor"], v11["project"]) == ("m1.small", "aaaabbbbccccddddeeeeffff00001111")
    assert v11["nova_instance_uuid"] == "6a1b7a52-1c55-4b1e-9a57-0e1f3a5b7c01"
    assert v11["disk"] == 20 * GIB
    v10 = rows.loc["instance-0000002a"]
    assert (v10["flavor"], v10["project"]) == ("db.large", "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d")
    assert v10["nova_instance_uuid"] == "5d4c3b2a-1908-4776-8554-433221100fed"
    assert v10["cpu"] == 4, "current vCPUs, not the hot-plug maximum"
    assert v10["disk"] == 20 * GIB + 2048 * MIB, "boot from volume: ephemeral + swap only"
    assert v10["resources"] == {"cpu": 4.0, "memory": float(16 * GIB), "disk": float(20 * GIB + 2048 * MIB)}
    plain = rows.loc["build-runner"]
    assert plain["state"] == "shutoff" and not plain["holds_capacity"]
    assert pd.isna(plain["project"]) and pd.isna(plain["flavor"]) and pd.isna(plain["nova_instance_uuid"])
    assert math.isnan(plain["disk"])
    assert plain["libvirt_domain_uuid"] == "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"
    assert rows.loc["instance-00000102", "state"] == "paused"
    capacity = result.frames["capacity"].set_index("resource")
    assert capacity.loc["cpu", "allocated"] == 1 + 4 + 1
    assert capacity.loc["memory", "allocated"] == 2 * GIB + 16 * GIB + 512 * MIB


def test_bulk_stats_failure_falls_back_to_per_domain(
    node_5: tuple[Path, dict[str, Any]], make_source: Callable[..., LibvirtSource]
) -> None:
    """Some libvirt versions fail the whole bulk call for one bad domain (Tinkoff/libvirt-exporter #18):
    the source then asks per domain and skips only the one that fails."""
    import libvirt

    path, summary = node_5
    source = make_source(f"test://{path}")
    _poll(source)
    conn = source._link.conn  # type: ignore[union-attr]
    real = conn.domainListGetStats
    real_list = conn.listAllDomains
    bad_uuid = summary["domains"][2]["uuid"]

    def real_error() -> libvirt.libvirtError:
        try:
            conn.lookupByUUIDString("00000000-0000-4000-8000-000000000000")
        except libvirt.libvirtError as error:
            return error
        raise AssertionError("lookup of a missing domain succeeded")

    def failing_bulk(groups: int, flags: int) -> Any:
        raise real_error()  # a genuine VIR_ERR_NO_DOMAIN, raised where the bad domain would

    def flaky(domains: list[Any], groups: int, flags: int) -> Any:
        if domains[0].UUIDString() == bad_uuid:
            raise real_error()
        return real(domains, groups, flags)

    listed: list[int] = []

    def counted_list(flags: int) -> Any:
        listed.append(flags)
        return real_list(flags)

    conn.getAllDomainStats = failing_bulk
    conn.domainListGetStats = flaky
    conn.listAllDomains = counted_list
    try:
        result = _poll(source)
    finally:
        del conn.getAllDomainStats, conn.domainListGetStats, conn.listAllDomains
    assert listed == [0], "the fallback lists every domain (listAllDomains(0))"
    assert result.skipped == Counter({"domain_vanished": 1})
    assert len(result.frames["consumers"]) == 4
    assert bad_uuid not in set(result.frames["consumers"]["id"])
    assert any("read per domain" in note for note in result.notes)
    assert result.api_calls == 1 + 1 + 5 + 1  # failed bulk, list, 5 single calls, getInfo

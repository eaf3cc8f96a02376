"""The pure parts of the libvirt source: domain XML / Nova metadata, balloon maths, CPU rates."""

from __future__ import annotations

import json
import math

import pytest

from collector.sources.libvirt.source import (
    GIB,
    KIB,
    MIB,
    CpuSample,
    cpu_rate,
    guest_memory_used,
    node_busy_nanoseconds,
    parse_domain_xml,
    redact_uri,
)
from tests.libvirt.conftest import TESTDATA


def test_nova_1_1_metadata_from_a_real_domain_xml() -> None:
    definition = parse_domain_xml((TESTDATA / "domain-nova-1.1.xml").read_text())
    assert definition.uuid == "11111111-2222-3333-4444-000000000102"
    assert definition.name == "linux-qemu"
    assert definition.vcpus == 1
    assert definition.max_memory_bytes == 128 * MIB
    nova = definition.nova
    assert nova is not None
    assert nova.namespace_version == "1.1"
    assert (nova.flavor, nova.vcpus, nova.memory_mib, nova.disk_gib) == ("m1.nano", 1, 128, 1)
    assert nova.project_id == "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    assert nova.project_name == "demo"
    assert nova.user_id == "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert nova.instance_name == "linux-qemu-server"
    assert nova.root_type == "image"
    assert nova.local_disk_bytes == 1 * GIB


def test_nova_1_0_metadata_boot_from_volume_and_current_vcpus() -> None:
    definition = parse_domain_xml((TESTDATA / "domain-nova-1.0.xml").read_text())
    assert definition.vcpus == 4, "vcpu current= wins over the maximum"
    assert definition.max_memory_bytes == 16384 * MIB, "unit='MiB' is honoured"
    nova = definition.nova
    assert nova is not None
    assert nova.namespace_version == "1.0"
    assert (nova.flavor, nova.project_id) == ("db.large", "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d")
    # Root disk is a volume (not on this host): local disk = ephemeral 20 GiB + swap 2 GiB.
    assert nova.local_disk_bytes == 20 * GIB + 2048 * MIB


def test_domain_without_nova_metadata() -> None:
    definition = parse_domain_xml((TESTDATA / "domain-no-metadata.xml").read_text())
    assert definition.nova is None
    assert definition.vcpus == 2
    assert definition.max_memory_bytes == 4 * GIB
    assert definition.current_memory_bytes == 2 * GIB


def _real_stats() -> dict[str, dict]:
    return json.loads((TESTDATA / "real-qemu-domain-stats.json").read_text())["domains"]


def test_guest_memory_used_from_real_balloon_stats() -> None:
    stats = _real_stats()
    linux = stats["linux-qemu"]
    assert guest_memory_used(linux) == (94780 - 48608) * KIB  # available - usable
    assert guest_memory_used(linux) != linux["balloon.current"] * KIB


@pytest.mark.parametrize("domain", ["tiny-qemu", "linux-kvm"])
def test_no_balloon_driver_means_unknown_not_the_balloon_size(domain: str) -> None:
    stats = _real_stats()[domain]
    assert "balloon.current" in stats
    assert math.isnan(guest_memory_used(stats))


def test_guest_memory_used_falls_back_to_current_minus_unused() -> None:
    stats = {"balloon.current": 1000, "balloon.unused": 400, "balloon.last-update": 5}
    assert guest_memory_used(stats) == 600 * KIB
    assert math.isnan(guest_memory_used({**stats, "balloon.last-update": 0}))


def test_cpu_rate_first_sample_steady_and_resets() -> None:
    first = CpuSample(at=100.0, nanoseconds=5_000_000_000, incarnation=7)
    assert math.isnan(cpu_rate(None, first))
    later = CpuSample(at=110.0, nanoseconds=20_000_000_000, incarnation=7)
    assert cpu_rate(first, later) == pytest.approx(1.5)  # 15 s of CPU in 10 s = 1.5 cores
    restarted = CpuSample(at=110.0, nanoseconds=30_000_000_000, incarnation=8)
    assert math.isnan(cpu_rate(first, restarted)), "a restart (new domain id) is a counter reset"
    went_down = CpuSample(at=110.0, nanoseconds=1_000_000_000, incarnation=7)
    assert math.isnan(cpu_rate(first, went_down)), "a counter that decreased gives no rate"
    assert math.isnan(cpu_rate(first, CpuSample(at=100.0, nanoseconds=6_000_000_000, incarnation=7)))


def test_node_busy_time_excludes_idle_and_iowait() -> None:
    busy, total = node_busy_nanoseconds({"kernel": 10, "user": 30, "idle": 50, "iowait": 10})
    assert (busy, total) == (40, 100)


def test_redact_uri_masks_a_password_only() -> None:
    assert redact_uri("qemu+ssh://root@kvm-a/system") == "qemu+ssh://root@kvm-a/system"
    shown = redact_uri("qemu+tcp://admin:hunter2@kvm-a:16509/system")
    assert "hunter2" not in shown
    assert shown == "qemu+tcp://admin:***@kvm-a:16509/system"


def test_classify_domain_errors(node_5: tuple) -> None:
    import libvirt

    from collector.sources.libvirt.source import classify_domain_error, ensure_event_loop

    ensure_event_loop()  # keeps libvirt's stderr printer quiet
    conn = libvirt.openReadOnly(f"test://{node_5[0]}")
    try:
        with pytest.raises(libvirt.libvirtError) as missing:
            conn.lookupByUUIDString("00000000-0000-4000-8000-000000000000")
        assert classify_domain_error(missing.value) == "domain_vanished"
        with pytest.raises(libvirt.libvirtError) as denied:
            conn.listAllDomains(0)[0].destroy()  # read-only connection: a real, unrelated error
        assert classify_domain_error(denied.value) == "domain_error"
    finally:
        conn.close()
    # What QEMU answers while a migration holds the domain's job (kumina #33, inovex #53):
    locked = libvirt.libvirtError(
        "Timed out during operation: cannot acquire state change lock "
        "(held by monitor=remoteDispatchDomainMigratePrepare3Params)"
    )
    assert classify_domain_error(locked) == "domain_locked"

"""End to end against a real libvirtd + QEMU (TCG) guest: real getAllDomainStats, real balloon stats.

The session fixture `libvirtd` (conftest.py) runs the daemon in private namespaces with a Linux guest
whose virtio_balloon driver reports memory stats every 2 s. Tests that change the daemon's domains
use their own extra guests and remove them again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
import pytest

from collector.contract.schema import validate
from collector.sources.base import PollResult
from collector.sources.libvirt import LibvirtSource
from collector.sources.libvirt.source import KIB, MIB
from tests.libvirt.conftest import LINUX_GUEST
from tests.services.libvirtd import HOST_UUID, GuestSpec, Libvirtd

pytestmark = pytest.mark.slow


def _poll(source: LibvirtSource) -> PollResult:
    result = source.checked_poll(datetime.now(UTC))
    validate(result.frames)
    return result


def _meminfo_total_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * KIB
    raise AssertionError("no MemTotal in /proc/meminfo")


@pytest.fixture
def source(libvirtd: Libvirtd, make_source: Callable[..., LibvirtSource]) -> LibvirtSource:
    return make_source(libvirtd.uri, name="kvm-real", cloud="lab", pool="az1", timeout="20s")


@pytest.fixture
def extra_guests(libvirtd: Libvirtd) -> Iterator[list[str]]:
    """Names of guests a test adds; destroyed and undefined afterwards."""
    names: list[str] = []
    yield names
    conn = libvirtd.connect()
    try:
        for name in names:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    finally:
        conn.close()


def test_real_guest_end_to_end(libvirtd: Libvirtd, source: LibvirtSource) -> None:
    first = _poll(source)
    link = source._link
    assert link is not None
    assert link.keepalive, "keepalive is active on a libvirtd connection (event loop registered)"
    assert link.nowait_supported, "QEMU accepts the NOWAIT stats flag"
    assert first.skipped.total() == 0

    consumers = first.frames["consumers"].set_index("id")
    row = consumers.loc[LINUX_GUEST.uuid]
    assert row["name"] == LINUX_GUEST.name
    assert row["state"] == "running" and bool(row["holds_capacity"])
    assert row["cpu"] == 1
    assert row["memory"] == LINUX_GUEST.memory_mib * MIB
    assert (row["flavor"], row["project"]) == ("m1.nano", LINUX_GUEST.nova_project)
    assert row["nova_instance_uuid"] == LINUX_GUEST.uuid
    assert row["cpu_time_seconds"] > 0
    assert math.isnan(row["cpu_used"]), "no rate on the first poll"
    # Guest memory in use: from the guest's own balloon stats, strictly below the balloon size.
    assert 0 < row["memory_used"] < LINUX_GUEST.memory_mib * MIB

    conn = libvirt.openReadOnly(libvirtd.uri)
    try:
        dom = conn.lookupByUUIDString(LINUX_GUEST.uuid)
        stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_BALLOON, 0)[0][1]
    finally:
        conn.close()
    expected_used = (stats["balloon.available"] - stats["balloon.usable"]) * KIB
    assert row["memory_used"] == pytest.approx(expected_used, rel=0.25)
    assert row["memory_used"] != stats["balloon.current"] * KIB

    capacity = first.frames["capacity"].set_index("resource")
    assert capacity.loc["cpu", "capacity"] == os.cpu_count(), "online logical CPUs (getCPUMap)"
    # getMemoryStats total is the host's MemTotal; getInfo may disagree (NUMA cells) -> a note.
    assert capacity.loc["memory", "capacity"] == pytest.approx(_meminfo_total_bytes(), rel=0.01)
    reader = libvirt.openReadOnly(libvirtd.uri)
    info_memory = reader.getInfo()[1] * MIB
    reader.close()
    if abs(info_memory - _meminfo_total_bytes()) > 0.05 * _meminfo_total_bytes():
        assert any("disagrees with getMemoryStats()" in note for note in first.notes), first.notes
    assert 0 < capacity.loc["memory", "used"] < capacity.loc["memory", "capacity"]
    assert math.isnan(capacity.loc["cpu", "used"]), "host CPU rate needs two polls"
    assert capacity.loc["cpu", "allocated"] >= 1
    assert capacity.loc["memory", "allocated"] >= LINUX_GUEST.memory_mib * MIB

    hosts = first.frames["hosts"]
    assert hosts.loc[0, "host_id"] == HOST_UUID
    assert hosts.loc[0, "host"] == os.uname().nodename

    time.sleep(2.5)
    second = _poll(source)
    assert second.api_calls == 5, "getAllDomainStats, getInfo, getCPUMap, getMemoryStats, getCPUStats"
    row2 = second.frames["consumers"].set_index("id").loc[LINUX_GUEST.uuid]
    assert 0 <= row2["cpu_used"] <= 1.2, f"one vCPU guest used {row2['cpu_used']} cores"
    assert row2["cpu_time_seconds"] >= row["cpu_time_seconds"]
    host_cpu = second.frames["capacity"].set_index("resource").loc["cpu", "used"]
    assert 0 < host_cpu <= os.cpu_count() * 1.2
    assert source.connect_attempts == 1


@pytest.mark.parametrize("stage", ["between stats and first XML read", "fallback: between list and per-domain stats"])
def test_domain_destroyed_mid_poll_is_skipped(
    stage: str, libvirtd: Libvirtd, source: LibvirtSource, extra_guests: list[str]
) -> None:
    victim = GuestSpec("victim", "11111111-2222-3333-4444-00000000dead", kernel=False, memory_mib=32, nova_flavor=None)
    _poll(source)  # connection open, linux guest's XML cached
    libvirtd.create_transient(victim)  # transient: destroyed = gone entirely
    extra_guests.append(victim.name)
    conn = source._link.conn  # type: ignore[union-attr]
    fallback = stage.startswith("fallback")
    # The bulk call lists and reads stats at once: a domain can only vanish after it (before its XML
    # is read), or, when the bulk call failed, between the fallback's list and its per-domain calls.
    method = "listAllDomains" if fallback else "getAllDomainStats"
    real = getattr(conn, method)

    def failing_bulk(*_args: Any) -> Any:
        try:
            conn.lookupByUUIDString("00000000-0000-4000-8000-000000000000")
        except libvirt.libvirtError as error:
            raise error from None  # a genuine libvirt error from this daemon
        raise AssertionError("lookup of a missing domain succeeded")

    def then_destroy(*args: Any) -> Any:
        answer = real(*args)
        writer = libvirtd.connect()
        try:
            writer.lookupByUUIDString(victim.uuid).destroy()
        finally:
            writer.close()
        return answer

    setattr(conn, method, then_destroy)
    if fallback:
        conn.getAllDomainStats = failing_bulk
    try:
        result = _poll(source)
    finally:
        delattr(conn, method)
        if fallback:
            del conn.getAllDomainStats
    assert result.skipped["domain_vanished"] == 1
    ids = set(result.frames["consumers"]["id"])
    assert victim.uuid not in ids
    assert LINUX_GUEST.uuid in ids, "the poll still succeeds for every other domain"


def test_reconnects_after_the_connection_dies(libvirtd: Libvirtd, source: LibvirtSource) -> None:
    _poll(source)
    assert source.connect_attempts == 1
    assert libvirtd.disconnect_clients() >= 1  # the daemon drops our client (as on a restart)
    result = _poll(source)
    assert source.connect_attempts == 2, "the dead link was noticed and replaced within the poll"
    assert LINUX_GUEST.uuid in set(result.frames["consumers"]["id"])
    _poll(source)
    assert source.connect_attempts == 2


def test_restart_resets_the_cpu_counter(libvirtd: Libvirtd, source: LibvirtSource, extra_guests: list[str]) -> None:
    spec = GuestSpec(
        "restarter", "11111111-2222-3333-4444-0000000000aa", kernel=False, memory_mib=32, nova_flavor="m1.micro"
    )
    libvirtd.define_guest(spec, start=True)
    extra_guests.append(spec.name)
    first = _poll(source).frames["consumers"].set_index("id")
    time.sleep(1.5)
    steady = _poll(source).frames["consumers"].set_index("id")
    assert not math.isnan(steady.loc[spec.uuid, "cpu_used"])
    writer = libvirtd.connect()
    try:
        dom = writer.lookupByUUIDString(spec.uuid)
        dom.destroy()
        dom.create()
    finally:
        writer.close()
    after = _poll(source).frames["consumers"].set_index("id")
    assert math.isnan(after.loc[spec.uuid, "cpu_used"]), "new domain id: the counter started over"
    assert after.loc[spec.uuid, "cpu_time_seconds"] < steady.loc[spec.uuid, "cpu_time_seconds"] + 1
    assert not math.isnan(after.loc[LINUX_GUEST.uuid, "cpu_used"])
    assert first.loc[spec.uuid, "flavor"] == "m1.micro"
    # Shut off: still listed (Nova keeps it), no longer holding host capacity, no usage.
    writer = libvirtd.connect()
    try:
        writer.lookupByUUIDString(spec.uuid).destroy()
    finally:
        writer.close()
    off = _poll(source).frames["consumers"].set_index("id").loc[spec.uuid]
    assert off["state"] == "shutoff" and not off["holds_capacity"]
    assert math.isnan(off["cpu_used"]) and math.isnan(off["memory_used"])

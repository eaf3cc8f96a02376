"""Reclaimable capacity from a real history store (SQLite under a temporary state dir)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from collector.analyses.headroom.reclaimable import reclaimable_frame
from collector.analyses.headroom.settings import HeadroomConfig
from collector.store.history import History
from collector.store.settings import HistoryConfig
from tests.headroom.builder import GIB, NOW, Estate, inv

HOURS = 3 * 24
SETTINGS = {"idle_window": timedelta(days=2), "reclaim_window": timedelta(days=2)}


def poll(hour: int) -> tuple[dict, dict]:
    """The openstack+hypervisor and kubernetes frames of one hourly poll."""
    vms = Estate()
    vms.host("cmp1", resources={"vcpu": inv(32, ratio=4.0), "memory": inv(256 * GIB)})
    req = {"vcpu": 4.0, "memory": 8 * GIB, "disk": 80 * GIB}
    vms.consumer("idle", "cmp1", req, flavor="m1.large", cpu_used=0.01 if hour % 24 else 0.2)
    vms.consumer("busy", "cmp1", req, flavor="m1.large", cpu_used=1.5)
    if hour >= HOURS - 24:  # booted yesterday: half of the two-day window, too little to call it idle
        vms.consumer("new", "cmp1", req, flavor="m1.large", cpu_used=0.0)
    vms.consumer("quiet", "cmp1", req, flavor="m1.large")  # no OpenStack usage: read from libvirt
    vms.consumer("quiet", "cmp1", {"cpu": 4.0, "memory": 8 * GIB}, layer="hypervisor", cpu_used=0.0)
    pods = Estate(layer="kubernetes", cloud="k1")
    pods.host("n1", "workers", resources={"cpu": inv(16), "memory": inv(64 * GIB), "pods": inv(110)})
    for i in range(2):
        pods.consumer(
            f"web-{i}",
            "n1",
            {"cpu": 2.0, "memory": 4 * GIB},
            flavor="Deployment/web",
            project="shop",
            cpu_used=0.1 + 0.3 * ((hour + i) % 4 == 0),
            memory_used=(0.5 + 0.5 * (hour % 2)) * GIB,
        )
    pods.consumer(
        "tight",
        "n1",
        {"cpu": 0.5, "memory": GIB},
        flavor="Deployment/tight",
        project="shop",
        cpu_used=0.6,
        memory_used=1.2 * GIB,
    )
    return vms.frames(), pods.frames()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    store = History.open(Path(tmp_path_factory.mktemp("state")), HistoryConfig())
    for hour in range(HOURS):
        when = NOW - timedelta(hours=HOURS - hour) + timedelta(minutes=5)
        vms, pods = poll(hour)
        store.append("os", {"consumers": vms["consumers"]}, when)
        store.append("k8s", {"consumers": pods["consumers"]}, when)
    store.flush()
    yield store
    store.close()


def test_idle_vms_and_over_requesting_pods(history: History) -> None:
    vms, pods = poll(HOURS - 1)
    frames = {"consumers": pd.concat([vms["consumers"], pods["consumers"]], ignore_index=True)}
    frame = reclaimable_frame(frames, history, HeadroomConfig(**SETTINGS), NOW)
    got = {(r.layer, r.pool, r.resource): (r.amount, r.consumers) for r in frame.itertuples()}
    # idle (p95 of hourly CPU 0.01 <= 0.05 despite a daily 0.2 blip) and quiet (libvirt says 0) are idle;
    # busy is not; new has one day of a two-day window.
    assert got[("openstack", "az1", "vcpu")] == (8.0, 2)
    assert got[("openstack", "az1", "memory")] == (16 * GIB, 2)
    assert got[("openstack", "az1", "disk")] == (160 * GIB, 2)
    # web: CPU need = p95 of hourly maxima = 0.4 -> 2 x (2 - 0.4) = 3.2 cores;
    # memory need = max 1 GiB x 1.15 -> 2 x (4 - 1.15) GiB. tight uses more than it asks: nothing.
    cpu, cpu_pods = got[("kubernetes", "workers", "cpu")]
    assert cpu == pytest.approx(3.2) and cpu_pods == 2
    memory, _ = got[("kubernetes", "workers", "memory")]
    assert memory == pytest.approx(2 * (4 - 1.15) * GIB)


def test_without_history_nothing_is_claimed() -> None:
    vms, _ = poll(HOURS - 1)
    assert reclaimable_frame(vms, None, HeadroomConfig(**SETTINGS), NOW).empty


def test_a_stricter_threshold_claims_less(history: History) -> None:
    vms, _ = poll(HOURS - 1)
    frame = reclaimable_frame(vms, history, HeadroomConfig(idle_cpu_threshold=0.001, **SETTINGS), NOW)
    assert set(frame["consumers"]) == {1.0}  # only the VM libvirt reports at exactly 0

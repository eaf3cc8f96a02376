"""Decoding real node/pod lists into tables, providerID and shape rules, and the frames built from them."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from collector.contract.schema import validate
from collector.demo.standins.kubernetes import make_node, make_pod
from collector.sources.kubernetes.frames import FrameContext, build_frames, holds_capacity, node_pool
from collector.sources.kubernetes.listing import NodeTable, PodTable, parse_provider_id, pod_shape
from collector.sources.kubernetes.settings import NodeLabelKeys
from tests.kubernetes.conftest import load

NOW = datetime(2026, 6, 26, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider_id", "server"),
    [
        ("openstack:///6f1c3b2a-2d4e-4c1a-9b7e-0c1d2e3f4a01", "6f1c3b2a-2d4e-4c1a-9b7e-0c1d2e3f4a01"),
        ("openstack://RegionOne/D4E6F8A0-3C5D-4E7F-A0B1-2C3D4E5F6A05", "d4e6f8a0-3c5d-4e7f-a0b1-2c3d4e5f6a05"),
        ("aws:///eu-west-1a/i-0abc", None),
        ("gce://project/zone/name", None),
        ("openstack:///not-a-uuid", None),
        ("", None),
        (None, None),
    ],
)
def test_provider_id_to_nova_server(provider_id: str | None, server: str | None) -> None:
    assert parse_provider_id(provider_id) == server


@pytest.mark.parametrize(
    ("owner", "pod", "template_hash", "node", "shape"),
    [
        (("ReplicaSet", "web-7d9f8c6b5d"), "web-7d9f8c6b5d-x2x9q", "7d9f8c6b5d", None, "Deployment/web"),
        (("ReplicaSet", "standalone-rs"), "standalone-rs-abcde", None, None, "ReplicaSet/standalone-rs"),
        (("ReplicaSet", "web-7d9f8c6b5d"), "web-7d9f8c6b5d-x2x9q", "other", None, "ReplicaSet/web-7d9f8c6b5d"),
        (("StatefulSet", "db"), "db-0", None, None, "StatefulSet/db"),
        (("DaemonSet", "kube-proxy"), "kube-proxy-8k9zt", None, None, "DaemonSet/kube-proxy"),
        (("Job", "backup-29707813"), "backup-29707813-dhlr2", None, None, "Job/backup-29707813"),
        (("Node", "node-1"), "etcd-node-1", None, "node-1", "StaticPod/etcd"),
        ((None, None), "storage-provisioner", None, None, "Pod/storage-provisioner"),
    ],
)
def test_shapes(owner: tuple, pod: str, template_hash: str | None, node: str | None, shape: str) -> None:
    assert pod_shape(owner[0], owner[1], pod, template_hash, node) == shape


def _tables(nodes: list[dict], pods: list[dict]) -> tuple[NodeTable, PodTable]:
    node_table, pod_table = NodeTable(), PodTable()
    node_table.add(nodes)
    pod_table.add(pods)
    return node_table, pod_table


def _frames(nodes: NodeTable, pods: PodTable, node_usage=None, pod_usage=None, labels=None):
    ctx = FrameContext(now=NOW, source="k8s", cluster="prod", labels=labels or NodeLabelKeys())
    frames = build_frames(ctx, nodes, pods, node_usage or {}, pod_usage or {})
    validate(frames)
    return frames


def test_real_openstack_node_list() -> None:
    nodes, pods = _tables(load("nodelist_openstack.json")["items"], [])
    assert nodes.skipped == 0 and len(nodes) == 5
    hosts = _frames(nodes, pods)["hosts"].set_index("host")
    assert hosts.loc["k8s-worker-3", "nova_server_id"] == "d4e6f8a0-3c5d-4e7f-a0b1-2c3d4e5f6a05"  # regional form
    assert hosts.loc["k8s-cp-0", "nova_server_id"] == "6f1c3b2a-2d4e-4c1a-9b7e-0c1d2e3f4a01"
    assert not hosts.loc["k8s-worker-2", "schedulable"]  # cordoned
    assert not hosts.loc["k8s-worker-3", "ready"]  # Ready=Unknown
    assert hosts.loc["k8s-worker-0", "ready"] and hosts.loc["k8s-worker-0", "schedulable"]
    assert hosts.loc["k8s-cp-0", "taints"] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert hosts.loc["k8s-cp-0", "zone"] == "nova-az1"
    assert hosts.loc["k8s-cp-0", "instance_type"] == "m1.large"
    assert "node-role.kubernetes.io/control-plane=" in hosts.loc["k8s-cp-0", "traits"]
    assert hosts.loc["k8s-cp-0", "host_id"] == "10a4f3e2-2d4e-4c1a-9b7e-0c1d2e3f4a01"


def test_capacity_reserved_and_allocatable_of_a_real_node() -> None:
    nodes, pods = _tables(load("nodelist_openstack.json")["items"], [])
    capacity = _frames(nodes, pods)["capacity"].set_index(["host", "resource"])
    cpu = capacity.loc[("k8s-cp-0", "cpu")]
    assert (cpu["capacity"], cpu["allocatable"], cpu["reserved"]) == (4.0, 3.8, pytest.approx(0.2))
    memory = capacity.loc[("k8s-cp-0", "memory")]
    assert memory["capacity"] == 8148280 * 1024 and memory["allocatable"] == 7021880 * 1024
    assert memory["reserved"] == (8148280 - 7021880) * 1024
    assert capacity.loc[("k8s-cp-0", "pods"), "capacity"] == 110
    assert capacity.loc[("k8s-cp-0", "ephemeral_storage"), "allocatable"] == 74747241721
    assert not any(r.startswith("hugepages") for r in capacity.index.get_level_values("resource"))
    assert (capacity["allocation_ratio"] == 1.0).all()
    assert capacity["used"].isna().all()  # no kubelet usage given: unknown, never zero
    assert (capacity["allocated"] == 0).all()
    assert set(capacity["cloud"]) == {"prod"} and set(capacity["layer"]) == {"kubernetes"}


def test_real_pod_list_allocations_and_states() -> None:
    node_list = load("nodelist_v1.35.json")["items"]
    nodes, pods = _tables(node_list, load("podlist_v1.35.json")["items"])
    assert pods.skipped == 0 and len(pods) == 25
    frames = _frames(nodes, pods)
    consumers = frames["consumers"].set_index("name")
    assert consumers.loc["scraper/e2e-failjob-28dqq", "state"] == "failed"
    assert not consumers.loc["scraper/e2e-failjob-28dqq", "holds_capacity"]
    assert not consumers.loc["scraper/e2e-cronjob-29707813-dhlr2", "holds_capacity"]  # succeeded
    pending = consumers.loc["scraper/e2e-container-pending"]
    assert pending["state"] == "pending" and not pending["holds_capacity"] and pd_isna(pending["host"])
    coredns = consumers.loc["kube-system/coredns-7d764666f9-qdcxt"]
    assert coredns["flavor"] == "Deployment/coredns" and coredns["project"] == "kube-system"
    assert coredns["cpu"] == 0.1 and coredns["memory"] == 70 * 2**20 and coredns["memory_limit"] == 170 * 2**20
    assert math.isnan(coredns["cpu_limit"])
    assert consumers.loc["kube-system/etcd-datagen-1-35", "flavor"] == "StaticPod/etcd"
    # allocated cpu = sum of the requests of the pods holding capacity (kube-capacity / kubectl describe node)
    holding = consumers[consumers["holds_capacity"]]
    capacity = frames["capacity"].set_index("resource")
    assert capacity.loc["cpu", "allocated"] == pytest.approx(holding["cpu"].sum())
    # kube-system 950m + scraper 5m + 40m (daemonset) + 2 x 50m (deployment) + 200m (hpa) + 2 x 40m
    assert capacity.loc["cpu", "allocated"] == 1.375
    assert capacity.loc["pods", "allocated"] == len(holding) == 18  # 25 - 4 failed - 2 succeeded - 1 pending
    assert capacity.loc["memory", "allocated"] == pytest.approx(holding["memory"].sum())


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_pods_get_their_node_pool_and_provider_id_and_pending_pods_their_selected_pool() -> None:
    labels = {"node.kubernetes.io/pool": "gpu"}
    nodes, pods = _tables(
        [
            make_node("n1", provider_id="openstack:///11111111-2222-3333-4444-555555555555", labels=labels),
            make_node("n2"),
        ],
        [
            make_pod("a", "p1", node="n1"),
            make_pod("a", "p2", node="n2"),
            make_pod("a", "p3", node=None, phase="Pending", node_selector={"node.kubernetes.io/pool": "gpu"}),
            make_pod("a", "p4", node="gone-node"),
        ],
    )
    frames = _frames(nodes, pods)
    consumers = frames["consumers"].set_index("name")
    assert consumers.loc["a/p1", "pool"] == "gpu"
    assert consumers.loc["a/p1", "k8s_provider_id"] == "openstack:///11111111-2222-3333-4444-555555555555"
    assert consumers.loc["a/p2", "pool"] == "default"
    assert consumers.loc["a/p3", "pool"] == "gpu" and not consumers.loc["a/p3", "holds_capacity"]
    assert consumers.loc["a/p4", "holds_capacity"]  # bound, but to a node not in the list: on no node's row
    assert set(frames["capacity"]["pool"]) == {"gpu", "default"}
    assert frames["capacity"].set_index(["host", "resource"]).loc[("n1", "pods"), "allocated"] == 1


def test_usage_goes_to_cpu_and_memory_rows_and_pods() -> None:
    nodes, pods = _tables([make_node("n1")], [make_pod("a", "p1", node="n1", uid="u1")])
    frames = _frames(nodes, pods, node_usage={"n1": (1.5, 3e9)}, pod_usage={"u1": (0.25, 1e8, 1234.5)})
    capacity = frames["capacity"].set_index("resource")
    assert capacity.loc["cpu", "used"] == 1.5 and capacity.loc["memory", "used"] == 3e9
    assert math.isnan(capacity.loc["pods", "used"])
    pod = frames["consumers"].iloc[0]
    assert (pod["cpu_used"], pod["memory_used"], pod["cpu_time_seconds"]) == (0.25, 1e8, 1234.5)


def test_extended_resources_become_capacity_rows() -> None:
    nodes, pods = _tables(
        [make_node("gpu-1", extended={"nvidia.com/gpu": "4"})],
        [
            make_pod(
                "ml",
                "train",
                node="gpu-1",
                containers=[("t", {"cpu": "2", "nvidia.com/gpu": "3"}, {"nvidia.com/gpu": "3"})],
            )
        ],
    )
    capacity = _frames(nodes, pods)["capacity"].set_index("resource")
    assert capacity.loc["nvidia_com_gpu", "capacity"] == 4 and capacity.loc["nvidia_com_gpu", "allocated"] == 3


def test_bad_objects_are_skipped_counted_and_named() -> None:
    bad_pod = make_pod("shop", "web-1", node="n1", containers=[("web", {"cpu": "two"}, {})])
    nodes, pods = _tables(
        [make_node("n1"), {"metadata": {"name": "broken"}, "status": {"capacity": {"cpu": "x"}}}],
        [bad_pod, make_pod("shop", "ok", node="n1"), {"metadata": {"name": "no-spec"}}],
    )
    assert nodes.skipped == 1 and "node broken" in nodes.notes[0]
    assert pods.skipped == 2 and len(pods) == 1
    assert "pod shop/web-1" in pods.notes[0] and "'two'" in pods.notes[0]


@pytest.mark.parametrize(
    ("phase", "node", "holds"),
    [
        ("Running", "n", True),
        ("Pending", "n", True),
        ("Unknown", "n", True),
        ("Pending", None, False),
        ("Succeeded", "n", False),
        ("Failed", "n", False),
    ],
)
def test_holds_capacity(phase: str, node: str | None, holds: bool) -> None:
    assert holds_capacity(phase, node) is holds


def test_node_pool_label_order() -> None:
    keys = ["a/pool", "b/pool"]
    assert node_pool({"b/pool": "x", "a/pool": "y"}, keys) == "y"
    assert node_pool({"b/pool": "x"}, keys) == "x"
    assert node_pool({}, keys) == "default"


def test_paused_gc_nests_and_restores() -> None:
    import gc

    from collector.sources.kubernetes.listing import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # left as the application had it
    finally:
        gc.enable()


def test_pod_table_columns_stay_aligned_across_pages_and_bad_pods() -> None:
    """uid and name are kept joined per page: a skipped pod, an empty page or a NUL never misaligns them."""
    from collector.demo.standins.kubernetes import make_pod
    from collector.sources.kubernetes.listing import PodTable

    table = PodTable()
    good = [make_pod("apps", f"web-{i}", node="n0") for i in range(3)]
    bad_phase = make_pod("apps", "bad-phase", node="n0")
    bad_phase["status"]["phase"] = ["Running"]
    bad_node = make_pod("apps", "bad-node", node="n0")
    bad_node["spec"]["nodeName"] = {"name": "n0"}
    nul = make_pod("apps", "nul", node="n1")
    nul["metadata"]["uid"] = "uid-with-\0-inside"
    table.add([good[0], bad_phase, good[1]])
    table.add([])
    table.add([bad_node, nul, good[2]])
    assert table.skipped == 2 and len(table) == 4
    assert table.name == ["web-0", "web-1", "nul", "web-2"]
    assert table.uid[2] == "uid-with-\0-inside" and table.uid[3] == good[2]["metadata"]["uid"]
    assert table.node == ["n0", "n0", "n1", "n0"]
    assert len(table.uid) == len(table.phase) == len(table.requests) == len(table.node_selector) == 4
    table.add([make_pod("apps", "late", node="n2")])  # a page after the columns were read
    assert table.name == ["web-0", "web-1", "nul", "web-2", "late"] and len(table.uid) == len(table) == 5

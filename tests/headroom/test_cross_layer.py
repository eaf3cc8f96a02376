"""Kubernetes on OpenStack: new worker VMs of the cluster's flavor, and the pod slots they add."""

from __future__ import annotations

from collector.analyses.headroom import compute_headroom
from collector.app.config import parse_config
from tests.headroom.builder import GIB, NOW, Estate, inv, row

WORKER = {"vcpu": 4.0, "memory": 16 * GIB}


def estate() -> Estate:
    e = Estate()
    # OpenStack: az1 with two hosts; the workers run in az1 under project k8s.
    for name in ("cmp1", "cmp2"):
        e.host(name, resources={"vcpu": inv(16, ratio=2.0), "memory": inv(64 * GIB)})
    e.host("cmp3", "az2", resources={"vcpu": inv(16, ratio=2.0), "memory": inv(64 * GIB)})
    e.flavor("k8s.worker", WORKER)
    for i, host in enumerate(("cmp1", "cmp1", "cmp2")):
        e.consumer(f"srv-{i}", host, WORKER, flavor="k8s.worker", project="k8s")
    e.consumer("srv-odd", "cmp2", {"vcpu": 2.0, "memory": 4 * GIB}, flavor="m1.medium", project="k8s")
    # Kubernetes: the nodes are those servers (providerID -> nova_server_id); each node 4 cores, 15 GiB.
    for i in range(3):
        e.host(
            f"node-{i}",
            "workers",
            layer="kubernetes",
            cloud="k1",
            nova_server_id=f"srv-{i}",
            resources={"cpu": inv(4), "memory": inv(15 * GIB), "pods": inv(110)},
        )
        # a DaemonSet pod on every node: 0.5 core, 1 GiB, comes with each new worker too
        e.consumer(
            f"ds-{i}",
            f"node-{i}",
            {"cpu": 0.5, "memory": GIB},
            flavor="DaemonSet/agent",
            layer="kubernetes",
            cloud="k1",
        )
    e.host(
        "node-odd",
        "workers",
        layer="kubernetes",
        cloud="k1",
        nova_server_id="srv-odd",
        resources={"cpu": inv(2), "memory": inv(3 * GIB), "pods": inv(110)},
    )
    e.consumer(
        "app-0", "node-0", {"cpu": 1.0, "memory": 2 * GIB}, flavor="Deployment/web", layer="kubernetes", cloud="k1"
    )
    return e


def test_new_workers_and_the_pod_slots_they_add() -> None:
    config = parse_config({"shapes": {"small": {"cpu": "500m", "memory": "1Gi"}}, "headroom": {"common_shapes": 0}})
    h = compute_headroom(estate().frames(), config, NOW).headroom
    workers = row(h, pool="new:k8s.worker", shape="k8s.worker")
    # az1 only (where the workers run): cmp1 has 32 - 8 = 24 vCPU, 64 - 32 = 32 GiB -> min(6, 2) = 2;
    # cmp2: 32 - 6 = 26 -> 6, 64 - 20 = 44 GiB -> 2. 4 new workers; az2's cmp3 is not the cluster's pool.
    assert workers["slots"] == 4 and workers["shape_kind"] == "worker_vm" and workers["pool_kind"] == "node_pool"
    assert workers["limiting_resource"] == "memory" and workers["layer"] == "kubernetes"
    small = row(h, pool="new:k8s.worker", shape="small")
    # template node: median allocatable of the k8s.worker nodes (4 cores, 15 GiB) less the DaemonSet
    # pod (0.5, 1 GiB): 3.5 / 0.5 = 7 by cpu, 14 by memory -> 7 per node, 28 for 4 nodes.
    assert small["slots"] == 28 and small["limiting_resource"] == "cpu"

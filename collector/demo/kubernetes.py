"""Demo part: the demo estate's Kubernetes cluster `demo-k8s`, served by the stand-in kube-apiserver.

The worker nodes ARE servers of the demo OpenStack cloud (`build_estate().k8s_workers`, flavor
`k8s.worker`): node name = server name, `providerID: openstack:///<server id>`, zone = the AZ of the
compute host the server runs on, so the demo shows one estate from hypervisor to pod. Allocatable is the
flavor (4 cores, 16 GiB) minus kube/system reservations and the eviction threshold, as a kubelet reports it.

Pods of varied shapes run on them: daemonsets on every node, deployments (one with a restartable
sidecar, one with an init container), a statefulset, finished and failed jobs, a running job, and a
pod too big to fit (Pending, no node). Fake kubelets behind the stand-in's node proxy report usage.
The daemon polls it with the unchanged `kubernetes` client through a generated kubeconfig.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from collector.demo import DemoPart
from collector.demo.model import CLUSTER, Estate, build_estate
from collector.demo.standins.kubernetes import Container, StandinApiServer, make_node, make_pod

INTERVAL = "30s"
POOL_LABEL = "magnum.openstack.org/nodegroup"
# k8s.worker: 4 vCPU, 16 GiB, 80 GB disk; kube-reserved + system-reserved 200m / 1 GiB, eviction 100Mi
NODE_CPU, NODE_ALLOCATABLE_CPU = "4", "3800m"
NODE_MEMORY, NODE_ALLOCATABLE_MEMORY = "16Gi", f"{16 * 1024 - 1024 - 100}Mi"


def _hash(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:10]


def demo_nodes(estate: Estate) -> list[dict[str, Any]]:
    """One node per worker server; the first half in nodegroup `default-worker`, the rest `batch-worker`."""
    servers = {s.id: s for s in estate.servers}
    nodes = []
    for index, server_id in enumerate(estate.k8s_workers):
        server = servers[server_id]
        zone = estate.host(server.host).zone
        group = "default-worker" if index < (len(estate.k8s_workers) + 1) // 2 else "batch-worker"
        taints = [{"key": "workload", "value": "batch", "effect": "NoSchedule"}] if group == "batch-worker" else []
        nodes.append(
            make_node(
                server.name,
                cpu=NODE_CPU,
                memory=NODE_MEMORY,
                allocatable_cpu=NODE_ALLOCATABLE_CPU,
                allocatable_memory=NODE_ALLOCATABLE_MEMORY,
                ephemeral_storage="80Gi",
                allocatable_ephemeral_storage=str(int(80 * 2**30 * 0.9)),
                provider_id=f"openstack:///{server.id}",
                address=f"10.0.10.{10 + index}",
                labels={
                    POOL_LABEL: group,
                    "topology.kubernetes.io/zone": zone,
                    "topology.kubernetes.io/region": "RegionOne",
                    "node.kubernetes.io/instance-type": server.flavor,
                },
                taints=taints,
                uid=None,
            )
        )
    return nodes


def demo_pods(node_names: list[str]) -> list[dict[str, Any]]:
    """Deterministic pods of varied shapes spread over the nodes (round robin within each workload)."""
    half = (len(node_names) + 1) // 2
    general, batch = node_names[:half], node_names[half:] or node_names[:1]
    pods: list[dict[str, Any]] = []

    def spread(nodes: list[str], count: int) -> list[str]:
        return [nodes[i % len(nodes)] for i in range(count)]

    # daemonsets: one pod per node
    for node in node_names:
        for name, cpu, memory in (("kube-proxy", "100m", "64Mi"), ("calico-node", "250m", "256Mi")):
            pods.append(
                make_pod(
                    "kube-system",
                    f"{name}-{_hash(name, node)[:5]}",
                    node=node,
                    owner=("DaemonSet", name),
                    containers=[(name, {"cpu": cpu, "memory": memory}, {})],
                )
            )

    def deployment(
        namespace: str,
        name: str,
        replicas: int,
        nodes: list[str],
        containers: list[Container],
        init: tuple[Container, ...] = (),
        sidecars: tuple[str, ...] = (),
    ) -> None:
        template_hash = _hash(namespace, name)[:9]
        for i, node in enumerate(spread(nodes, replicas)):
            pods.append(
                make_pod(
                    namespace,
                    f"{name}-{template_hash}-{_hash(name, i)[:5]}",
                    node=node,
                    owner=("ReplicaSet", f"{name}-{template_hash}"),
                    template_hash=template_hash,
                    containers=containers,
                    init_containers=init,
                    sidecars=sidecars,
                    labels={"app": name},
                )
            )

    deployment(
        "kube-system", "coredns", 2, general, [("coredns", {"cpu": "100m", "memory": "70Mi"}, {"memory": "170Mi"})]
    )
    deployment(
        "shop",
        "web",
        4,
        general,
        [("web", {"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "512Mi"})],
        init=(("mesh-proxy", {"cpu": "50m", "memory": "64Mi"}, {"memory": "128Mi"}),),
        sidecars=("mesh-proxy",),
    )
    deployment(
        "shop",
        "api",
        3,
        general,
        [("api", {"cpu": "500m", "memory": "1Gi"}, {"memory": "1Gi"})],
        init=(("migrate", {"cpu": "1", "memory": "256Mi"}, {}),),
    )
    for i, node in enumerate(spread(general, 2)):
        pods.append(
            make_pod(
                "shop",
                f"postgres-{i}",
                node=node,
                owner=("StatefulSet", "postgres"),
                containers=[
                    ("postgres", {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "10Gi"}, {"memory": "4Gi"})
                ],
            )
        )
    # batch: nightly reports (finished), one failed run, a running ETL job, and one that does not fit
    report = [("report", {"cpu": "500m", "memory": "1Gi"}, {"memory": "1Gi"})]
    for day, node in enumerate(spread(batch, 3)):
        job = f"nightly-report-{29707813 + day * 1440}"
        pods.append(
            make_pod(
                "batch", f"{job}-{_hash(job)[:5]}", node=node, phase="Succeeded", owner=("Job", job), containers=report
            )
        )
    pods.append(
        make_pod(
            "batch",
            f"import-{_hash('import')[:5]}",
            node=batch[0],
            phase="Failed",
            owner=("Job", "import"),
            containers=report,
        )
    )
    for i, node in enumerate(spread(batch, 2)):
        pods.append(
            make_pod(
                "batch",
                f"etl-{_hash('etl', i)[:5]}",
                node=node,
                owner=("Job", "etl"),
                containers=[("etl", {"cpu": "1500m", "memory": "6Gi"}, {"memory": "8Gi"})],
            )
        )
    pods.append(
        make_pod(
            "batch",
            "reindex-7f2c9",
            node=None,
            phase="Pending",
            owner=("Job", "reindex"),
            containers=[("reindex", {"cpu": "6", "memory": "24Gi"}, {})],
            node_selector={POOL_LABEL: "batch-worker"},
        )
    )
    return pods


def start(workdir: Path, context: dict[str, Any]) -> DemoPart:
    """Serve the demo cluster and return the `kind: kubernetes` source that polls it."""
    estate: Estate = context.get("estate") or build_estate()
    folder = Path(workdir) / "kubernetes"
    server = StandinApiServer(folder)
    nodes = demo_nodes(estate)
    pods = demo_pods([n["metadata"]["name"] for n in nodes])
    server.set_nodes(nodes)
    server.set_pods(pods)
    kubeconfig = server.kubeconfig(folder / "kubeconfig", context=CLUSTER, cluster=CLUSTER)
    context["kubernetes"] = {"kubeconfig": str(kubeconfig), "context": CLUSTER}
    source = {
        "kind": "kubernetes",
        "name": CLUSTER,
        "kubeconfig": str(kubeconfig),
        "context": CLUSTER,
        "cluster": CLUSTER,
        "interval": INTERVAL,
    }
    return DemoPart(
        sources=[source],
        stop=server.stop,
        description=f"kube-apiserver stand-in on {server.url}: {len(nodes)} worker nodes (OpenStack servers), "
        f"{len(pods)} pods",
    )

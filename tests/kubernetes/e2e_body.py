"""Body of the real-apiserver end-to-end test; runs INSIDE a private network namespace.

Started by tests/kubernetes/test_e2e_apiserver.py through `run_in_private_netns`. It starts etcd, the
real kube-apiserver 1.20 and fake kubelets (tests/services/kube_apiserver.py), loads nodes and pods,
runs the collector against it in several situations, checks the stand-in against the real server,
and prints one JSON document of observations that the test asserts on. Everything is stopped by PID
on the way out (and dies with this process anyway).
"""

from __future__ import annotations

import base64
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from collector.contract.schema import validate
from collector.demo.standins.kubernetes import FakeKubelet, StandinApiServer, User, make_node, make_pod
from collector.sources.base import SourceError
from collector.sources.kubernetes import SOURCE
from collector.sources.kubernetes import source as source_module
from collector.sources.kubernetes.settings import KubernetesSourceConfig
from tests.services.kube_apiserver import KubeApiServer

SERVER_A = "5d8e3c1a-8f2b-4a6e-9c3d-0a1b2c3d4e01"
SERVER_B = "7e9f4d2b-9a3c-4b7f-8d4e-1b2c3d4e5f02"


def nodes() -> list[dict[str, Any]]:
    pool = "node.kubernetes.io/pool"
    return [
        make_node(
            "node-a",
            cpu="4",
            memory="16Gi",
            allocatable_cpu="3800m",
            allocatable_memory="15Gi",
            provider_id=f"openstack:///{SERVER_A}",
            extended={"nvidia.com/gpu": "2"},
            labels={pool: "gpu", "topology.kubernetes.io/zone": "az1", "node.kubernetes.io/instance-type": "g1.gpu"},
        ),
        make_node(
            "node-b",
            cpu="4",
            memory="16Gi",
            allocatable_cpu="3800m",
            allocatable_memory="15Gi",
            provider_id=f"openstack://RegionOne/{SERVER_B}",
            labels={pool: "general", "topology.kubernetes.io/zone": "az2"},
        ),
        make_node(
            "node-c",
            cpu="8",
            memory="32Gi",
            unschedulable=True,
            taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
            labels={pool: "general"},
        ),
    ]


def pods() -> list[dict[str, Any]]:
    small = [("app", {"cpu": "100m", "memory": "128Mi"}, {"memory": "256Mi"})]
    out = [
        make_pod(
            "apps",
            f"web-6d4cf56db6-{suffix}",
            node=node,
            owner=("ReplicaSet", "web-6d4cf56db6"),
            template_hash="6d4cf56db6",
            containers=small,
        )
        for suffix, node in (("a1b2c", "node-a"), ("d3e4f", "node-b"), ("g5h6i", "node-c"))
    ]
    out += [
        make_pod(
            "apps",
            "db-0",
            node="node-b",
            owner=("StatefulSet", "db"),
            containers=[("db", {"cpu": "1", "memory": "4Gi"}, {"cpu": "2", "memory": "4Gi"})],
        ),
        make_pod(
            "apps",
            "migrating",
            node="node-b",
            owner=("ReplicaSet", "api-7c9d8b7f6"),
            template_hash="7c9d8b7f6",
            containers=[
                ("api", {"cpu": "250m", "memory": "512Mi"}, {}),
                ("proxy", {"cpu": "50m", "memory": "64Mi"}, {}),
            ],
            init_containers=[("migrate", {"cpu": "1500m", "memory": "256Mi"}, {})],
        ),
        make_pod(
            "ml",
            "train",
            node="node-a",
            owner=("Job", "train"),
            containers=[("t", {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"})],
        ),
        make_pod(
            "batch",
            "report-29707813-x7k2p",
            node="node-a",
            phase="Succeeded",
            owner=("Job", "report-29707813"),
            containers=small,
        ),
        make_pod("batch", "crashed", node="node-b", phase="Failed", containers=small),
        make_pod(
            "apps",
            "waiting",
            node=None,
            phase="Pending",
            containers=small,
            node_selector={"node.kubernetes.io/pool": "gpu"},
        ),
    ]
    return out


def _v(value: Any) -> Any:
    """JSON-friendly: missing values (NaN, pd.NA, None) -> None."""
    if isinstance(value, list | tuple):
        return list(value)
    return None if pd.isna(value) else value


def frame_summary(frames: dict) -> dict[str, Any]:
    capacity, consumers, hosts = frames["capacity"], frames["consumers"], frames["hosts"]
    return {
        "capacity": {
            f"{r.host}/{r.resource}": [r.capacity, r.reserved, r.allocatable, _v(r.allocated), _v(r.used), r.pool]
            for r in capacity.itertuples()
        },
        "consumers": {
            r.name: {
                "state": r.state,
                "holds": bool(r.holds_capacity),
                "flavor": _v(r.flavor),
                "cpu": r.cpu,
                "memory": r.memory,
                "host": _v(r.host),
                "pool": r.pool,
                "memory_used": _v(r.memory_used),
                "cpu_used": _v(r.cpu_used),
                "provider": _v(r.k8s_provider_id),
            }
            for r in consumers.itertuples()
        },
        "hosts": {
            r.host: {
                "nova": _v(r.nova_server_id),
                "ready": bool(r.ready),
                "schedulable": bool(r.schedulable),
                "pool": r.pool,
                "zone": _v(r.zone),
                "taints": list(r.taints),
            }
            for r in hosts.itertuples()
        },
    }


def poll(kubeconfig: Path, name: str, **config: Any) -> Any:
    src = SOURCE(KubernetesSourceConfig(kind="kubernetes", name=name, kubeconfig=kubeconfig, **config))
    return src, src.poll(datetime.now(UTC))


def status_body(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    return {k: data.get(k) for k in ("kind", "apiVersion", "status", "reason", "code", "message")}


def main(workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kubelets = {
        "node-a": FakeKubelet("node-a"),
        "node-b": FakeKubelet("node-b"),
        "node-c": FakeKubelet("node-c", "hang", hang_seconds=8),
    }
    with KubeApiServer(workdir / "real") as api:
        started = time.monotonic()
        api.start(kubelets)
        out["startup_seconds"] = time.monotonic() - started
        for namespace in ("apps", "ml", "batch"):
            api.create_namespace(namespace)
        for node in nodes():
            api.create_node(node)
        created = [api.create_pod(pod) for pod in pods()]
        by_node: dict[str, list] = {}
        for pod in created:
            by_node.setdefault(pod["spec"].get("nodeName"), []).append(pod)
        for name, kubelet in kubelets.items():
            kubelet.set_pods(by_node.get(name, []))
        out["version"] = json.loads(api.request("GET", "/version")[1])["gitVersion"]

        # 1. the collector through the real server: pagination, node proxy (encoded slash), usage, timeouts
        collector = api.kubeconfig("collector-token")
        src, first = poll(collector, "real", page_size=2, kubelet={"timeout": "2s"})
        validate(first.frames)
        out["first"] = {
            "summary": frame_summary(first.frames),
            "skipped": dict(first.skipped),
            "notes": first.notes,
            "api_calls": first.api_calls,
        }
        time.sleep(1.5)
        second = src.poll(datetime.now(UTC))
        out["second"] = {"summary": frame_summary(second.frames), "skipped": dict(second.skipped)}
        src.close()

        # 2. RBAC without nodes/proxy, and a refused token
        _, viewer = poll(api.kubeconfig("viewer-token"), "viewer")
        out["viewer"] = {
            "skipped": dict(viewer.skipped),
            "notes": viewer.notes,
            "used": frame_summary(viewer.frames)["capacity"]["node-a/memory"][4],
            "allocated": frame_summary(viewer.frames)["capacity"]["node-a/cpu"][3],
        }
        try:
            poll(api.kubeconfig("no-such-token"), "bad")
            out["unauthorized"] = None
        except SourceError as error:
            out["unauthorized"] = {"reason": error.reason, "message": str(error)}

        # 3. a continue token expiring mid-list (etcd compacted between two pages): the list restarts
        original = source_module.list_paged
        compactions: list[int] = []

        def compacting_list(call: Any, new_table: Any, **kwargs: Any) -> Any:
            def wrapped(**call_kwargs: Any) -> Any:
                if "_continue" in call_kwargs and not compactions and kwargs.get("what") == "pod":
                    api.create_namespace("bump")  # a write, so the compaction revision is past the snapshot
                    compactions.append(api.compact_etcd())
                return call(**call_kwargs)

            return original(wrapped, new_table, **kwargs)

        source_module.list_paged = compacting_list
        try:
            _, restarted = poll(collector, "restart", page_size=3, kubelet={"mode": "off"})
            out["restart"] = {
                "pods": len(restarted.frames["consumers"]),
                "notes": restarted.notes,
                "compactions": len(compactions),
            }
        finally:
            source_module.list_paged = original

        # 4. the stand-in next to the real server: the same objects must give the same frames, and the
        #    same error bodies and list metadata
        real_nodes = json.loads(api.request("GET", "/api/v1/nodes")[1])["items"]
        real_pods = json.loads(api.request("GET", "/api/v1/pods")[1])["items"]
        _, page = api.request("GET", "/api/v1/pods?limit=2")
        real_page = json.loads(page)
        token = real_page["metadata"]["continue"]
        out["real_list"] = {
            "kind": real_page["kind"],
            "metadata_keys": sorted(real_page["metadata"]),
            "continue": json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))),
            "remaining": real_page["metadata"].get("remainingItemCount"),
        }
        api.create_namespace("bump2")
        api.compact_etcd()
        out["real_410"] = status_body(api.request("GET", f"/api/v1/pods?limit=2&continue={token}")[1])
        out["real_400"] = status_body(api.request("GET", "/api/v1/pods?limit=2&continue=garbage")[1])
        out["real_401"] = status_body(api.request("GET", "/api/v1/nodes", token="nope")[1])
        out["real_403"] = status_body(
            api.request("GET", "/api/v1/nodes/node-a/proxy/metrics/resource", token="viewer-token")[1]
        )
        out["real_404"] = status_body(api.request("GET", "/api/v1/nodes/nope")[1])
        proxied = api.request("GET", "/api/v1/nodes/node-a/proxy/metrics%2Fresource", token="collector-token")
        out["real_proxy_encoded_slash"] = [proxied[0], b"node_cpu_usage_seconds_total" in proxied[1]]

        standin = StandinApiServer(
            workdir / "standin",
            users={
                "admin-token": User("admin"),
                "viewer-token": User("viewer", frozenset({"list nodes", "list pods"})),
            },
        )
        try:
            standin_kubelets = {name: FakeKubelet(name) for name in kubelets}
            standin.set_nodes(real_nodes, standin_kubelets)
            standin.set_pods(real_pods)
            _, mirrored = poll(
                standin.kubeconfig(workdir / "standin-kubeconfig", context="e2e"),
                "real",
                page_size=2,
                kubelet={"mode": "off"},
            )
            _, real_again = poll(collector, "real", page_size=2, kubelet={"mode": "off"})
            out["mirror"] = {"standin": frame_summary(mirrored.frames), "real": frame_summary(real_again.frames)}
            sport = standin.port

            def standin_request(path: str, token: str = "admin-token") -> bytes:
                import ssl
                import urllib.error
                import urllib.request

                context = ssl.create_default_context(cafile=str(standin.tls.ca_cert))
                request = urllib.request.Request(
                    f"https://127.0.0.1:{sport}{path}", headers={"Authorization": f"Bearer {token}"}
                )
                try:
                    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                        return answer.read()
                except urllib.error.HTTPError as error:
                    return error.read()

            page = json.loads(standin_request("/api/v1/pods?limit=2"))
            token = page["metadata"]["continue"]
            out["standin_list"] = {
                "kind": page["kind"],
                "metadata_keys": sorted(page["metadata"]),
                "continue": json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))),
                "remaining": page["metadata"].get("remainingItemCount"),
            }
            standin.touch()
            standin.compact()
            out["standin_410"] = status_body(standin_request(f"/api/v1/pods?limit=2&continue={token}"))
            out["standin_400"] = status_body(standin_request("/api/v1/pods?limit=2&continue=garbage"))
            out["standin_401"] = status_body(standin_request("/api/v1/nodes", token="nope"))
            out["standin_403"] = status_body(
                standin_request("/api/v1/nodes/node-a/proxy/metrics/resource", token="viewer-token")
            )
            out["standin_404"] = status_body(standin_request("/api/v1/nodes/nope"))
        finally:
            standin.stop()
    return out


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    try:
        result = main(workdir)
    except BaseException:  # noqa: BLE001 - reported, so the test shows why
        print(json.dumps({"error": traceback.format_exc()}))
        raise SystemExit(1) from None
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")

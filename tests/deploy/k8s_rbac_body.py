"""Body of the deploy/kubernetes test, run in a private network AND mount namespace (`unshare -n -m`).

Starts the real kube-apiserver (RBAC authorisation on), applies every manifest of deploy/kubernetes
through the API, requests a token for the `capacityd` ServiceAccount (TokenRequest API), and runs the
Kubernetes source IN-CLUSTER as that ServiceAccount: /run is a private tmpfs in this mount namespace, so
the token and CA go where a pod has them (/var/run/secrets/kubernetes.io/serviceaccount) without touching
the host. Then one verb is removed from the ClusterRole and the poll must fail with a 403 naming it.
Prints one JSON object with what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from collector.demo.standins.kubernetes import FakeKubelet, write_kubeconfig
from collector.sources.base import SourceError
from collector.sources.kubernetes.settings import KubernetesSourceConfig
from collector.sources.kubernetes.source import KubernetesSource
from tests.kubernetes.e2e_body import nodes
from tests.services.kube_apiserver import SECURE_PORT, KubeApiServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
APPLY_ORDER = (
    "namespace.yaml",
    "serviceaccount.yaml",
    "rbac.yaml",
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
)
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
COLLECTIONS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


def apply(api: KubeApiServer) -> list[str]:
    created = []
    for name in APPLY_ORDER:
        for document in yaml.safe_load_all((DEPLOY / name).read_text()):
            path = COLLECTIONS[document["kind"]].format(ns=document["metadata"].get("namespace", ""))
            status, body = api.request("POST", path, document)
            if status >= 300:
                raise AssertionError(f"{name}: {document['kind']} refused: HTTP {status} {body[:300]!r}")
            created.append(f"{document['kind']}/{document['metadata']['name']}")
    return created


def service_account_token(api: KubeApiServer) -> str:
    status, body = api.request(
        "POST",
        "/api/v1/namespaces/capacityd/serviceaccounts/capacityd/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )
    if status >= 300:
        raise AssertionError(f"TokenRequest refused: HTTP {status} {body[:300]!r}")
    return json.loads(body)["status"]["token"]


def in_cluster_poll() -> dict[str, Any]:
    source = KubernetesSource(
        KubernetesSourceConfig(kind="kubernetes", name="in-cluster", in_cluster=True, kubelet={"timeout": "3s"})
    )
    try:
        result = source.poll(datetime.now(UTC))
        return {"ok": True, "hosts": sorted(result.frames["hosts"]["host"]), "skipped": dict(result.skipped)}
    except SourceError as error:
        return {"ok": False, "reason": error.reason, "message": str(error)}
    finally:
        source.close()


def contexts_poll(api: KubeApiServer, workdir: Path) -> dict[str, Any]:
    """`contexts: ["prod-*"]` on a kubeconfig with three contexts: one target per matching context."""
    from collector.app.config import parse_config
    from collector.sources.discovery.fleet import TargetFleet

    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": "dev",
    }
    for context, token in (("prod-a", "collector-token"), ("prod-b", "collector-token"), ("dev", "viewer-token")):
        single = yaml.safe_load(
            write_kubeconfig(
                workdir / f"kc-{context}", api.url, Path(api.ca), token, context, user=f"user-{context}"
            ).read_text()
        )
        for key in ("clusters", "users", "contexts"):
            merged[key] += single[key]
    path = workdir / "kubeconfig-multi"
    path.write_text(yaml.safe_dump(merged))
    config = parse_config(
        {
            "sources": [
                {
                    "kind": "kubernetes",
                    "name": "k8s",
                    "kubeconfig": str(path),
                    "contexts": ["prod-*"],
                    "kubelet": {"timeout": "3s"},
                }
            ]
        }
    )
    fleet = config.sources[0].create_source()
    assert isinstance(fleet, TargetFleet)
    try:
        result = fleet.checked_poll(datetime.now(UTC))
        hosts = result.frames["hosts"]
        return {
            "targets": sorted(result.frames["targets"]["target"]),
            "hosts": sorted(
                f"{s}|{c}|{h}" for s, c, h in zip(hosts["source"], hosts["cloud"], hosts["host"], strict=True)
            ),
        }
    finally:
        fleet.close()


def main(workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)  # private: this mount namespace only
    with KubeApiServer(workdir / "api") as api:
        api.start({"node-a": FakeKubelet("node-a")})
        api.create_node(next(n for n in nodes() if n["metadata"]["name"] == "node-a"))
        out["created"] = apply(api)
        token = service_account_token(api)
        SA_DIR.mkdir(parents=True)
        (SA_DIR / "token").write_text(token)
        (SA_DIR / "ca.crt").write_bytes(Path(api.ca).read_bytes())
        (SA_DIR / "namespace").write_text("capacityd")
        os.environ["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        os.environ["KUBERNETES_SERVICE_PORT"] = str(SECURE_PORT)
        out["full_role"] = in_cluster_poll()
        out["contexts"] = contexts_poll(api, workdir)
        # Least privilege, seen from the API: nothing beyond the listed verbs.
        out["beyond"] = {
            what: api.request("GET", path, token=token)[0]
            for what, path in (
                ("list secrets", "/api/v1/secrets"),
                ("watch pods", "/api/v1/pods?watch=1&timeoutSeconds=1"),
                ("get node", "/api/v1/nodes/node-a"),
                ("list namespaces", "/api/v1/namespaces"),
            )
        }
        status, _ = api.request(
            "POST",
            "/api/v1/namespaces/capacityd/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            token=token,
        )
        out["beyond"]["create configmap"] = status
        # Remove one verb (list pods): the poll must fail, naming the 403.
        role = json.loads(api.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/capacityd-reader")[1])
        role["rules"] = [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]},
        ]
        status, body = api.request("PUT", "/apis/rbac.authorization.k8s.io/v1/clusterroles/capacityd-reader", role)
        assert status < 300, body
        deadline = time.monotonic() + 20
        while True:
            out["without_list_pods"] = in_cluster_poll()
            if not out["without_list_pods"]["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return out


if __name__ == "__main__":
    try:
        result = main(Path(sys.argv[1]))
    except BaseException:  # noqa: BLE001 - reported, so the test shows why
        print(json.dumps({"error": traceback.format_exc()}))
        raise SystemExit(1) from None
    print(json.dumps(result))

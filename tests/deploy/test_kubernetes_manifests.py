"""deploy/kubernetes against the REAL kube-apiserver (RBAC on): applied, then capacityd runs in-cluster as its
ServiceAccount — it succeeds with the shipped ClusterRole, is refused everything beyond it, and fails with a
403 naming the missing permission when one verb is removed. The body runs in private network and mount
namespaces (tests/deploy/k8s_rbac_body.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services.kube_apiserver import binaries

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binaries()
    assert os.geteuid() == 0 and shutil.which("unshare"), "this test needs root and unshare (util-linux)"
    workdir = tmp_path_factory.mktemp("deploy-k8s")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--", sys.executable, "-m", "tests.deploy.k8s_rbac_body", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"body printed nothing (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, result.get("error")
    return result


def test_every_manifest_is_accepted_by_the_real_apiserver(observed: dict[str, Any]) -> None:
    assert {
        "Namespace/capacityd",
        "ServiceAccount/capacityd",
        "ClusterRole/capacityd-reader",
        "ClusterRoleBinding/capacityd-reader",
        "ConfigMap/capacityd",
        "Deployment/capacityd",
        "Service/capacityd",
    } <= set(observed["created"])


def test_in_cluster_as_the_service_account_succeeds(observed: dict[str, Any]) -> None:
    assert observed["full_role"]["ok"], observed["full_role"]
    assert observed["full_role"]["hosts"] == ["node-a"]
    assert not any("forbidden" in reason for reason in observed["full_role"]["skipped"])


def test_kubeconfig_contexts_glob_gives_one_target_per_context(observed: dict[str, Any]) -> None:
    assert observed["contexts"]["targets"] == ["prod-a", "prod-b"]  # `dev` does not match prod-*
    assert observed["contexts"]["hosts"] == ["k8s:prod-a|prod-a|node-a", "k8s:prod-b|prod-b|node-a"]


def test_nothing_beyond_the_verbs_capacityd_uses(observed: dict[str, Any]) -> None:
    assert observed["beyond"] == {
        "list secrets": 403,
        "watch pods": 403,
        "get node": 403,
        "list namespaces": 403,
        "create configmap": 403,
    }


def test_one_verb_removed_fails_clearly(observed: dict[str, Any]) -> None:
    failed = observed["without_list_pods"]
    assert not failed["ok"] and failed["reason"] == "forbidden"
    assert "403" in failed["message"] and "pods" in failed["message"]


def test_manifests_fit_together() -> None:
    """Static: the Deployment runs as the ServiceAccount the binding names, hardened; Service and
    ServiceMonitor select its pods and port."""
    files = [f for f in sorted(DEPLOY.glob("*.yaml")) if f.name != "kustomization.yaml"]
    docs = {(d["kind"], d["metadata"]["name"]): d for f in files for d in yaml.safe_load_all(f.read_text())}
    deployment = docs[("Deployment", "capacityd")]["spec"]
    pod = deployment["template"]["spec"]
    binding = docs[("ClusterRoleBinding", "capacityd-reader")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "capacityd"}
    ]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    labels = deployment["template"]["metadata"]["labels"]
    service = docs[("Service", "capacityd")]["spec"]
    assert service["selector"].items() <= labels.items()
    monitor = docs[("ServiceMonitor", "capacityd")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= docs[("Service", "capacityd")]["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["ports"][0]["name"] == container["ports"][0]["name"]
    config = yaml.safe_load(docs[("ConfigMap", "capacityd")]["data"]["capacityd.yaml"])
    from collector.app.config import parse_config

    assert parse_config(config).sources[0].in_cluster
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert all((DEPLOY / name).exists() for name in kustomization["resources"])

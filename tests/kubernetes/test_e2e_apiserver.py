"""End to end against the REAL kube-apiserver 1.20 (built by scripts/provision/kubernetes.sh) with etcd.

The body (e2e_body.py) runs in a private network namespace (the API server will not proxy to
loopback kubelets), started here with `unshare -n`; it prints its observations as JSON. Needs root
and the provisioned cache; when they are missing the test FAILS with the command that fixes it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.services.kube_apiserver import binaries, run_in_private_netns

pytestmark = pytest.mark.slow

SERVER_A = "5d8e3c1a-8f2b-4a6e-9c3d-0a1b2c3d4e01"
SERVER_B = "7e9f4d2b-9a3c-4b7f-8d4e-1b2c3d4e5f02"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binaries()  # fails with the provisioning hint if the build is missing
    assert os.geteuid() == 0 and shutil.which("unshare"), "the e2e test needs root and unshare (util-linux)"
    workdir: Path = tmp_path_factory.mktemp("kube-apiserver")
    done = run_in_private_netns("tests.kubernetes.e2e_body", [str(workdir)], timeout=420)
    lines = done.stdout.strip().splitlines()
    assert lines, f"e2e body printed nothing (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, result.get("error")
    assert done.returncode == 0, done.stderr[-4000:]
    return result


def test_it_is_the_real_server(observed: dict[str, Any]) -> None:
    assert observed["version"].startswith("v0.0.0-master")  # what Debian's 1.20 build reports
    assert observed["startup_seconds"] < 90


def test_nodes_through_the_real_server(observed: dict[str, Any]) -> None:
    hosts = observed["first"]["summary"]["hosts"]
    assert hosts["node-a"]["nova"] == SERVER_A and hosts["node-b"]["nova"] == SERVER_B  # both providerID forms
    assert hosts["node-c"]["nova"] is None and not hosts["node-c"]["schedulable"]
    assert hosts["node-a"]["pool"] == "gpu" and hosts["node-a"]["zone"] == "az1"
    # the real server's TaintNodesByCondition admission adds the not-ready taint to new nodes
    assert "node.kubernetes.io/not-ready:NoSchedule" in hosts["node-a"]["taints"]
    capacity = observed["first"]["summary"]["capacity"]
    cap, reserved, allocatable, allocated, _, pool = capacity["node-a/cpu"]
    assert (cap, allocatable, pool) == (4.0, 3.8, "gpu") and reserved == pytest.approx(0.2)
    assert allocated == pytest.approx(2.1)  # web 100m + train 2; the succeeded job holds nothing
    assert capacity["node-a/nvidia_com_gpu"][:4] == [2.0, 0.0, 2.0, 1.0]
    assert capacity["node-b/cpu"][3] == pytest.approx(2.6)  # web .1 + db 1 + migrating max(1.5, .3) ; failed: 0
    assert capacity["node-b/pods"][3] == 3


def test_pods_through_the_real_server(observed: dict[str, Any]) -> None:
    consumers = observed["first"]["summary"]["consumers"]
    assert len(consumers) == 9
    assert consumers["apps/web-6d4cf56db6-a1b2c"]["flavor"] == "Deployment/web"
    assert consumers["apps/migrating"]["cpu"] == 1.5 and consumers["apps/migrating"]["flavor"] == "Deployment/api"
    assert consumers["batch/crashed"]["state"] == "failed" and not consumers["batch/crashed"]["holds"]
    assert consumers["batch/report-29707813-x7k2p"]["state"] == "succeeded"
    waiting = consumers["apps/waiting"]
    assert waiting["state"] == "pending" and not waiting["holds"] and waiting["host"] is None
    assert waiting["pool"] == "gpu"  # the pool its nodeSelector asks for
    assert consumers["ml/train"]["provider"] == f"openstack:///{SERVER_A}"


def test_usage_through_the_real_node_proxy(observed: dict[str, Any]) -> None:
    first, second = observed["first"], observed["second"]
    # node-c's kubelet hangs: it alone loses its usage, after the per-node timeout
    assert first["skipped"] == {"kubelet_timeout": 1} == second["skipped"]
    assert any("node-c" in note and "2s" in note for note in first["notes"])
    assert first["api_calls"] == 5 + 2 + 3  # 9 pods in pages of 2, 3 nodes in pages of 2, 3 kubelets
    capacity = second["summary"]["capacity"]
    assert capacity["node-a/memory"][4] > 0 and 0 < capacity["node-a/cpu"][4] < 4
    assert capacity["node-c/memory"][4] is None
    assert first["summary"]["capacity"]["node-a/cpu"][4] is None  # a rate needs two polls
    train = second["summary"]["consumers"]["ml/train"]
    assert 0.6 <= train["cpu_used"] <= 1.8 and train["memory_used"] > 0  # 30-90 % of 2 cores / 8 GiB
    assert second["summary"]["consumers"]["apps/web-6d4cf56db6-g5h6i"]["memory_used"] is None  # on node-c
    assert observed["real_proxy_encoded_slash"] == [200, True]


def test_rbac_and_credentials(observed: dict[str, Any]) -> None:
    viewer = observed["viewer"]
    assert viewer["skipped"] == {"kubelet_forbidden": 3}
    assert viewer["used"] is None and viewer["allocated"] == pytest.approx(2.1)
    assert "get nodes/proxy" in viewer["notes"][0]
    assert observed["unauthorized"]["reason"] == "unauthorized"


def test_expired_continue_token_restarts_the_list(observed: dict[str, Any]) -> None:
    restart = observed["restart"]
    assert restart["compactions"] == 1 and restart["pods"] == 9
    assert restart["notes"] == ["list restarted 1x after its continue token expired (410)"]


def test_standin_gives_the_same_frames_as_the_real_server(observed: dict[str, Any]) -> None:
    assert observed["mirror"]["standin"] == observed["mirror"]["real"]


@pytest.mark.parametrize("code", ["410", "401", "403", "404"])
def test_standin_error_bodies_match_the_real_server(observed: dict[str, Any], code: str) -> None:
    assert observed[f"standin_{code}"] == observed[f"real_{code}"]


def test_standin_400_and_list_metadata_match_the_real_server(observed: dict[str, Any]) -> None:
    real, standin = observed["real_400"], observed["standin_400"]
    assert {k: v for k, v in real.items() if k != "message"} == {k: v for k, v in standin.items() if k != "message"}
    prefix = "invalid continue token: continue key is not valid: "
    assert real["message"].startswith(prefix) and standin["message"].startswith(prefix)
    real_list, standin_list = observed["real_list"], observed["standin_list"]
    assert real_list["kind"] == standin_list["kind"] == "PodList"
    assert real_list["metadata_keys"] == standin_list["metadata_keys"]
    assert real_list["remaining"] == standin_list["remaining"]
    assert real_list["continue"]["v"] == standin_list["continue"]["v"] == "meta.k8s.io/v1"
    assert real_list["continue"]["start"] == standin_list["continue"]["start"] == "apps/migrating\u0000"

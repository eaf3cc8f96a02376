"""The source against the stand-in API server, through the unchanged `kubernetes` client."""

from __future__ import annotations

import math
import socket
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.config import kube_config

from collector.contract.schema import validate
from collector.demo.standins.kubernetes import (
    FakeKubelet,
    KubeletServer,
    StandinApiServer,
    make_node,
    make_pod,
    make_tls,
)
from collector.sources.base import SourceError
from collector.sources.kubernetes import SOURCE
from collector.sources.kubernetes.settings import KubernetesSourceConfig

GIB = 2**30


def cluster(server: StandinApiServer, nodes: int = 3, pods_per_node: int = 3, **kubelets: FakeKubelet) -> None:
    node_objects = [
        make_node(f"n{i}", provider_id=f"openstack:///{i:08d}-0000-4000-8000-000000000000", address="127.0.0.1")
        for i in range(nodes)
    ]
    pods = [
        make_pod("apps", f"web-{i}-{j}", node=f"n{i}", owner=("StatefulSet", "web"))
        for i in range(nodes)
        for j in range(pods_per_node)
    ]
    pods.append(make_pod("apps", "pending", node=None, phase="Pending"))
    pods.append(make_pod("batch", "done", node="n0", phase="Succeeded", owner=("Job", "nightly")))
    server.set_nodes(node_objects, kubelets)
    server.set_pods(pods)


def source(
    server: StandinApiServer, tmp_path: Path, token: str = "admin-token", name: str = "k8s", **config: Any
) -> Any:
    kubeconfig = server.kubeconfig(tmp_path / f"kubeconfig-{name}-{token}", token=token, context=f"ctx-{name}")
    return SOURCE(KubernetesSourceConfig(kind="kubernetes", name=name, kubeconfig=kubeconfig, **config))


def poll(src: Any):
    result = src.poll(datetime.now(UTC))
    validate(result.frames)
    return result


def queries(server: StandinApiServer, path: str) -> list[dict[str, list[str]]]:
    return [
        urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
        for p in server.requests
        if urllib.parse.urlsplit(p).path == path
    ]


def test_full_poll(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    src = source(standin, tmp_path)
    result = poll(src)
    frames = result.frames
    assert not result.skipped and not result.notes
    assert len(frames["hosts"]) == 3 and len(frames["consumers"]) == 11
    assert set(frames["capacity"]["cloud"]) == {"ctx-k8s"}  # the context names the cluster by default
    capacity = frames["capacity"].set_index(["host", "resource"])
    assert capacity.loc[("n0", "cpu"), "allocated"] == pytest.approx(0.3)  # 3 x 100m; the finished job holds none
    assert capacity.loc[("n0", "pods"), "allocated"] == 3
    assert capacity.loc[("n0", "memory"), "used"] > 512 * 2**20  # working set from the kubelet
    assert math.isnan(capacity.loc[("n0", "cpu"), "used"])  # a rate needs two polls
    consumers = frames["consumers"].set_index("name")
    assert consumers.loc["apps/web-0-0", "memory_used"] > 0 and consumers.loc["apps/web-0-0", "cpu_time_seconds"] > 0
    assert math.isnan(consumers.loc["apps/pending", "memory_used"])
    assert result.api_calls == 2 + 3  # one page each, three kubelets
    time.sleep(0.3)
    second = poll(src)
    capacity = second.frames["capacity"].set_index(["host", "resource"])
    assert 0 < capacity.loc[("n0", "cpu"), "used"] < 4
    consumers = second.frames["consumers"].set_index("name")
    assert 0.03 <= consumers.loc["apps/web-0-0", "cpu_used"] <= 0.09  # 30-90 % of a 100m request
    src.close()


def test_pagination_uses_limit_and_continue(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=5, pods_per_node=4)
    standin.record_requests = True
    result = poll(source(standin, tmp_path, page_size=3, kubelet={"mode": "off"}))
    assert len(result.frames["consumers"]) == 22 and len(result.frames["hosts"]) == 5
    pod_pages = queries(standin, "/api/v1/pods")
    assert len(pod_pages) == 8  # ceil(22 / 3)
    assert all(q["limit"] == ["3"] for q in pod_pages)
    assert "continue" not in pod_pages[0] and all("continue" in q for q in pod_pages[1:])
    assert len(queries(standin, "/api/v1/nodes")) == 2
    assert result.api_calls == 10


def test_an_expired_continue_token_restarts_the_list(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=2, pods_per_node=5)
    standin.record_requests = True
    compactions = []

    def compact_once(resource: str, page: int) -> None:
        if resource == "pods" and not compactions:
            compactions.append(page)
            standin.touch()
            standin.compact()  # the first page's snapshot is gone: its continue token now answers 410

    standin.after_page = compact_once
    result = poll(source(standin, tmp_path, page_size=4, kubelet={"mode": "off"}))
    assert len(result.frames["consumers"]) == 12  # complete, and no pod twice (the frame key would reject it)
    assert any("410" in note for note in result.notes)
    starts = [q for q in queries(standin, "/api/v1/pods") if "continue" not in q]
    assert len(starts) == 2


def test_a_continue_token_that_keeps_expiring_fails_the_poll(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=2, pods_per_node=5)

    def always(resource: str, page: int) -> None:
        standin.touch()
        standin.compact()

    standin.after_page = always
    with pytest.raises(SourceError) as error:
        poll(source(standin, tmp_path, page_size=4, kubelet={"mode": "off"}))
    assert error.value.reason == "list_expired"


def test_garbled_continue_token_is_a_400_status(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    api = k8s.CoreV1Api(source(standin, tmp_path)._connect())
    with pytest.raises(k8s.ApiException) as error:
        api.list_node(limit=1, _continue="not-a-token")
    assert error.value.status == 400 and "continue key is not valid" in error.value.body


def test_unauthorized(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    with pytest.raises(SourceError) as error:
        poll(source(standin, tmp_path, token="wrong-token"))
    assert error.value.reason == "unauthorized" and "401" in str(error.value)
    assert "wrong-token" not in str(error.value)


def test_forbidden_lists(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    with pytest.raises(SourceError) as error:
        poll(source(standin, tmp_path, token="nothing-token"))
    assert error.value.reason == "forbidden"
    assert 'User "nobody" cannot list resource "nodes"' in str(error.value)


def test_rbac_without_nodes_proxy_keeps_requests_and_says_why(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=40, pods_per_node=1)
    standin.record_requests = True
    result = poll(source(standin, tmp_path, token="no-proxy-token", kubelet={"concurrency": 2}))
    frames = result.frames
    assert frames["capacity"]["used"].isna().all() and frames["consumers"]["memory_used"].isna().all()
    assert frames["capacity"].set_index(["host", "resource"]).loc[("n0", "cpu"), "allocated"] == pytest.approx(0.1)
    assert result.skipped["kubelet_forbidden"] == 40
    assert any("get nodes/proxy" in note and "403" in note for note in result.notes)
    proxied = [p for p in standin.requests if "/proxy/" in p]
    assert len(proxied) < 40  # it stopped asking once RBAC said no


def test_cluster_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tls = make_tls(tmp_path / "pki")
    from collector.demo.standins.kubernetes import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{port}", tls.ca_cert, "t", "gone")
    src = SOURCE(KubernetesSourceConfig(kind="kubernetes", name="gone", kubeconfig=kubeconfig))
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        src.poll(datetime.now(UTC))
    assert error.value.reason == "unreachable" and f"127.0.0.1:{port}" in str(error.value)
    assert time.monotonic() - started < 10


def test_api_server_unavailable(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    standin.down = True
    with pytest.raises(SourceError) as error:
        poll(source(standin, tmp_path))
    assert error.value.reason == "api_error" and "503" in str(error.value)


def test_one_kubelet_hanging_one_malformed_one_down(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(
        standin,
        nodes=6,
        n1=FakeKubelet("n1", "hang", hang_seconds=6),
        n2=FakeKubelet("n2", "malformed"),
        n3=FakeKubelet("n3", "down"),
    )
    src = source(standin, tmp_path, kubelet={"timeout": "1s", "concurrency": 4})
    started = time.monotonic()
    result = poll(src)
    assert time.monotonic() - started < 5  # the hanging kubelet cost its timeout, in parallel, once
    assert result.skipped == {"kubelet_timeout": 1, "kubelet_malformed": 1, "kubelet_error": 1}
    notes = " | ".join(result.notes)
    assert "node n1: no answer within 1s" in notes and "node n2: malformed" in notes and "node n3: HTTP 503" in notes
    used = result.frames["capacity"].set_index(["host", "resource"])["used"]
    assert math.isnan(used[("n1", "memory")]) and math.isnan(used[("n2", "memory")])
    assert used[("n0", "memory")] > 0 and used[("n5", "memory")] > 0
    consumers = result.frames["consumers"].set_index("name")
    assert math.isnan(consumers.loc["apps/web-1-0", "memory_used"]) and consumers.loc["apps/web-1-0", "cpu"] == 0.1


def test_counter_reset_gives_a_sane_rate(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=1, pods_per_node=1)
    src = source(standin, tmp_path)
    poll(src)
    time.sleep(0.5)
    standin.kubelets["n0"].reset_counters()
    result = poll(src)
    used = result.frames["capacity"].set_index("resource").loc["cpu", "used"]
    assert 0 <= used < 4
    assert src._node_rates.resets == 1


def test_invalid_quantity_skips_only_that_pod(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin, nodes=1, pods_per_node=2)
    pods = [
        make_pod("apps", "ok", node="n0"),
        make_pod("apps", "broken", node="n0", containers=[("app", {"memory": "12 GB"}, {})]),
    ]
    standin.set_pods(pods)
    result = poll(source(standin, tmp_path))
    assert result.skipped["invalid_pod"] == 1
    assert list(result.frames["consumers"]["name"]) == ["apps/ok"]
    assert any("pod apps/broken" in note and "'12 GB'" in note for note in result.notes)


def test_direct_mode_reaches_kubelets_with_the_kubeconfig_token(standin: StandinApiServer, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "kubelet-pki", common_name="kubelet")
    kubelets = [("127.0.0.1", 0, FakeKubelet(f"n{i}")) for i in range(3)]
    server = KubeletServer(kubelets, tls, token="admin-token")
    try:
        nodes = [
            make_node(name, address=address, kubelet_port=port)
            for name, (address, port) in sorted(server.addresses.items())
        ]
        by_name = {k.node: k for k in server.kubelets.values()}
        standin.set_nodes(nodes)
        standin.set_pods([make_pod("apps", f"p{i}", node=f"n{i}") for i in range(3)])
        for name, kubelet in by_name.items():
            kubelet.pods = standin.kubelets[name].pods
        standin.record_requests = True
        result = poll(source(standin, tmp_path, kubelet={"mode": "direct", "insecure_skip_tls_verify": True}))
        assert not result.skipped
        assert not [p for p in standin.requests if "/proxy/" in p]  # not through the API server
        assert sorted(node for node, path, auth in server.requests) == ["n0", "n1", "n2"]
        assert all(auth == "yes" and path == "/metrics/resource" for _, path, auth in server.requests)
        assert result.frames["consumers"]["memory_used"].notna().all()
        # verifying TLS (default) against a kubelet certificate not signed by the cluster CA fails per node
        failed = poll(source(standin, tmp_path, name="strict", kubelet={"mode": "direct"}))
        assert failed.skipped["kubelet_unreachable"] == 3
    finally:
        server.stop()


def test_two_clusters_side_by_side(standin: StandinApiServer, tmp_path: Path) -> None:
    other = StandinApiServer(tmp_path / "other")
    try:
        cluster(standin, nodes=2)
        cluster(other, nodes=4)
        a = source(standin, tmp_path, name="east", cluster="east-prod")
        b = source(other, tmp_path, name="west")
        fa, fb = poll(a).frames, poll(b).frames
        assert set(fa["hosts"]["cloud"]) == {"east-prod"} and len(fa["hosts"]) == 2
        assert set(fb["hosts"]["cloud"]) == {"ctx-west"} and len(fb["hosts"]) == 4
    finally:
        other.stop()


def test_kubeconfig_problems_are_config_errors(standin: StandinApiServer, tmp_path: Path) -> None:
    src = source(standin, tmp_path, context="no-such-context")
    with pytest.raises(SourceError) as error:
        src.poll(datetime.now(UTC))
    assert error.value.reason == "config" and "no-such-context" in str(error.value)
    missing = SOURCE(KubernetesSourceConfig(kind="kubernetes", name="m", kubeconfig=tmp_path / "nope"))
    with pytest.raises(SourceError) as error:
        missing.poll(datetime.now(UTC))
    assert error.value.reason == "config"


def test_standin_objects_pass_the_clients_models(standin: StandinApiServer, tmp_path: Path) -> None:
    cluster(standin)
    api = k8s.CoreV1Api(source(standin, tmp_path)._connect())
    pods = api.list_pod_for_all_namespaces(limit=5)
    assert len(pods.items) == 5 and pods.metadata.remaining_item_count == 6 and pods.metadata._continue
    assert pods.items[0].spec.containers[0].resources.requests == {"cpu": "100m", "memory": "128Mi"}
    node = api.read_node("n0")
    assert node.status.allocatable["cpu"] == "4" and node.spec.provider_id.startswith("openstack:///")
    # field selectors the real server supports for pods; an unsupported one is a 400 Status
    assert len(api.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items) == 3
    with pytest.raises(k8s.ApiException) as error:
        api.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert error.value.status == 400
    text = api.connect_get_node_proxy_with_path("n0", "metrics/resource", _preload_content=False).data.decode()
    assert "node_cpu_usage_seconds_total" in text


def test_timeout_defaults_follow_the_interval() -> None:
    config = KubernetesSourceConfig(kind="kubernetes", context="c", interval="30s")
    assert config.name == "c" and config.effective_timeout == timedelta(seconds=24)
    assert kube_config  # the client's kubeconfig loader is what resolves contexts


def test_many_hanging_kubelets_do_not_overrun_the_poll(standin: StandinApiServer, tmp_path: Path) -> None:
    hanging = {f"n{i}": FakeKubelet(f"n{i}", "hang", hang_seconds=10) for i in range(6)}
    cluster(standin, nodes=6, pods_per_node=1, **hanging)
    src = source(standin, tmp_path, timeout="3s", kubelet={"timeout": "2s", "concurrency": 1})
    assert k8s.CoreV1Api  # import the client's API module (seconds, once per process) before timing
    started = time.monotonic()
    result = poll(src)
    assert time.monotonic() - started < 3.5  # 6 x 2 s sequential scrapes would be 12 s
    assert result.skipped["kubelet_timeout"] >= 1 and result.skipped["kubelet_deadline"] >= 1
    assert result.skipped["kubelet_timeout"] + result.skipped["kubelet_deadline"] == 6
    assert len(result.frames["consumers"]) == 8  # requests are all there


def test_in_cluster_outside_a_cluster_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    src = SOURCE(KubernetesSourceConfig(kind="kubernetes", name="inside", in_cluster=True))
    with pytest.raises(SourceError) as error:
        src.poll(datetime.now(UTC))
    assert error.value.reason == "config" and "Service host/port is not set" in str(error.value)

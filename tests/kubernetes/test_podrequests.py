"""Effective pod requests as the scheduler counts them (k8s.io/component-helpers resource.PodRequests)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from collector.contract.quantity import NANO
from collector.sources.kubernetes.podrequests import SpecError, effective_resources
from tests.kubernetes.conftest import load


def nanos(amounts: dict[str, Fraction | int]) -> dict[str, int]:
    """Expected amounts in base units -> the nano-units the collector carries."""
    out = {}
    for key, value in amounts.items():
        scaled = Fraction(value) * NANO
        assert scaled.denominator == 1
        out[key] = int(scaled)
    return out


def c(
    name: str,
    cpu: str | None = None,
    memory: str | None = None,
    *,
    limits: dict[str, str] | None = None,
    sidecar: bool = False,
    **extra: str,
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    requests.update({k.replace("__", "/").replace("_", "."): v for k, v in extra.items()})
    container: dict[str, Any] = {"name": name, "resources": {"requests": requests, "limits": limits or {}}}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


def requests(containers: list[dict], init: list[dict] | None = None, **spec: Any) -> dict:
    return effective_resources({"containers": containers, "initContainers": init or [], **spec}, "ns/pod")[0]


def test_app_containers_are_summed() -> None:
    assert requests([c("a", "100m", "64Mi"), c("b", "250m", "1Gi")]) == nanos(
        {"cpu": Fraction(7, 20), "memory": 64 * 2**20 + 2**30}
    )


def test_a_larger_init_container_sets_the_request() -> None:
    # init containers run one at a time: the largest counts, against the sum of the app containers
    result = requests([c("a", "100m", "64Mi"), c("b", "100m", "64Mi")], [c("i1", "1", "32Mi"), c("i2", "50m", "1Gi")])
    assert result == nanos({"cpu": 1, "memory": 2**30})


def test_a_sidecar_adds_to_the_app_phase() -> None:
    assert requests([c("app", "1")], [c("proxy", "1", sidecar=True)]) == nanos({"cpu": 2})


def test_several_sidecars_all_count() -> None:
    result = requests(
        [c("app", "1")], [c("s1", "1", sidecar=True), c("s2", "2", sidecar=True), c("s3", "3", sidecar=True)]
    )
    assert result == nanos({"cpu": 7})


def test_an_init_after_a_sidecar_needs_the_sidecar_too() -> None:
    # step "migrate" runs while "proxy" already runs: 5 + 1 = 6 > app phase 1 + 1
    assert requests([c("app", "1")], [c("proxy", "1", sidecar=True), c("migrate", "5")]) == nanos({"cpu": 6})


def test_an_init_before_a_sidecar_does_not() -> None:
    # upstream test "restartable init container larger than app": max(10, 1, 3 + 1, app 1 + 1) = 10
    result = requests([c("app", "1")], [c("big", "10"), c("proxy", "1", sidecar=True), c("small", "3")])
    assert result == nanos({"cpu": 10})


def test_overhead_is_added_to_requests_and_to_set_limits_only() -> None:
    spec = {
        "containers": [c("app", "500m", "256Mi", limits={"memory": "512Mi"})],
        "overhead": {"cpu": "250m", "memory": "120Mi"},
    }
    reqs, limits = effective_resources(spec, "ns/pod")
    assert reqs == nanos({"cpu": Fraction(3, 4), "memory": 376 * 2**20})
    assert limits == nanos({"memory": 632 * 2**20})  # no cpu limit: overhead does not invent one


def test_pod_level_resources_replace_the_container_aggregate() -> None:
    spec = {
        "containers": [c("a", "100m", "64Mi"), c("b", "100m", "64Mi", nvidia__com_gpu="1")],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2"}},
    }
    reqs, limits = effective_resources(spec, "ns/pod")
    assert reqs == nanos({"cpu": 1, "memory": 2**30, "nvidia_com_gpu": 1})
    assert limits == nanos({"cpu": 2})


def test_limits_follow_the_same_phases() -> None:
    spec = {
        "containers": [c("app", limits={"cpu": "1", "memory": "1Gi"})],
        "initContainers": [c("proxy", limits={"cpu": "500m"}, sidecar=True), c("init", limits={"cpu": "4"})],
    }
    assert effective_resources(spec, "ns/pod")[1] == nanos({"cpu": Fraction(9, 2), "memory": 2**30})


def test_extended_resources_and_ephemeral_storage_are_kept_hugepages_dropped() -> None:
    result = requests([c("a", "1", **{"ephemeral-storage": "1Gi"}, nvidia__com_gpu="2", **{"hugepages-2Mi": "4Mi"})])
    assert result == nanos({"cpu": 1, "ephemeral_storage": 2**30, "nvidia_com_gpu": 2})


def test_no_requests_is_an_empty_map() -> None:
    assert requests([{"name": "a"}, {"name": "b", "resources": {}}]) == nanos({})


@pytest.mark.parametrize(("field", "value"), [("cpu", "lots"), ("memory", "-1Gi"), ("cpu", "1e999")])
def test_a_bad_quantity_names_the_pod_container_and_field(field: str, value: str) -> None:
    with pytest.raises(SpecError) as error:
        effective_resources({"containers": [c("web", **{field: value})]}, "shop/web-1")
    message = str(error.value)
    assert "pod shop/web-1" in message and "containers[web]" in message and f"requests.{field}" in message


def test_real_pod_list_matches_kube_state_metrics_sums() -> None:
    # coredns in the real capture: requests cpu 100m / memory 70Mi, limit memory 170Mi
    pods = {p["metadata"]["name"]: p for p in load("podlist_v1.35.json")["items"]}
    reqs, limits = effective_resources(pods["coredns-7d764666f9-qdcxt"]["spec"], "kube-system/coredns")
    assert reqs == nanos({"cpu": Fraction(1, 10), "memory": 70 * 2**20})
    assert limits == nanos({"memory": 170 * 2**20})
    reqs, _ = effective_resources(pods["e2e-container-creating"]["spec"], "scraper/e2e-container-creating")
    assert reqs == nanos({"cpu": Fraction(1, 200), "memory": 5_000_000})  # "5M" is decimal mega


def test_shared_maps_are_never_changed_by_another_pod() -> None:
    container = c("app", "500m", "256Mi")
    with_overhead = effective_resources({"containers": [container], "overhead": {"cpu": "250m"}}, "ns/a")[0]
    plain = effective_resources({"containers": [container]}, "ns/b")[0]
    assert with_overhead == nanos({"cpu": Fraction(3, 4), "memory": 256 * 2**20})
    assert plain == nanos({"cpu": Fraction(1, 2), "memory": 256 * 2**20})
    assert effective_resources({"containers": [container]}, "ns/c")[0] == plain

"""Pod headroom on hand-computed clusters."""

from __future__ import annotations

import pandas as pd
import pytest

from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.settings import HeadroomConfig
from collector.app.config import Config, parse_config
from collector.contract.settings import ConfigError
from tests.headroom.builder import GIB, MIB, NOW, Estate, inv, row


def cluster() -> Estate:
    return Estate(layer="kubernetes", cloud="k1")


def node(
    e: Estate, name: str, pool: str = "workers", *, cpu: float = 4.0, memory: float = 16 * GIB, pods: float = 110, **kw
) -> Estate:
    return e.host(name, pool, resources={"cpu": inv(cpu), "memory": inv(memory), "pods": inv(pods)}, **kw)


def shapes_config(**shapes) -> Config:
    return parse_config({"shapes": shapes, "headroom": {"common_shapes": 0}})


def headroom(e: Estate, config: Config) -> pd.DataFrame:
    return compute_headroom(e.frames(), config, NOW).headroom


def test_allocatable_minus_requests_and_the_pods_cap() -> None:
    e = cluster()
    node(e, "n1", cpu=4.0, memory=16 * GIB, pods=10)
    for i in range(8):  # 8 x (250m, 512Mi) requested: 2 cores and 4 GiB left, but only 2 pods
        e.consumer(f"p{i}", "n1", {"cpu": 0.25, "memory": 512 * MIB}, flavor="Deployment/web", layer="kubernetes")
    node(e, "n2", cpu=4.0, memory=16 * GIB, pods=110)  # 4/0.25 = 16 by cpu, 32 by memory
    h = headroom(e, shapes_config(small={"cpu": "250m", "memory": "512Mi"}))
    small = row(h, pool="workers", shape="small")
    assert small["slots"] == 2 + 16 and small["shape_kind"] == "pod_shape"
    hosts = compute_headroom(e.frames(), shapes_config(small={"cpu": "250m", "memory": "512Mi"}), NOW).hosts
    assert hosts.set_index("host").loc["n1", "limiting_resource"] == "pods"
    assert hosts.set_index("host").loc["n2", "limiting_resource"] == "cpu"


def test_tainted_node_needs_a_toleration_and_prefer_no_schedule_does_not_block() -> None:
    e = cluster()
    node(e, "plain")
    node(e, "gpu", taints=("nvidia.com/gpu=present:NoSchedule",))
    node(e, "soft", taints=("spot=true:PreferNoSchedule",))
    config = shapes_config(
        plain={"cpu": 1, "memory": "1Gi"},
        tolerant={
            "cpu": 1,
            "memory": "1Gi",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        wrong_value={"cpu": 1, "memory": "1Gi", "tolerations": [{"key": "nvidia.com/gpu", "value": "absent"}]},
        everything={"cpu": 1, "memory": "1Gi", "tolerations": [{"operator": "Exists"}]},
    )
    h = headroom(e, config)
    assert row(h, pool="workers", shape="plain")["slots"] == 8  # plain + soft: 4 cores / 1 each
    assert row(h, pool="workers", shape="plain")["hosts"] == 2
    assert row(h, pool="workers", shape="tolerant")["slots"] == 12
    assert row(h, pool="workers", shape="wrong_value")["slots"] == 8
    assert row(h, pool="workers", shape="everything")["slots"] == 12


def test_cordoned_and_not_ready_nodes_take_no_pods() -> None:
    e = cluster()
    node(e, "ok")
    node(e, "cordoned", schedulable=False)
    node(e, "notready", ready=False)
    r = row(headroom(e, shapes_config(one={"cpu": 1})), pool="k1", shape="one", pool_kind="cluster")
    assert r["slots"] == 4 and r["hosts"] == 1


def test_init_containers_count_as_max_of_init_and_app() -> None:
    e = cluster()
    node(e, "n1", cpu=8.0, memory=32 * GIB)
    # A pod whose init container asks 2 cores and app 0.5: it holds 2 (the source's effective request).
    e.consumer("p-init", "n1", {"cpu": 2.0, "memory": 1 * GIB}, flavor="Job/migrate", layer="kubernetes")
    config = shapes_config(
        # effective cpu = max(init 2, app 0.5) = 2: (8 - 2)/2 = 3; memory max(256Mi, 1Gi)
        migrate={"cpu": "500m", "memory": "256Mi", "init": {"cpu": 2, "memory": "1Gi"}},
        app_only={"cpu": "500m", "memory": "256Mi"},  # (8-2)/0.5 = 12
    )
    h = headroom(e, config)
    assert row(h, pool="workers", shape="migrate")["slots"] == 3
    assert row(h, pool="workers", shape="app_only")["slots"] == 12


def test_common_shapes_from_the_cluster_with_median_requests_and_no_daemonsets() -> None:
    e = cluster()
    node(e, "n1", cpu=16.0, memory=64 * GIB)
    node(e, "n2", cpu=16.0, memory=64 * GIB, taints=("dedicated=batch:NoSchedule",))
    for i, cpu in enumerate((0.5, 0.5, 1.0)):  # median 0.5 core, 1 GiB
        e.consumer(f"w{i}", "n1", {"cpu": cpu, "memory": GIB}, flavor="Deployment/web", layer="kubernetes")
    for i in range(2):  # runs on the tainted node: tolerates its taint
        e.consumer(f"b{i}", "n2", {"cpu": 4.0, "memory": 4 * GIB}, flavor="Job/batch", layer="kubernetes")
    for n in ("n1", "n2"):
        for i in range(2):
            e.consumer(
                f"ds-{n}-{i}", n, {"cpu": 0.1, "memory": 0.1 * GIB}, flavor="DaemonSet/agent", layer="kubernetes"
            )
    h = compute_headroom(e.frames(), Config(headroom=HeadroomConfig(common_shapes=2)), NOW).headroom
    assert set(h["shape"]) == {"Deployment/web", "Job/batch"}
    # n1 free: 16 - 2 - 0.2 = 13.8 cores -> 27 of 0.5; n2 is tainted and web never ran there.
    assert row(h, pool="workers", shape="Deployment/web")["slots"] == 27
    # batch: n1 13.8/4 = 3; n2: 16 - 8 - 0.2 = 7.8 -> 1
    assert row(h, pool="workers", shape="Job/batch")["slots"] == 4


def test_node_selector_and_extended_resources() -> None:
    e = cluster()
    node(e, "a", traits=("disk=ssd",))
    e.host(
        "g",
        "gpu",
        resources={"cpu": inv(16), "memory": inv(64 * GIB), "pods": inv(110), "nvidia_com_gpu": inv(4)},
        traits=("disk=ssd",),
    )
    config = shapes_config(
        ssd={"cpu": 1, "node_selector": {"disk": "ssd"}}, trainer={"cpu": 2, "resources": {"nvidia.com/gpu": 1}}
    )
    h = headroom(e, config)
    assert row(h, pool="k1", shape="ssd", pool_kind="cluster")["slots"] == 4 + 16
    trainer = row(h, pool="k1", shape="trainer", pool_kind="cluster")
    assert trainer["slots"] == 4 and trainer["limiting_resource"] == "nvidia_com_gpu"


@pytest.mark.parametrize("bad", [{"cpu": "lots"}, {"cpu": -1}, {"memory": "1Zi"}, {"cpus": 1}])
def test_bad_shapes_in_the_config_are_named(bad: dict) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"shapes": {"broken": bad}})
    assert "shapes.broken" in str(error.value)

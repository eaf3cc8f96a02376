"""`cluster:` keys: bad combinations are refused with the problem named; ordinal identity from the pod name."""

from __future__ import annotations

import pytest

from collector.app.cluster.roles import Coordinator
from collector.app.cluster.settings import ClusterConfig
from collector.app.cluster.sharding import assign, static_members
from collector.app.config import parse_config
from collector.contract.settings import ConfigError


@pytest.mark.parametrize(
    ("cluster", "problem"),
    [
        ({"total_shards": 3}, "shard is required when total_shards > 1"),
        ({"shard": 3, "total_shards": 3}, "shard must be below total_shards (3)"),
        (
            {"membership": "ordinal", "identity": "capacityd-collector-4", "total_shards": 3},
            "the pod ordinal 4 is not below total_shards (3)",
        ),
        ({"membership": "ordinal", "identity": "collector", "total_shards": 3}, "does not end in -<ordinal>"),
        ({"role": "worker"}, "cluster.role"),
        ({"lease_duration_seconds": 0}, "cluster.lease_duration_seconds"),
    ],
)
def test_bad_cluster_settings_are_refused(cluster: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"cluster": cluster})
    assert any(problem in line for line in caught.value.errors), caught.value.errors


def test_the_default_is_one_process_owning_everything() -> None:
    coordinator = Coordinator(parse_config({}).cluster)
    assert coordinator.role == "all" and coordinator.membership is None and coordinator.plans
    assert coordinator.owned(["a", "b", "c"]) == ["a", "b", "c"]


def test_a_statefulset_pod_owns_what_its_ordinal_shard_owns() -> None:
    targets = [f"h{i}" for i in range(50)]
    expected = assign(targets, static_members(4))
    coordinator = Coordinator(
        ClusterConfig(role="collector", membership="ordinal", total_shards=4, identity="capacityd-collector-2")
    )
    assert coordinator.owned(targets) == [t for t in targets if expected[t] == "2"]
    assert not Coordinator(ClusterConfig(role="planner", leader_election=False)).owned(targets)

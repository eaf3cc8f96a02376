"""The demo part: a cluster whose workers are the demo cloud's servers, polled through the real client."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.app.config import parse_config
from collector.contract.schema import validate
from collector.demo import kubernetes as demo_part
from collector.demo.model import CLUSTER, build_estate
from collector.sources import create_source


def test_demo_cluster(tmp_path: Path) -> None:
    estate = build_estate()
    context: dict = {"estate": estate}
    part = demo_part.start(tmp_path, context)
    try:
        kubeconfig = context["kubernetes"]["kubeconfig"]
        assert part.sources == [
            {
                "kind": "kubernetes",
                "name": CLUSTER,
                "kubeconfig": kubeconfig,
                "context": CLUSTER,
                "cluster": CLUSTER,
                "interval": "30s",
            }
        ]
        config = parse_config({"sources": part.sources})
        source = create_source(config.sources[0])
        source.poll(datetime.now(UTC))
        time.sleep(0.5)
        result = source.poll(datetime.now(UTC))
        validate(result.frames)
        assert not result.skipped
        hosts, capacity, consumers = (result.frames[n] for n in ("hosts", "capacity", "consumers"))
        servers = {s.id: s for s in estate.servers}
        # every worker node is a server of the demo cloud, named like it, in its compute host's AZ
        assert sorted(hosts["nova_server_id"]) == sorted(estate.k8s_workers)
        for row in hosts.itertuples():
            server = servers[row.nova_server_id]
            assert row.host == server.name and row.instance_type == "k8s.worker"
            assert row.zone == estate.host(server.host).zone
        assert set(hosts["pool"]) == {"default-worker", "batch-worker"}
        cpu = capacity[capacity["resource"] == "cpu"]
        assert (cpu["capacity"] == 4).all() and (cpu["allocatable"] == 3.8).all()
        assert (cpu["allocated"] <= cpu["allocatable"]).all() and cpu["used"].notna().all()
        assert "nvidia_com_gpu" not in set(capacity["resource"])  # a GPU-less cluster
        kinds = {flavor.split("/")[0] for flavor in consumers["flavor"]}
        assert kinds >= {"DaemonSet", "Deployment", "StatefulSet", "Job"}
        by_state = consumers.groupby("state")["holds_capacity"].agg(["count", "sum"])
        assert by_state.loc["succeeded", "sum"] == 0 and by_state.loc["failed", "sum"] == 0
        assert by_state.loc["pending", "count"] == 1 and by_state.loc["pending", "sum"] == 0
        web = consumers[consumers["flavor"] == "Deployment/web"].iloc[0]
        assert web["cpu"] == pytest.approx(0.3)  # 250m app + 50m restartable sidecar
        api = consumers[consumers["flavor"] == "Deployment/api"].iloc[0]
        assert api["cpu"] == 1.0  # the 1-core migration init container outweighs the 500m app
    finally:
        part.stop()

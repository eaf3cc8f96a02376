"""Body of the Lease tests against the REAL kube-apiserver 1.20; runs INSIDE a private network namespace.

Started by tests/cluster/test_leases.py through `run_in_private_netns`. It starts etcd + kube-apiserver,
grants the collector's user the Lease verbs only (the RBAC a deployment needs), then observes:
- a planner in this process losing the API server (SIGSTOP) stops serving its planning families
  before a standby could take the Lease;
- two `capacityd run --role planner` processes: one leader; kill -9 it, the standby leads;
- three `capacityd run --role collector` processes with Lease membership: kill -9 one, the survivors
  take its targets over; afterwards every target is polled by exactly one survivor.
It prints one JSON document of observations; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from collector.app.cluster.roles import Coordinator, RoleExpositionCache
from collector.app.cluster.settings import ClusterConfig
from collector.app.cluster.sharding import assign
from collector.app.config import parse_config
from collector.app.daemon import collect_once
from collector.estate import Estate
from tests.cluster.harness import Collector, free_port, libvirt_sources, wait_for, write_config
from tests.services.kube_apiserver import KubeApiServer

LEASE = 3  # seconds
TARGETS = 9


def grant_leases(api: KubeApiServer) -> None:
    api._ok(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "capacityd-leases"},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "delete"],
                }
            ],
        },
    )
    api._ok(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "capacityd-leases"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "capacityd-leases"},
            "subjects": [{"kind": "User", "name": "capacityd", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )


def planner_loses_api(api: KubeApiServer, kubeconfig: Path) -> dict[str, Any]:
    config = ClusterConfig(role="planner", identity="inproc", lease_duration_seconds=LEASE, kubeconfig=kubeconfig)
    coordinator = Coordinator(config)
    cache = RoleExpositionCache(coordinator, Estate())
    coordinator.start(on_leader=lambda _leading: cache.regate())
    snapshot = collect_once(
        parse_config(
            {"sources": [{"kind": "libvirt", "name": "kvm", "uri": "test:///default", "cloud": "lab", "pool": "rack1"}]}
        )
    )
    wait_for(lambda: coordinator.plans, 20, "the in-process planner to lead")
    cache.update(snapshot)
    leading_body = cache.current.body.decode()
    apiserver = api.processes[-1]
    os.kill(apiserver.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(
            lambda: "capacity_resource_capacity{" not in cache.current.body.decode(),
            10,
            "the planner to drop its families",
            every=0.02,
        )
        dropped_after = time.monotonic() - stopped
    finally:
        os.kill(apiserver.pid, signal.SIGCONT)
    lost_body = cache.current.body.decode()
    wait_for(lambda: coordinator.plans, 20, "the planner to lead again once the API server is back")
    regained = "capacity_resource_capacity{" in cache.current.body.decode()
    coordinator.stop()
    return {
        "served_while_leading": "capacity_resource_capacity{" in leading_body
        and 'capacityd_leader{lease="capacityd-planner"} 1.0' in leading_body,
        "dropped_after_seconds": dropped_after,
        "renew_deadline": coordinator.elector.renew_deadline if coordinator.elector else None,
        "leader_gauge_after_loss": 'capacityd_leader{lease="capacityd-planner"} 0.0' in lost_body,
        "self_metrics_kept": "capacityd_source_up{" in lost_body,
        "regained": regained,
    }


def cluster_yaml(kubeconfig: Path, identity: str, role: str) -> str:
    return (
        f"  role: {role}\n  membership: lease\n  identity: {identity}\n  kubeconfig: {kubeconfig}\n"
        f"  lease_duration_seconds: {LEASE}"
    )


def planners(workdir: Path, kubeconfig: Path) -> dict[str, Any]:
    running = []
    try:
        for name in ("planner-a", "planner-b"):
            port = free_port()
            config = write_config(
                workdir / f"{name}.yaml", port, workdir / f"{name}-state", [], cluster_yaml(kubeconfig, name, "planner")
            )
            running.append(Collector(config, port, workdir / f"{name}.log").start())

        def leaders() -> list[int]:
            return [i for i, p in enumerate(running) if p.value("capacityd_leader") == 1.0]

        first = wait_for(lambda: leaders() if len(leaders()) == 1 else None, 30, "one planner to lead")
        # stays exactly one over a few lease renewals
        steady = []
        for _ in range(8):
            steady.append(len(leaders()))
            time.sleep(0.5)
        leader, standby = running[first[0]], running[1 - first[0]]
        leader.kill9()
        killed = time.monotonic()
        wait_for(lambda: standby.value("capacityd_leader") == 1.0, 30, "the standby to lead", every=0.1)
        return {"steady_leader_counts": steady, "takeover_seconds": time.monotonic() - killed}
    finally:
        for process in running:
            process.stop()


def lease_collectors(workdir: Path, kubeconfig: Path) -> dict[str, Any]:
    names = [f"h{i:02d}" for i in range(TARGETS)]
    identities = ["collector-0", "collector-1", "collector-2"]
    running: list[Collector] = []
    try:
        for identity in identities:
            port = free_port()
            config = write_config(
                workdir / f"{identity}.yaml",
                port,
                workdir / f"{identity}-state",
                libvirt_sources(TARGETS, "1s"),
                cluster_yaml(kubeconfig, identity, "collector"),
            )
            running.append(Collector(config, port, workdir / f"{identity}.log").start(wait=False))
        port = free_port()  # a planner that finds the collectors through their Leases
        config = write_config(
            workdir / "puller.yaml",
            port,
            workdir / "puller-state",
            [],
            cluster_yaml(kubeconfig, "puller", "planner") + "\n  pull_interval_seconds: 1",
        )
        planner = Collector(config, port, workdir / "puller.log").start(wait=False)
        for process in [*running, planner]:
            wait_for(process.answers, 60, "a collector or the planner to serve")
        expected = assign(names, identities)

        def planner_sees_all_up() -> bool:
            up = planner.samples("capacityd_source_up")
            return sorted(dict(k)["source"] for k, v in up.items() if v == 1.0) == names

        def split_as_expected(procs: list[Collector], members: list[str]) -> bool:
            want = assign(names, members)
            return all(
                set(p.polls()) == {n for n, m in want.items() if m == ident}
                for p, ident in zip(procs, members, strict=True)
            )

        wait_for(lambda: split_as_expected(running, identities), 60, "the three-way split")
        wait_for(planner_sees_all_up, 30, "the planner to pull every target from the collectors' Leases")
        victim = running[1]
        victim_targets = sorted(n for n, m in expected.items() if m == "collector-1")
        survivors = [running[0], running[2]]
        baseline = [p.polls() for p in survivors]
        victim.kill9()
        killed = time.monotonic()

        def taken_over() -> bool:
            now = [p.polls() for p in survivors]
            return all(
                any(n in s and s[n] > b.get(n, 0) for s, b in zip(now, baseline, strict=True)) for n in victim_targets
            )

        wait_for(taken_over, 30, "the survivors to poll the dead collector's targets", every=0.1)
        takeover = time.monotonic() - killed
        wait_for(planner_sees_all_up, 30, "the planner to see every target up again", every=0.1)
        planner_recovered = time.monotonic() - killed
        planner_capacity = sum(
            v for k, v in planner.samples("capacity_resource_capacity").items() if dict(k).get("resource") == "cpu"
        )
        wait_for(lambda: all(p.value("capacityd_shard_members") == 2.0 for p in survivors), 10, "2 members")
        # after the move: every target's polls grow on exactly one survivor
        before = [p.polls() for p in survivors]
        time.sleep(4)
        after = [p.polls() for p in survivors]
        owners = {n: [i for i in (0, 1) if after[i].get(n, 0) > before[i].get(n, 0)] for n in names}
        return {
            "victim_targets": victim_targets,
            "takeover_seconds": takeover,
            "planner_recovered_seconds": planner_recovered,
            "planner_cpu_capacity": planner_capacity,
            "owners_after": owners,
            "expected_after": assign(names, ["collector-0", "collector-2"]),
        }
    finally:
        for process in running:
            process.stop()
        if "planner" in locals():
            planner.stop()


def main(workdir: Path) -> dict[str, Any]:
    with KubeApiServer(workdir / "api") as api:
        api.start(kubelets={})
        grant_leases(api)
        kubeconfig = api.kubeconfig("collector-token")
        return {
            "lease": LEASE,
            "inproc": planner_loses_api(api, kubeconfig),
            "planners": planners(workdir, kubeconfig),
            "collectors": lease_collectors(workdir, kubeconfig),
        }


if __name__ == "__main__":
    try:
        result = main(Path(sys.argv[1]))
    except Exception:  # noqa: BLE001 - reported to the test as JSON
        result = {"error": traceback.format_exc()}
    print(json.dumps(result))

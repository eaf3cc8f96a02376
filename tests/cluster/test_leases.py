"""Lease membership and planner leader election against the REAL kube-apiserver 1.20 (coordination.k8s.io/v1).

The body (lease_body.py) runs in a private network namespace started with `unshare -n`, like the
Kubernetes e2e test, and prints its observations as JSON. Needs root and the provisioned cache; when
they are missing the test FAILS with the command that fixes it.
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

SLACK = 2.0  # scrape polling + two retry periods (lease/5) + a loaded 2-core machine


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binaries()
    assert os.geteuid() == 0 and shutil.which("unshare"), "the Lease tests need root and unshare (util-linux)"
    workdir: Path = tmp_path_factory.mktemp("leases")
    done = run_in_private_netns("tests.cluster.lease_body", [str(workdir)], timeout=400)
    lines = done.stdout.strip().splitlines()
    assert lines, f"lease body printed nothing (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, result.get("error")
    print(json.dumps(result, indent=1))
    return result


def test_a_planner_cut_off_stops_serving_before_a_standby_may_lead(observed: dict[str, Any]) -> None:
    inproc = observed["inproc"]
    assert inproc["served_while_leading"]
    # it drops its families by its own clock, before the lease (3 s) could expire for anyone else
    assert inproc["dropped_after_seconds"] < observed["lease"]
    assert inproc["dropped_after_seconds"] <= inproc["renew_deadline"] + 0.5
    assert inproc["leader_gauge_after_loss"] and inproc["self_metrics_kept"]
    assert inproc["regained"]


def test_exactly_one_planner_leads_and_the_standby_takes_over(observed: dict[str, Any]) -> None:
    planners = observed["planners"]
    assert planners["steady_leader_counts"] == [1] * len(planners["steady_leader_counts"])
    assert planners["takeover_seconds"] <= observed["lease"] + SLACK


def test_a_dead_collectors_targets_move_to_the_survivors(observed: dict[str, Any]) -> None:
    collectors = observed["collectors"]
    assert collectors["victim_targets"]
    assert collectors["takeover_seconds"] <= observed["lease"] + SLACK
    # the planner found the collectors through their Leases' snapshot URLs, before and after the move
    assert collectors["planner_recovered_seconds"] <= observed["lease"] + SLACK + 2  # + one pull interval
    assert collectors["planner_cpu_capacity"] > 0
    expected = collectors["expected_after"]
    index = {"collector-0": 0, "collector-2": 1}
    assert collectors["owners_after"] == {name: [index[member]] for name, member in expected.items()}

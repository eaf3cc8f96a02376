"""The headroom analysis in the daemon's pipeline: registered, valid frames, /metrics families, JSON."""

from __future__ import annotations

import math

import orjson
from prometheus_client.parser import text_string_to_metric_families

from collector.analyses.registry import ANALYSES, AnalysisContext, load_builtin_analyses, run_analyses
from collector.app.commands.core import frames_to_json
from collector.app.config import parse_config
from collector.estate import Snapshot
from exporters.prometheus.exposition import load_builtin_family_modules, render
from tests.headroom.builder import GIB, NOW, Estate, inv

LARGE = {"vcpu": 4.0, "memory": 8 * GIB}


def snapshot_frames() -> dict:
    e = Estate()
    for name in ("cmp1", "cmp2"):
        e.host(name, resources={"vcpu": inv(16, ratio=4.0), "memory": inv(64 * GIB)})
    for i in range(3):
        e.consumer(f"vm{i}", "cmp1", LARGE, flavor="m1.large")
    e.flavor("m1.large", LARGE)
    return e.frames()


def test_analysis_is_registered_and_its_frames_reach_metrics_and_json() -> None:
    load_builtin_analyses()
    assert "headroom" in ANALYSES and not ANALYSES["headroom"].expensive
    frames = snapshot_frames()
    config = parse_config({})
    context = AnalysisContext(now=NOW, frames=frames, history=None, config=config)
    derived, errors = run_analyses(context, expensive=False)
    assert "headroom" not in errors, errors
    assert {"headroom", "headroom_hosts"} <= set(derived) and "reclaimable" not in derived
    assert "reclaimable" in ANALYSES and ANALYSES["reclaimable"].expensive
    expensive, errors = run_analyses(context, expensive=True)
    assert "reclaimable" not in errors, errors
    derived.update(expensive)
    assert derived["reclaimable"].empty  # no history: nothing claimed
    load_builtin_family_modules()
    text = render(Snapshot(taken_at=NOW, frames={**frames, **derived}, statuses=())).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    slots = {(s.labels["pool_kind"], s.labels["pool"]): s.value for s in families["capacity_headroom_slots"].samples}
    # cmp1: 64 - 24 GiB = 40 -> 5; cmp2: 8 -> 13 in az1 and in the cloud
    assert slots == {("az", "az1"): 13.0, ("cloud", "c1"): 13.0}
    after = families["capacity_headroom_slots_after_failure"].samples
    # lose cmp2: 5 left; lose cmp1: 3 VMs onto cmp2 -> 8 - 3 = 5. Tie: first name, cmp1.
    assert {(s.labels["pool"], s.labels["failure_domain"], s.value) for s in after} == {
        ("az1", "cmp1", 5.0),
        ("c1", "cmp1", 5.0),
    }
    hosts = {s.labels["host"]: s.value for s in families["capacity_headroom_host_slots"].samples}
    assert hosts == {"cmp1": 5.0, "cmp2": 8.0}
    assert "capacity_reclaimable" in families and not families["capacity_reclaimable"].samples
    document = orjson.loads(frames_to_json({**frames, **derived}))
    rows = {(r["pool_kind"], r["shape"]): r for r in document["headroom"]}
    assert rows[("az", "m1.large")]["slots"] == 13 and rows[("az", "m1.large")]["failure_domain"] == "cmp1"


def test_per_host_family_is_left_out_beyond_the_limit() -> None:
    frames = snapshot_frames()
    config = parse_config({"headroom": {"host_metrics_limit": 1}})
    derived, errors = run_analyses(
        AnalysisContext(now=NOW, frames=frames, history=None, config=config), expensive=False
    )
    assert not errors
    assert derived["headroom_hosts"].empty  # the analysis applies the limit: no module-global setting
    load_builtin_family_modules()
    text = render(Snapshot(taken_at=NOW, frames={**frames, **derived}, statuses=())).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert not families["capacity_headroom_host_slots"].samples
    assert families["capacity_headroom_slots"].samples


def test_not_computed_failure_is_absent_not_zero() -> None:
    frames = snapshot_frames()
    config = parse_config({"headroom": {"n_plus_one": False}})
    derived, _ = run_analyses(AnalysisContext(now=NOW, frames=frames, history=None, config=config), expensive=False)
    assert derived["headroom"]["slots_after_failure"].map(math.isnan).all()
    load_builtin_family_modules()
    text = render(Snapshot(taken_at=NOW, frames={**frames, **derived}, statuses=())).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert not families["capacity_headroom_slots_after_failure"].samples

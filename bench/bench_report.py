"""The report analysis at scale: what the `report` analysis adds to each refresh of the daemon.

    .venv/bin/python bench/bench_report.py [--runs 5]

On bench_headroom.py's estates (2,000 compute hosts with 40,000 VMs; 5,000 nodes with 150,000 pods),
prints the median of several runs of `collector.analyses.report.current_figures` (urgency bands,
pool totals, headroom ahead; one default report and two configured ones) next to the baseline
measured in the same run: `compute_headroom` without N+1, the cheapest analysis the same refresh
already runs. No history (the week-on-week read is one indexed range query of the store).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_headroom import NOW, kubernetes_estate, openstack_estate, timed
from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.report import ReportSpec, current_figures, specs_of
from collector.app.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    specs = [*specs_of([]), ReportSpec(name="strict", red_days=60, amber_days=120), ReportSpec(name="top3", top_n=3)]
    no_failure = Config(headroom=HeadroomConfig(n_plus_one=False))
    shapes = {f"s{i}": {"cpu": f"{(i % 4 + 1) * 250}m", "memory": f"{(i % 3 + 1) * 512}Mi"} for i in range(5)}
    k8s_config = Config.model_validate({"shapes": shapes, "headroom": {"common_shapes": 5, "n_plus_one": False}})
    for name, frames, config in (
        ("openstack, 2,000 hosts, 40,000 VMs", openstack_estate(), no_failure),
        ("kubernetes, 5,000 nodes, 150,000 pods", kubernetes_estate(), k8s_config),
    ):
        derived = compute_headroom(frames, config, NOW)
        frames = {**frames, "headroom": derived.headroom}
        baseline = timed(lambda frames=frames, config=config: compute_headroom(frames, config, NOW), args.runs)
        figures = timed(lambda frames=frames: current_figures(frames, None, NOW, specs), args.runs)
        pools = current_figures(frames, None, NOW, specs)["report_pools"]
        print(f"{name}: {len(pools)} report_pools rows ({len(specs)} reports)")
        print(f"  report analysis (current_figures)        {figures * 1000:9.1f} ms (median of {args.runs})")
        print(f"  baseline: headroom without N+1, same run {baseline * 1000:9.1f} ms (median of {args.runs})")
        print(f"  ratio report / baseline: {figures / baseline:.2f}")


if __name__ == "__main__":
    main()

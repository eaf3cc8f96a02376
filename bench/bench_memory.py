"""Memory per forecast pass: the daemon's allocator settings against Python's and glibc's defaults, in the same run.

The soak (bench_soak.py) runs a forecast pass every 15 minutes, four in an hour; what each pass leaves behind is
easier to see here, where the daemon's expensive analyses (forecast, reclaimable, report figures) run back to back
on the soak's estate (the demo's hypervisors, cloud and cluster stand-ins, served from this process) and its store
prefilled with the demo's eight weeks. Each variant runs in a fresh interpreter, since the allocator is chosen at
start:

    defaults   pymalloc, glibc's dynamic mmap/trim thresholds, arenas unbounded (Python and glibc as shipped)
    arenas     pymalloc, two arenas, dynamic thresholds: the daemon's settings before PYTHONMALLOC=malloc
    capacityd  PYTHONMALLOC=malloc, two arenas, thresholds pinned at 128 KiB (collector/app/memory.py)

Every pass is followed by `malloc_trim(0)`, as in the daemon. Printed per variant (median of --runs runs): RSS after
the first pass, the growth from there to the last pass, the least-squares slope per pass, and the median pass time;
then the ratio of each variant's growth and pass time to the daemon's.

    .venv/bin/python bench/bench_memory.py --passes 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {"env": {"PYTHONMALLOC": "pymalloc"}, "arenas": False, "pin": False},
    "arenas": {"env": {"PYTHONMALLOC": "pymalloc"}, "arenas": True, "pin": False},
    "capacityd": {"env": {"PYTHONMALLOC": "malloc"}, "arenas": True, "pin": True},
}
"""Allocator settings compared; the environment is the only way to choose Python's allocator."""
ALLOCATOR_VARIABLES = ("PYTHONMALLOC", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def child(config_path: Path, passes: int, arenas: bool, pin: bool) -> None:
    """In a fresh interpreter: poll the estate once, then run the expensive analyses `passes` times; one JSON line
    per pass (RSS after the pass and its trim, seconds)."""
    from collector.analyses.registry import AnalysisContext, run_analyses
    from collector.app import memory
    from collector.app.config import load_config
    from collector.app.daemon import collect_once, open_history

    if arenas:
        memory.bound_arenas()
    if pin:
        memory.pin_thresholds()
    config = load_config(config_path)
    history = open_history(config)
    snapshot = collect_once(config, history=history, analyses=False)
    for _ in range(passes):
        started = time.perf_counter()
        context = AnalysisContext(now=snapshot.taken_at, frames=snapshot.frames, history=history, config=config)
        frames, errors = run_analyses(context, expensive=True)
        if errors:
            raise SystemExit(f"analyses failed: {errors}")
        del frames, context
        seconds = time.perf_counter() - started
        memory.trim("pass")
        print(json.dumps({"rss": memory.rss_bytes(), "seconds": seconds}), flush=True)


def slope(values: list[float]) -> float:
    """Least-squares slope of `values` against their index (per pass)."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    denominator = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / denominator if denominator else 0.0


def run_variant(name: str, config_path: Path, passes: int) -> dict[str, float]:
    variant = VARIANTS[name]
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES} | variant["env"]
    command = [sys.executable, __file__, "--child", str(config_path), "--passes", str(passes)]
    command += ["--arenas"] if variant["arenas"] else []
    command += ["--pin"] if variant["pin"] else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    rss = [row["rss"] / 2**20 for row in rows]
    return {
        "first": rss[0],
        "growth": rss[-1] - rss[0],
        "slope": slope(rss),
        "seconds": statistics.median(row["seconds"] for row in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=20, help="expensive passes per run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; medians printed (default %(default)s)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--arenas", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.passes, args.arenas, args.pin)
        return 0

    from bench_soak import Soak

    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="capacityd-memory-") as tmp:
        soak = Soak(Path(tmp))  # the soak's estate and prefilled store; its daemon is not started
        try:
            for run in range(args.runs):
                for name in VARIANTS:  # interleaved, so that load drifting during the run hits every variant
                    results[name].append(run_variant(name, soak.config_path, args.passes))
                    figures = results[name][-1]
                    print(
                        f"  run {run + 1} {name:<9}: RSS {figures['first']:.1f} MiB after pass 1, "
                        f"{figures['growth']:+.1f} MiB by pass {args.passes}",
                        file=sys.stderr,
                    )
        finally:
            soak.close()
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()
    }
    print(f"{args.passes} expensive passes in a row on the demo estate (prefilled 8 weeks), median of {args.runs} runs")
    print(f"{'variant':<10} {'RSS pass 1':>11} {'growth':>10} {'per pass':>10} {'pass s':>7}")
    for name, m in medians.items():
        print(
            f"{name:<10} {m['first']:>7.1f} MiB {m['growth']:>+6.1f} MiB {m['slope']:>+6.2f} MiB {m['seconds']:>7.2f}"
        )
    ours = medians["capacityd"]
    for name, m in medians.items():
        if name == "capacityd":
            continue
        ratio = m["slope"] / ours["slope"] if ours["slope"] > 0 else float("inf")
        print(
            f"{name} vs capacityd: growth per pass {m['slope']:+.2f} vs {ours['slope']:+.2f} MiB "
            f"(x{ratio:.1f}), pass time x{m['seconds'] / ours['seconds']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Kubernetes source at scale: one full poll of 5,000 nodes and 150,000 pods on the stand-in API server.

    .venv/bin/python bench/bench_kubernetes.py [--nodes 5000] [--pods 150000] [--runs 3] [--model-runs 1]

The stand-in kube-apiserver (collector/demo/standins/kubernetes.py) runs in its own process with a
synthetic OpenStack-backed cluster (3 node pools; deployments, statefulsets, daemonsets, finished jobs,
sidecars and init containers). Each measurement is a fresh subprocess, so its peak RSS is honest:

* `capacityd`: `KubernetesSource.poll()` — paginated LISTs decoded from raw JSON (`_preload_content=False`,
  orjson) into compact tables, 5,000 kubelet `/metrics/resource` scrapes through the node proxy
  (16 in parallel), and the capacity / consumers / hosts frames;
* `client models` (baseline, same run): the same poll, except that the lists go through the
  `kubernetes` client's model objects (`V1PodList` ...), turned back into dicts for the same tables
  — what a collector written the obvious way pays. It is also paginated (page by page), so its RSS
  is a lower bound of the naive whole-list version. The models -> dicts step is timed separately and
  the speed-up is also given without it (the conservative figure the target is judged on).

CPU seconds (user + system of the polling process, poll only, imports excluded), wall seconds and
peak RSS are printed as medians. Targets (issue 4): <= 30 s CPU, <= 1.5 GB RSS, >= 4x faster than the
model path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(mode: str, kubeconfig: str, page_size: int) -> dict[str, Any]:
    """One poll in this (fresh) process; returns its costs."""
    from datetime import UTC, datetime

    from collector.sources.kubernetes import source as source_module
    from collector.sources.kubernetes.listing import ListStats
    from collector.sources.kubernetes.settings import KubernetesSourceConfig

    back_to_dicts = [0.0]  # model path: CPU spent turning models back into dicts (not the models' own cost)
    if mode == "model":
        def model_list_paged(call: Any, new_table: Any, *, page_size: int, timeout: float, what: str,
                             stats: ListStats | None = None) -> Any:
            table = new_table()
            sanitize = api_client.sanitize_for_serialization
            token = None

            def serialize(item: Any) -> Any:
                started = time.process_time()
                try:
                    return sanitize(item)
                finally:
                    back_to_dicts[0] += time.process_time() - started

            while True:
                kwargs: dict[str, Any] = {"limit": page_size, "_request_timeout": timeout}
                if token:
                    kwargs["_continue"] = token
                page = call(**kwargs)
                if stats is not None:
                    stats.pages += 1
                table.add([serialize(item) for item in page.items])
                token = page.metadata._continue
                if not token:
                    return table

        source_module.list_paged = model_list_paged  # type: ignore[assignment]

    config = KubernetesSourceConfig(kind="kubernetes", name="bench", kubeconfig=Path(kubeconfig),
                                    page_size=page_size, timeout="10m")
    src = source_module.KubernetesSource(config)
    api_client = src._connect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = src.poll(datetime.now(UTC))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    frames = result.frames
    return {
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "to_dicts": back_to_dicts[0],
        "wall": wall,
        "rss_mb": after.ru_maxrss / 1024,
        "nodes": len(frames["hosts"]),
        "pods": len(frames["consumers"]),
        "capacity_rows": len(frames["capacity"]),
        "with_usage": int(frames["consumers"]["memory_used"].notna().sum()),
        "skipped": dict(result.skipped),
        "api_calls": result.api_calls,
    }


def run_worker(mode: str, kubeconfig: str, page_size: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--kubeconfig", kubeconfig, "--page-size", str(page_size)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-runs", type=int, default=1, help="model-path runs (each takes minutes)")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--worker", choices=("fast", "model"))
    parser.add_argument("--kubeconfig")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.kubeconfig, args.page_size)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    print(f"starting the stand-in API server with {args.nodes} nodes and {args.pods} pods ...", flush=True)
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "collector.demo.standins.kubernetes", "--nodes", str(args.nodes),
         "--pods", str(args.pods), "--workdir", str(workdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        print(f"stand-in ready in {time.perf_counter() - started:.1f} s at {ready['url']}", flush=True)
        results: dict[str, list[dict[str, Any]]] = {"fast": [], "model": []}
        for mode, runs in (("fast", args.runs), ("model", args.model_runs)):
            for i in range(runs):
                figures = run_worker(mode, ready["kubeconfig"], args.page_size)
                results[mode].append(figures)
                print(f"  {mode} run {i + 1}: cpu {figures['cpu']:.1f} s, wall {figures['wall']:.1f} s, "
                      f"peak RSS {figures['rss_mb']:.0f} MB, {figures['nodes']} nodes, {figures['pods']} pods, "
                      f"{figures['with_usage']} pods with usage, skipped {figures['skipped']}", flush=True)
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    fast_cpu, model_cpu = med("fast", "cpu"), med("model", "cpu") if results["model"] else float("nan")
    print()
    print(f"Kubernetes poll, {args.nodes} nodes / {args.pods} pods, page size {args.page_size} "
          f"(median of {args.runs} / {args.model_runs} runs)")
    print(f"{'path':<44}{'CPU s':>10}{'wall s':>10}{'peak RSS MB':>14}")
    print(f"{'capacityd (raw JSON -> tables)':<44}{fast_cpu:>10.1f}{med('fast', 'wall'):>10.1f}"
          f"{med('fast', 'rss_mb'):>14.0f}")
    if results["model"]:
        models_only = statistics.median(r["cpu"] - r["to_dicts"] for r in results["model"])
        print(f"{'kubernetes client models':<44}{model_cpu:>10.1f}{med('model', 'wall'):>10.1f}"
              f"{med('model', 'rss_mb'):>14.0f}")
        print(f"{'  of which models -> dicts for the tables':<44}{med('model', 'to_dicts'):>10.1f}")
        memory_ratio = med("model", "rss_mb") / med("fast", "rss_mb")
        print(f"speed-up (CPU): {model_cpu / fast_cpu:.1f}x; without the models -> dicts step: "
              f"{models_only / fast_cpu:.1f}x   memory: {memory_ratio:.1f}x")
        model_cpu = models_only  # the target is judged on the conservative figure
    verdict = [f"CPU {'OK' if fast_cpu <= 30 else 'OVER'} (<= 30 s)",
               f"RSS {'OK' if med('fast', 'rss_mb') <= 1536 else 'OVER'} (<= 1.5 GB)"]
    if results["model"]:
        verdict.append(f"ratio {'OK' if model_cpu / fast_cpu >= 4 else 'UNDER'} (>= 4x)")
    print("targets: " + ", ".join(verdict))


if __name__ == "__main__":
    main()

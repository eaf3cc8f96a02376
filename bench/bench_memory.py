"""Memory per forecast pass: the daemon's allocator settings against Python's and glibc's defaults, in the same run.

The soak (bench_soak.py) runs a forecast pass every 15 minutes, four in an hour; what each pass leaves behind is
easier to see here, where the daemon's expensive analyses (forecast, reclaimable, report figures) run back to back
on the soak's estate (the demo's hypervisors, cloud and cluster stand-ins, served from this process) and its store
prefilled with the demo's eight weeks. Each variant runs in a fresh interpreter, since the allocator is chosen at
start:

    defaults   pymalloc, glibc's dynamic mmap/trim thresholds, arenas unbounded (Python and glibc as shipped)
    arenas     pymalloc, two arenas, dynamic thresholds: the daemon's settings before PYTHONMALLOC=malloc
    inline     PYTHONMALLOC=malloc, two arenas, thresholds pinned at 128 KiB (collector/app/memory.py), the pass
               in the daemon's own process: the daemon before its worker process
    capacityd  inline's settings and glibc's per-thread caches off (GLIBC_TUNABLES=glibc.malloc.tcache_count=0),
               each pass in a fresh worker process (collector/app/worker.py), as the daemon runs it

The first three run the pass in the measured process; `capacityd` measures the process that starts the worker and
keeps the results, and prints the worker's peak RSS beside it. Every pass is followed by `malloc_trim(0)`, as in the
daemon. Printed per variant (median of --runs runs): RSS after
the first pass, the growth from there to the last pass, the least-squares slope per pass, and the median pass time
(for `capacityd`, the worker's start and imports included); then the ratio of each variant's growth and pass time to
the daemon's.

`--daemon-minutes M` runs the whole daemon instead (`Daemon.start()` in the child: polls every 15 s, history writes,
/metrics renders, trims), its forecast pass every `--pass-every` seconds instead of 15 minutes, each variant on its
own copy of the prefilled store, all variants at once: aging at 30x, to tell a heap that settles after some passes
from one that grows with every pass (the hour's soak sees four passes). RSS is read after every pass.

    .venv/bin/python bench/bench_memory.py --passes 20 --runs 3
    .venv/bin/python bench/bench_memory.py --daemon-minutes 30 --pass-every 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector.app.memory import ALLOCATOR_ENVIRONMENT, startup_environment

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {"env": {"PYTHONMALLOC": "pymalloc"}, "arenas": False, "pin": False},
    "arenas": {"env": {"PYTHONMALLOC": "pymalloc"}, "arenas": True, "pin": False},
    "inline": {"env": {"PYTHONMALLOC": "malloc"}, "arenas": True, "pin": True},
    "capacityd": {"env": startup_environment({}), "arenas": True, "pin": True, "worker": True},
}
"""Allocator settings compared; the environment is the only way to choose Python's allocator."""


def child(config_path: Path, passes: int, arenas: bool, pin: bool, worker: bool) -> None:
    """In a fresh interpreter: poll the estate once, then run the expensive analyses `passes` times (here, or each
    in a worker process); one JSON line per pass (RSS after the pass and its trim, seconds, the worker's peak)."""
    from collector.analyses.registry import AnalysisContext, record_outcomes, run_analyses
    from collector.app import memory
    from collector.app.config import load_config
    from collector.app.daemon import collect_once, open_history
    from collector.app.worker import AnalysisWorker

    if arenas:
        memory.bound_arenas()
    if pin:
        memory.pin_thresholds()
    config = load_config(config_path)
    history = open_history(config)
    snapshot = collect_once(config, history=history, analyses=False)
    runner = AnalysisWorker() if worker else None
    for _ in range(passes):
        started = time.perf_counter()
        context = AnalysisContext(now=snapshot.taken_at, frames=snapshot.frames, history=history, config=config)
        if runner is not None:
            frames, errors = record_outcomes(runner.run(context, {}), None, context.now)
        else:
            frames, errors = run_analyses(context, expensive=True)
        if errors:
            raise SystemExit(f"analyses failed: {errors}")
        del frames, context
        seconds = time.perf_counter() - started
        memory.trim("pass")
        peak = runner.frame() if runner is not None else None
        worker_peak = float(peak["peak_resident_bytes"].iat[0]) if peak is not None else 0.0
        print(json.dumps({"rss": memory.rss_bytes(), "seconds": seconds, "worker_peak": worker_peak}), flush=True)


def daemon_child(config_path: Path, minutes: float, pass_every: float, arenas: bool, pin: bool, worker: bool) -> None:
    """In a fresh interpreter: the daemon itself, its forecast pass every `pass_every` s; one JSON line per pass."""
    from datetime import timedelta

    from collector.app import daemon as daemon_module
    from collector.app import memory
    from collector.app.config import load_config

    if not arenas:  # the variants without the daemon's settings: keep glibc's
        memory.bound_arenas = lambda *args, **kwargs: None
    if not pin:
        memory.pin_thresholds = lambda *args, **kwargs: False
    daemon_module.FORECAST_INTERVAL = timedelta(seconds=pass_every)
    daemon = daemon_module.Daemon(load_config(config_path), config_path=config_path)
    if not worker:  # the pass in the daemon's own process, as before the worker
        daemon.pipeline.worker = None
    job = daemon._forecast_job

    stopping = threading.Event()

    def timed_pass() -> None:
        started = time.perf_counter()
        job()  # the daemon's own pass, then its trim
        if not stopping.is_set():  # a pass cut short by the stop (history closed under it) is not a pass
            seconds = time.perf_counter() - started
            peak = daemon.worker.frame() if worker else None
            worker_peak = float(peak["peak_resident_bytes"].iat[0]) if peak is not None else 0.0
            print(json.dumps({"rss": memory.rss_bytes(), "seconds": seconds, "worker_peak": worker_peak}), flush=True)

    daemon._forecast_job = timed_pass  # type: ignore[method-assign]
    daemon.start()
    time.sleep(minutes * 60)
    stopping.set()
    daemon.stop()


def slope(values: list[float]) -> float:
    """Least-squares slope of `values` against their index (per pass)."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    denominator = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / denominator if denominator else 0.0


def log_of(name: str, config_path: Path) -> Path:
    return config_path.parent / f"memory-{name}.log"


def start_variant(name: str, config_path: Path, child_args: list[str]) -> subprocess.Popen[str]:
    """A variant's child; its log goes to a file beside its config (a pipe left unread would stall it)."""
    variant = VARIANTS[name]
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENVIRONMENT} | variant["env"]
    command = [sys.executable, __file__, "--child", str(config_path), *child_args]
    command += ["--arenas"] if variant["arenas"] else []
    command += ["--pin"] if variant["pin"] else []
    command += ["--worker"] if variant.get("worker") else []
    with open(log_of(name, config_path), "w") as log:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)


def figures(name: str, process: subprocess.Popen[str], log: Path) -> dict[str, Any]:
    """Wait for a variant's child; its RSS after the first pass, growth to the last, slope per pass, pass time."""
    stdout, _ = process.communicate(timeout=7200)
    stderr = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{stderr[-3000:]}")
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if len(rows) < 2:
        raise SystemExit(f"variant {name}: fewer than two passes ran:\n{stderr[-3000:]}")
    rss = [row["rss"] / 2**20 for row in rows]
    return {
        "first": rss[0],
        "growth": rss[-1] - rss[0],
        "slope": slope(rss),
        "late_growth": rss[-1] - rss[len(rss) // 2],  # the second half of the passes: after warm-up
        "late_slope": slope(rss[len(rss) // 2 :]),
        "seconds": statistics.median(row["seconds"] for row in rows),
        "worker_peak": max(row.get("worker_peak", 0.0) for row in rows) / 2**20,
        "passes": len(rows),
        "trace": rss,
    }


def copy_for(config_path: Path, workdir: Path) -> Path:
    """The soak's config and prefilled store, copied under `workdir` with a port of its own."""
    import yaml

    from tests.faults.harness import free_port

    config = yaml.safe_load(config_path.read_text())
    shutil.copytree(config["state_dir"], workdir / "state")
    config["state_dir"], config["listen"] = str(workdir / "state"), f"127.0.0.1:{free_port()}"
    path = workdir / "capacityd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=20, help="expensive passes per run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; medians printed (default %(default)s)")
    parser.add_argument("--daemon-minutes", type=float, help="run the whole daemon this long per variant (see above)")
    parser.add_argument("--pass-every", type=float, default=30.0, help="with --daemon-minutes: seconds between passes")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--arenas", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.daemon_minutes:
            daemon_child(args.child, args.daemon_minutes, args.pass_every, args.arenas, args.pin, args.worker)
        else:
            child(args.child, args.passes, args.arenas, args.pin, args.worker)
        return 0

    from bench_soak import Soak

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="capacityd-memory-") as tmp:
        soak = Soak(Path(tmp))  # the soak's estate and prefilled store; its daemon is not started
        try:
            if args.daemon_minutes:  # every variant at once, each on its own copy of the store
                children = {}
                for name in VARIANTS:
                    config = copy_for(soak.config_path, Path(tmp) / name)
                    daemon_args = ["--daemon-minutes", str(args.daemon_minutes), "--pass-every", str(args.pass_every)]
                    children[name] = (start_variant(name, config, daemon_args), log_of(name, config))
                for name, (process, log) in children.items():
                    results[name].append(figures(name, process, log))
            for run in range(0 if args.daemon_minutes else args.runs):
                for name in VARIANTS:  # interleaved, so that load drifting during the run hits every variant
                    process = start_variant(name, soak.config_path, ["--passes", str(args.passes)])
                    results[name].append(figures(name, process, log_of(name, soak.config_path)))
                    last = results[name][-1]
                    print(
                        f"  run {run + 1} {name:<9}: RSS {last['first']:.1f} MiB after pass 1, "
                        f"{last['growth']:+.1f} MiB by pass {args.passes}",
                        file=sys.stderr,
                    )
        finally:
            soak.close()
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()
    }
    if args.daemon_minutes:
        passes = int(min(r["passes"] for runs in results.values() for r in runs))
        print(
            f"the daemon for {args.daemon_minutes:g} min per variant (all at once), a forecast pass every "
            f"{args.pass_every:g} s ({passes} passes), demo estate prefilled with 8 weeks"
        )
    else:
        print(f"{args.passes} passes in a row on the demo estate (prefilled 8 weeks), median of {args.runs} runs")
    print(f"{'':<10} {'RSS':>11} {'all passes':>21} {'second half of passes':>24}")
    print(
        f"{'variant':<10} {'pass 1':>11} {'growth':>10} {'per pass':>10} {'growth':>11} {'per pass':>12} {'pass s':>7}"
    )
    for name, m in medians.items():
        print(
            f"{name:<10} {m['first']:>7.1f} MiB {m['growth']:>+6.1f} MiB {m['slope']:>+6.2f} MiB "
            f"{m['late_growth']:>+7.1f} MiB {m['late_slope']:>+8.3f} MiB {m['seconds']:>7.2f}"
        )
    if args.daemon_minutes:  # the shape: settling or climbing
        for name, runs in results.items():
            trace = runs[0]["trace"]
            step = max(1, len(trace) // 10)
            marks = ", ".join(f"{i + 1}: {trace[i]:.1f}" for i in range(0, len(trace), step))
            print(f"{name} RSS (MiB) after pass  {marks}")
    if medians["capacityd"]["worker_peak"]:
        print(
            f"capacityd's worker: peak RSS {medians['capacityd']['worker_peak']:.1f} MiB (the largest of its passes, "
            "median of runs), for a moment each pass, beside the process measured above"
        )
    ours = medians["capacityd"]
    for name, m in medians.items():
        if name == "capacityd":
            continue
        print(
            f"{name} vs capacityd: growth per pass {m['slope']:+.2f} vs {ours['slope']:+.2f} MiB (second half "
            f"{m['late_slope']:+.3f} vs {ours['late_slope']:+.3f}), pass time x{m['seconds'] / ours['seconds']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

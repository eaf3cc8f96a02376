"""Scale-out sizing (issue 13): one collector's throughput, the planner's pass, and its remote-history read.

    .venv/bin/python bench/bench_scale.py [--quick] [--runs 3] [--sizes 1000,10000,100000]
                                          [--targets 100,300,1000] [--k8s-clusters 1,10,50] [--skip SECTIONS]

Sections, each with a baseline measured in the same run (medians of --runs where said):

1. Collector throughput, one run per size. A real `capacityd run --role collector` (bounded pool of
   `cluster.workers`) owns `--targets` libvirt test-driver targets (each its own source: the per-target cost the
   fleet pays per hypervisor), polled at RATE targets/s (interval = targets / RATE), writing every poll to a
   real VictoriaMetrics by remote write. Measured over two intervals from its own /metrics and /proc: targets
   polled per second, samples written per second, CPU per target poll, cores busy, peak RSS. Baseline: the same
   targets in one `--role all` process with the embedded store (today's single process: a thread per source,
   SQLite history); reference: the libvirt poll alone, in-process. Then the samples a big target puts through:
   one collector polling ONE OpenStack cloud of `--cloud-hosts` hypervisors (the Nova + Placement stand-in in
   its own process; every 20 s, 5 s up to 500 hosts), once: samples/s written and CPU per poll.
2. Planner pass at `--sizes` hypervisors' worth of estate, each size in its own child process (peak RSS is
   the child's): headroom with N+1 (OpenStack frames of 5,000-host clouds with 20 VMs per host, 30 flavors:
   the estate is split into clouds of 5,000 hosts, as estates that size are run; one pool of 100k hosts
   is bench_headroom.py's `--one-pool` case) and the forecast pass over the
   pool series such an estate gives: one pool per 20 hosts (a rack / aggregate) with 5 series (hypervisor CPU
   used; memory and disk allocated and used), i.e. 0.25 series per hypervisor, over the forecast's lookback
   (8 weeks hourly; 2 weeks with --quick). Baseline: the smallest size, so the ratio shows how it scales.
   Also the cost of handing the estate's frames to the daemon's analysis worker (collector/app/worker.py):
   their pickled size and the time to pickle and unpickle them, paid once per expensive pass.
3. Remote-history read of a forecast pass: `PromReader.pool_series` (what the forecast calls) over a
   VictoriaMetrics holding `--read-hosts` hosts x 3 resources hourly for `--read-days` days, pools of 20
   hosts; baseline: the embedded store's `pool_series` on the same polls. Per host series, so it can be
   extrapolated (the TSDB's `sum by` touches every host series of the range).

2b. Kubernetes: the planner's headroom with N+1 over `--k8s-clusters` clusters of 5,000 nodes / 150,000 pods
   (one run each, child processes; 50 such clusters are the issue's target).

--quick: 40 targets, a 300-host cloud, sizes 1,000 and 10,000 with 2 weeks of history, one cluster,
200 hosts x 7 days read (~1.5 min).
Prints the machine's load (`uptime`) before and after: figures on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_cluster import median_seconds  # noqa: E402

RATE = 20  # target polls per second asked of a collector: 6,000 targets at a 5-minute interval
HOSTS_PER_CLOUD = 5000
HOSTS_PER_POOL = 20
SERIES_PER_POOL = (
    ("cpu", "used"),
    ("memory", "allocated"),
    ("memory", "used"),
    ("disk", "allocated"),
    ("disk", "used"),
)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# -- 1. collector throughput ----------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _counters(process: Any) -> tuple[float, float, float]:
    polls = sum(process.samples("capacityd_source_polls_total").values())
    samples = sum(process.samples("capacityd_remote_storage_samples_total").values())
    assert process.process is not None
    return polls, samples, _cpu_seconds(process.process.pid)


def collector_run(
    workdir: Path, targets: int, window: float, role: str, write_url: str | None, interval: str = "1s"
) -> dict[str, float]:
    """One process polling `targets` libvirt targets every second for `window` seconds (after a warm-up)."""
    from tests.cluster.harness import Collector, free_port, libvirt_sources, wait_for, write_config

    port = free_port()
    cluster = "  role: collector\n  workers: 8" if role == "collector" else ""
    config = write_config(workdir / f"{role}.yaml", port, workdir / f"state-{role}", libvirt_sources(targets, interval),
                          cluster)  # fmt: skip
    if write_url:
        config.write_text(config.read_text() + f"history:\n  backend: remote\n  remote:\n    write_url: {write_url}\n")
    process = Collector(config, port, workdir / f"{role}.log").start()
    try:
        wait_for(lambda: len(process.samples("capacityd_source_up")) == targets, 60, "every target polled once")
        time.sleep(3)  # warm-up: connections open, label caches filled
        polls0, samples0, cpu0 = _counters(process)
        started = time.monotonic()
        time.sleep(window)
        polls1, samples1, cpu1 = _counters(process)
        elapsed = time.monotonic() - started
        assert process.process is not None
        rss = _peak_rss_mib(process.process.pid)
    finally:
        process.stop()
    polls = polls1 - polls0
    return {
        "targets_per_s": polls / elapsed,
        "samples_per_s": (samples1 - samples0) / elapsed,
        "cpu_ms_per_poll": 1000 * (cpu1 - cpu0) / max(polls, 1),
        "cpu_cores": (cpu1 - cpu0) / elapsed,
        "peak_rss_mib": rss,
    }


def _serve_cloud(hosts: int, clouds_yaml: str, pipe: Any) -> None:
    """Child process: the OpenStack stand-in with a synthetic cloud, so its CPU is not the collector's."""
    from collector.demo.standins.openstack import StandinServer, synthetic_cloud

    server = StandinServer(synthetic_cloud(hosts, 50)).start()
    server.write_clouds_yaml(Path(clouds_yaml), "bench")
    pipe.send("ready")
    pipe.recv()
    server.stop()


def cloud_run(workdir: Path, hosts: int, window: float, write_url: str, interval: int) -> dict[str, float]:
    """One collector polling ONE OpenStack cloud of `hosts` hypervisors every `interval` s: samples/s written."""
    import multiprocessing

    from tests.cluster.harness import Collector, free_port, wait_for, write_config
    from tests.faults.harness import openstack_source

    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    clouds_yaml = workdir / "clouds.yaml"
    server = ctx.Process(target=_serve_cloud, args=(hosts, str(clouds_yaml), theirs), daemon=True)
    server.start()
    process = None
    try:
        assert ours.poll(120), "the stand-in did not start"
        ours.recv()
        port = free_port()
        source = openstack_source("bench", clouds_yaml, "bench", f"{interval}s")
        config = write_config(workdir / "cloud.yaml", port, workdir / "state-cloud", [source], "  role: collector")
        config.write_text(config.read_text() + f"history:\n  backend: remote\n  remote:\n    write_url: {write_url}\n")
        process = Collector(config, port, workdir / "cloud.log").start()
        wait_for(lambda: process.value("capacityd_source_up") == 1.0, 120, "the cloud polled once")
        time.sleep(2)
        polls0, samples0, cpu0 = _counters(process)
        started = time.monotonic()
        time.sleep(window)
        polls1, samples1, cpu1 = _counters(process)
        elapsed = time.monotonic() - started
        duration = process.value("capacityd_source_poll_duration_seconds", source="bench") or float("nan")
        assert process.process is not None
        rss = _peak_rss_mib(process.process.pid)
    finally:
        if process is not None:
            process.stop()
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.terminate()
    polls = max(polls1 - polls0, 1)
    return {
        "samples_per_s": (samples1 - samples0) / elapsed,
        "samples_per_poll": (samples1 - samples0) / polls,
        "cpu_s_per_poll": (cpu1 - cpu0) / polls,
        "poll_duration_s": duration,
        "peak_rss_mib": rss,
    }


def collector_section(counts: list[int], window: float, cloud_hosts: int) -> None:
    from tests.remote.tsdb import victoria_metrics

    print(f"\n1. one collector process, libvirt test-driver targets polled at {RATE} targets/s (interval = "
          f"targets / {RATE} s), windows of two intervals (at least {window:.0f} s), one run per size")  # fmt: skip
    clouds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        vm = victoria_metrics(Path(tmp))
        try:
            for targets in counts:
                interval = f"{max(1, targets // RATE)}s"
                measured = {}
                for role in ("collector", "all"):
                    workdir = Path(tmp) / f"{role}-{targets}"
                    workdir.mkdir()
                    url = f"{vm.url}/api/v1/write" if role == "collector" else None
                    # two intervals: polls come in bursts (every target at start, then each interval + jitter)
                    span = max(window, 2 * max(1, targets // RATE))
                    measured[role] = collector_run(workdir, targets, span, role, url, interval)
                report_collector(targets, interval, measured["collector"], measured["all"])
            workdir = Path(tmp) / "cloud"
            workdir.mkdir()
            # a cold poll of 2,000 hosts outlasts a 5 s interval's timeout here: 2 polls' worth of window
            every = 5 if cloud_hosts <= 500 else 20
            clouds.append(cloud_run(workdir, cloud_hosts, 2.2 * every, f"{vm.url}/api/v1/write", every))
        finally:
            vm.stop()
    cloud = clouds[0]
    print(f"   one OpenStack cloud of {cloud_hosts:,} hypervisors (stand-in, 10 VMs/host) polled every {every} s "
          f"by a collector (one run): {cloud['samples_per_s']:8.0f} samples/s written "
          f"({cloud['samples_per_poll']:,.0f} per poll; CPU-bound at most "
          f"{cloud['samples_per_poll'] / cloud['cpu_s_per_poll']:,.0f}/s per core), "
          f"{cloud['cpu_s_per_poll']:.2f} s CPU per poll (poll + history + remote write), poll "
          f"{cloud['poll_duration_s']:.2f} s, peak RSS {cloud['peak_rss_mib']:.0f} MiB")  # fmt: skip
    print(f"   reference: one libvirt test-driver poll alone, in-process: {libvirt_poll_ms():.2f} ms CPU")


def report_collector(targets: int, interval: str, ours: dict[str, float], base: dict[str, float]) -> None:
    print(f"   {targets:>5} targets every {interval}: collector (remote write) {ours['targets_per_s']:6.1f} targets/s, "
          f"{ours['samples_per_s']:6.0f} samples/s written, {ours['cpu_ms_per_poll']:6.2f} ms CPU per target poll, "
          f"{ours['cpu_cores']:.2f} cores busy, peak RSS {ours['peak_rss_mib']:.0f} MiB "
          f"=> {300_000 / ours['cpu_ms_per_poll']:,.0f} targets per core at a 5-min interval")  # fmt: skip
    print(f"   {'':>5} baseline --role all (embedded store): {base['targets_per_s']:6.1f} targets/s, "
          f"{base['cpu_ms_per_poll']:6.2f} ms CPU per target poll, {base['cpu_cores']:.2f} cores busy, "
          f"peak RSS {base['peak_rss_mib']:.0f} MiB; ratio collector / all CPU per poll "
          f"{ours['cpu_ms_per_poll'] / base['cpu_ms_per_poll']:.2f}x")  # fmt: skip


def libvirt_poll_ms(count: int = 100, rounds: int = 3) -> float:
    """CPU of the source's poll alone (no daemon around it), for the per-poll overhead of a process."""
    from collector.app.config import parse_config
    from collector.sources import create_source

    config = parse_config({"sources": [{"kind": "libvirt", "name": f"h{i:03d}", "uri": "test:///default",
                                        "cloud": "lab", "pool": "r"} for i in range(count)]})  # fmt: skip
    sources = [create_source(c) for c in config.sources]
    now = datetime.now(UTC)
    for source in sources:
        source.poll(now)
    started = time.process_time()
    for _ in range(rounds):
        for source in sources:
            source.poll(now)
    spent = time.process_time() - started
    for source in sources:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return 1000 * spent / (rounds * count)


# -- 2. planner pass --------------------------------------------------------------------------------------------------


def estate_frames(hosts: int) -> dict[str, pd.DataFrame]:
    """OpenStack frames of `hosts` hypervisors as clouds of HOSTS_PER_CLOUD (one cloud built, then renamed)."""
    from bench_headroom import openstack_estate

    clouds = max(1, -(-hosts // HOSTS_PER_CLOUD))
    return replicate(openstack_estate(hosts=min(hosts, HOSTS_PER_CLOUD)), clouds)


def replicate(base: dict[str, pd.DataFrame], clouds: int) -> dict[str, pd.DataFrame]:
    """`clouds` renamed copies of one cloud's (or cluster's) frames: own cloud, source, host and consumer ids."""
    if clouds == 1:
        return base
    frames: dict[str, pd.DataFrame] = {}
    for name, frame in base.items():
        parts = []
        for c in range(clouds):
            part = frame.copy()
            part["cloud"] = f"c{c + 1}"
            part["source"] = f"os{c + 1}"
            if "host" in part.columns:
                part["host"] = part["host"].astype(str) + f"-c{c}"
            if "id" in part.columns:
                part["id"] = part["id"].astype(str) + f"-c{c}"
            parts.append(part)
        frames[name] = pd.concat(parts, ignore_index=True)
    return frames


def pool_series_frame(hosts: int, days: int, now: datetime) -> pd.DataFrame:
    """The forecast's input for `hosts` hypervisors: SERIES_PER_POOL per pool of HOSTS_PER_POOL, hourly, growing."""
    from collector.analyses.forecast.api import INPUT_COLUMNS

    pools = max(1, hosts // HOSTS_PER_POOL)
    hours = days * 24
    rng = np.random.default_rng(3)
    end = pd.Timestamp(now).floor("h")
    stamps = pd.date_range(end=end - pd.Timedelta(hours=1), periods=hours, freq="h", tz="UTC")
    t = np.arange(hours) / hours
    keys, values, limits = [], [], []
    for p in range(pools):
        for kind, basis in SERIES_PER_POOL:
            limit = 20 * 512.0 if kind != "cpu" else 20 * 64.0
            start, slope = rng.uniform(0.3, 0.6), rng.uniform(0.0, 0.3)
            daily = 0.05 * np.sin(2 * np.pi * np.arange(hours) / 24 + rng.uniform(0, 6))
            values.append(limit * (start + slope * t + daily + rng.normal(0, 0.01, hours)))
            limits.append(np.full(hours, limit))
            cloud = f"c{p * HOSTS_PER_POOL // HOSTS_PER_CLOUD + 1}"
            keys.append(("hypervisor", cloud, f"rack{p:05d}", kind, basis))
    n = len(keys)
    frame = pd.DataFrame(
        {
            **{
                column: pd.Categorical(np.repeat([k[i] for k in keys], hours))
                for i, column in enumerate(["layer", "cloud", "pool", "resource", "basis"])
            },
            "timestamp": np.tile(stamps.to_numpy(), n),
            "value": np.concatenate(values),
            "limit": np.concatenate(limits),
        }
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame[INPUT_COLUMNS]


def planner_child(hosts: int, days: int) -> None:
    """Runs in a child: prints one JSON line with the pass's parts and the peak RSS."""
    from collector.analyses.forecast.api import forecast_series
    from collector.analyses.headroom import compute_headroom
    from collector.app.config import Config

    now = datetime(2026, 11, 26, tzinfo=UTC)
    started = time.perf_counter()
    frames = estate_frames(hosts)
    built = time.perf_counter() - started
    vms = len(frames["consumers"])
    started = time.perf_counter()  # the daemon hands these frames to its analysis worker each pass, and back
    job = pickle.dumps(frames, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(job)
    handoff_s, job_mib = time.perf_counter() - started, len(job) / 2**20
    del job
    started = time.perf_counter()
    headroom = compute_headroom(frames, Config(), pd.Timestamp(now).as_unit("ns"))
    headroom_s = time.perf_counter() - started
    rows = len(headroom.headroom)
    del headroom
    from collector.analyses.headroom.settings import HeadroomConfig

    started = time.perf_counter()  # a refresh between two N+1 runs (headroom.failure_interval set)
    compute_headroom(frames, Config(headroom=HeadroomConfig(n_plus_one=False)), pd.Timestamp(now).as_unit("ns"))
    no_failure_s = time.perf_counter() - started
    del frames
    series = pool_series_frame(hosts, days, now)
    started = time.perf_counter()
    forecast, _points = forecast_series(series, now=now)
    forecast_s = time.perf_counter() - started
    print(json.dumps({
        "hosts": hosts, "clouds": max(1, -(-hosts // HOSTS_PER_CLOUD)), "build_s": built, "headroom_s": headroom_s,
        "no_failure_s": no_failure_s, "headroom_rows": rows, "vms": vms, "series": len(forecast),
        "forecast_s": forecast_s, "handoff_s": handoff_s, "job_mib": job_mib,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }))  # fmt: skip


def k8s_child(clusters: int) -> None:
    """Runs in a child: headroom with N+1 of `clusters` clusters of 5,000 nodes / 150,000 pods; one JSON line."""
    from bench_headroom import kubernetes_estate

    from collector.analyses.headroom import compute_headroom
    from collector.app.config import Config

    shapes = {f"s{i}": {"cpu": f"{(i % 4 + 1) * 250}m", "memory": f"{(i % 3 + 1) * 512}Mi"} for i in range(5)}
    config = Config.model_validate({"shapes": shapes, "headroom": {"common_shapes": 5}})
    frames = replicate(kubernetes_estate(nodes=5000, pods=150_000), clusters)
    started = time.perf_counter()
    report = compute_headroom(frames, config, pd.Timestamp(datetime(2026, 11, 26, tzinfo=UTC)).as_unit("ns"))
    print(json.dumps({
        "clusters": clusters, "pods": len(frames["consumers"]), "headroom_s": time.perf_counter() - started,
        "rows": len(report.headroom), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }))  # fmt: skip


def k8s_section(counts: list[int]) -> None:
    print("\n2b. planner headroom + N+1 over Kubernetes clusters of 5,000 nodes / 150,000 pods (10 shapes), "
          "one run each, in a child process")  # fmt: skip
    first: dict[str, float] | None = None
    for clusters in counts:
        done = subprocess.run([sys.executable, __file__, "--child-k8s", str(clusters)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            print(f"   {clusters} cluster(s): FAILED (exit {done.returncode}): {done.stderr.strip()[-600:]}")
            continue
        m = json.loads(done.stdout.strip().splitlines()[-1])
        first = first or m
        print(f"   {clusters:>3} cluster(s), {m['pods']:,} pods: headroom+N+1 {m['headroom_s']:7.2f} s, peak RSS "
              f"{m['peak_rss_gib']:.2f} GiB; vs {first['clusters']}: {m['headroom_s'] / first['headroom_s']:.1f}x "
              f"time for {clusters / first['clusters']:.0f}x clusters")  # fmt: skip


def planner_section(sizes: list[int], days: int, runs: int) -> dict[int, dict[str, float]]:
    print(f"\n2. planner pass (headroom + N+1, forecasts over {days} days hourly), each size in a child process, "
          f"median of {runs} (1 run from 50,000 hypervisors)")  # fmt: skip
    results: dict[int, dict[str, float]] = {}
    for hosts in sizes:
        measured = []
        size_runs = runs if hosts < 50_000 else 1  # one 100k pass takes minutes: one run, said so below
        for _ in range(size_runs):
            done = subprocess.run([sys.executable, __file__, "--child-planner", str(hosts), str(days)],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            if done.returncode != 0:
                reason = "killed (out of memory?)" if done.returncode < 0 else done.stderr.strip()[-600:]
                print(f"   {hosts:>7,} hypervisors: FAILED (exit {done.returncode}): {reason}")
                break
            measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if not measured:
            continue
        m = {k: statistics.median(r[k] for r in measured) for k in measured[0]}
        results[hosts] = m
        base = results.get(sizes[0], m)
        total, base_total = m["headroom_s"] + m["forecast_s"], base["headroom_s"] + base["forecast_s"]
        print(f"   {hosts:>7,} hypervisors ({m['clouds']:.0f} cloud(s), {m['vms']:,.0f} VMs, {m['series']:,.0f} pool "
              f"series): headroom+N+1 {m['headroom_s']:7.2f} s (without N+1 {m['no_failure_s']:.2f} s), "
              f"forecasts {m['forecast_s']:7.2f} s, pass "
              f"{total:7.2f} s, peak RSS {m['peak_rss_gib']:.2f} GiB, frames to the worker {m['job_mib']:.0f} MiB "
              f"pickled+unpickled in {m['handoff_s']:.2f} s; vs {sizes[0]:,}: {total / base_total:6.1f}x "
              f"time for {hosts / sizes[0]:.0f}x hosts ({len(measured)} run(s))")  # fmt: skip
    return results


# -- 3. remote-history read of a forecast pass ---------------------------------------------------------------------


def read_section(hosts: int, days: int, runs: int) -> dict[str, float]:
    from collector.store.history import History
    from collector.store.remote.client import RemoteWriter
    from collector.store.remote.promql import PromReader
    from collector.store.remote.samples import SeriesEncoder
    from collector.store.settings import HistoryConfig, RemoteHistoryConfig
    from tests.history.frames import capacity_frame
    from tests.remote.tsdb import flush, victoria_metrics

    pools = tuple(f"rack{i:04d}" for i in range(max(1, hosts // HOSTS_PER_POOL)))
    resources = ("cpu", "memory", "disk")
    print(f"\n3. remote-history read of a forecast pass: {hosts:,} hosts x {len(resources)} resources, pools of "
          f"{HOSTS_PER_POOL}, {days} days hourly, median of {runs}")  # fmt: skip
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    with tempfile.TemporaryDirectory() as tmp:
        vm = victoria_metrics(Path(tmp))
        history = History.open(Path(tmp) / "state", HistoryConfig())
        try:
            writer = RemoteWriter(RemoteHistoryConfig(write_url=f"{vm.url}/api/v1/write", max_retries=2))
            encoder = SeriesEncoder()
            template = capacity_frame(start, pools=pools, hosts_per_pool=HOSTS_PER_POOL, resources=resources)
            written = 0
            began = time.perf_counter()
            for hour in range(days * 24):
                at = start + timedelta(hours=hour)
                poll = template.assign(timestamp=pd.Timestamp(at).as_unit("ns"),
                                       allocated=template["allocated"] * (1 + hour / 5000))  # fmt: skip
                series, samples = encoder.encode("kvm", poll, at)
                assert writer.write(series, samples)
                written += samples
                history.append("kvm", {"capacity": poll}, at)
            history.flush()
            flush(vm)
            fill = time.perf_counter() - began
            reader = PromReader(RemoteHistoryConfig(write_url=f"{vm.url}/api/v1/write"))
            step = timedelta(hours=1)
            rows = len(reader.pool_series(start=start, end=end, step=step))
            remote = median_seconds(lambda: reader.pool_series(start=start, end=end, step=step), runs)
            local = median_seconds(lambda: history.pool_series(start=start, end=end, step=step), runs)
            week = end - timedelta(days=min(7, days))
            remote_week = median_seconds(lambda: reader.pool_series(start=week, end=end, step=step), runs)
        finally:
            history.close()
            vm.stop()
    host_series = hosts * len(resources)
    print(f"   filled {written:,} samples into VictoriaMetrics (and the embedded store) in {fill:.1f} s")
    print(f"   PromReader.pool_series: {remote:.2f} s ({rows:,} rows: {len(pools) * len(resources)} pool series), "
          f"{1e3 * remote / host_series:.3f} ms per host series")  # fmt: skip
    print(f"   the same over its last {min(7, days)} days: {remote_week:.2f} s "
          f"(ratio {remote / remote_week:.1f}x for {days / min(7, days):.0f}x the range)")  # fmt: skip
    print(f"   baseline, the embedded store's pool_series on the same polls: {local:.2f} s; "
          f"ratio remote / embedded: {remote / local:.2f}")  # fmt: skip
    return {
        "remote_s": remote,
        "local_s": local,
        "week_s": remote_week,
        "per_host_series_ms": 1e3 * remote / host_series,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute: small sizes and windows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000,100000", help="hypervisors, comma-separated")
    parser.add_argument("--targets", default="100,300,1000", help="libvirt targets per collector, comma-separated")
    parser.add_argument("--window", type=float, default=10.0, help="shortest collector window, seconds")
    parser.add_argument("--cloud-hosts", type=int, default=2000, help="hypervisors of the one-cloud collector run")
    parser.add_argument("--days", type=int, default=56, help="forecast history, days")
    parser.add_argument("--read-hosts", type=int, default=2000)
    parser.add_argument("--read-days", type=int, default=28)
    parser.add_argument("--skip", default="", help="sections to skip: collector,planner,k8s,read")
    parser.add_argument("--k8s-clusters", default="1,10,50", help="Kubernetes clusters of 5k nodes, comma-separated")
    parser.add_argument("--child-planner", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-k8s", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_planner:
        planner_child(*args.child_planner)
        return 0
    if args.child_k8s:
        k8s_child(args.child_k8s)
        return 0
    if args.quick:
        args.runs, args.sizes, args.targets, args.window, args.cloud_hosts = 1, "1000,10000", "40", 4.0, 300
        args.days, args.read_hosts, args.read_days, args.k8s_clusters = 14, 200, 7, "1"
    sizes = [int(s) for s in args.sizes.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    print(f"bench_scale{' --quick' if args.quick else ''}: load before: {load()}")
    if "collector" not in skip:
        collector_section([int(t) for t in args.targets.split(",")], args.window, args.cloud_hosts)
    if "planner" not in skip:
        planner_section(sizes, args.days, args.runs)
    if "k8s" not in skip:
        k8s_section([int(c) for c in args.k8s_clusters.split(",")])
    if "read" not in skip:
        read_section(args.read_hosts, args.read_days, args.runs)
    print(f"\nload after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

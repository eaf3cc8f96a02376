"""Soak: the real `capacityd run` on the demo estate for N minutes, one fault injected every minute in rotation.

The estate is the demo's (libvirt test-driver hypervisors, the Nova + Placement stand-in, the Kubernetes stand-in),
served from this process so faults can be injected from outside the daemon:

    server_error   the cloud answers 503 to every Placement listing for ~20 s
    malformed      the cloud answers truncated JSON to a few server listings
    hang           one Nova call hangs for twice the cloud's interval
    down           the cloud stops listening for 20 s, then comes back on the same port
    bad_reload     the config file is broken and the daemon is sent SIGHUP; the good file comes back 20 s later
    slow_clients   200 connections dribble request headers at /metrics for 20 s
    kubelets_down  every fake kubelet behind the Kubernetes stand-in stops answering for 20 s

/metrics is scraped every 5 s throughout, and the daemon's RSS is sampled at every scrape. Printed at the end:
faults survived, scrapes failed, scrape latency (median and p99), history rows lost (successful polls the daemon
counted that are not in history; must be 0), and memory: RSS at start, after warm-up (the first quarter of the
run: imports, first forecasts, caches filling) and at the end, the growth after warm-up in %, and the
least-squares slope of RSS over the samples after warm-up in MiB/h. `MEMORY: FLAT` needs a slope under
2 MiB/h and a growth under 2 % of RSS outside SQLite's page caches (RSS minus the daemon's `sqlite` memory
part), and those caches within their configured bound; otherwise `MEMORY: GROWING` and the exit code is 1.
RSS alone is judged and printed too: the writer's cache fills for hours as history grows (it keeps the pages
it wrote, up to 16 MiB), so within an hour RSS alone cannot tell a bounded cache from a leak. (A slope over a few
minutes extrapolates noise: judge memory on the 60-minute run.) The store is prefilled with the demo's past (eight
weeks of pool totals, a few days of usage, as `scripts/demo` writes it) so that every window the analyses read is
full from the first pass, as in a daemon that has run for weeks (`--empty-history` starts from nothing, as a
fresh install does; the windows then fill during the soak). The estate is constant, so what is left to the
memory verdict is leaks; `--growing-estate` boots one more demo server a minute, and RSS grows with the data.
Below the verdict, the daemon's own `capacityd_memory_bytes{part}` (read from each scrape) shows where a growth
is: glibc's heap in use or free (fragmentation), SQLite's page caches (bounded; they fill as the history file grows),
or outside malloc (thread stacks, mapped files; pymalloc's arenas if PYTHONMALLOC chose it). The expensive
analyses run in a worker process each pass (collector/app/worker.py): its memory is not the daemon's RSS, so it is
printed beside it (each pass' peak, from `capacityd_analysis_worker_peak_resident_bytes`, and the daemon plus its
children at the scrapes), lest moving the pass out of the daemon flatter the verdict.

    .venv/bin/python bench/bench_soak.py --minutes 60      # the full soak (CI may use --minutes 2)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.faults.harness: the same checks as the fault suite

from collector.demo import kubernetes as demo_kubernetes  # noqa: E402
from collector.demo import libvirt as demo_libvirt  # noqa: E402
from collector.demo.model import CLOUD, CLUSTER, REGION, build_estate  # noqa: E402
from collector.demo.standins.kubernetes import StandinApiServer  # noqa: E402
from collector.demo.standins.openstack import StandinServer, from_demo_estate  # noqa: E402
from collector.store.database import WRITER_CACHE_KIB  # noqa: E402
from tests.faults.harness import (  # noqa: E402
    Daemon,
    free_port,
    integrity_problems,
    parse_samples,
    poll_times,
)

OPENSTACK_INTERVAL = "10s"
FAULT_SECONDS = 20.0
WARMUP_FRACTION = 0.25
"""The first quarter of the run is warm-up: RSS may rise while imports, first forecasts and caches settle."""
READERS_BOUND = 16
"""Reader connections the bound allows for: history's readers are pooled, as many as reads ran at once (the
refresher, a forecast pass, a report, HTTP workers for /snapshot); the soak sees one or two."""
FLAT_SLOPE_MIB_PER_HOUR = 2.0
FLAT_GROWTH_PERCENT = 2.0
"""`MEMORY: FLAT` needs both: slope after warm-up under 2 MiB/h and growth after warm-up under 2 %."""


OUTSIDE_CACHES = "resident_outside_sqlite"
"""RSS minus SQLite's memory (capacityd_memory_bytes parts, from the same scrape): RSS with the history's page
caches taken out. Those caches are bounded by their cache_size (WRITER_CACHE_KIB for the writer, SQLite's
default 2 MiB per reader connection) but fill for hours as the history file grows, so over one hour RSS alone
cannot tell them from a leak; this part can. The memory verdict is judged on it, RSS is printed beside it."""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(pid: int) -> int:
    """RSS of the daemon plus its children (the analysis worker while a pass runs): what the service holds."""
    total = rss_bytes(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                total += rss_bytes(int(stat.parent.name))
    return total


def worker_passes(body: bytes) -> tuple[float, float] | None:
    """(wall seconds, peak resident bytes) of the last expensive pass' worker, from a scraped exposition."""
    found = {
        name: value
        for name, _, value in parse_samples(body.decode("utf-8", "replace"))
        if name.startswith("capacityd_analysis_worker_")
    }
    if "capacityd_analysis_worker_duration_seconds" not in found:
        return None
    return found["capacityd_analysis_worker_duration_seconds"], found["capacityd_analysis_worker_peak_resident_bytes"]


def memory_parts(body: bytes) -> dict[str, float]:
    """capacityd_memory_bytes{part} from a scraped exposition: where the daemon says its memory is."""
    samples = parse_samples(body.decode("utf-8", "replace"))
    return {labels["part"]: value for name, labels, value in samples if name == "capacityd_memory_bytes"}


def slope_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (bytes) over time (seconds), in bytes per hour; 0 with fewer than 2 samples."""
    if len(samples) < 2:
        return 0.0
    ts = [t for t, _ in samples]
    mean_t = statistics.fmean(ts)
    mean_r = statistics.fmean(r for _, r in samples)
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / var * 3600


def memory_summary(samples: list[tuple[float, int]], duration: float) -> dict[str, Any]:
    """RSS start / after warm-up / end, growth after warm-up and slope, from (seconds since start, RSS) samples.

    'after warm-up' and 'end' are medians of the samples in a window (a minute, or 1/8 of a short run) right after
    warm-up and at the end, so one scrape landing on a forecast pass's transient peak doesn't decide the verdict.
    """
    warmup = duration * WARMUP_FRACTION
    window = min(60.0, duration / 8)
    after = [(t, r) for t, r in samples if t >= warmup]
    if not samples or len(after) < 2:
        return {"samples": len(samples), "verdict": "UNKNOWN"}
    warm_rss = statistics.median(r for t, r in after if t <= warmup + window)
    end_t = after[-1][0]
    end_rss = statistics.median(r for t, r in after if t >= end_t - window)
    growth = (end_rss - warm_rss) / warm_rss * 100
    slope = slope_per_hour(after) / 2**20
    flat = slope < FLAT_SLOPE_MIB_PER_HOUR and growth < FLAT_GROWTH_PERCENT
    return {
        "samples": len(samples),
        "warmup_s": warmup,
        "start": samples[0][1],
        "after_warmup": warm_rss,
        "end": end_rss,
        "peak": max(r for _, r in samples),
        "growth_pct": growth,
        "slope_mib_h": slope,
        "verdict": "FLAT" if flat else "GROWING",
    }


def prefill_history(config: dict[str, Any], path: str, estate: Any) -> None:
    """Write the demo's past into the soak's store before the daemon starts: eight weeks of pool totals and a few
    days of per-VM and per-pod usage, as `scripts/demo` does. Every history window the analyses read (forecast
    lookback, usage windows) is then full from the first pass, as in a daemon that has run for weeks, not filling
    during the soak as after a fresh install."""
    from collector.app.config import parse_config
    from collector.app.daemon import open_history
    from collector.demo.run import backfill_history

    parsed = parse_config(config, path)
    history = open_history(parsed)
    if history is None:
        raise SystemExit(f"cannot open the soak's history under {parsed.state_dir} to prefill it")
    try:
        backfill_history(history, estate, parsed)
    finally:
        history.close()


class Soak:
    def __init__(self, workdir: Path, growing: bool = False, prefill: bool = True) -> None:
        self.workdir = workdir
        estate = build_estate()
        context: dict[str, Any] = {"estate": estate}
        self.libvirt = demo_libvirt.start(workdir, context)
        self.cloud = from_demo_estate(estate, growth_every=60.0, growth_count=240 if growing else 0)
        self.openstack = StandinServer(self.cloud).start()
        clouds_yaml = self.openstack.write_clouds_yaml(workdir / "clouds.yaml", CLOUD, REGION)
        context["openstack"] = {"clouds_yaml": str(clouds_yaml), "cloud": CLOUD, "region": REGION}
        # the demo's Kubernetes part, kept by hand here so the soak can reach the fake kubelets
        self.kube_server = StandinApiServer(workdir / "kubernetes")
        nodes = demo_kubernetes.demo_nodes(estate)
        self.kube_server.set_nodes(nodes)
        self.kube_server.set_pods(demo_kubernetes.demo_pods([n["metadata"]["name"] for n in nodes]))
        kubeconfig = self.kube_server.kubeconfig(
            workdir / "kubernetes" / "kubeconfig", context=CLUSTER, cluster=CLUSTER
        )
        kubernetes = {
            "kind": "kubernetes",
            "name": CLUSTER,
            "kubeconfig": str(kubeconfig),
            "context": CLUSTER,
            "cluster": CLUSTER,
        }
        openstack = {
            "kind": "openstack",
            "name": CLOUD,
            "cloud": CLOUD,
            "region": REGION,
            "clouds_yaml": str(clouds_yaml),
            "interval": OPENSTACK_INTERVAL,
        }
        self.port = free_port()
        self.state_dir = workdir / "state"
        sources = [*self.libvirt.sources, openstack, kubernetes]
        for source in sources:
            if source["kind"] != "openstack":
                source["interval"] = "15s"
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "state_dir": str(self.state_dir),
            "sources": sources,
        }
        if prefill:  # the demo's usage windows, which its backfilled usage covers (the defaults are 7d/14d)
            config["headroom"] = {"idle_window": "2d", "reclaim_window": "3d"}
        self.good_config = yaml.safe_dump(config)
        self.config_path = workdir / "capacityd.yaml"
        self.config_path.write_text(self.good_config)
        if prefill:
            prefill_history(config, str(self.config_path), estate)
        self.daemon = Daemon(self.config_path, self.port, workdir / "daemon.log")
        self.source_names = [source["name"] for source in sources]

    # -- faults ---------------------------------------------------------------------------------------------

    def fault_server_error(self) -> None:
        self.openstack.inject("placement", r"/resource_providers", status=503, times=10_000)
        time.sleep(FAULT_SECONDS)
        with self.openstack._lock:
            self.openstack.faults.clear()

    def fault_malformed(self) -> None:
        self.openstack.inject("compute", r"/servers/detail", status=200, times=2, body=b'{"servers": [{"id": ')
        time.sleep(FAULT_SECONDS)

    def fault_hang(self) -> None:
        self.openstack.inject("compute", r"/os-hypervisors", status=200, times=1, delay=20.0)
        time.sleep(FAULT_SECONDS)

    def fault_down(self) -> None:
        self.openstack.stop()
        time.sleep(FAULT_SECONDS)
        self.openstack = StandinServer(self.cloud, port=self.openstack.port).start()

    def fault_bad_reload(self) -> None:
        self.config_path.write_text("sources: [{kind: libvirt, name: broken, interval: 99999999999w, uri: x}]\n")
        self.daemon.signal(signal.SIGHUP)
        time.sleep(FAULT_SECONDS)
        self.config_path.write_text(self.good_config)
        self.daemon.signal(signal.SIGHUP)

    def fault_slow_clients(self) -> None:
        sockets: list[socket.socket] = []
        deadline = time.monotonic() + FAULT_SECONDS
        with contextlib.suppress(OSError):
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                sockets.append(sock)
        while time.monotonic() < deadline:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(1.0)
        for sock in sockets:
            sock.close()

    def fault_kubelets_down(self) -> None:
        kubelets = self.kube_server.kubelets
        previous = {name: kubelet.behaviour for name, kubelet in kubelets.items()}
        for kubelet in kubelets.values():
            kubelet.behaviour = "down"
        time.sleep(FAULT_SECONDS)
        for name, behaviour in previous.items():
            kubelets[name].behaviour = behaviour

    # -- the run --------------------------------------------------------------------------------------------

    def run(self, minutes: float, rss_log: Any = None, parts_log: Any = None) -> dict[str, Any]:
        faults: list[tuple[str, Callable[[], None]]] = [
            ("server_error", self.fault_server_error),
            ("malformed", self.fault_malformed),
            ("hang", self.fault_hang),
            ("down", self.fault_down),
            ("bad_reload", self.fault_bad_reload),
            ("slow_clients", self.fault_slow_clients),
            ("kubelets_down", self.fault_kubelets_down),
        ]
        started_at = time.time()  # polls before this are the prefilled past, not the daemon's
        self.daemon.start()
        time.sleep(20)  # first polls of every source
        rss_start = rss_bytes(self.daemon.pid)
        latencies: list[float] = []
        rss_samples: list[tuple[float, int]] = [(0.0, rss_start)]
        part_samples: dict[str, list[tuple[float, int]]] = {}  # capacityd_memory_bytes{part}, at every scrape
        failed_scrapes = 0
        passes: set[tuple[float, float]] = set()  # (duration, peak) of each worker pass seen by a scrape
        tree_peak = rss_start  # the daemon and its worker together, at the scrapes
        stop = threading.Event()
        run_started = time.monotonic()

        def scraper() -> None:
            nonlocal failed_scrapes, tree_peak
            while not stop.wait(5.0):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
                        body = response.read()
                    latencies.append(time.perf_counter() - started)
                    at, parts_now = time.monotonic() - run_started, memory_parts(body)
                    for part, value in parts_now.items():
                        part_samples.setdefault(part, []).append((at, int(value)))
                    if (last_pass := worker_passes(body)) is not None:
                        passes.add(last_pass)
                    if parts_log is not None:  # every part at every scrape, for plotting where a growth is
                        parts_log.write(orjson.dumps({"seconds": round(at, 1), **parts_now}).decode() + "\n")
                        parts_log.flush()
                    if "resident" in parts_now and "sqlite" in parts_now:  # what no bounded cache explains
                        outside = int(parts_now["resident"] - parts_now["sqlite"])
                        part_samples.setdefault(OUTSIDE_CACHES, []).append((at, outside))
                except OSError:
                    failed_scrapes += 1
                with contextlib.suppress(OSError):  # the daemon's RSS, at every scrape
                    rss_samples.append((time.monotonic() - run_started, rss_bytes(self.daemon.pid)))
                    tree_peak = max(tree_peak, tree_rss_bytes(self.daemon.pid))
                    if rss_log is not None:
                        rss_log.write(f"{rss_samples[-1][0]:.1f},{rss_samples[-1][1]}\n")
                        rss_log.flush()

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        survived: list[str] = []
        died: list[str] = []
        end = time.monotonic() + minutes * 60
        index = 0
        while time.monotonic() < end:
            minute_end = min(end, time.monotonic() + 60)
            name, inject = faults[index % len(faults)]
            index += 1
            inject()
            (survived if self.daemon.alive() else died).append(name)
            if not self.daemon.alive():
                break
            time.sleep(max(0.0, minute_end - time.monotonic()))
        stop.set()
        thread.join(10)
        memory = memory_summary(rss_samples, time.monotonic() - run_started)
        parts = {part: memory_summary(values, time.monotonic() - run_started) for part, values in part_samples.items()}
        time.sleep(16)  # let every source complete a poll after the last fault
        text = self.daemon.scrape()
        rss_end = rss_bytes(self.daemon.pid)
        succeeded: dict[str, float] = {}
        snapshot_at = next(
            value for name, _, value in parse_samples(text) if name == "capacityd_snapshot_timestamp_seconds"
        )
        for sample_name, labels, value in parse_samples(text):
            source = labels.get("source")
            if source is None:
                continue
            if sample_name == "capacityd_source_polls_total":
                succeeded[source] = succeeded.get(source, 0.0) + value
            elif sample_name == "capacityd_source_errors_total":
                succeeded[source] = succeeded.get(source, 0.0) - value
        code = self.daemon.stop()
        # polls stored up to the moment the scraped snapshot was taken (a poll still running then is not counted yet)
        stored = {
            source: len([t for t in poll_times(self.state_dir, source) if started_at <= t <= snapshot_at])
            for source in succeeded
        }
        lost = {source: int(succeeded[source] - stored[source]) for source in succeeded}
        return {
            "faults": [name for name, _ in faults],
            "survived": survived,
            "died": died,
            "scrapes": len(latencies) + failed_scrapes,
            "failed_scrapes": failed_scrapes,
            "latencies": latencies,
            "rss_start": rss_start,
            "rss_end": rss_end,
            "memory": memory,
            "memory_parts": parts,
            "worker_passes": sorted(passes),
            "tree_peak": tree_peak,
            "lost": lost,
            "stored": stored,
            "integrity": integrity_problems(self.state_dir),
            "exit_code": code,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.openstack.stop()
        with contextlib.suppress(Exception):
            self.kube_server.stop()
        with contextlib.suppress(Exception):
            self.libvirt.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to soak (default %(default)s)")
    parser.add_argument("--rss-csv", type=Path, help="also write every RSS sample (seconds,bytes) to this file")
    parser.add_argument(
        "--parts-jsonl",
        type=Path,
        help="also write capacityd_memory_bytes{part} of every scrape (one JSON object per line) to this file",
    )
    parser.add_argument(
        "--growing-estate",
        action="store_true",
        help="boot one more demo server a minute (RSS then also grows with the data; by default the estate is "
        "constant, so what is left to the memory verdict is leaks)",
    )
    parser.add_argument(
        "--empty-history",
        action="store_true",
        help="start from an empty store (by default it is prefilled with the demo's eight weeks of history, so the "
        "analyses' windows are full from the start, as after weeks of running)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capacityd-soak-") as tmp:
        soak = Soak(Path(tmp), growing=args.growing_estate, prefill=not args.empty_history)
        rss_log = open(args.rss_csv, "w") if args.rss_csv else None  # noqa: SIM115 - closed below
        parts_log = open(args.parts_jsonl, "w") if args.parts_jsonl else None  # noqa: SIM115 - closed below
        try:
            result = soak.run(args.minutes, rss_log, parts_log)
        finally:
            soak.close()
            for log_file in (rss_log, parts_log):
                if log_file is not None:
                    log_file.close()
        latencies = sorted(result["latencies"]) or [float("nan")]
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        estate = "estate growing by one server a minute" if args.growing_estate else "constant estate"
        estate += ", empty history at start" if args.empty_history else ", history prefilled with the demo's 8 weeks"
        print(f"soak: {args.minutes:g} min, {estate}, faults in rotation: {', '.join(result['faults'])}")
        print(
            f"faults injected: {len(result['survived']) + len(result['died'])}, survived: {len(result['survived'])}"
            + (f", the daemon died after: {result['died']}" if result["died"] else "")
        )
        print(
            f"scrapes: {result['scrapes']}, failed: {result['failed_scrapes']}, "
            f"latency median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
        growth = (result["rss_end"] - result["rss_start"]) / max(result["rss_start"], 1) * 100
        print(
            f"RSS: start {result['rss_start'] / 2**20:.0f} MiB, end {result['rss_end'] / 2**20:.0f} MiB "
            f"({growth:+.1f} %)"
        )
        print(
            f"history: polls stored {sum(result['stored'].values())}, rows lost "
            f"{sum(max(v, 0) for v in result['lost'].values())} (per source: {result['lost']}); "
            f"integrity: {'ok' if not result['integrity'] else result['integrity']}; exit code {result['exit_code']}"
        )
        worker = result["worker_passes"]
        if worker:
            peaks = [peak for _, peak in worker if peak > 0]
            print(
                f"analysis worker (the expensive pass, a fresh process each time): {len(worker)} passes seen, "
                f"{len(worker) - len(peaks)} without a result; wall time median "
                f"{statistics.median(t for t, _ in worker):.1f} s; peak RSS median "
                f"{statistics.median(peaks or [0]) / 2**20:.0f} MiB, max {max(peaks or [0]) / 2**20:.0f} MiB; daemon + "
                f"worker RSS at the scrapes: max {result['tree_peak'] / 2**20:.0f} MiB"
            )
        memory = result["memory"]
        if memory["verdict"] == "UNKNOWN":
            print(f"memory: too few RSS samples ({memory['samples']}) to judge")
        else:
            print(
                f"memory: {memory['samples']} RSS samples (one per scrape), warm-up {memory['warmup_s'] / 60:.1f} min; "
                f"RSS start {memory['start'] / 2**20:.1f} MiB, after warm-up {memory['after_warmup'] / 2**20:.1f} MiB, "
                f"end {memory['end'] / 2**20:.1f} MiB, peak {memory['peak'] / 2**20:.1f} MiB; "
                f"growth after warm-up {memory['growth_pct']:+.2f} %, slope {memory['slope_mib_h']:+.2f} MiB/h"
            )
        for part, summary in result["memory_parts"].items():  # where the growth is (capacityd_memory_bytes)
            if summary["verdict"] != "UNKNOWN":
                change = (summary["end"] - summary["after_warmup"]) / 2**20
                print(
                    f"  {part:>23}: after warm-up {summary['after_warmup'] / 2**20:.1f} MiB, end "
                    f"{summary['end'] / 2**20:.1f} MiB ({change:+.2f} MiB), "
                    f"slope {summary['slope_mib_h']:+.2f} MiB/h"
                )
        print(
            f"RSS alone: {memory['verdict']} (flat = slope < {FLAT_SLOPE_MIB_PER_HOUR:g} MiB/h "
            f"and growth < {FLAT_GROWTH_PERCENT:g} % after warm-up)"
        )
        verdict = memory["verdict"]
        outside = result["memory_parts"].get(OUTSIDE_CACHES)
        sqlite = result["memory_parts"].get("sqlite")
        if outside is not None and sqlite is not None and outside["verdict"] != "UNKNOWN":
            cap = WRITER_CACHE_KIB / 1024 + READERS_BOUND * 2  # MiB
            bounded = sqlite["peak"] <= cap * 2**20
            verdict = outside["verdict"] if bounded else "GROWING"
            print(
                f"MEMORY: {verdict} — judged on RSS outside SQLite's page caches (slope "
                f"{outside['slope_mib_h']:+.2f} MiB/h, growth {outside['growth_pct']:+.2f} % after warm-up); the "
                f"caches peaked at {sqlite['peak'] / 2**20:.1f} MiB of their {cap:.0f} MiB bound "
                f"({'within' if bounded else 'OVER'}: writer {WRITER_CACHE_KIB // 1024} MiB + 2 MiB for each of "
                f"up to {READERS_BOUND} reader connections)"
            )
        ok = not result["died"] and not result["integrity"] and all(v <= 0 for v in result["lost"].values())
        print("VERDICT:", "survived" if ok else "FAILED")
        return 0 if ok and verdict == "FLAT" else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

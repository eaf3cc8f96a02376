"""/metrics scrape latency with ~100k series: capacityd's served-from-memory exposition vs
prometheus-client generating the same families on every scrape (its standard custom-collector
server), side by side in one run.

    .venv/bin/python bench/bench_metrics.py [--series 100000] [--scrapes 200]

Both servers hold the same snapshot and answer over loopback HTTP/1.1 with `Accept-Encoding: gzip`
(as Prometheus scrapes); a scrape's latency is request sent -> whole body received.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server

from collector.contract.schema import CAPACITY
from collector.estate import Estate
from exporters.prometheus.exposition import ExpositionCache, SnapshotCollector
from exporters.prometheus.http import start_server


def synthetic_snapshot(series: int):
    """A snapshot whose capacity frame yields `series` samples over the four capacity families."""
    rows = series // 4
    hosts = rows // 4
    now = datetime.now(UTC)
    resources = np.array(["cpu", "memory", "disk", "pods"])
    host_names = np.repeat([f"compute-{i:05d}" for i in range(hosts)], 4)
    capacity = np.tile([64.0, 2.0**38, 2.0**41, 110.0], hosts)
    frame = CAPACITY.build({
        "timestamp": [now] * rows, "source": "bench", "layer": "openstack", "cloud": "bench-cloud",
        "pool": [f"az{i % 3}" for i in range(rows)], "host": host_names, "scope": "host",
        "resource": np.tile(resources, hosts), "capacity": capacity, "reserved": 0.0, "allocation_ratio": 1.0,
        "allocatable": capacity, "allocated": capacity * 0.6, "used": capacity * 0.3,
    })
    estate = Estate()
    estate.add_source("bench", "openstack", interval=timedelta(seconds=60))
    estate.record_success("bench", {"capacity": frame}, now, 1.0)
    return estate.snapshot()


def scrape_latencies(port: int, scrapes: int) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        size = len(body)
    connection.close()
    return latencies, size


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--baseline-scrapes", type=int, default=7)
    args = parser.parse_args()

    snapshot = synthetic_snapshot(args.series)
    cache = ExpositionCache()
    render_times = []
    for _ in range(3):
        started = time.perf_counter()
        exposition = cache.update(snapshot)
        render_times.append(time.perf_counter() - started)
    samples = sum(1 for line in exposition.body.splitlines() if line and not line.startswith(b"#"))
    ours = start_server(cache, "127.0.0.1", 0)
    ours_latencies, ours_size = scrape_latencies(ours.port, args.scrapes)
    ours.shutdown()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    baseline_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    baseline_port = baseline_server.server_address[1]
    baseline_latencies, baseline_size = scrape_latencies(baseline_port, args.baseline_scrapes)
    baseline_server.shutdown()

    ours_p50, ours_p99 = percentile(ours_latencies, 50), percentile(ours_latencies, 99)
    base_p50, base_p99 = percentile(baseline_latencies, 50), percentile(baseline_latencies, 99)
    print(f"series in exposition: {samples:,} (render once per collection: median "
          f"{statistics.median(render_times):.2f} s)")
    print(f"{'server':<44} {'scrapes':>7} {'p50 ms':>9} {'p99 ms':>9} {'gzip body':>10}")
    print(f"{'capacityd (cached, pre-gzipped)':<44} {len(ours_latencies):>7} {ours_p50 * 1e3:>9.2f} "
          f"{ours_p99 * 1e3:>9.2f} {ours_size / 1e6:>8.2f}MB")
    print(f"{'prometheus-client (collect per scrape)':<44} {len(baseline_latencies):>7} {base_p50 * 1e3:>9.1f} "
          f"{base_p99 * 1e3:>9.1f} {baseline_size / 1e6:>8.2f}MB")
    print(f"speed-up p50: {base_p50 / ours_p50:,.0f}x   p99: {base_p99 / ours_p99:,.0f}x   "
          f"(targets: p99 <= 10 ms, >= 50x)")
    ok = ours_p99 <= 0.010 and base_p50 / ours_p50 >= 50
    print("TARGETS MET" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: Placement reads per poll, capacityd's collector vs the naive per-provider walk.

Starts a REAL Placement 16 (from the venv scripts/provision/openstack.sh builds) on loopback and
fills it with 308 resource providers — 300 compute hosts (VCPU, MEMORY_MB, DISK_GB; two with a
CUSTOM_ trait, three disabled), 6 nested VGPU children, 2 sharing DISK_GB providers — and 600
allocations (two servers per host). The populated database is cached under
/var/cache/capacityd-ci (first run ~30 s to fill, later runs copy it).

Measured in the same run, median of --runs polls each:

* naive: `GET /resource_providers`, then `GET .../inventories` and `GET .../usages` for every
  provider (617 GETs), with a bare requests.Session — what exporters commonly do every scrape;
* capacityd cold: the OpenStack source's Placement reader on a fresh connection and empty cache;
* capacityd steady: the same reader, polled again with nothing changed (the usual case between two
  polls of a quiet cloud);
* capacityd churn: between two polls, `--churn` new servers land on as many hosts (their
  generations move, so exactly those providers are re-read).

usage: .venv/bin/python bench/bench_openstack.py [--runs 5] [--churn 10]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.sources.openstack.client import OpenStackClient, make_connector
from collector.sources.openstack.placement import PlacementReader
from tests.services.openstack import CACHE_DIR, Placement, _installed_version, write_clouds_yaml

HOSTS = 300
GPU_HOSTS = 6
SHARING = 2
SERVERS_PER_HOST = 2
NS = uuid.UUID("0b3c1f0e-0000-4000-8000-0000000be7c4")


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


def populate(placement: Placement) -> None:
    """308 providers, 600 allocations (written through Placement's API)."""
    aggregates = [_id("agg", zone) for zone in range(SHARING)]
    for zone in range(SHARING):
        rp = placement.create_provider(f"shared-storage-{zone}", provider_uuid=_id("shared", zone))
        placement.set_inventories(rp, {"DISK_GB": {"total": 100000, "reserved": 100, "max_unit": 4000}})
        placement.set_traits(rp, ["MISC_SHARES_VIA_AGGREGATE"])
        placement.set_aggregates(rp, [aggregates[zone]])
    for i in range(HOSTS):
        rp = placement.create_provider(f"compute-{i:03d}", provider_uuid=_id("host", i))
        placement.set_inventories(rp, {
            "VCPU": {"total": 64, "allocation_ratio": 4.0, "max_unit": 64},
            "MEMORY_MB": {"total": 262144, "reserved": 4096, "max_unit": 262144},
            "DISK_GB": {"total": 2000, "max_unit": 2000},
        })
        placement.set_aggregates(rp, [aggregates[i % SHARING]])
        if i < 2:
            placement.set_traits(rp, ["CUSTOM_SSD"])
        elif i < 5:
            placement.set_traits(rp, ["COMPUTE_STATUS_DISABLED"])
        if i < GPU_HOSTS:
            child = placement.create_provider(f"compute-{i:03d}_pgpu0", parent=rp, provider_uuid=_id("gpu", i))
            placement.set_inventories(child, {"VGPU": {"total": 4, "max_unit": 1}})
        for k in range(SERVERS_PER_HOST):
            placement.allocate(_id("server", i, k), {rp: {"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 80}},
                               project=f"project-{i % 7}")


def start_placement(workdir: Path) -> Placement:
    cached = CACHE_DIR / f"bench-placement-{_installed_version('openstack-placement')}-{HOSTS}.sqlite"
    if cached.exists():
        return Placement(workdir).start(seed=cached)
    placement = Placement(workdir).start()
    started = time.perf_counter()
    populate(placement)
    print(f"populated 308 providers / 600 allocations in {time.perf_counter() - started:.1f}s", flush=True)
    with contextlib.suppress(OSError):
        shutil.copyfile(workdir / "placement.sqlite", cached)
    return placement


def naive_poll(url: str) -> tuple[int, float]:
    """List, then inventories + usages of every provider: the per-provider walk."""
    session = requests.Session()
    session.headers.update({"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"})
    started = time.perf_counter()
    calls = 1
    providers = session.get(f"{url}/resource_providers").json()["resource_providers"]
    for provider in providers:
        session.get(f"{url}/resource_providers/{provider['uuid']}/inventories").json()
        session.get(f"{url}/resource_providers/{provider['uuid']}/usages").json()
        calls += 2
    elapsed = time.perf_counter() - started
    session.close()
    return calls, elapsed


def our_poll(reader: PlacementReader) -> tuple[int, float, int]:
    reader.client.begin_poll(600)
    started = time.perf_counter()
    state = reader.read()
    return reader.client.calls, time.perf_counter() - started, len(state.providers)


def new_reader(clouds_yaml: Path) -> PlacementReader:
    client = OpenStackClient("bench", make_connector("bench", None, clouds_yaml, 60))
    reader = PlacementReader(client)
    client.microversion("placement")  # discovery happens once per connection, not per poll
    return reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--churn", type=int, default=10, help="servers booted between two churn polls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-openstack-") as tmp:
        workdir = Path(tmp)
        placement = start_placement(workdir / "placement")
        try:
            clouds_yaml = write_clouds_yaml(workdir / "clouds.yaml", "bench", placement.url, None)
            naive = [naive_poll(placement.url) for _ in range(args.runs)]
            cold = []
            for _ in range(args.runs):
                reader = new_reader(clouds_yaml)
                cold.append(our_poll(reader))
                reader.client.close()
            reader = new_reader(clouds_yaml)
            our_poll(reader)
            steady = [our_poll(reader) for _ in range(args.runs)]
            churn = []
            for run in range(args.runs):
                for k in range(args.churn):
                    host = _id("host", (run * args.churn + k * 7) % HOSTS)
                    placement.allocate(_id("churn", run, k), {host: {"VCPU": 1, "MEMORY_MB": 2048}},
                                       project="project-churn")
                churn.append(our_poll(reader))
            reader.client.close()
        finally:
            placement.stop()

    providers = cold[0][2]
    naive_calls = statistics.median(c for c, _ in naive)
    naive_time = statistics.median(t for _, t in naive)
    print(f"\nReal Placement {_installed_version('openstack-placement')}, {providers} resource providers, "
          f"{HOSTS * SERVERS_PER_HOST} allocations; median of {args.runs} polls each\n")
    print(f"{'poller':<44}{'API calls':>10}{'poll time':>12}{'calls ratio':>13}{'speed-up':>10}")
    print(f"{'naive list + inventories + usages':<44}{naive_calls:>10.0f}{naive_time:>11.3f}s{'1.0x':>13}{'1.0x':>10}")
    for label, runs in (("capacityd, cold (fresh cache)", cold), ("capacityd, steady (nothing changed)", steady),
                        (f"capacityd, churn ({args.churn} new servers per poll)", churn)):
        calls = statistics.median(r[0] for r in runs)
        elapsed = statistics.median(r[1] for r in runs)
        print(f"{label:<44}{calls:>10.0f}{elapsed:>11.3f}s{naive_calls / calls:>12.1f}x{naive_time / elapsed:>9.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark: the whole OpenStack source (Nova + Placement) per poll, cold and steady, by cloud size.

    .venv/bin/python bench/bench_openstack.py [--runs 3] [--hosts 100,300,1000] [--projects 10,100,1000]
                                              [--no-real-placement]

The growth table: for every (hosts, projects) pair, a cloud served by the Nova + Placement stand-in
(`collector.demo.standins.openstack.synthetic_cloud`: hosts in 3 AZ aggregates, one in 20 with a
GPU child provider, 10 servers per host dealt round robin over the projects, six flavors) running in
its own process, so this process's CPU is the poller's only. Each cell is polled, median of --runs:

* capacityd cold: a fresh `OpenStackSource` (new connection: discovery, empty Placement cache), one
  `checked_poll` — every call the source makes through openstacksdk, Nova's and Placement's;
* capacityd steady: the same source polled again with nothing changed (the usual case);
* baseline: the naive whole-cloud poll measured in the same run against the same server — Nova's
  hypervisors, servers (paged), flavors, aggregates and per-project quotas as capacityd reads them,
  plus Placement's provider list and inventories + usages for EVERY provider (what exporters do on
  every scrape), with a bare requests.Session (no discovery, no SDK).

Printed per cell: HTTP calls, wall seconds and this process's CPU seconds per poll, and the ratios
baseline / capacityd (calls and wall). Then, unless --no-real-placement, the earlier cross-check on
a REAL Placement 16 (308 providers, 600 allocations; Placement reads only, as Nova is not needed to
compare Placement strategies): naive per-provider walk vs the source's Placement reader.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.demo.standins.openstack import StandinServer, synthetic_cloud
from collector.sources.openstack.client import NOVA_MAX, PLACEMENT_MAX, OpenStackClient, make_connector
from collector.sources.openstack.placement import PlacementReader
from collector.sources.openstack.settings import OpenStackSourceConfig
from collector.sources.openstack.source import OpenStackSource
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
        placement.set_inventories(
            rp,
            {
                "VCPU": {"total": 64, "allocation_ratio": 4.0, "max_unit": 64},
                "MEMORY_MB": {"total": 262144, "reserved": 4096, "max_unit": 262144},
                "DISK_GB": {"total": 2000, "max_unit": 2000},
            },
        )
        placement.set_aggregates(rp, [aggregates[i % SHARING]])
        if i < 2:
            placement.set_traits(rp, ["CUSTOM_SSD"])
        elif i < 5:
            placement.set_traits(rp, ["COMPUTE_STATUS_DISABLED"])
        if i < GPU_HOSTS:
            child = placement.create_provider(f"compute-{i:03d}_pgpu0", parent=rp, provider_uuid=_id("gpu", i))
            placement.set_inventories(child, {"VGPU": {"total": 4, "max_unit": 1}})
        for k in range(SERVERS_PER_HOST):
            placement.allocate(
                _id("server", i, k), {rp: {"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 80}}, project=f"project-{i % 7}"
            )


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


# ------------------------------------------------------------------------------ the whole source, by size


def _serve(hosts: int, projects: int, pipe: Any) -> None:
    """Child process: serve a synthetic cloud until told to stop (so the stand-in's CPU is not ours)."""
    server = StandinServer(synthetic_cloud(hosts, projects)).start()
    pipe.send((server.base, server.placement_url, server.compute_url))
    pipe.recv()
    server.stop()


@contextlib.contextmanager
def standin_process(hosts: int, projects: int) -> Any:
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(hosts, projects, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(120):
            raise SystemExit(f"the stand-in for {hosts} hosts did not start")
        yield ours.recv()
    finally:
        with contextlib.suppress(OSError, BrokenPipeError):
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()


def _measure(action: Any) -> tuple[int, float, float]:
    """(calls, wall s, this process's CPU s) of one poll; `action` returns its call count."""
    wall, cpu = time.perf_counter(), time.process_time()
    calls = action()
    return calls, time.perf_counter() - wall, time.process_time() - cpu


def new_source(clouds_yaml: Path) -> OpenStackSource:
    config = OpenStackSourceConfig(
        kind="openstack", name="bench", cloud="bench", clouds_yaml=str(clouds_yaml), interval="600s"
    )
    return OpenStackSource(config)


def source_poll(source: OpenStackSource) -> int:
    result = source.checked_poll(datetime.now(UTC))
    assert result.api_calls is not None and len(result.frames["hosts"]) > 0
    return result.api_calls


def naive_whole_poll(placement_url: str, compute_url: str) -> int:
    """Nova as capacityd reads it + Placement's per-provider walk, with a bare requests.Session."""
    session = requests.Session()
    session.headers["X-Auth-Token"] = "admin"
    nova = {"OpenStack-API-Version": f"compute {NOVA_MAX[0]}.{NOVA_MAX[1]}"}
    placement = {"OpenStack-API-Version": f"placement {PLACEMENT_MAX[0]}.{PLACEMENT_MAX[1]}"}
    calls = 0

    def get(url: str, headers: dict[str, str]) -> Any:
        nonlocal calls
        calls += 1
        response = session.get(url, headers=headers, timeout=120)
        response.raise_for_status()
        return response.json()

    def paged(url: str, key: str) -> list[Any]:
        items: list[Any] = []
        while url:
            body = get(url, nova)
            items.extend(body[key])
            url = next((link["href"] for link in body.get(f"{key}_links", []) if link["rel"] == "next"), "")
        return items

    try:
        paged(f"{compute_url}/os-hypervisors/detail", "hypervisors")
        servers = paged(f"{compute_url}/servers/detail?all_tenants=1&limit=1000", "servers")
        paged(f"{compute_url}/flavors/detail?is_public=None", "flavors")
        get(f"{compute_url}/os-aggregates", nova)
        for project in sorted({server["tenant_id"] for server in servers}):
            get(f"{compute_url}/os-quota-sets/{project}/detail", nova)
        providers = get(f"{placement_url}/resource_providers", placement)["resource_providers"]
        for provider in providers:
            get(f"{placement_url}/resource_providers/{provider['uuid']}/inventories", placement)
            get(f"{placement_url}/resource_providers/{provider['uuid']}/usages", placement)
    finally:
        session.close()
    return calls


def measure_cell(hosts: int, projects: int, runs: int, workdir: Path) -> dict[str, list[tuple[int, float, float]]]:
    samples: dict[str, list[tuple[int, float, float]]] = {"baseline": [], "cold": [], "steady": []}
    with standin_process(hosts, projects) as (_base, placement_url, compute_url):
        clouds_yaml = write_clouds_yaml(
            workdir / f"clouds-{hosts}-{projects}.yaml", "bench", placement_url, compute_url
        )
        steady = new_source(clouds_yaml)
        source_poll(steady)  # warm-up: the steady source's first (cold) poll
        for _ in range(runs):  # interleaved, so that all three see the same machine load
            samples["baseline"].append(_measure(lambda: naive_whole_poll(placement_url, compute_url)))
            cold = new_source(clouds_yaml)
            samples["cold"].append(_measure(lambda cold=cold: source_poll(cold)))
            cold.close()
            samples["steady"].append(_measure(lambda: source_poll(steady)))
        steady.close()
    return samples


def growth_table(cells: dict[tuple[int, int], dict[str, list[tuple[int, float, float]]]], runs: int) -> None:
    print(
        f"\nWhole OpenStack source (Nova + Placement) vs the naive whole-cloud poll, same stand-in, same run; "
        f"median of {runs} polls per cell; 10 servers per host\n"
    )
    print(
        f"{'hosts':>6} {'projects':>8} | {'baseline calls':>14} {'wall':>7} {'CPU':>6} | {'cold calls':>10} "
        f"{'wall':>7} {'CPU':>6} | {'steady calls':>12} {'wall':>7} {'CPU':>6} | {'calls ratio':>11} "
        f"{'wall ratio':>10}"
    )
    for (hosts, projects), samples in cells.items():
        med = {k: tuple(statistics.median(column) for column in zip(*v, strict=True)) for k, v in samples.items()}
        base, cold, steady = med["baseline"], med["cold"], med["steady"]
        print(
            f"{hosts:>6} {projects:>8} | {base[0]:>14.0f} {base[1]:>6.2f}s {base[2]:>5.2f}s | {cold[0]:>10.0f} "
            f"{cold[1]:>6.2f}s {cold[2]:>5.2f}s | {steady[0]:>12.0f} {steady[1]:>6.2f}s {steady[2]:>5.2f}s | "
            f"{base[0] / steady[0]:>10.1f}x {base[1] / steady[1]:>9.1f}x"
        )
    print("  (CPU = this process only: the stand-in serves from a child process; ratios = baseline / capacityd steady)")


def real_placement_crosscheck(runs: int, churn: int) -> None:
    """The Placement-only comparison on a REAL Placement 16 (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-openstack-") as tmp:
        workdir = Path(tmp)
        placement = start_placement(workdir / "placement")
        try:
            clouds_yaml = write_clouds_yaml(workdir / "clouds.yaml", "bench", placement.url, None)
            naive = [naive_poll(placement.url) for _ in range(runs)]
            cold = []
            for _ in range(runs):
                reader = new_reader(clouds_yaml)
                cold.append(our_poll(reader))
                reader.client.close()
            reader = new_reader(clouds_yaml)
            our_poll(reader)
            steady = [our_poll(reader) for _ in range(runs)]
            churned = []
            for run in range(runs):
                for k in range(churn):
                    host = _id("host", (run * churn + k * 7) % HOSTS)
                    placement.allocate(
                        _id("churn", run, k), {host: {"VCPU": 1, "MEMORY_MB": 2048}}, project="project-churn"
                    )
                churned.append(our_poll(reader))
            reader.client.close()
        finally:
            placement.stop()

    providers = cold[0][2]
    naive_calls = statistics.median(c for c, _ in naive)
    naive_time = statistics.median(t for _, t in naive)
    print(
        f"\nCross-check, REAL Placement (Placement reads only): Placement "
        f"{_installed_version('openstack-placement')}, {providers} resource providers, "
        f"{HOSTS * SERVERS_PER_HOST} allocations; median of {runs} polls each\n"
    )
    print(f"{'poller':<44}{'API calls':>10}{'poll time':>12}{'calls ratio':>13}{'speed-up':>10}")
    print(f"{'naive list + inventories + usages':<44}{naive_calls:>10.0f}{naive_time:>11.3f}s{'1.0x':>13}{'1.0x':>10}")
    for label, polls in (
        ("capacityd, cold (fresh cache)", cold),
        ("capacityd, steady (nothing changed)", steady),
        (f"capacityd, churn ({churn} new servers per poll)", churned),
    ):
        calls = statistics.median(r[0] for r in polls)
        elapsed = statistics.median(r[1] for r in polls)
        print(f"{label:<44}{calls:>10.0f}{elapsed:>11.3f}s{naive_calls / calls:>12.1f}x{naive_time / elapsed:>9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hosts", default="100,300,1000")
    parser.add_argument("--projects", default="10,100,1000")
    parser.add_argument("--churn", type=int, default=10, help="real Placement: servers booted between churn polls")
    parser.add_argument("--no-real-placement", action="store_true", help="skip the real Placement cross-check")
    args = parser.parse_args()
    hosts_sizes = [int(h) for h in args.hosts.split(",")]
    project_sizes = [int(p) for p in args.projects.split(",")]
    cells: dict[tuple[int, int], dict[str, list[tuple[int, float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-openstack-") as tmp:
        for hosts in hosts_sizes:
            for projects in project_sizes:
                started = time.perf_counter()
                cells[(hosts, projects)] = measure_cell(hosts, projects, args.runs, Path(tmp))
                print(
                    f"measured {hosts} hosts x {projects} projects in {time.perf_counter() - started:.0f}s", flush=True
                )
    growth_table(cells, args.runs)
    if not args.no_real_placement:
        real_placement_crosscheck(args.runs, args.churn)


if __name__ == "__main__":
    main()

"""Headroom and N+1 time at scale: 2,000 compute hosts x 30 flavors, 5,000 nodes x 10 shapes (150k pods).

    .venv/bin/python bench/bench_headroom.py [--runs 5] [--skip-curve] [--one-pool 100000]

Prints the median of several runs of: slot counting alone (flavor x host x resource), the whole
`compute_headroom` with N+1 (every host a failure candidate, its consumers re-placed first-fit
decreasing on the survivors), and, as the baseline measured in the same run, a per-host Python loop
doing the slot arithmetic the straightforward way (what os-capacity-style exporters do per provider).

Then the N+1 curve: for growing estates (pods: 1,250 to 5,000 nodes at 30 pods a node; VMs: 2,000 to
8,000 hosts), consumer grouping (median of runs) and N+1 of every pool by brute force (every candidate
re-placed one by one) and as computed (candidates evaluated at once where each displaced class lands on
its first fitting host, the rest branch and bound), in the same run, with the answers checked
identical, and grouping + N+1 against the targets (issue 14): 5,000 nodes / 150k pods / 10 shapes
<= 0.5 s; 8,000 VM hosts <= 1 s.

Then memory: the traced peak of grouping + N+1 of one pool as classes grow on the same hosts (it must
not grow with classes x hosts), and one pool of `--one-pool` hypervisors (100k: 2M VMs, ~60k classes),
in its own process, with its time and peak RSS.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.analyses.headroom import compute_headroom
from collector.analyses.headroom.model import build_host_tables, slot_matrix
from collector.analyses.headroom.settings import HeadroomConfig
from collector.analyses.headroom.vm import build_isolation, flavor_shapes, read_flavors
from collector.app.config import Config
from collector.contract.schema import CAPACITY, CONSUMERS, FLAVORS, HOSTS, OPENSTACK_AGGREGATES

NOW = pd.Timestamp(datetime(2026, 11, 26, tzinfo=UTC)).as_unit("ns")
GIB = 2.0**30


def _flavor_rows(sizes: Any) -> list[dict[str, Any]]:
    """One public flavor per (vcpu, memory, disk) size; every tenth needs the CUSTOM_SSD trait."""
    return [
        {
            "timestamp": NOW,
            "source": "os",
            "cloud": "c1",
            "flavor": f"f{i}",
            "flavor_id": f"f{i}",
            "resources": {"vcpu": float(v), "memory": m, "disk": d},
            "required_traits": ["CUSTOM_SSD"] if i % 10 == 9 else [],
            "forbidden_traits": [],
            "member_of": [],
            "zone": None,
            "is_public": True,
            "projects": [],
        }
        for i, (v, m, d) in enumerate(sizes)
    ]


def openstack_estate(hosts: int = 2000, flavors: int = 30, vms_per_host: int = 20, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    names = [f"cmp-{i:05d}" for i in range(hosts)]
    pools = [f"az{i % 4}" for i in range(hosts)]
    sizes = [(2 ** (i % 5), 2 ** (i % 5) * 2 * GIB * (1 + i % 3), 20 * GIB * (1 + i % 4)) for i in range(flavors)]
    flavor_rows = _flavor_rows(sizes)
    consumers = []
    used = np.zeros((hosts, 3))
    for h in range(hosts):
        for j in range(vms_per_host):
            f = int(rng.integers(0, flavors))
            v, m, d = sizes[f]
            if used[h, 1] + m > 500 * GIB or used[h, 0] + v > 256:
                continue
            used[h] += (v, m, d)
            consumers.append(
                {
                    "timestamp": NOW,
                    "source": "os",
                    "layer": "openstack",
                    "cloud": "c1",
                    "pool": pools[h],
                    "host": names[h],
                    "id": f"vm-{h}-{j}",
                    "name": f"vm-{h}-{j}",
                    "state": "active",
                    "holds_capacity": True,
                    "project": f"p{j % 7}",
                    "flavor": f"f{f}",
                    "cpu": float(v),
                    "memory": m,
                    "disk": d,
                    "resources": {"vcpu": float(v), "memory": m, "disk": d},
                }
            )
    capacity = []
    for h in range(hosts):
        for r, (total, ratio) in enumerate(((64.0, 4.0), (512 * GIB, 1.0), (4000 * GIB, 1.0))):
            capacity.append(
                {
                    "timestamp": NOW,
                    "source": "os",
                    "layer": "openstack",
                    "cloud": "c1",
                    "pool": pools[h],
                    "host": names[h],
                    "scope": "host",
                    "resource": ("vcpu", "memory", "disk")[r],
                    "capacity": total,
                    "reserved": 0.0,
                    "allocation_ratio": ratio,
                    "allocatable": total * ratio,
                    "allocated": used[h, r],
                    "max_unit": total,
                }
            )
    host_rows = [
        {
            "timestamp": NOW,
            "source": "os",
            "layer": "openstack",
            "cloud": "c1",
            "pool": pools[h],
            "host": names[h],
            "schedulable": h % 97 != 0,
            "ready": True,
            "zone": pools[h],
            "aggregates": [],
            "traits": ["CUSTOM_SSD"] if h % 3 == 0 else [],
        }
        for h in range(hosts)
    ]
    return {
        "capacity": CAPACITY.build(capacity),
        "hosts": HOSTS.build(host_rows),
        "flavors": FLAVORS.build(flavor_rows),
        "consumers": CONSUMERS.build(consumers),
    }


def kubernetes_estate(nodes: int = 5000, pods: int = 150_000, owners: int = 200, seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    names = [f"node-{i:05d}" for i in range(nodes)]
    pools = [f"pool-{i % 5}" for i in range(nodes)]
    owner_cpu = rng.choice([0.1, 0.25, 0.5, 1.0], owners)
    owner_mem = rng.choice([128, 256, 512, 1024], owners) * 2.0**20
    owner = rng.integers(0, owners, pods)
    node = rng.integers(0, nodes, pods)
    cpu = owner_cpu[owner]
    mem = owner_mem[owner]
    consumers = pd.DataFrame(
        {
            "timestamp": NOW,
            "source": "k",
            "layer": "kubernetes",
            "cloud": "k1",
            "pool": np.array(pools, dtype=object)[node],
            "host": np.array(names, dtype=object)[node],
            "id": [f"pod-{i}" for i in range(pods)],
            "name": [f"ns/pod-{i}" for i in range(pods)],
            "state": "running",
            "holds_capacity": True,
            "project": "ns",
            "flavor": [f"Deployment/app-{o}" for o in owner],
            "cpu": cpu,
            "memory": mem,
            "resources": [{"cpu": c, "memory": m} for c, m in zip(cpu, mem, strict=True)],
        }
    )
    allocated = np.zeros((nodes, 3))
    np.add.at(allocated, node, np.column_stack([cpu, mem, np.ones(pods)]))
    capacity = []
    for r, (name, total) in enumerate((("cpu", 64.0), ("memory", 256 * GIB), ("pods", 110.0))):
        capacity.append(
            pd.DataFrame(
                {
                    "timestamp": NOW,
                    "source": "k",
                    "layer": "kubernetes",
                    "cloud": "k1",
                    "pool": pools,
                    "host": names,
                    "scope": "host",
                    "resource": name,
                    "capacity": total,
                    "reserved": 0.0,
                    "allocation_ratio": 1.0,
                    "allocatable": total,
                    "allocated": allocated[:, r],
                }
            )
        )
    hosts = pd.DataFrame(
        {
            "timestamp": NOW,
            "source": "k",
            "layer": "kubernetes",
            "cloud": "k1",
            "pool": pools,
            "host": names,
            "schedulable": True,
            "ready": True,
            "taints": [["dedicated=gpu:NoSchedule"] if i % 50 == 0 else [] for i in range(nodes)],
        }
    )
    return {
        "capacity": CAPACITY.coerce(pd.concat(capacity, ignore_index=True)),
        "hosts": HOSTS.coerce(hosts),
        "consumers": CONSUMERS.coerce(consumers),
    }


def one_pool_estate(
    hosts: int = 100_000, vms_per_host: int = 20, flavors: int = 30, tenants: int = 500, tenant_hosts: int = 100
) -> dict:
    """One AZ of `hosts` hypervisors, built column-wise: the first tenants x tenant_hosts hosts are split
    into contiguous tenant-isolation aggregates (filter_tenant_id), each holding that tenant's VMs; the
    rest are public. Classes ~ flavors x (tenants + 1): many classes on many hosts, as in a big cloud."""
    rng = np.random.default_rng(3)
    names = np.array([f"cmp-{i:06d}" for i in range(hosts)], dtype=object)
    sizes = np.array(
        [(2 ** (i % 5), 2 ** (i % 5) * 2 * GIB * (1 + i % 3), 20 * GIB * (1 + i % 4)) for i in range(flavors)]
    )
    flavor_rows = _flavor_rows(sizes)
    n = hosts * vms_per_host
    host_of = np.repeat(np.arange(hosts), vms_per_host)
    flavor_of = rng.integers(0, flavors, n)
    # small flavors only, so every drawn VM fits (64 x 4 vCPU, 512 GiB per host)
    flavor_of = np.where(sizes[flavor_of, 0] > 4, flavor_of % 5, flavor_of)
    vcpu, memory, disk = (sizes[flavor_of, j] for j in range(3))
    isolated = host_of < tenants * tenant_hosts
    tenant_of = np.where(isolated, host_of // tenant_hosts, -1)
    projects = np.where(
        isolated, np.char.add("t", tenant_of.astype(str)), np.char.add("p", (np.arange(n) % 7).astype(str))
    )
    used = np.zeros((hosts, 3))
    np.add.at(used, host_of, np.column_stack([vcpu, memory, disk]))
    consumers = pd.DataFrame(
        {
            "timestamp": NOW,
            "source": "os",
            "layer": "openstack",
            "cloud": "c1",
            "pool": "az0",
            "host": names[host_of],
            "id": np.char.add("vm-", np.arange(n).astype(str)).astype(object),
            "name": np.char.add("vm-", np.arange(n).astype(str)).astype(object),
            "state": "active",
            "holds_capacity": True,
            "project": projects.astype(object),
            "flavor": np.char.add("f", flavor_of.astype(str)).astype(object),
            "cpu": vcpu,
            "memory": memory,
            "disk": disk,
            "resources": [
                {"vcpu": v, "memory": m, "disk": d}
                for v, m, d in zip(vcpu.tolist(), memory.tolist(), disk.tolist(), strict=True)
            ],
        }
    )
    capacity = []
    for r, (name, total, ratio) in enumerate(
        (("vcpu", 64.0, 4.0), ("memory", 512 * GIB, 1.0), ("disk", 4000 * GIB, 1.0))
    ):
        capacity.append(
            pd.DataFrame(
                {
                    "timestamp": NOW,
                    "source": "os",
                    "layer": "openstack",
                    "cloud": "c1",
                    "pool": "az0",
                    "host": names,
                    "scope": "host",
                    "resource": name,
                    "capacity": total,
                    "reserved": 0.0,
                    "allocation_ratio": ratio,
                    "allocatable": total * ratio,
                    "allocated": used[:, r],
                    "max_unit": total,
                }
            )
        )
    aggregate_of = [[f"agg-{i // tenant_hosts}"] if i < tenants * tenant_hosts else [] for i in range(hosts)]
    host_frame = pd.DataFrame(
        {
            "timestamp": NOW,
            "source": "os",
            "layer": "openstack",
            "cloud": "c1",
            "pool": "az0",
            "host": names,
            "schedulable": np.arange(hosts) % 97 != 0,
            "ready": True,
            "zone": "az0",
            "aggregates": aggregate_of,
            "traits": [["CUSTOM_SSD"] if i % 3 == 0 else [] for i in range(hosts)],
        }
    )
    aggregates = pd.DataFrame(
        {
            "timestamp": NOW,
            "source": "os",
            "cloud": "c1",
            "aggregate": [f"tenant-{t}" for t in range(tenants)],
            "uuid": [f"agg-{t}" for t in range(tenants)],
            "zone": None,
            "hosts": [names[t * tenant_hosts : (t + 1) * tenant_hosts].tolist() for t in range(tenants)],
            "metadata": [{"filter_tenant_id": f"t{t}"} for t in range(tenants)],
            "projects": [[f"t{t}"] for t in range(tenants)],
        }
    )
    return {
        "capacity": CAPACITY.coerce(pd.concat(capacity, ignore_index=True)),
        "hosts": HOSTS.coerce(host_frame),
        "flavors": FLAVORS.build(flavor_rows),
        "consumers": CONSUMERS.coerce(consumers),
        "openstack_aggregates": OPENSTACK_AGGREGATES.coerce(aggregates),
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across fork + exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one_pool(hosts: int, tenants: int, tenant_hosts: int = 100) -> None:
    """Grouping and N+1 of one pool of `hosts` hypervisors; time and this process's peak RSS."""
    from collector.analyses.headroom.failure import n_plus_one
    from collector.analyses.headroom.model import widen
    from collector.analyses.headroom.vm import read_aggregates, vm_classes

    start = time.perf_counter()
    frames = one_pool_estate(hosts=hosts, tenants=tenants, tenant_hosts=tenant_hosts)
    built = time.perf_counter() - start
    rss_frames = _peak_rss_mb()
    start = time.perf_counter()
    table = build_host_tables(frames, "openstack")["c1"]
    flavors = read_flavors(frames, "c1")
    isolation = build_isolation(table, read_aggregates(frames, "c1"), "both")
    shapes_ = flavor_shapes(table, flavors, isolation)
    shapes_.requests = widen(shapes_.requests, len(table.resources))
    result = slot_matrix(shapes_.requests, table, shapes_.eligible)
    tables = time.perf_counter() - start
    start = time.perf_counter()
    classes = vm_classes(table, frames["consumers"], flavors, isolation)
    grouping = time.perf_counter() - start
    start = time.perf_counter()
    failure = n_plus_one(table, shapes_, result, classes, np.ones(table.size, dtype=bool))
    n1 = time.perf_counter() - start
    rss = _peak_rss_mb()
    dense = len(classes) * table.size * (8 + 1 + 8) / 2**30
    print(
        f"one pool: {table.size:,} hosts, {len(frames['consumers']):,} VMs, {len(classes):,} classes "
        f"({classes.masks.shape[0]:,} distinct host masks, {len(classes.held_host):,} held pairs): "
        f"estate {built:.1f} s, tables+slots {tables:.1f} s, grouping {grouping:.2f} s, N+1 {n1:.2f} s "
        f"({failure.evaluated:,} candidates, {failure.at_once:,} at once); peak RSS {rss:,.0f} MB "
        f"({rss_frames:,.0f} MB after building the frames); a dense classes x hosts layout would need {dense:,.1f} GB"
    )


def memory_curve() -> None:
    """Traced peak memory of grouping + N+1 of one pool as classes grow on the same hosts and VMs."""
    import tracemalloc

    from collector.analyses.headroom.failure import n_plus_one
    from collector.analyses.headroom.model import widen
    from collector.analyses.headroom.vm import read_aggregates, vm_classes

    print("\nMemory of grouping + N+1, one pool of 2,000 hosts and 20,000 VMs, classes grown by tenant isolation")
    print(f"{'tenants':>8} {'classes':>8} {'classes x hosts':>16} {'traced peak MB':>15} {'dense layout MB':>16}")
    for tenants in (10, 80, 300):
        frames = one_pool_estate(hosts=2000, vms_per_host=10, tenants=tenants, tenant_hosts=2000 // (2 * tenants))
        table = build_host_tables(frames, "openstack")["c1"]
        flavors = read_flavors(frames, "c1")
        isolation = build_isolation(table, read_aggregates(frames, "c1"), "both")
        shapes_ = flavor_shapes(table, flavors, isolation)
        shapes_.requests = widen(shapes_.requests, len(table.resources))
        result = slot_matrix(shapes_.requests, table, shapes_.eligible)
        tracemalloc.start()
        classes = vm_classes(table, frames["consumers"], flavors, isolation)
        n_plus_one(table, shapes_, result, classes, np.ones(table.size, dtype=bool))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cells = len(classes) * table.size
        print(f"{tenants:>8} {len(classes):>8} {cells:>16,} {peak / 2**20:>15.1f} {cells * 17 / 2**20:>16.1f}")
    print("(dense layout: the previous int64 counts + bool eligibility + int64 fit, 17 bytes per class x host)")


def naive_slots(frames: dict) -> float:
    """Baseline: per provider and flavor, a Python loop of floor(free / request) (os-capacity's way)."""
    capacity = frames["capacity"]
    free: dict[str, dict[str, float]] = {}
    for host, resource, allocatable, allocated in zip(
        capacity["host"], capacity["resource"], capacity["allocatable"], capacity["allocated"], strict=True
    ):
        free.setdefault(host, {})[resource] = allocatable - allocated
    total = 0.0
    for flavor in frames["flavors"].to_dict("records"):
        for resources in free.values():
            total += min(resources.get(r, 0.0) // amount for r, amount in flavor["resources"].items())
    return total


def timed(func: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _n_plus_one_inputs(frames: dict, layer: str, config: Config, runs: int = 1) -> tuple:
    """Tables, shapes, slot matrix and consumer classes (the curve times N+1 alone); grouping's median time."""
    from collector.analyses.headroom.model import widen
    from collector.analyses.headroom.pods import common_shapes, configured_shapes, pod_classes, pod_shapes
    from collector.analyses.headroom.vm import vm_classes

    cloud, table = next(iter(build_host_tables(frames, layer).items()))

    def group() -> tuple:
        if layer == "kubernetes":
            specs = configured_shapes(config) + common_shapes(table, frames["consumers"], 5)
            return pod_shapes(table, specs), pod_classes(table, frames["consumers"])
        flavors = read_flavors(frames, cloud)
        isolation = build_isolation(table, {}, "both")
        return flavor_shapes(table, flavors, isolation), vm_classes(table, frames["consumers"], flavors, isolation)

    shapes_, classes = group()
    grouping = timed(group, runs)
    shapes_.requests = widen(shapes_.requests, len(table.resources))
    return table, shapes_, slot_matrix(shapes_.requests, table, shapes_.eligible), classes, grouping


def _all_pools(inputs: tuple, exhaustive: bool) -> list:
    from collector.analyses.headroom.failure import n_plus_one

    table, shapes_, result, classes, _ = inputs
    return [
        n_plus_one(table, shapes_, result, classes, table.pools == pool, exhaustive=exhaustive)
        for pool in np.unique(table.pools)
    ]


def curve(runs: int, k8s_config: Config) -> None:
    print("\nN+1 of every pool (node pools / AZs), median of runs; consumer grouping shown apart (built once per")
    print("analysis, shared by every pool):")
    header = (
        f"{'estate':<42} {'candidates':>10} {'at once':>8} {'one by one':>10} {'grouping s':>10} "
        f"{'brute s':>8} {'pruned s':>8} {'speed-up':>8} {'total s':>8}  same"
    )
    print(header)
    verdicts: list[str] = []
    sizes = [("kubernetes", n, n * 30) for n in (1250, 2500, 5000)] + [("openstack", n, 0) for n in (2000, 4000, 8000)]
    for layer, size, pods in sizes:
        if layer == "kubernetes":
            frames = kubernetes_estate(nodes=size, pods=pods)
            label = f"pods: {size:,} nodes, {pods:,} pods, 10 shapes"
            inputs = _n_plus_one_inputs(frames, layer, k8s_config, max(1, runs))
        else:
            frames = openstack_estate(hosts=size)
            label = f"VMs: {size:,} hosts, {len(frames['consumers']):,} VMs, 30 flavors"
            inputs = _n_plus_one_inputs(frames, layer, Config(), max(1, runs))
        pruned_results = _all_pools(inputs, False)
        brute_results = _all_pools(inputs, True)
        same = all(
            a.slots_after.tolist() == b.slots_after.tolist()
            and a.domain == b.domain
            and a.shortfall.tolist() == b.shortfall.tolist()
            and a.shortfall_domain == b.shortfall_domain
            for a, b in zip(pruned_results, brute_results, strict=True)
        )
        brute = timed(lambda inputs=inputs: _all_pools(inputs, True), max(1, runs))
        pruned = timed(lambda inputs=inputs: _all_pools(inputs, False), max(1, runs))
        candidates = sum(r.evaluated for r in brute_results)
        at_once = sum(r.at_once for r in pruned_results)
        one_by_one = sum(r.evaluated - r.at_once for r in pruned_results)
        print(
            f"{label:<42} {candidates:>10} {at_once:>8} {one_by_one:>10} {inputs[4]:>10.2f} {brute:>8.3f} "
            f"{pruned:>8.3f} {brute / pruned:>7.1f}x {inputs[4] + pruned:>8.3f}  "
            + ("yes" if same else "NO: RESULTS DIFFER")
        )
        target = {("kubernetes", 5000): 0.5, ("openstack", 8000): 1.0}.get((layer, size))
        if target is not None:
            verdicts.append(
                f"{label}: grouping + N+1 {inputs[4] + pruned:.3f} s, target <= {target} s: "
                + ("met" if inputs[4] + pruned <= target else "MISSED")
            )
    for verdict in verdicts:
        print(verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-curve", action="store_true", help="only the fixed-size figures")
    parser.add_argument("--one-pool", type=int, default=100_000, help="hosts of the one-pool line (0: skip)")
    parser.add_argument("--one-pool-child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_pool_child:
        one_pool(*args.one_pool_child, tenant_hosts=33)
        return
    os_frames = openstack_estate()
    k8s_frames = kubernetes_estate()
    shapes = {f"s{i}": {"cpu": f"{(i % 4 + 1) * 250}m", "memory": f"{(i % 3 + 1) * 512}Mi"} for i in range(5)}
    k8s_config = Config.model_validate({"shapes": shapes, "headroom": {"common_shapes": 5}})
    no_failure = Config(headroom=HeadroomConfig(n_plus_one=False))
    print(
        f"openstack: {os_frames['hosts'].shape[0]} hosts, {len(os_frames['flavors'])} flavors, "
        f"{len(os_frames['consumers'])} VMs"
    )
    print(f"kubernetes: {k8s_frames['hosts'].shape[0]} nodes, 10 shapes, {len(k8s_frames['consumers'])} pods")

    def slots_only() -> None:
        table = build_host_tables(os_frames, "openstack")["c1"]
        shapes_ = flavor_shapes(table, read_flavors(os_frames, "c1"), build_isolation(table, {}, "both"))
        slot_matrix(shapes_.requests, table, shapes_.eligible)

    table = build_host_tables(os_frames, "openstack")["c1"]
    shapes_ = flavor_shapes(table, read_flavors(os_frames, "c1"), build_isolation(table, {}, "both"))
    matrix_only = timed(lambda: slot_matrix(shapes_.requests, table, shapes_.eligible), args.runs)
    baseline = timed(lambda: naive_slots(os_frames), args.runs)
    figures = {
        "vm slot matrix (30 flavors x 2,000 hosts)": matrix_only,
        "vm tables + shapes + slot matrix": timed(slots_only, args.runs),
        "vm headroom, all pools, no N+1": timed(lambda: compute_headroom(os_frames, no_failure, NOW), args.runs),
        "vm headroom with N+1 (every host a candidate, AZ + cloud)": timed(
            lambda: compute_headroom(os_frames, Config(), NOW), max(1, args.runs // 2)
        ),
        "pod headroom, no N+1 (10 shapes x 5,000 nodes)": timed(
            lambda: compute_headroom(
                k8s_frames,
                k8s_config.model_copy(update={"headroom": HeadroomConfig(common_shapes=5, n_plus_one=False)}),
                NOW,
            ),
            args.runs,
        ),
        "pod headroom with N+1 (node pools + cluster)": timed(
            lambda: compute_headroom(k8s_frames, k8s_config, NOW), max(1, args.runs // 2)
        ),
    }
    width = max(len(k) for k in figures)
    for name, seconds in figures.items():
        print(f"{name:<{width}}  {seconds * 1000:10.1f} ms (median)")
    print(f"{'baseline: per-host Python loop, slots only':<{width}}  {baseline * 1000:10.1f} ms (median)")
    print(f"slot matrix speed-up over the per-host loop: {baseline / matrix_only:.0f}x")
    if not args.skip_curve:
        curve(max(1, args.runs // 2), k8s_config)
        memory_curve()
    if args.one_pool:
        # Its own process, so that its peak RSS is its own.
        import subprocess

        tenants = max(1, args.one_pool * 3 // 100)  # 3,000 aggregates of 33 hosts at 100k: ~60k classes
        print(
            f"\nOne pool of {args.one_pool:,} hypervisors, {tenants:,} tenant-isolation aggregates of 33 hosts"
            " (single run):"
        )
        subprocess.run([sys.executable, __file__, "--one-pool-child", str(args.one_pool), str(tenants)], check=True)


if __name__ == "__main__":
    main()

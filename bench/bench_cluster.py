"""Scale-out coordination costs: rendezvous ownership and the planner's /snapshot wire format.

    .venv/bin/python bench/bench_cluster.py [--runs 5] [--targets 100000] [--hosts 5000]

Prints medians of several runs of:
- assigning `--targets` target identities over 10 shards by rendezvous hashing, against plain modulo
  hashing (Prometheus' hashmod) measured in the same run, and the share of targets each moves when an
  11th shard joins;
- encoding + decoding the frames of `--hosts` compute hosts (20 VMs each: the consumers frame dominates)
  to the /snapshot Arrow IPC format, against `capacityd once --format json`'s encoder as the baseline,
  with the bytes each puts on the wire.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_headroom import openstack_estate

from collector.app.cluster.sharding import assign, static_members
from collector.app.cluster.snapshot import decode_frame, encode_frame
from collector.app.commands.core import frames_to_json


def median_seconds(func: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def modulo(targets: list[str], shards: int) -> dict[str, int]:
    return {t: int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big") % shards for t in targets}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=5000)
    args = parser.parse_args()

    targets = [f"qemu+tls://cmp-{i:06d}.example/system" for i in range(args.targets)]
    rendezvous = median_seconds(lambda: assign(targets, static_members(10)), args.runs)
    baseline = median_seconds(lambda: modulo(targets, 10), args.runs)
    before, after = assign(targets, static_members(10)), assign(targets, static_members(11))
    moved = sum(before[t] != after[t] for t in targets) / len(targets)
    mod_before, mod_after = modulo(targets, 10), modulo(targets, 11)
    mod_moved = sum(mod_before[t] != mod_after[t] for t in targets) / len(targets)
    print(f"ownership of {args.targets} targets over 10 shards (median of {args.runs}):")
    print(f"  rendezvous {rendezvous:.3f} s   modulo (baseline) {baseline:.3f} s   ratio {rendezvous / baseline:.1f}x")
    print(f"  10 -> 11 shards moves: rendezvous {moved:.1%}, modulo {mod_moved:.1%}")

    frames = openstack_estate(hosts=args.hosts)
    rows = {name: len(frame) for name, frame in frames.items()}

    def arrow_round_trip() -> int:
        return sum(len(decode_frame(name, encode_frame(frame))) for name, frame in frames.items())

    encoded = {name: encode_frame(frame) for name, frame in frames.items()}
    arrow = median_seconds(arrow_round_trip, args.runs)
    arrow_encode = median_seconds(lambda: [encode_frame(f) for f in frames.values()], args.runs)
    json_encode = median_seconds(lambda: frames_to_json(frames), args.runs)
    print(f"/snapshot of {args.hosts} hosts ({rows}) (median of {args.runs}):")
    print(
        f"  Arrow encode {arrow_encode:.3f} s, encode+decode+contract cast {arrow:.3f} s, "
        f"{sum(len(b) for b in encoded.values()) / 2**20:.1f} MiB"
    )
    json_mib = len(frames_to_json(frames)) / 2**20
    print(
        f"  JSON encode (baseline, `once --format json`) {json_encode:.3f} s, {json_mib:.1f} MiB"
        f"   ratio Arrow/JSON encode {arrow_encode / json_encode:.2f}x"
    )


if __name__ == "__main__":
    main()

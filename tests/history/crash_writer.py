"""Child process of the kill -9 test: appends big batches in a loop (and compacts now and then).

Prints `ready` once the store is open, then `committed <i>` after each append of batch i returns;
the parent kills it with SIGKILL at a random moment. Batch i is a deterministic function of i,
so the parent can check every stored batch is complete and exact.

    python -m tests.history.crash_writer STATE_DIR FIRST_BATCH
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from collector.store.history import History
from collector.store.settings import HistoryConfig
from tests.history.frames import capacity_frame, consumers_frame

BASE = datetime(2026, 3, 2, tzinfo=UTC)
POOLS = ("az1", "az2", "az3", "az4")
HOSTS_PER_POOL = 250
RESOURCES = ("cpu", "memory", "disk", "pods")
CONSUMERS = 5000
CONFIG = HistoryConfig(
    raw_retention=timedelta(days=30),
    host_raw_retention=timedelta(days=30),
    downsample_step=timedelta(minutes=10),
    retention=timedelta(days=400),
    consumer_retention=timedelta(days=30),
)
ROWS_PER_BATCH = len(POOLS) * HOSTS_PER_POOL * len(RESOURCES)


def batch_time(i: int) -> datetime:
    return BASE + timedelta(minutes=i)


def used_fraction(i: int) -> np.ndarray:
    """Per-row used fraction of batch i: distinct per batch and per row, so a torn batch shows."""
    return ((np.arange(ROWS_PER_BATCH) + 7 * i) % 97) / 97.0


def main() -> None:
    state_dir, first = Path(sys.argv[1]), int(sys.argv[2])
    history = History.open(state_dir, CONFIG)
    print("ready", flush=True)
    # Frames are built once and only their values change per batch, so most of the writer's time is
    # spent inside History.append: a random kill lands mid-transaction as often as possible.
    capacity = capacity_frame(BASE, source="crash", pools=POOLS, hosts_per_pool=HOSTS_PER_POOL, resources=RESOURCES)
    consumers = consumers_frame(BASE, source="crash", count=CONSUMERS)
    i = first
    while True:
        when = batch_time(i)
        stamp = pd.Timestamp(when).as_unit("ns")
        capacity["timestamp"] = stamp
        capacity["used"] = capacity["capacity"].to_numpy() * used_fraction(i)
        consumers["timestamp"] = stamp
        consumers["cpu_used"] = float(i % 5)
        frames = {"capacity": capacity, "consumers": consumers}
        history.append("crash", frames, when)
        print(f"committed {i}", flush=True)
        if i % 7 == 3:
            history.flush()
        if i % 11 == 5:
            history.compact(when)
        i += 1


if __name__ == "__main__":
    main()

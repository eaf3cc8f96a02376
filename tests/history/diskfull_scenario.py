"""Child process of the disk-full test, run inside a private mount namespace on a small tmpfs.

    unshare -m sh -c 'mount -t tmpfs -o size=4m tmpfs MNT && python -m tests.history.diskfull_scenario MNT OUT'

The scenario of issue 12 item 1, as the daemon drives the store: source A polls successfully while the
disk is full (its writes fail), the filesystem is grown (`mount -o remount,size=...`), A goes on and a
second source B is added; then the disk fills again and the store is closed (shutdown on a full disk);
then a restart on a disk with room. The history file is copied to OUT/history.sqlite for the parent
to verify; what the store returned, counted and logged is printed as one JSON document on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.estate import Snapshot
from collector.store.history import History
from collector.store.settings import HistoryConfig
from exporters.prometheus.exposition import load_builtin_family_modules, render
from tests.history.frames import capacity_frame, consumers_frame

BASE = datetime(2026, 3, 2, 10, tzinfo=UTC)
CONFIG = HistoryConfig()
A = {"source": "cloud-a", "cloud": "a", "pools": ("a1", "a2"), "hosts_per_pool": 40}
B = {"source": "cloud-b", "cloud": "b", "pools": ("b1",), "hosts_per_pool": 20}
RESOURCES = ("cpu", "memory", "disk", "pods")
CONSUMERS = 400


def poll(spec: dict, minute: int) -> dict:
    when = BASE + timedelta(minutes=minute)
    capacity = capacity_frame(when, source=spec["source"], cloud=spec["cloud"], pools=spec["pools"],
                              hosts_per_pool=spec["hosts_per_pool"], resources=RESOURCES)  # fmt: skip
    consumers = consumers_frame(when, source=spec["source"], cloud=spec["cloud"], pool=spec["pools"][0],
                                count=CONSUMERS, hosts=spec["hosts_per_pool"])  # fmt: skip
    return {"capacity": capacity, "consumers": consumers}


def rows(spec: dict) -> int:
    return len(spec["pools"]) * spec["hosts_per_pool"] * len(RESOURCES) + CONSUMERS


def fill(mount: Path) -> Path:
    """Checkpoint the WAL to nothing (so the next commit needs new blocks), then fill the filesystem."""
    with sqlite3.connect(mount / "state" / "history.sqlite") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"level": record.levelname, "logger": record.name, "text": self.format(record)})


def main(mount: Path, out: Path) -> None:
    records = Records()
    logging.getLogger().addHandler(records)
    logging.getLogger().setLevel(logging.INFO)
    results: dict[str, object] = {}
    state = mount / "state"
    history = History.open(state, CONFIG)

    def append(spec: dict, minute: int) -> bool | None:
        try:
            return history.append(spec["source"], poll(spec, minute), BASE + timedelta(minutes=minute))
        except Exception as error:  # noqa: BLE001 - the daemon logs and goes on; so does this scenario
            results.setdefault("raised", []).append(f"{type(error).__name__}: {error}")  # type: ignore[union-attr]
            return None

    fill(mount)
    results["full"] = [append(A, 0), append(A, 1)]
    results["full_stats"] = history.stats().frame().to_dict("records")
    subprocess.run(["mount", "-o", "remount,size=64m", "tmpfs", str(mount)], check=True)
    results["grown"] = [append(A, 2), append(A, 3), append(B, 4), append(A, 5), append(B, 6)]
    fill(mount)
    results["full_again"] = [append(A, 7)]
    try:
        history.close()  # consumer usage of the hour is still buffered: the flush fails on the full disk
        results["close"] = "ok"
    except Exception as error:  # noqa: BLE001
        results["close"] = f"{type(error).__name__}: {error}"
    results["stats"] = history.stats().frame().to_dict("records")
    snapshot = Snapshot(taken_at=datetime.now(UTC), frames=history.stats_frames(), statuses=())
    load_builtin_family_modules()
    results["exposition"] = render(snapshot).decode()  # what /metrics serves from these counters
    for filler in mount.glob("filler-*"):
        filler.unlink()
    history = History.open(state, CONFIG)  # restart
    results["restarted"] = [append(A, 8), append(B, 9)]
    history.close()
    for name in ("history.sqlite", "history.sqlite-wal"):
        if (state / name).exists():
            shutil.copy(state / name, out / name)
    results["rows"] = {"A": rows(A), "B": rows(B)}
    results["log"] = records.lines
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

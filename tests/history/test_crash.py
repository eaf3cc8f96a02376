"""kill -9 in the middle of writes: the file opens, passes integrity_check, and no batch is torn.

A child process (tests/history/crash_writer.py) appends 4000-row capacity batches plus 5000 consumers
in a loop, flushing consumer usage and compacting now and then; it is SIGKILLed at random moments,
several rounds in a row on the same file. After each round the stored data is checked batch by batch
against what the writer must have written.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from collector.store.history import History
from tests.history import crash_writer as writer
from tests.history.frames import RESOURCES

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 8


def expected_used_sum(i: int) -> float:
    capacity = np.tile(np.array([RESOURCES[r] for r in writer.RESOURCES]), len(writer.POOLS) * writer.HOSTS_PER_POOL)
    return float((capacity * writer.used_fraction(i)).sum())


def batch_index(ts: int) -> int:
    offset = ts - int(writer.BASE.timestamp())
    assert offset % 60 == 0, f"timestamp {ts} is not one the writer uses"
    return offset // 60


def run_and_kill(state: Path, first: int, delay: float) -> list[int]:
    """Start the writer, let it write for `delay` seconds after it is ready, SIGKILL it; return committed ids."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.history.crash_writer", str(state), str(first)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == "ready", f"writer did not start: {line!r} {process.stderr.read()}"
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=delay)
        assert process.poll() is None, f"writer died by itself: {process.stderr.read()}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        return [int(line.split()[1]) for line in process.stdout.read().splitlines() if line.startswith("committed")]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def check_store(path: Path) -> dict[str, object]:
    """Integrity and batch-by-batch completeness, read with plain sqlite3 (independent of History)."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        host = con.execute("SELECT ts, count(*), sum(used) FROM host_raw GROUP BY ts ORDER BY ts").fetchall()
        pool = dict(
            (ts, (n, used)) for ts, n, used in
            con.execute("SELECT ts, count(*), sum(used) FROM pool_raw GROUP BY ts").fetchall()
        )  # fmt: skip
        stored = []
        for ts, rows, used in host:
            i = batch_index(ts)
            assert rows == writer.ROWS_PER_BATCH, f"batch {i} torn: {rows} of {writer.ROWS_PER_BATCH} host rows"
            assert used == pytest.approx(expected_used_sum(i), rel=1e-9), f"batch {i} has wrong host values"
            pool_rows, pool_used = pool.pop(ts, (0, 0.0))
            assert pool_rows == len(writer.POOLS) * len(writer.RESOURCES), f"batch {i} torn: {pool_rows} pool rows"
            assert pool_used == pytest.approx(expected_used_sum(i), rel=1e-9), f"batch {i} has wrong pool sums"
            stored.append(i)
        assert not pool, f"pool rows without their host rows at {sorted(pool)[:5]}"
        for ts, total in con.execute("SELECT ts, sum(count) FROM consumer_counts GROUP BY ts"):
            assert total == writer.CONSUMERS, f"consumer counts at {ts} torn: {total}"
        rollup_until = con.execute("SELECT value FROM meta WHERE key = 'rollup_until'").fetchone()
        rollups = []
        if rollup_until is not None:
            # Every rolled-up bucket agrees with the raw rows it was computed from (compaction is atomic).
            step = int(writer.CONFIG.downsample_step.total_seconds())
            mismatched = con.execute(
                "SELECT r.pkey, r.ts, r.samples, count(p.ts) FROM pool_rollup r LEFT JOIN pool_raw p "
                "ON p.pkey = r.pkey AND p.ts >= r.ts AND p.ts < r.ts + ? GROUP BY r.pkey, r.ts "
                "HAVING r.samples != count(p.ts)",
                (step,),
            ).fetchall()
            assert not mismatched, f"rollups disagree with raw rows: {mismatched[:3]}"
            rollups = con.execute("SELECT * FROM pool_rollup ORDER BY pkey, ts").fetchall()
            missing = con.execute(
                "SELECT count(*) FROM (SELECT DISTINCT pkey, ts / ? * ? AS b FROM pool_raw WHERE ts < ?) raw "
                "WHERE NOT EXISTS (SELECT 1 FROM pool_rollup r WHERE r.pkey = raw.pkey AND r.ts = raw.b)",
                (step, step, int(rollup_until[0])),
            ).fetchone()[0]
            assert missing == 0, f"{missing} buckets before rollup_until were not rolled up"
        per_hour = {}
        for i in stored:
            hour = int(writer.batch_time(i).timestamp()) // 3600 * 3600
            per_hour[hour] = per_hour.get(hour, 0) + 1
        for hour, samples in con.execute("SELECT hour, max(samples) FROM consumer_hourly GROUP BY hour"):
            assert samples <= per_hour.get(hour, 0), f"consumer hour {hour} counts {samples} samples"
        return {"stored": stored, "rollups": rollups}
    finally:
        con.close()


@pytest.mark.timeout(300)
def test_kill_9_during_writes_never_corrupts_or_tears(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rng = random.Random(0xC0FFEE)
    committed: set[int] = set()
    previous: dict[str, object] = {"stored": [], "rollups": []}
    next_batch = 0
    for round_number in range(ROUNDS):
        reported = run_and_kill(state, next_batch, rng.uniform(0.5, 3.0))
        committed.update(reported)
        result = check_store(state / "history.sqlite")
        stored = result["stored"]
        assert stored == list(range(len(stored))), f"round {round_number}: holes in the stored batches"
        # Everything the writer saw committed is there (durable across kill -9 with synchronous=NORMAL);
        # beyond that, at most the batch that committed just before the kill could print its line.
        assert committed <= set(stored), f"round {round_number}: committed batches lost"
        assert len(stored) <= max(committed, default=-1) + 2
        # Earlier data intact: batches and rollups of earlier rounds are unchanged.
        assert stored[: len(previous["stored"])] == previous["stored"]
        assert set(previous["rollups"]) <= set(result["rollups"]), f"round {round_number}: rollups changed"
        previous = result
        next_batch = len(stored)
    assert len(committed) >= ROUNDS, "the writer committed too few batches to mean anything"
    # The store is usable afterwards, and reads give one complete series.
    with History.open(state, writer.CONFIG) as history:
        series = history.pool_series(pool="az1", resource="cpu", step=timedelta(minutes=1))
        assert len(series) == next_batch
        assert series["hosts"].eq(writer.HOSTS_PER_POOL).all()
        assert history.last_timestamp("crash") == writer.batch_time(next_batch - 1)

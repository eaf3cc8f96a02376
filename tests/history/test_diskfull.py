"""A full disk never leaves history silently wrong (issue 12 item 1).

The scenario (tests/history/diskfull_scenario.py) runs in a private mount namespace on a 4 MiB tmpfs,
so it needs root and `unshare` but no change to the host. Before the fix, the polls of source A made
while the disk was full left key ids cached in memory that had never been committed: A's later polls
were stored under keys that did not exist, then under source B's keys once B was added.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from collector.store.history import History
from collector.store.verify import verify
from tests.history import diskfull_scenario as scenario
from tests.history.frames import RESOURCES

REPO = Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -m (private mount namespace)")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("diskfull")
    mount, out = work / "mnt", work / "out"
    mount.mkdir()
    out.mkdir()
    script = 'mount -t tmpfs -o size=4m tmpfs "$1" && exec "$2" -m tests.history.diskfull_scenario "$1" "$3"'
    process = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(mount), sys.executable, str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert not any(mount.iterdir()), "the tmpfs leaked out of the private mount namespace"
    return json.loads(process.stdout), out / "history.sqlite"


def _stat(records: list[dict], metric: str, reason: str = "") -> float:
    return sum(r["value"] for r in records if r["metric"] == metric and r["reason"] == reason)


def test_polls_on_a_full_disk_are_dropped_counted_and_never_raise(outcome: tuple[dict, Path]) -> None:
    results, _ = outcome
    assert "raised" not in results, results.get("raised")
    assert results["full"] == [False, False]
    assert results["grown"] == [True] * 5
    assert results["full_again"] == [False]
    assert results["close"] == "ok", "close() on a full disk must not fail"
    assert results["restarted"] == [True, True]
    assert _stat(results["full_stats"], "write_errors", "disk_full") == 2
    assert _stat(results["full_stats"], "dropped_samples") == 2 * results["rows"]["A"]
    # 2 + 1 failed poll writes, then 2 failed consumer-usage flushes at close (one per source).
    assert _stat(results["stats"], "write_errors", "disk_full") == 5
    assert _stat(results["stats"], "write_errors", "io") == 0
    consumers = scenario.CONSUMERS
    assert _stat(results["stats"], "dropped_samples") == 3 * results["rows"]["A"] + 2 * consumers


def test_the_counters_reach_the_exposition(outcome: tuple[dict, Path]) -> None:
    results, _ = outcome
    text = results["exposition"]
    assert 'capacityd_history_write_errors_total{reason="disk_full"} 5.0' in text
    assert 'capacityd_history_write_errors_total{reason="io"} 0.0' in text
    dropped = 3 * results["rows"]["A"] + 2 * scenario.CONSUMERS
    assert f"capacityd_history_dropped_samples_total {float(dropped)}" in text


def test_one_line_per_episode_and_no_traceback(outcome: tuple[dict, Path]) -> None:
    results, _ = outcome
    loud = [r for r in results["log"] if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
    assert [r["level"] for r in loud] == ["ERROR", "WARNING", "ERROR"], loud
    assert "disk_full" in loud[0]["text"] and "cloud-a" in loud[0]["text"]
    assert "succeed again" in loud[1]["text"] and "2 failed writes" in loud[1]["text"]
    assert all("\n" not in r["text"] and "Traceback" not in r["text"] for r in results["log"])


def test_history_after_the_episode_is_owned_and_exact(outcome: tuple[dict, Path], tmp_path: Path) -> None:
    _, path = outcome
    assert verify(path) == []
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(path, state / "history.sqlite")
    history = History.open(state, scenario.CONFIG)
    try:
        base = scenario.BASE
        stored = {"cloud-a": [2, 3, 5, 8], "cloud-b": [4, 6, 9]}
        hosts = history.host_series(resource="memory")
        for source, minutes in stored.items():
            times = sorted(set(hosts.loc[hosts["source"] == source, "timestamp"]))
            assert times == [base + timedelta(minutes=m) for m in minutes], source
        per_host = RESOURCES["memory"]
        pools = history.pool_series(resource="memory", start=base, end=base + timedelta(minutes=10),
                                    step=timedelta(minutes=1))  # fmt: skip
        for spec in (scenario.A, scenario.B):
            for pool in spec["pools"]:
                rows = pools[(pools["cloud"] == spec["cloud"]) & (pools["pool"] == pool)].dropna(subset=["capacity"])
                assert len(rows), (spec["source"], pool)
                assert set(rows["capacity"]) == {spec["hosts_per_pool"] * per_host}, (spec["source"], pool)
        counts = history.consumer_counts()
        for source, minutes in stored.items():
            mine = counts[counts["source"] == source]
            assert set(mine["timestamp"]) <= {base + timedelta(minutes=m) for m in minutes}
            assert mine.groupby("timestamp")["count"].sum().eq(scenario.CONSUMERS).all()
    finally:
        history.close()

"""The store's counters on /metrics: through the daemon's Pipeline, valid for promtool (docs/metrics.md)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.app.config import Config
from collector.app.daemon import Pipeline
from collector.estate import Estate
from collector.store.health import classify
from collector.store.history import History
from exporters.prometheus.exposition import ExpositionCache, load_builtin_family_modules
from tests.history.frames import capacity_frame, consumers_frame


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_rejected_samples_and_write_errors_reach_metrics_through_the_pipeline(
    tmp_path: Path, history: History, t0: datetime
) -> None:
    load_builtin_family_modules()
    cache = ExpositionCache()
    pipeline = Pipeline(Config(state_dir=tmp_path), Estate(), history, cache)
    pipeline.refresh()
    before = samples(cache.current.body)
    assert before[("capacityd_history_write_errors_total", (("reason", "disk_full"),))] == 0
    assert before[("capacityd_history_dropped_samples_total", ())] == 0
    assert not [key for key in before if key[0] == "capacityd_history_rejected_samples_total"]

    frames = {"capacity": capacity_frame(t0, source="a"), "consumers": consumers_frame(t0, source="a")}
    assert history.append("a", frames, t0)
    history.compact(t0 + timedelta(days=9))  # full-resolution history now starts days after t0
    late = t0 + timedelta(minutes=1)
    assert not history.append("a", {"capacity": capacity_frame(late, source="a"),
                                    "consumers": consumers_frame(late, source="a")}, late)  # fmt: skip
    after = samples(pipeline.refresh().frames and cache.current.body)
    rows = len(frames["capacity"]) + len(frames["consumers"])
    assert after[("capacityd_history_rejected_samples_total", (("reason", "too_old"), ("source", "a")))] == rows
    assert history.rejected["a"] == 1  # polls, as before
    assert after[("capacityd_history_last_write_success_timestamp_seconds", ())] > 0

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' (scripts/provision/ops.sh)")
    result = subprocess.run([promtool, "check", "metrics"], input=cache.current.body, capture_output=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_without_history_there_are_no_store_families(tmp_path: Path) -> None:
    load_builtin_family_modules()
    cache = ExpositionCache()
    Pipeline(Config(state_dir=tmp_path), Estate(), None, cache).refresh()
    assert b"capacityd_history_" not in cache.current.body


@pytest.mark.parametrize(
    ("code", "reason"),
    [(13, "disk_full"), (10, "io"), (10 | (3 << 8), "io"), (5, "locked"), (6, "locked"), (8, "readonly"),
     (11, "corrupt"), (26, "corrupt"), (1, "other"), (None, "other")],
)  # fmt: skip
def test_reasons_follow_sqlites_primary_result_code(code: int | None, reason: str) -> None:
    error = sqlite3.OperationalError("x")
    if code is not None:
        error.sqlite_errorcode = code
    assert classify(error) == reason

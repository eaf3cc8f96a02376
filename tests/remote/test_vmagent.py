"""Durability across a TSDB outage: capacityd -> local vmagent -> VictoriaMetrics. The TSDB is stopped for a
minute while polls keep coming; vmagent buffers them on disk and forwards them when it is back: none is lost,
and capacityd's own retry queue never fills (vmagent accepts every write)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.store.remote.backend import RemoteHistory, open_backend
from collector.store.settings import HistoryConfig, RemoteHistoryConfig
from tests.history.frames import capacity_frame
from tests.remote.conftest import recent_t0
from tests.remote.tsdb import flush, victoria_metrics, vmagent

pytestmark = pytest.mark.slow

POLL = timedelta(minutes=5)
OUTAGE_SECONDS = 60.0
VALUES = ("capacity", "allocatable", "allocated", "used")


def _same_shape(stored: pd.DataFrame, expected: pd.DataFrame) -> bool:
    """Every row and every value of the row is back (not only the row: its other metrics may still be on the way)."""
    return len(stored) == len(expected) and all(
        int(stored[column].notna().sum()) == int(expected[column].notna().sum()) for column in VALUES
    )


def test_tsdb_down_for_a_minute_behind_vmagent_loses_no_sample(tmp_path: Path) -> None:
    vm = victoria_metrics(tmp_path)
    agent = vmagent(tmp_path, f"{vm.url}/api/v1/write")
    t0 = recent_t0()
    config = HistoryConfig(backend="remote", remote=RemoteHistoryConfig(
        write_url=f"{agent.url}/api/v1/write", read_url=vm.url, max_retries=0))  # fmt: skip
    history = open_backend(tmp_path / "state", config)
    assert isinstance(history, RemoteHistory)
    polls = 0

    def poll() -> None:
        nonlocal polls
        when = t0 + polls * POLL
        frame = capacity_frame(when, source="kvm", pools=("az1", "az2"), hosts_per_pool=5,
                               allocated=0.3 + 0.001 * polls)  # fmt: skip
        assert history.append("kvm", {"capacity": frame}, when)
        polls += 1

    try:
        for _ in range(5):
            poll()
        vm.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < OUTAGE_SECONDS:
            poll()
            time.sleep(1.0)
        during = polls
        vm.start()
        for _ in range(5):
            poll()
        assert history.remote_stats.dropped_samples == 0 and history.remote_stats.failed_samples == 0
        assert history.writer.queue_length == 0
        expected = history.local.host_series(start=t0, end=t0 + polls * POLL)
        deadline = time.monotonic() + 60
        while True:
            flush(vm)
            stored = history.reader.host_series(start=t0, end=t0 + polls * POLL)
            # vmagent replays its buffer in blocks: a row can be back before every one of its metrics is
            if _same_shape(stored, expected) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert during - 5 >= 50  # polls really were made while the TSDB was down
        assert len(stored) == len(expected) == polls * 2 * 5 * 2
        for column in ("host", "resource", "timestamp"):
            assert stored[column].astype(str).tolist() == expected[column].astype(str).tolist(), column
        for column in VALUES:  # VictoriaMetrics keeps 12 significant digits
            np.testing.assert_allclose(stored[column], expected[column], rtol=1e-11, err_msg=column)
        assert history.remote_stats.read_errors == 0
    finally:
        history.close()
        agent.stop()
        vm.stop()

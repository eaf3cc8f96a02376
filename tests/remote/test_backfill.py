"""`capacityd history export` into real VictoriaMetrics and Prometheus: time order, Prometheus' 400s for
out-of-order/too-old samples, VictoriaMetrics' silent retention drop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.app.cli import main
from collector.store.history import History
from collector.store.remote.promql import PromReader
from collector.store.settings import HistoryConfig, RemoteHistoryConfig
from tests.history.frames import capacity_frame
from tests.remote.conftest import recent_t0, write_url
from tests.remote.receiver import receiver
from tests.remote.tsdb import Service, flush, prometheus, victoria_metrics

pytestmark = pytest.mark.slow

POLL = timedelta(minutes=5)
VALUES = ["capacity", "allocatable", "allocated", "used"]


def fill(state_dir: Path, start: datetime, polls: int, pools: tuple[str, ...] = ("az1", "az2")) -> History:
    history = History.open(state_dir, HistoryConfig())
    for i in range(polls):
        when = start + (23 - i if pools == ("az1",) else i) * POLL
        frame = capacity_frame(when, source="kvm", pools=pools, hosts_per_pool=3,
                               allocated=0.2 + 0.01 * (i % 50), used=0.1 + 0.005 * (i % 40))  # fmt: skip
        assert history.append("kvm", {"capacity": frame}, when)
    return history


def read_back(service: Service, start: datetime, end: datetime) -> pd.DataFrame:
    flush(service)
    return PromReader(RemoteHistoryConfig(write_url=write_url(service))).host_series(start=start, end=end)


def assert_same(remote: pd.DataFrame, local: pd.DataFrame) -> None:
    assert len(remote) == len(local)
    for column in ("source", "pool", "host", "resource", "timestamp"):
        assert remote[column].astype(str).tolist() == local[column].astype(str).tolist(), column
    for column in VALUES:
        np.testing.assert_allclose(remote[column], local[column], rtol=1e-11, err_msg=column)


def test_export_to_both_engines_equals_the_embedded_store(engine: Service, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    t0 = recent_t0()
    end = t0 + 8 * 12 * POLL  # eight hours
    fill(tmp_path / "state", t0, 8 * 12).close()
    code = main(["history", "export", "--state-dir", str(tmp_path / "state"), "--to", write_url(engine),
                 "--start", t0.isoformat(), "--end", end.isoformat(), "--max-samples", "500"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    samples = 8 * 12 * 2 * 3 * 2 * 4
    assert f"exported {samples} samples of {2 * 3 * 2 * 4} series" in out.out
    with History.open(tmp_path / "state", HistoryConfig()) as history:
        local = history.host_series(start=t0, end=end)
    assert_same(read_back(engine, t0, end), local)


def test_prometheus_refusing_old_samples_loses_only_those(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without out_of_order_time_window, Prometheus answers 400 to samples older than ~1 h before its newest
    and fails the whole request: the export splits requests and still delivers every acceptable series."""
    t0 = recent_t0()
    service = prometheus(tmp_path, out_of_order_window=None)
    try:
        fill(tmp_path / "state", t0, 24).close()  # two hours: 00:00..01:55
        # The TSDB already holds az1's series (a collector has been writing) up to 01:55.
        newer = fill(tmp_path / "newer", t0, 1, pools=("az1",))
        newer.close()
        code = main(["history", "export", "--state-dir", str(tmp_path / "newer"), "--to", write_url(service),
                     "--start", t0.isoformat(), "--end", (t0 + 2 * 12 * POLL).isoformat()])  # fmt: skip
        assert code == 0
        capsys.readouterr()
        # Series known to the TSDB: their older samples are refused (too old for the head) ...
        code = main(["history", "export", "--state-dir", str(tmp_path / "state"), "--to", write_url(service),
                     "--start", t0.isoformat(), "--end", (t0 + 2 * 12 * POLL).isoformat()])  # fmt: skip
        out = capsys.readouterr()
        assert code == 1
        assert "refused by the TSDB" in out.err and "out_of_order_time_window" in out.err
        rejected = int(out.err.split("refused by the TSDB: ")[1].split()[0])
        exported = int(out.out.split("exported ")[1].split()[0])
        assert rejected > 0 and exported > 0 and rejected + exported == 24 * 48
        # ... and every sample that was accepted is there, plus the first export's 24, none that was refused
        # (a refused series is refused whole: its one sample at 01:55 went with its out-of-order ones).
        stored = read_back(service, t0, t0 + 2 * 12 * POLL)
        assert int(stored[VALUES].notna().to_numpy().sum()) == exported + 24
        az1 = stored[stored["pool"] == "az1"]
        assert set(az1["timestamp"]) == {t0 + 23 * POLL}  # older az1 samples: out of order
        assert len(stored[stored["pool"] == "az2"]) > 0  # series new to the TSDB still landed
    finally:
        service.stop()


def test_victoria_metrics_retention_is_respected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """VictoriaMetrics answers 204 to samples older than its retention and drops them: the export skips and
    counts them instead of reporting them as delivered."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=3)
    service = victoria_metrics(tmp_path, retention="2d")
    try:
        polls = 3 * 24  # hourly for three days
        history = History.open(tmp_path / "state", HistoryConfig())
        for i in range(polls):
            when = start + i * timedelta(hours=1)
            assert history.append("kvm", {"capacity": capacity_frame(when, hosts_per_pool=1, resources=("cpu",))},
                                  when)  # fmt: skip
        history.close()
        code = main(["history", "export", "--state-dir", str(tmp_path / "state"), "--to", write_url(service),
                     "--start", start.isoformat(), "--end", now.isoformat()])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        skipped = int(out.out.split("skipped ")[1].split()[0])
        exported = int(out.out.split("exported ")[1].split()[0])
        assert skipped + exported == polls * 4
        assert 25 * 4 <= skipped <= 27 * 4  # the first day (+ the hour of margin at the retention edge)
        stored = read_back(service, start, now)
        assert len(stored) == exported // 4  # nothing reported as exported was silently dropped
    finally:
        service.stop()


def test_export_without_history_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with receiver() as r:
        assert main(["history", "export", "--state-dir", str(tmp_path), "--to", r.url]) == 2
    assert "no history.sqlite" in capsys.readouterr().err


@pytest.mark.parametrize("dedup", [True, False])
def test_victoria_metrics_duplicates_need_dedup(
    tmp_path: Path, dedup: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backfill run twice (or a retried request that had arrived) writes every sample twice: VictoriaMetrics
    keeps both unless -dedup.minScrapeInterval is set (docs/scale-out.md)."""
    t0 = recent_t0()
    fill(tmp_path / "state", t0, 12).close()
    service = victoria_metrics(tmp_path, dedup=dedup)
    try:
        for _ in range(2):
            assert main(["history", "export", "--state-dir", str(tmp_path / "state"), "--to", write_url(service),
                         "--start", t0.isoformat(), "--end", (t0 + 12 * POLL).isoformat()]) == 0  # fmt: skip
        capsys.readouterr()
        flush(service)
        reader = PromReader(RemoteHistoryConfig(write_url=write_url(service)))
        counts = reader.query("sum(count_over_time(capacity_resource_capacity[1h]))", (t0 + 12 * POLL).timestamp())
        # (t0, t0 + 1h]: the 11 polls after t0, 12 series
        assert float(counts[0]["value"][1]) == 11 * 12 * (1 if dedup else 2)
    finally:
        service.stop()

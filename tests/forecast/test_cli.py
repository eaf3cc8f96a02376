"""`capacityd backtest` on CSV files: ISO and Unix timestamps, gaps, table and JSON, bad input."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.analyses.forecast.synthetic import PoolSeriesSpec, generate
from collector.app.cli import main
from tests.forecast.conftest import START

REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, values: np.ndarray, *, step: float = 3600.0, iso: bool = True,
              drop: slice | None = None) -> Path:
    stamps = START + pd.to_timedelta(np.arange(len(values)) * step, unit="s")
    frame = pd.DataFrame({
        "when": stamps.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else (stamps.asi8 // 10**9),
        "vcpus": values,
        "note": "x",
    })
    if drop is not None:
        frame = frame.drop(frame.index[drop])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def series() -> np.ndarray:
    spec = PoolSeriesSpec(level=200, growth_per_day=3, daily_amplitude=20, noise=2, ar=0.5, days=35)
    return generate(spec, seed=7)


def test_table_on_iso_timestamps_with_a_gap(tmp_path: Path, series: np.ndarray,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "pool.csv", series, drop=slice(400, 460))
    code = main(["backtest", "--csv", str(csv), "--time", "when", "--value", "vcpus", "--capacity", "330"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("== origin ") == 4
    assert "== summary" in out
    assert "MASE" in out and "least-squares trend" in out
    assert "80% interval coverage" in out
    assert "exhaustion-date error (p50)" in out
    # Every step of every origin is printed beside the actual value.
    step_lines = [line for line in out.splitlines() if line.startswith("   20")]
    assert len(step_lines) == 4 * 168


def test_json_on_unix_seconds(tmp_path: Path, series: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "pool.csv", series, iso=False)
    code = main(["backtest", "--csv", str(csv), "--time", "when", "--value", "vcpus", "--horizon", "3d",
                 "--origins", "3", "--capacity", "320", "--format", "json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["step_seconds"] == 3600
    assert len(document["origins"]) == 3
    first = document["origins"][0]
    assert len(first["steps"]) == 72
    assert set(first["steps"][0]) == {"timestamp", "actual", "p10", "p50", "p90", "trend"}
    assert all(s["p10"] <= s["p50"] <= s["p90"] for o in document["origins"] for s in o["steps"])
    summary = document["summary"]
    assert summary["mase"] < summary["trend_mase"]  # a daily cycle the trend cannot see
    assert 0.5 <= summary["coverage_80"] <= 1.0
    assert "exhaustion" in summary


def test_five_minute_series_is_forecast_at_its_own_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = PoolSeriesSpec(level=50, growth_per_day=1, daily_amplitude=5, noise=0.5, step_seconds=300, days=12)
    csv = write_csv(tmp_path / "fine.csv", generate(spec, seed=3), step=300)
    code = main(["backtest", "--csv", str(csv), "--time", "when", "--value", "vcpus", "--horizon", "1d",
                 "--origins", "2", "--format", "json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["step_seconds"] == 300
    assert len(document["origins"][0]["steps"]) == 288


def test_counter_resets_are_undone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counter = np.cumsum(np.full(24 * 20, 2.0))
    counter[300:] -= counter[299]  # the exporter restarted
    csv = write_csv(tmp_path / "counter.csv", counter)
    code = main(["backtest", "--csv", str(csv), "--time", "when", "--value", "vcpus", "--horizon", "2d",
                 "--counter", "--format", "json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    for origin in document["origins"]:
        actual = [step["actual"] for step in origin["steps"]]
        assert all(b > a for a, b in itertools.pairwise(actual))  # no drop: the reset is undone


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["--value", "nope"], None, "no column 'nope'"),
        ([], "when,vcpus\n2026-01-05T00:00:00Z,1\nyesterday,2\n2026-01-05T02:00:00Z,3\n",
         "row 3: when='yesterday' is neither Unix seconds nor an ISO 8601 time"),
        ([], "when,vcpus\n0,1\n3600,lots\n7200,3\n", "row 3: vcpus='lots' is not a number"),
        (["--horizon", "soon"], None, "--horizon: not a duration"),
        (["--horizon", "30d"], None, "not enough history for a backtest"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, series: np.ndarray, capsys: pytest.CaptureFixture[str],
                            args: list[str], content: str | None, message: str) -> None:
    csv = tmp_path / "input.csv"
    if content is None:
        write_csv(csv, series)
    else:
        csv.write_text(content)
    base = {"--csv": str(csv), "--time": "when", "--value": "vcpus"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["backtest"] + [item for pair in base.items() for item in pair]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--csv", str(tmp_path / "absent.csv"), "--time", "t", "--value", "v"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_runs_as_a_command(tmp_path: Path, series: np.ndarray) -> None:
    """The real entry point in a process of its own, as an SRE runs it."""
    csv = write_csv(tmp_path / "pool.csv", series)
    done = subprocess.run(
        [sys.executable, "-m", "collector.app.cli", "backtest", "--csv", str(csv), "--time", "when", "--value",
         "vcpus", "--horizon", "2d", "--origins", "2", "--format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["origins"]) == 2

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


def write_csv(
    path: Path, values: np.ndarray, *, step: float = 3600.0, iso: bool = True, drop: slice | None = None
) -> Path:
    stamps = START + pd.to_timedelta(np.arange(len(values)) * step, unit="s")
    frame = pd.DataFrame(
        {
            "when": stamps.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else (stamps.asi8 // 10**9),
            "vcpus": values,
            "note": "x",
        }
    )
    if drop is not None:
        frame = frame.drop(frame.index[drop])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def series() -> np.ndarray:
    spec = PoolSeriesSpec(level=200, growth_per_day=3, daily_amplitude=20, noise=2, ar=0.5, days=35)
    return generate(spec, seed=7)


def test_table_on_iso_timestamps_with_a_gap(
    tmp_path: Path, series: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
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
    code = main(
        [
            "backtest",
            "--csv",
            str(csv),
            "--time",
            "when",
            "--value",
            "vcpus",
            "--horizon",
            "3d",
            "--origins",
            "3",
            "--capacity",
            "320",
            "--format",
            "json",
        ]
    )
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
    code = main(
        [
            "backtest",
            "--csv",
            str(csv),
            "--time",
            "when",
            "--value",
            "vcpus",
            "--horizon",
            "1d",
            "--origins",
            "2",
            "--format",
            "json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["step_seconds"] == 300
    assert len(document["origins"][0]["steps"]) == 288


def test_counter_resets_are_undone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counter = np.cumsum(np.full(24 * 20, 2.0))
    counter[300:] -= counter[299]  # the exporter restarted
    csv = write_csv(tmp_path / "counter.csv", counter)
    code = main(
        [
            "backtest",
            "--csv",
            str(csv),
            "--time",
            "when",
            "--value",
            "vcpus",
            "--horizon",
            "2d",
            "--counter",
            "--format",
            "json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    for origin in document["origins"]:
        actual = [step["actual"] for step in origin["steps"]]
        assert all(b > a for a, b in itertools.pairwise(actual))  # no drop: the reset is undone


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["--value", "nope"], None, "no column 'nope'"),
        (
            [],
            "when,vcpus\n2026-01-05T00:00:00Z,1\nyesterday,2\n2026-01-05T02:00:00Z,3\n",
            "row 3: when='yesterday' is neither Unix seconds nor an ISO 8601 time",
        ),
        ([], "when,vcpus\n0,1\n3600,lots\n7200,3\n", "row 3: vcpus='lots' is not a number"),
        (["--horizon", "soon"], None, "--horizon: not a duration"),
        (["--horizon", "30d"], None, "not enough history for a backtest"),
    ],
)
def test_bad_input_is_named(
    tmp_path: Path,
    series: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    content: str | None,
    message: str,
) -> None:
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
        [
            sys.executable,
            "-m",
            "collector.app.cli",
            "backtest",
            "--csv",
            str(csv),
            "--time",
            "when",
            "--value",
            "vcpus",
            "--horizon",
            "2d",
            "--origins",
            "2",
            "--format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["origins"]) == 2


# -- `capacityd forecast`, `once`: how the state is found, and a quiet terminal (issue 11 item 6) ---------


def libvirt_config(tmp_path: Path, hosts: int = 3) -> Path:
    """Real libvirt test-driver hosts (the `test:///default` driver); state_dir under tmp_path."""
    import yaml

    config = {
        "state_dir": str(tmp_path / "state"),
        "sources": [
            {"kind": "libvirt", "name": f"kvm-{i}", "uri": "test:///default", "cloud": "lab", "pool": "az1"}
            for i in range(hosts)
        ],
    }
    path = tmp_path / "capacityd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_forecast_help_says_where_the_state_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--state-dir" in text
    assert "running daemon" in text and "state_dir" in text
    assert "capacityd demo" in text


def test_forecast_state_dir_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["forecast", "-c", str(libvirt_config(tmp_path)), "--state-dir", str(tmp_path / "nowhere")])
    assert code == 1
    assert "--state-dir" in capsys.readouterr().err


def test_the_demo_prints_a_forecast_command_that_parses(tmp_path: Path) -> None:
    import shlex

    from collector.app.cli import build_parser
    from collector.demo.run import forecast_command

    config = tmp_path / "my demo" / "capacityd.yaml"
    words = shlex.split(forecast_command(config))
    assert words[0] == "capacityd"
    args = build_parser().parse_args(words[1:])
    assert args.command == "forecast" and args.config == config and args.what_if == ["+200 m1.large"]


def test_one_off_commands_keep_source_chatter_at_debug(tmp_path: Path) -> None:
    """`once` against three libvirt hosts: no INFO line per connection unless -v."""
    config = libvirt_config(tmp_path)
    command = [sys.executable, "-m", "collector.app.cli"]
    quiet = subprocess.run(
        [*command, "once", "-c", str(config), "--no-history"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "connected to" not in quiet.stderr and "closing connection" not in quiet.stderr, quiet.stderr
    assert " INFO " not in quiet.stderr, quiet.stderr
    loud = subprocess.run(
        [*command, "-v", "once", "-c", str(config), "--no-history"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert loud.returncode == 0, loud.stderr
    assert "connected to" in loud.stderr


def test_forecast_log_line_names_days() -> None:
    import logging

    from collector.analyses.forecast import forecast_analysis
    from collector.analyses.registry import AnalysisContext

    class Config:
        forecast = None

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    class OneSeries:
        def pool_series(self, **kwargs: object) -> pd.DataFrame:
            stamps = pd.date_range(START, periods=24 * 21, freq="h", tz="UTC")
            values = np.linspace(10.0, 90.0, len(stamps))
            frame = pd.DataFrame(
                {
                    "timestamp": stamps,
                    "layer": "openstack",
                    "cloud": "c",
                    "pool": "p",
                    "resource": "vcpu",
                    "allocatable": 100.0,
                    "allocated": values,
                    "used": np.nan,
                }
            )
            return frame

    logger = logging.getLogger("collector.analyses.forecast")
    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        now = (START + pd.Timedelta(days=21)).to_pydatetime()
        forecast_analysis(AnalysisContext(now=now, frames={}, history=OneSeries(), config=Config()))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    lines = [r.getMessage() for r in records if r.getMessage().startswith("forecast:")]
    assert lines and "within 180 days" in lines[0] and "0:00:00" not in lines[0], lines


def test_progress_line_only_on_a_terminal_and_only_when_slow() -> None:
    """The one-off commands' progress line, on a real pseudo-terminal: drawn after the delay, erased at the end;
    nothing for a quick run, nothing when stderr is not a terminal."""
    import io
    import os
    import pty
    import time

    from collector.app.commands.progress import Progress

    def run_on_pty(seconds: float) -> str:
        master, slave = pty.openpty()
        try:
            with os.fdopen(slave, "w", closefd=False) as terminal:
                with Progress("capacityd test", stream=terminal, delay=0.5, interval=0.05) as progress:
                    progress.stage("polling 3 source(s)")
                    time.sleep(seconds)
                    progress.stage("forecasting")
                    time.sleep(seconds / 2)
                terminal.flush()
            os.set_blocking(master, False)
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode()
        finally:
            os.close(slave)
            os.close(master)

    slow = run_on_pty(1.0)
    assert "capacityd test: polling 3 source(s) … 00:0" in slow
    assert "capacityd test: forecasting" in slow
    assert slow.rstrip(" ").endswith("\r")  # the line is erased: the command's answer starts on a clean line
    assert run_on_pty(0.1) == ""
    piped = io.StringIO()
    with Progress("capacityd test", stream=piped, delay=0.0, interval=0.05):
        time.sleep(0.3)
    assert piped.getvalue() == ""


def test_what_if_table_names_the_failure_before_and_after() -> None:
    """The what-if table named only the after-scenario worst failure (issue 11 item 6)."""
    from collector.app.commands.forecast import render_table

    def side(slots: float, after: float, domain: str) -> dict[str, object]:
        return {
            "slots": slots,
            "slots_after_failure": after,
            "failure_domain": domain,
            "shortfall": 0.0,
            "limiting_resource": "memory",
        }

    entry = {
        "layer": "openstack",
        "cloud": "c",
        "pool_kind": "az",
        "pool": "az1",
        "shape": "p1.gamma",
        "before": side(6, 0, "compute-04"),
        "after": side(4, 4, "compute-06"),
    }
    same = dict(entry, shape="m1.small", before=side(9, 3, "compute-04"), after=side(7, 2, "compute-04"))
    document = {
        "scenarios": [{"scenario": "+200 m1.large", "unplaced": 0, "notes": []}],
        "headroom": [entry, same],
        "exhaustion": [],
        "forecast_note": None,
        "what_if": True,
    }
    lines = {line.split()[4]: line for line in render_table(document).splitlines() if " az1 " in line}
    assert "compute-04 -> compute-06" in lines["p1.gamma"]
    assert "compute-04" in lines["m1.small"] and "->" not in lines["m1.small"]
    assert "->" not in render_table(dict(document, what_if=False))

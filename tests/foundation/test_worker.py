"""The analysis worker changes where the expensive pass runs, never what it computes (collector/app/worker.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.analyses.registry import ANALYSES, AnalysisContext, compute_analyses, load_builtin_analyses
from collector.app.worker import AnalysisWorker
from collector.demo.backfill import backfill_rows
from collector.demo.model import build_estate
from collector.store.history import History
from collector.store.settings import HistoryConfig
from tests.foundation.test_daemon_faults import analysis_plugin


@pytest.fixture(scope="module")
def demo_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[History, object]]:
    """Eight weeks of the demo estate's pool history in a real History store (the daemon's writer keeps it open)."""
    load_builtin_analyses()
    estate = build_estate()
    history = History.open(Path(tmp_path_factory.mktemp("state")), HistoryConfig())
    history.backfill(backfill_rows(estate))
    yield history, estate
    history.close()


def test_the_worker_computes_exactly_what_the_daemon_would(demo_history) -> None:
    history, estate = demo_history
    context = AnalysisContext(now=estate.now, frames={}, history=history, config=None)
    here = compute_analyses(context, expensive=True)
    worker = AnalysisWorker()
    there = worker.run(context, {})
    assert [o.name for o in there] == [o.name for o in here] == [a.name for a in ANALYSES.values() if a.expensive]
    assert [o.error for o in there] == [None] * len(here), [o.error for o in there]
    for mine, theirs in zip(here, there, strict=True):
        assert set(theirs.frames) == set(mine.frames)
        for name, frame in mine.frames.items():
            pd.testing.assert_frame_equal(theirs.frames[name], frame, check_exact=True, obj=f"{mine.name}: {name}")
    assert len(there[0].frames["forecast"]) >= 9  # the demo's pools: not a comparison of empty frames
    worker_frame = worker.frame()
    assert worker_frame is not None
    assert worker_frame["peak_resident_bytes"].iat[0] > 50 * 2**20  # another interpreter, with pandas loaded
    assert worker_frame["duration_seconds"].iat[0] > 0


NOISY_PLUGIN = """\
    \"\"\"An expensive analysis whose library prints to stdout, the worker's channel back to the daemon.\"\"\"
    import os
    import sys

    from collector.analyses.registry import analysis


    @analysis("noisy", expensive=True)
    def noisy(context):
        print("a library's chatter " * 10_000)
        os.write(1, b"and some bytes straight to fd 1\\n")
        sys.stdout.flush()
        return {}
    """


def test_what_an_analysis_prints_never_reaches_the_result(tmp_path, demo_history, monkeypatch, capfd) -> None:
    history, estate = demo_history
    monkeypatch.setenv("PYTHONPATH", analysis_plugin(tmp_path, "noisy_plugin", NOISY_PLUGIN)["PYTHONPATH"])
    context = AnalysisContext(now=estate.now, frames={}, history=history, config=None)
    outcomes = AnalysisWorker().run(context, {})
    assert {o.name: o.error for o in outcomes}.get("noisy", "missing") is None, outcomes
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    assert "and some bytes straight to fd 1" in capfd.readouterr().err  # it went to stderr: the log


def test_a_worker_that_cannot_start_fails_the_pass_with_the_reason(demo_history, monkeypatch) -> None:
    history, estate = demo_history
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    context = AnalysisContext(now=estate.now, frames={}, history=history, config=None)
    outcomes = AnalysisWorker().run(context, {})
    assert [o.name for o in outcomes] == [a.name for a in ANALYSES.values() if a.expensive]
    assert all(o.error is not None and "cannot start /nonexistent/python3" in o.error for o in outcomes), outcomes
    assert all(not o.frames for o in outcomes)


def test_a_stopped_worker_starts_no_pass(demo_history) -> None:
    history, estate = demo_history
    worker = AnalysisWorker()
    worker.stop()
    outcomes = worker.run(AnalysisContext(now=estate.now, frames={}, history=history, config=None), {})
    assert all(o.error == "WorkerError: the daemon is stopping" for o in outcomes)


def test_forecasts_on_a_local_dask_cluster_run_from_the_worker(demo_history) -> None:
    """`forecast.executor: dask` with a LocalCluster: the worker starts the cluster, the tasks read the file
    read-only, and the forecasts match the local executor's in the daemon's process."""
    pytest.importorskip("distributed")
    from collector.analyses.forecast.api import SERIES_KEY
    from collector.analyses.forecast.settings import ForecastConfig
    from collector.app.config import Config

    history, estate = demo_history
    dask = Config(forecast=ForecastConfig(executor="dask", local_cluster_workers=2))
    there = AnalysisWorker().run(AnalysisContext(now=estate.now, frames={}, history=history, config=dask), {})
    assert all(o.error is None for o in there), [o.error for o in there]
    local = Config(forecast=ForecastConfig())
    here = compute_analyses(AnalysisContext(now=estate.now, frames={}, history=history, config=local), expensive=True)
    theirs, mine = (
        outcomes[0].frames["forecast"].sort_values(SERIES_KEY).reset_index(drop=True) for outcomes in (there, here)
    )
    assert len(mine) >= 9 and list(theirs.columns) == list(mine.columns) and len(theirs) == len(mine)
    for column in mine.columns:
        if pd.api.types.is_float_dtype(mine[column]):
            np.testing.assert_allclose(theirs[column].to_numpy(float), mine[column].to_numpy(float), rtol=1e-9)
        else:
            assert theirs[column].astype(str).tolist() == mine[column].astype(str).tolist(), column


def test_a_pass_that_cannot_be_pickled_fails_with_the_reason(demo_history) -> None:
    """A plugin's setting that does not pickle (here a lambda as the config) fails the pass, never the refresh."""
    history, estate = demo_history
    worker = AnalysisWorker()
    outcomes = worker.run(AnalysisContext(now=estate.now, frames={}, history=history, config=lambda: None), {})
    assert outcomes and all(o.error and "cannot hand the pass to a worker: " in o.error for o in outcomes), outcomes
    worker_frame = worker.frame()
    assert worker_frame is not None and worker_frame["peak_resident_bytes"].iat[0] == 0


FAKE_WORKERS = {
    # name: (what the fake worker does after reading its whole job, error the pass must fail with)
    "truncated": ("out.write(pickle.dumps(list(range(1000)))[:-10])", "pickle data was truncated"),
    "silent": ("pass", "unreadable result (0 bytes)"),
    "garbage": ("out.write(b'\\xff' * 64)", "unreadable result (64 bytes)"),
    "not_a_result": ("out.write(pickle.dumps('hello'))", "unexpected result: str"),
    "dies_unread": (None, "exited with status 3"),
}


@pytest.mark.parametrize("case", sorted(FAKE_WORKERS))
def test_a_worker_that_writes_a_bad_result_fails_the_pass_with_the_reason(demo_history, tmp_path, monkeypatch, case):
    """A short, garbled or foreign answer, or a worker that exits before reading its job, fails the pass with what
    was wrong, never an exception in the daemon."""
    history, estate = demo_history
    action, reason = FAKE_WORKERS[case]
    body = (
        "sys.exit(3)" if action is None else f"sys.stdin.buffer.read()\nout = sys.stdout.buffer\n{action}\nout.flush()"
    )
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable}\nimport pickle, sys\n{body}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    frames = {"capacity": pd.DataFrame({"pad": np.zeros(200_000)})}  # a job bigger than a pipe's buffer
    outcomes = AnalysisWorker(deadline=60).run(
        AnalysisContext(now=estate.now, frames=frames, history=history, config=None), {}
    )
    assert outcomes and all(o.error is not None and reason in o.error for o in outcomes), outcomes

"""The rolling-origin backtest harness (what `capacityd backtest` and the benchmark report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.analyses.forecast.backtest import run_backtest, summarize
from collector.analyses.forecast.preprocess import Grid
from collector.analyses.forecast.synthetic import PoolSeriesSpec, clean_value, generate
from tests.forecast.conftest import FAST, START


def test_seasonal_series_beats_the_trend_and_bands_cover() -> None:
    spec = PoolSeriesSpec(
        level=1000, growth_per_day=4, daily_amplitude=60, weekly_amplitude=50, noise=8, ar=0.6, days=35
    )
    values = generate(spec, seed=1)
    grid = Grid(START, 3600.0, len(values))
    results = run_backtest(values, grid, horizon=7 * 24, origins=4, options=FAST)[0]
    assert len(results) == 4
    assert [r.origin for r in results] == sorted(r.origin for r in results)
    assert all(len(r.times) == 168 and len(r.p50) == 168 for r in results)
    assert results[-1].times[-1] == grid.times()[-1]
    summary = summarize(results)
    assert summary.mase < 0.5 * summary.trend_mase
    assert 0.6 <= summary.coverage <= 0.97
    assert sum(summary.models.values()) == 4


def test_exhaustion_dates_are_scored_when_a_capacity_is_given() -> None:
    spec = PoolSeriesSpec(level=100, growth_per_day=5, noise=0.5, days=35)
    values = generate(spec, seed=2)
    capacity = float(clean_value(spec, np.array([33.0 * 86400]))[0])  # reached on day 33
    grid = Grid(START, 3600.0, len(values))
    results = run_backtest(values, grid, horizon=7 * 24, origins=4, capacity=capacity, options=FAST)[0]
    crossing = [r for r in results if r.exhaustion["actual"] is not None]
    assert crossing, "the series crosses its capacity inside some test windows"
    for result in crossing:
        expected = (START + pd.Timedelta(days=33) - result.origin).total_seconds() / 3600
        assert result.exhaustion["actual"] == pytest.approx(expected, abs=2)
        assert result.exhaustion["p50"] == pytest.approx(expected, abs=6)
    summary = summarize(results, horizon_hours=168)
    assert summary.exhaustion_error_hours is not None and summary.exhaustion_error_hours < 6
    assert summary.exhaustion_missed == 0


def test_too_short_a_series_is_refused_with_the_reason() -> None:
    values = np.arange(100.0)
    with pytest.raises(ValueError, match="not enough history for a backtest: 100 points"):
        run_backtest(values, Grid(START, 3600.0, 100), horizon=168)

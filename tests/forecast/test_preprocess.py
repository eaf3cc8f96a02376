"""Preprocessing: grids, hourly averaging, gaps, level shifts, counter resets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.analyses.forecast.preprocess import (
    Grid,
    block_mean,
    detect_level_shift,
    fill_gaps,
    forward_fill,
    long_to_matrix,
    undo_counter_resets,
)
from collector.analyses.forecast.synthetic import PoolSeriesSpec, generate
from tests.forecast.conftest import START


def test_long_to_matrix_buckets_hours_and_keeps_gaps() -> None:
    stamps = pd.to_datetime(
        ["2026-01-05T00:10Z", "2026-01-05T00:50Z", "2026-01-05T02:05Z", "2026-01-05T01:30Z"], utc=True
    )
    frame = pd.DataFrame({"k": ["a", "a", "a", "b"], "timestamp": stamps, "value": [1.0, 3.0, 7.0, 5.0]})
    keys, matrix, grid = long_to_matrix(frame, ["k"], step=3600)
    assert keys["k"].tolist() == ["a", "b"]
    assert grid.start == pd.Timestamp("2026-01-05T00:00Z")
    np.testing.assert_array_equal(matrix[0], [2.0, np.nan, 7.0])
    np.testing.assert_array_equal(matrix[1], [np.nan, 5.0, np.nan])


def test_long_to_matrix_extends_to_now() -> None:
    frame = pd.DataFrame({"k": ["a"], "timestamp": [START], "value": [1.0]})
    _, matrix, grid = long_to_matrix(frame, ["k"], step=3600, end=START + pd.Timedelta(hours=5))
    assert matrix.shape == (1, 5)
    assert grid.end == START + pd.Timedelta(hours=5)


def test_block_mean_aligns_to_the_hour() -> None:
    grid = Grid(START + pd.Timedelta(minutes=50), 300.0, 6)  # 00:50 .. 01:15
    values = np.array([[1.0, 3.0, 10.0, np.nan, 20.0, 30.0]])
    hourly, hourly_grid = block_mean(values, grid, 3600.0)
    assert hourly_grid.start == START
    np.testing.assert_allclose(hourly, [[2.0, 20.0]])
    with pytest.raises(ValueError, match="not a multiple"):
        block_mean(values, grid, 1000.0)


def test_forward_fill_and_seasonal_gap_fill() -> None:
    values = np.array([[np.nan, 1.0, np.nan, np.nan, 4.0]])
    np.testing.assert_array_equal(forward_fill(values), [[np.nan, 1.0, 1.0, 1.0, 4.0]])
    day = 24
    t = np.arange(day * 4)
    series = 100 + 10 * np.sin(2 * np.pi * t / day)
    holed = series.copy()
    holed[day * 3 + 5 : day * 3 + 11] = np.nan  # six hours missing on the last day
    filled = fill_gaps(holed[None, :], (day,))[0]
    np.testing.assert_allclose(filled, series, atol=1e-9)  # yesterday's shape at today's level


def test_level_shift_is_located_to_the_hour() -> None:
    spec = PoolSeriesSpec(
        level=500, growth_per_day=2, daily_amplitude=10, shift_at_day=30.25, shift_size=150, noise=2, days=42
    )
    values = generate(spec, seed=1)[None, :]
    shift = detect_level_shift(values, 24)
    assert abs(int(shift[0]) - int(30.25 * 24)) <= 2


def test_no_level_shift_in_growth_or_seasonality() -> None:
    specs = [
        PoolSeriesSpec(level=500, growth_per_day=5, daily_amplitude=50, weekly_amplitude=40, noise=3, days=42),
        PoolSeriesSpec(level=100, growth_per_day=0, noise=5, ar=0.8, days=42),
    ]
    values = np.stack([generate(spec, seed=i) for i, spec in enumerate(specs)])
    assert (detect_level_shift(values, 24) == -1).all()


def test_counter_resets_are_undone() -> None:
    counter = np.array([5.0, 10.0, 2.0, 4.0, np.nan, 1.0])
    np.testing.assert_array_equal(undo_counter_resets(counter), [5.0, 10.0, 12.0, 14.0, np.nan, 15.0])
    assert np.all(np.diff(undo_counter_resets(np.array([[3.0, 1.0, 2.0, 0.5]]))[0]) >= 0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_nan_reductions_return_nan_for_an_empty_slice_without_a_warning() -> None:
    """numpy's nanmean/nanmax/nanmedian warn there; the forecast's own reductions stay silent and exact."""
    from collector.analyses.forecast.preprocess import nan_max, nan_mean, nan_quantiles, nan_std

    matrix = np.array([[1.0, np.nan, 3.0, 4.0], [np.nan] * 4, [2.0, 2.0, np.nan, 8.0]])
    np.testing.assert_allclose(nan_mean(matrix, axis=1), [8 / 3, np.nan, 4.0])
    np.testing.assert_allclose(nan_max(matrix, axis=1), [4.0, np.nan, 8.0])
    np.testing.assert_allclose(nan_std(matrix, axis=1), [np.std([1, 3, 4]), np.nan, np.std([2, 2, 8])])
    low, median = nan_quantiles(matrix, (0.1, 0.5))
    np.testing.assert_allclose(median, [3.0, np.nan, 2.0])
    np.testing.assert_allclose(low, [np.quantile([1, 3, 4], 0.1), np.nan, np.quantile([2, 2, 8], 0.1)])
    assert nan_mean(np.empty((3, 0)), axis=1).shape == (3,)
    assert np.isnan(nan_max(np.empty((2, 0)), axis=1)).all()

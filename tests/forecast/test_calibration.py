"""Issue 11: exhaustion intervals that are intervals, no warnings, non-negative bands, shifts followed.

Each test here failed on the code before the fix it covers (noted per test).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.analyses.forecast import describe_horizon, forecast_series
from collector.analyses.forecast.api import REASONS, forecast_blocks, forecast_matrix
from collector.analyses.forecast.backtest import run_backtest, summarize
from collector.analyses.forecast.engine import forecast_native
from collector.analyses.forecast.preprocess import Grid
from collector.analyses.forecast.synthetic import PoolSeriesSpec, generate
from tests.forecast.conftest import FAST, HOUR, START, end_of, long_frame

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAYS = 56
LENGTH = DAYS * 24


def _seasonal(rng: np.random.Generator, level: float = 1000.0, growth: float = 2.0) -> np.ndarray:
    t = np.arange(LENGTH)
    return level + growth * t / 24 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, LENGTH)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("young_hours", [5, 30, 77, 10 * 24, 15 * 24 + 3, 20 * 24])
def test_a_young_series_beside_old_ones_raises_no_warning(young_hours: int) -> None:
    """Was: "All-NaN slice encountered" (preprocess.py) and "Mean of empty slice" (models.py)."""
    rng = np.random.default_rng(young_hours)
    young = np.full(LENGTH, np.nan)
    young[-young_hours:] = 500 + 0.5 * np.arange(young_hours) + rng.normal(0, 1, young_hours)
    frame = pd.concat([long_frame(_seasonal(rng), limit=1300, pool="old"), long_frame(young, limit=800, pool="young")])
    forecast, _ = forecast_series(frame, now=end_of(np.empty(LENGTH)), options=FAST)
    assert set(forecast["pool"]) == {"old", "young"}


@pytest.mark.parametrize("young_hours", [2, 5, 30, 77, 10 * 24, 20 * 24])
def test_a_young_series_gets_a_whole_forecast_with_a_real_band(young_hours: int) -> None:
    """Was: NaN from about a week on (the last week repeated was mostly the NaN before the series began),
    so a pool a few days old had no chart points and p10 = p50 = p90 (a band of 1 % of its naive scale)."""
    rng = np.random.default_rng(young_hours)
    young = np.full(LENGTH, np.nan)
    young[-young_hours:] = 500 + 0.5 * np.arange(young_hours) + rng.normal(0, 1, young_hours)
    matrix = np.stack([_seasonal(rng), young])
    bands = forecast_native(matrix, Grid(START, HOUR, LENGTH), 60 * 24, FAST)
    for band in (bands.p10, bands.p50, bands.p90):
        assert np.isfinite(band).all()
    assert (bands.p10[1] < bands.p50[1]).all() and (bands.p50[1] < bands.p90[1]).all()
    frame = pd.concat([long_frame(matrix[0], limit=1300, pool="old"), long_frame(young, limit=800, pool="young")])
    forecast, points = forecast_series(frame, now=end_of(np.empty(LENGTH)), options=FAST)
    row = forecast.set_index("pool").loc["young"]
    assert (points["pool"] == "young").sum() == (points["pool"] == "old").sum()  # a chart point every day
    if young_hours >= 24:  # two noisy hours do not show the growth; a day does
        assert row["exhaustion_reason"] == "within_horizon"  # 0.5 an hour from about 500 reaches 800 in weeks
        assert row["seconds_p10"] < row["seconds_p50"] < row["seconds_p90"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.floats(100, 5000),
    growth=st.floats(1, 50),
    amplitude=st.floats(0, 100),
    noise=st.floats(0, 10),
    seed=st.integers(0, 1000),
    days_to_limit=st.floats(3, 60),
)
def test_dates_are_strictly_ordered_whenever_the_median_crosses(
    level: float, growth: float, amplitude: float, noise: float, seed: int, days_to_limit: float
) -> None:
    """Was: p10 == p50 == p90 to the second (zero-width bands on a series every model fits exactly)."""
    values = generate(
        PoolSeriesSpec(level=level, growth_per_day=growth, daily_amplitude=amplitude, noise=noise, ar=0.5, days=28),
        seed=seed,
    )
    limit = float(values[-24:].max()) + growth * days_to_limit
    forecast, _ = forecast_series(long_frame(values, limit=limit), now=end_of(values), options=FAST)
    row = forecast.iloc[0]
    if np.isfinite(row["seconds_p50"]):
        assert row["seconds_p10"] < row["seconds_p50"] < row["seconds_p90"]
        assert row["exhaustion_reason"] == "within_horizon"


def test_one_signed_backtest_errors_do_not_collapse_a_band() -> None:
    """Accelerating growth: every backtest error is positive. Was: the lower band clipped to zero width."""
    t = np.arange(LENGTH, dtype=float)
    values = 1000 + 0.0004 * t**2 + np.random.default_rng(3).normal(0, 1, LENGTH)
    bands = forecast_native(values[None, :], Grid(START, HOUR, LENGTH), 7 * 24, FAST)
    assert (bands.p50 - bands.p10 > 0).all()
    assert (bands.p90 - bands.p50 > 0).all()
    # and the bias is corrected, not only the band widened: the median lifts towards what the growth does
    truth = 1000 + 0.0004 * (LENGTH + np.arange(7 * 24)) ** 2
    straight = forecast_native(
        values[None, :], Grid(START, HOUR, LENGTH), 7 * 24, FAST.__class__(candidates=FAST.candidates, origins=0)
    )
    assert np.mean(np.abs(bands.p50[0] - truth)) < np.mean(np.abs(straight.p50[0] - truth))


@SETTINGS
@given(seed=st.integers(0, 10_000), noise=st.floats(2, 40), ar=st.floats(0, 0.8), growth=st.floats(-2, 10))
def test_the_80_percent_band_covers_held_out_data(seed: int, noise: float, ar: float, growth: float) -> None:
    """Calibration on data the forecast never saw: wider than the point, about 80 % of held-out values inside."""
    spec = PoolSeriesSpec(level=1000, growth_per_day=growth, daily_amplitude=50, noise=noise, ar=ar, days=42)
    values = generate(spec, seed=seed)
    results = run_backtest(values[None, :], Grid(START, HOUR, values.size), horizon=7 * 24, origins=4)
    for origin in results[0]:
        assert (origin.p90 - origin.p10 > 0).all()
    coverage = summarize(results[0]).coverage
    assert 0.55 <= coverage <= 0.99


@pytest.mark.parametrize("seed", range(4))
def test_a_non_negative_series_never_gets_a_negative_band(seed: int) -> None:
    """Usage near zero with noise and a slight decline. Was: p10 below zero."""
    rng = np.random.default_rng(seed)
    values = np.clip(4 - 0.02 * np.arange(LENGTH) / 24 + rng.normal(0, 3, LENGTH), 0, None)
    _, points = forecast_series(long_frame(values, limit=100), now=end_of(values), options=FAST)
    assert (points[["p10", "p50", "p90"]] >= 0).all().all()
    bands = forecast_native(values[None, :], Grid(START, HOUR, LENGTH), 7 * 24, FAST)
    assert (bands.p10 >= 0).all()
    five = np.repeat(values, 12) + rng.normal(0, 1, LENGTH * 12).clip(0, None)
    fine = forecast_native(five[None, :], Grid(START, 300.0, five.size), 7 * 288, FAST)
    assert (fine.p10 >= 0).all()


@pytest.mark.parametrize("hours_before", [3, 6, 12, 20])
def test_a_level_shift_just_before_the_origin_is_followed(hours_before: int) -> None:
    """A pool that lost a big tenant hours ago. Was: forecast from the old level (806 instead of ~430)."""
    rng = np.random.default_rng(hours_before)
    values = _seasonal(rng, growth=0.5, level=1000)
    values[-hours_before:] -= 600
    new_level = 1000 + 0.5 * DAYS - 600
    bands = forecast_native(values[None, :], Grid(START, HOUR, LENGTH), 48, FAST)
    first_day = bands.p50[0, :24].mean()
    assert abs(first_day - new_level) < 0.1 * 600


def test_the_sub_hourly_band_is_a_width_not_a_level() -> None:
    """5-minute series: was p10 near 0 and p90 near twice the level for the first half hour of a forecast."""
    rng = np.random.default_rng(5)
    t = np.arange(28 * 288)
    values = 60 + 5 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, t.size)
    grid = Grid(START + pd.Timedelta(minutes=20), 300.0, t.size)  # ends mid-hour
    bands = forecast_native(values[None, :], grid, 288, FAST)
    width = bands.p90[0] - bands.p10[0]
    assert width[:12].max() < 15  # a few noise standard deviations, not the whole series
    assert (width > 0).all()


def test_exhaustion_reason_says_why_there_is_no_date() -> None:
    rng = np.random.default_rng(2)
    growing = _seasonal(rng, growth=5)
    flat = 1000 + rng.normal(0, 3, LENGTH)
    slow = _seasonal(rng, growth=0.2)
    frame = pd.concat(
        [
            long_frame(growing, limit=1400, pool="growing"),
            long_frame(flat, limit=2000, pool="flat"),
            long_frame(slow, limit=2000, pool="slow"),
            long_frame(flat, limit=900, pool="full"),
            long_frame(flat, limit=np.nan, pool="unknown"),
        ]
    )
    forecast, _ = forecast_series(frame, now=end_of(flat), horizon=timedelta(days=180), options=FAST)
    reasons = dict(zip(forecast["pool"], forecast["exhaustion_reason"], strict=True))
    assert reasons["growing"] == "within_horizon"
    assert reasons["slow"] == "beyond_horizon"
    assert reasons["full"] == "exhausted"
    assert reasons["unknown"] == "no_limit"
    assert reasons["flat"] in ("not_growing", "beyond_horizon")
    assert set(reasons.values()) <= set(REASONS)


def test_streamed_blocks_give_the_same_frames_as_the_whole_matrix() -> None:
    rng = np.random.default_rng(9)
    matrix = np.stack([_seasonal(rng, growth=g) for g in (0.5, 2, 5, 8, 12)])
    keys = pd.DataFrame(
        {
            "layer": "openstack",
            "cloud": "c",
            "pool": [f"p{i}" for i in range(5)],
            "resource": "vcpu",
            "basis": "allocated",
        }
    )
    grid = Grid(START, HOUR, LENGTH)
    limits = np.full(5, 1500.0)
    now = grid.end.to_pydatetime()
    whole, whole_points = forecast_matrix(keys, matrix, grid, limits, now=now, options=FAST)
    blocks = [(keys.iloc[i : i + 2], matrix[i : i + 2], grid, limits[i : i + 2]) for i in range(0, 5, 2)]
    streamed, streamed_points = forecast_blocks(iter(blocks), total=5, now=now, options=FAST)
    pd.testing.assert_frame_equal(whole, streamed)
    pd.testing.assert_frame_equal(whole_points, streamed_points)


def test_the_daemon_log_names_the_horizon_as_a_person_would() -> None:
    """Was: 'exhausting within 180 days, 0:00:00'."""
    assert describe_horizon(timedelta(days=180)) == "180 days"
    assert describe_horizon(timedelta(hours=36)) == "36 hours"
    assert describe_horizon(timedelta(days=1)) == "1 day"

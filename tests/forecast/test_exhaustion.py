"""forecast_series on synthetic pool series whose exhaustion dates and seasonality are known."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from collector.analyses.forecast import forecast_series
from collector.analyses.forecast.api import INSUFFICIENT
from collector.analyses.forecast.engine import ForecastOptions
from collector.analyses.forecast.frames import FORECAST
from collector.analyses.forecast.synthetic import PoolSeriesSpec, exhaustion_day, generate
from collector.contract.schema import SchemaError, validate_frame
from tests.forecast.conftest import FAST, START, end_of, long_frame


def run(values: np.ndarray, limit: float, **kwargs) -> tuple[pd.Series, pd.DataFrame]:
    forecast, points = forecast_series(long_frame(values, limit=limit), now=end_of(values), options=FAST, **kwargs)
    assert len(forecast) == 1
    return forecast.iloc[0], points


def truth(spec: PoolSeriesSpec, limit: float) -> pd.Timestamp:
    day = exhaustion_day(spec, limit)
    assert day is not None
    return START + pd.Timedelta(days=day)


def test_linear_growth_with_daily_cycle_dates_exhaustion_within_hours() -> None:
    spec = PoolSeriesSpec(level=100, growth_per_day=2, daily_amplitude=5, noise=1, ar=0.5, days=42)
    values = generate(spec, seed=3)
    row, _ = run(values, 300.0)
    expected = truth(spec, 300.0)  # ~day 95.8, 54 days after the history ends
    assert abs(row["exhaustion_p50"] - expected) <= pd.Timedelta(hours=12)
    assert row["exhaustion_p10"] <= expected <= row["exhaustion_p90"]
    assert row["exhaustion_p10"] <= row["exhaustion_p50"] <= row["exhaustion_p90"]
    now = pd.Timestamp(end_of(values))
    assert row["seconds_p50"] == pytest.approx((row["exhaustion_p50"] - now).total_seconds())
    assert row["growth_per_day"] == pytest.approx(2.0, rel=0.05)
    assert row["current"] == pytest.approx(values[-1])
    assert row["limit"] == 300.0
    assert row["history_points"] == len(values)


def test_exhaustion_happens_at_the_daily_peak() -> None:
    # The noise-free series peaks at 12:00 every day; slow growth: the first crossing is a noon.
    spec = PoolSeriesSpec(level=500, growth_per_day=1, daily_amplitude=40, noise=0.5, days=35)
    values = generate(spec, seed=1)
    limit = float(values.max() + 25)
    row, _ = run(values, limit)
    expected = truth(spec, limit)
    assert 10 <= row["exhaustion_p50"].hour <= 14
    assert abs(row["exhaustion_p50"] - expected) <= pd.Timedelta(hours=30)


def test_flat_series_does_not_run_out_within_the_horizon() -> None:
    spec = PoolSeriesSpec(level=100, growth_per_day=0, daily_amplitude=3, noise=1, days=28)
    row, points = run(generate(spec, seed=2), 200.0)
    for quantile in ("p10", "p50", "p90"):
        assert row[f"seconds_{quantile}"] == math.inf
        assert pd.isna(row[f"exhaustion_{quantile}"])
    assert abs(row["growth_per_day"]) < 0.2
    assert len(points) >= 180


def test_pool_already_at_its_limit_is_exhausted_now() -> None:
    values = np.linspace(50, 120, 24 * 20)
    row, _ = run(values, 100.0)
    now = pd.Timestamp(end_of(values))
    for quantile in ("p10", "p50", "p90"):
        assert row[f"seconds_{quantile}"] == 0.0
        assert row[f"exhaustion_{quantile}"] == now


def test_unknown_limit_means_no_exhaustion_date() -> None:
    values = np.linspace(50, 120, 24 * 20)
    forecast, _ = forecast_series(long_frame(values, limit=np.nan), now=end_of(values), options=FAST)
    assert forecast["seconds_p50"].iloc[0] == math.inf
    assert np.isnan(forecast["limit"].iloc[0])


def test_the_last_known_limit_is_the_threshold() -> None:
    values = np.linspace(50, 120, 24 * 20)
    limits = np.full(values.shape, 100.0)
    limits[-48:] = 400.0  # capacity was added two days ago
    limits[-1] = np.nan  # and the very last sample did not report it
    row, _ = run(values, limits)
    assert row["limit"] == 400.0
    assert 0 < row["seconds_p50"] < math.inf


def test_gaps_do_not_move_the_date_much() -> None:
    spec = PoolSeriesSpec(level=100, growth_per_day=2, daily_amplitude=5, noise=1, ar=0.5, days=42)
    values = generate(spec, seed=3)
    holed = values.copy()
    rng = np.random.default_rng(0)
    holed[rng.random(len(holed)) < 0.2] = np.nan  # a fifth of the samples lost
    holed[24 * 30 : 24 * 32] = np.nan  # and a two-day outage
    row, _ = run(holed, 300.0)
    assert abs(row["exhaustion_p50"] - truth(spec, 300.0)) <= pd.Timedelta(hours=24)
    assert row["history_points"] == int(np.isfinite(holed).sum())


def test_level_shift_keeps_the_new_level_and_the_old_slope() -> None:
    spec = PoolSeriesSpec(
        level=500, growth_per_day=2, daily_amplitude=10, shift_at_day=35, shift_size=200, noise=2, ar=0.5, days=49
    )
    values = generate(spec, seed=4)
    row, points = run(values, 1000.0)
    assert row["growth_per_day"] == pytest.approx(2.0, rel=0.15)  # the jump is not read as growth
    first_day = points.iloc[0]
    clean_peak = 500 + 2 * 49 + 10 + 200
    assert first_day["p50"] == pytest.approx(clean_peak, rel=0.02)
    expected = truth(spec, 1000.0)  # ~95 days out
    assert abs(row["exhaustion_p50"] - expected) <= pd.Timedelta(days=8)


def test_weekly_seasonality_is_recovered() -> None:
    spec = PoolSeriesSpec(level=800, growth_per_day=3, daily_amplitude=40, weekly_amplitude=120, noise=2, days=56)
    values = generate(spec, seed=5, extra_days=7)
    history, future = values[:-168], values[-168:]
    forecast, points = forecast_series(
        long_frame(history, limit=5000.0), now=end_of(history), options=FAST, horizon=timedelta(days=7)
    )
    assert forecast["model"].iloc[0] not in ("trend", "snaive_day")
    # Daily maxima follow the weekend dip: Saturday's and Sunday's peaks are lower than Friday's.
    by_day = points.set_index("timestamp")["p50"]
    weekday = by_day.index.dayofweek
    assert by_day[weekday == 5].mean() < by_day[weekday == 4].mean() - 60
    assert by_day[weekday == 0].mean() > by_day[weekday == 6].mean() + 60
    del future


def test_points_are_daily_maxima_in_band_order() -> None:
    spec = PoolSeriesSpec(level=100, growth_per_day=1, daily_amplitude=5, noise=1, days=28)
    values = generate(spec, seed=6)
    _, points = run(values, 1000.0, horizon=timedelta(days=30))
    assert len(points) in (30, 31)
    assert (points["timestamp"].dt.hour == 0).all()
    assert (points["p10"] <= points["p50"]).all()
    assert (points["p50"] <= points["p90"]).all()
    assert points["timestamp"].is_monotonic_increasing
    validate_frame("forecast_points", points)


def test_frames_honour_the_contract_and_inf_only_where_allowed() -> None:
    values = np.linspace(10, 20, 24 * 15)
    forecast, points = forecast_series(long_frame(values, limit=1e6), now=end_of(values), options=FAST)
    validate_frame("forecast", forecast)
    validate_frame("forecast_points", points)
    assert forecast["seconds_p50"].iloc[0] == math.inf  # allowed in the seconds columns
    broken = forecast.copy()
    broken["current"] = math.inf
    with pytest.raises(SchemaError, match=r"forecast\.current row 0: infinite value"):
        validate_frame("forecast", broken)


def test_short_histories() -> None:
    one = long_frame(np.array([5.0]), limit=10.0)
    two_days = long_frame(np.linspace(1, 3, 30), limit=10.0)
    frame = pd.concat([one.assign(pool="one"), two_days.assign(pool="two")], ignore_index=True)
    forecast, _ = forecast_series(frame, now=end_of(np.zeros(30)), options=FAST)
    by_pool = forecast.set_index("pool")
    assert by_pool.loc["one", "model"] == INSUFFICIENT
    assert by_pool.loc["one", "seconds_p50"] == math.inf
    assert by_pool.loc["two", "model"] != INSUFFICIENT
    assert by_pool.loc["two", "seconds_p50"] < math.inf  # 2/30 per hour reaches 10 in a few days


def test_input_errors_are_named() -> None:
    values = np.linspace(1, 3, 30)
    frame = long_frame(values, limit=10.0)
    with pytest.raises(ValueError, match=r"lacks column.*limit"):
        forecast_series(frame.drop(columns=["limit"]), now=end_of(values))
    with pytest.raises(ValueError, match="basis 'free' is not allocated or used"):
        forecast_series(frame.assign(basis="free"), now=end_of(values))
    with pytest.raises(ValueError, match="horizon must be positive"):
        forecast_series(frame, now=end_of(values), horizon=timedelta(0))
    forecast, points = forecast_series(frame.iloc[0:0], now=end_of(values))
    assert forecast.empty and points.empty
    assert list(forecast.columns) == FORECAST.column_names


def test_points_after_now_are_ignored() -> None:
    values = np.linspace(1, 3, 24 * 10)
    frame = long_frame(values, limit=100.0)
    future = long_frame(np.full(24, 500.0), limit=100.0, start=pd.Timestamp(end_of(values)) + pd.Timedelta(days=1))
    forecast, _ = forecast_series(pd.concat([frame, future]), now=end_of(values), options=FAST)
    assert forecast["current"].iloc[0] == pytest.approx(3.0)


def test_blocks_and_threads_do_not_change_results() -> None:
    frames = []
    for i in range(9):
        spec = PoolSeriesSpec(level=100 + 10 * i, growth_per_day=0.5 * i, daily_amplitude=5, noise=1, days=28)
        frames.append(long_frame(generate(spec, seed=i), limit=300.0, pool=f"p{i}"))
    frame = pd.concat(frames, ignore_index=True)
    now = end_of(np.zeros(28 * 24))
    whole, whole_points = forecast_series(frame, now=now, options=FAST)
    split, split_points = forecast_series(
        frame, now=now, options=ForecastOptions(candidates=FAST.candidates, chunk=2, threads=3)
    )
    pd.testing.assert_frame_equal(whole, split)
    pd.testing.assert_frame_equal(whole_points, split_points)


def test_any_timestamp_resolution_and_order() -> None:
    """Seconds-resolution, naive or shuffled timestamps give the same forecast as sorted UTC nanoseconds."""
    spec = PoolSeriesSpec(level=100, growth_per_day=2, daily_amplitude=5, noise=1, days=21)
    values = generate(spec, seed=8)
    frame = long_frame(values, limit=200.0)
    expected, _ = forecast_series(frame, now=end_of(values), options=FAST)
    coarse = frame.assign(timestamp=frame["timestamp"].astype("datetime64[s, UTC]"))
    naive = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
    shuffled = frame.sample(frac=1.0, random_state=1)
    for variant in (coarse, naive, shuffled):
        got, _ = forecast_series(variant, now=end_of(values), options=FAST)
        pd.testing.assert_frame_equal(got, expected)

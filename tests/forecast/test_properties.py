"""Properties that hold for any pool series: band order, monotone in the limit, scale invariance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.analyses.forecast import forecast_series
from collector.analyses.forecast.engine import fit_and_forecast
from collector.analyses.forecast.preprocess import Grid
from collector.analyses.forecast.synthetic import PoolSeriesSpec, generate
from tests.forecast.conftest import FAST, START, end_of, long_frame

specs = st.builds(
    PoolSeriesSpec,
    level=st.floats(10, 10_000),
    growth_per_day=st.floats(-5, 50),
    daily_amplitude=st.floats(0, 200),
    weekly_amplitude=st.floats(0, 100),
    noise=st.floats(0, 30),
    ar=st.floats(0, 0.9),
    days=st.sampled_from([3.0, 10.0, 21.0, 35.0]),
)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(spec=specs, seed=st.integers(0, 1000), headroom=st.floats(1.01, 3.0))
def test_bands_and_dates_are_ordered(spec: PoolSeriesSpec, seed: int, headroom: float) -> None:
    values = generate(spec, seed=seed)
    limit = float(np.max(values)) * headroom
    forecast, points = forecast_series(long_frame(values, limit=limit), now=end_of(values), options=FAST)
    row = forecast.iloc[0]
    assert row["seconds_p10"] <= row["seconds_p50"] <= row["seconds_p90"]
    assert (points["p10"] <= points["p50"] + 1e-9).all()
    assert (points["p50"] <= points["p90"] + 1e-9).all()
    for quantile in ("p10", "p50", "p90"):
        assert (row[f"seconds_{quantile}"] == math.inf) == pd.isna(row[f"exhaustion_{quantile}"])


@SETTINGS
@given(spec=specs, seed=st.integers(0, 1000))
def test_a_higher_limit_never_runs_out_sooner(spec: PoolSeriesSpec, seed: int) -> None:
    values = generate(spec, seed=seed)
    top = float(np.max(values))
    frames = [long_frame(values, limit=top * factor, pool=f"x{factor}") for factor in (1.05, 1.2, 1.5, 2.5)]
    forecast, _ = forecast_series(pd.concat(frames, ignore_index=True), now=end_of(values), options=FAST)
    ordered = forecast.set_index("pool").loc[["x1.05", "x1.2", "x1.5", "x2.5"]]
    for quantile in ("p10", "p50", "p90"):
        seconds = ordered[f"seconds_{quantile}"].to_numpy()
        assert np.all(seconds[1:] >= seconds[:-1])


@SETTINGS
@given(spec=specs, seed=st.integers(0, 1000), scale=st.sampled_from([1e-3, 7.0, 2.0**30]))
def test_units_do_not_change_the_dates(spec: PoolSeriesSpec, seed: int, scale: float) -> None:
    """Cores or bytes: multiplying the series and its limit by a constant changes nothing in time."""
    values = generate(spec, seed=seed)
    limit = float(np.max(values)) * 1.3
    base, _ = forecast_series(long_frame(values, limit=limit), now=end_of(values), options=FAST)
    scaled, _ = forecast_series(long_frame(values * scale, limit=limit * scale), now=end_of(values), options=FAST)
    assert base["model"].iloc[0] == scaled["model"].iloc[0]
    for quantile in ("p10", "p50", "p90"):
        a, b = base[f"seconds_{quantile}"].iloc[0], scaled[f"seconds_{quantile}"].iloc[0]
        assert a == b or abs(a - b) <= 3600  # a float tie at a crossing may move it by one hour


def test_interval_coverage_is_near_eighty_percent() -> None:
    """Pooled over many noisy pool series, about 80 % of the next week falls inside p10..p90."""
    rng = np.random.default_rng(42)
    series = []
    for seed in range(120):
        spec = PoolSeriesSpec(
            level=rng.uniform(100, 1000),
            growth_per_day=rng.uniform(0, 5),
            daily_amplitude=rng.uniform(0, 50),
            weekly_amplitude=rng.uniform(0, 30),
            noise=rng.uniform(1, 10),
            ar=rng.uniform(0, 0.8),
            days=42,
        )
        series.append(generate(spec, seed=seed, extra_days=7))
    values = np.stack(series)
    history, future = values[:, :-168], values[:, -168:]
    bands = fit_and_forecast(history, Grid(START, 3600.0, history.shape[1]), 168, FAST)
    inside = (future >= bands.p10) & (future <= bands.p90)
    assert 0.72 <= inside.mean() <= 0.88


def test_crossing_found_through_daily_maxima_is_the_first_hour() -> None:
    """The day-then-hour search gives exactly the first hour a band reaches the limit."""
    from collector.analyses.forecast.api import _DailyMaxima
    from collector.analyses.forecast.engine import Bands, first_crossing

    rng = np.random.default_rng(0)
    n, steps = 300, 24 * 30 + 7
    grid = Grid(pd.Timestamp("2026-01-05 05:00", tz="UTC"), 3600.0, 10)  # days start mid-horizon-hour
    p50 = np.cumsum(rng.normal(0.1, 1, (n, steps)), axis=1)
    p50[:5] = np.nan  # series without a forecast never cross
    bands = Bands(grid, np.array(["x"] * n), np.zeros(n), p50 - 1, p50, p50 + 1)
    limits = rng.uniform(0, 40, n)
    daily = _DailyMaxima(bands, grid.end + pd.Timedelta(hours=steps))
    for name in ("p10", "p50", "p90"):
        expected = first_crossing(getattr(bands, name), limits)
        np.testing.assert_array_equal(daily.crossing(name, limits), expected)
        assert (expected >= 0).sum() > 250

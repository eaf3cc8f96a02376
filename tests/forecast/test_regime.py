"""Regime widening (issue 11, forecast accuracy on real traces): a pool livelier now than over the
history its band was calibrated on gets a wider band; an ordinary weekly cycle does not."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.analyses.forecast import engine
from collector.analyses.forecast.engine import REGIME_MAX, ForecastOptions, naive_scale, regime_factor
from collector.analyses.forecast.preprocess import Grid
from tests.forecast.conftest import HOUR, START

DAY = 24
LENGTH = 35 * DAY


def _weekly(rng: np.random.Generator) -> np.ndarray:
    """A pool with a daily cycle and quiet weekends: day-to-day change is larger around Monday/Saturday."""
    t = np.arange(LENGTH)
    weekend = ((t // DAY) % 7 >= 5).astype(float)
    return 1000 + 40 * np.sin(2 * np.pi * t / DAY) * (1 - 0.7 * weekend) - 150 * weekend + rng.normal(0, 3, LENGTH)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), burst=st.floats(0.0, 50.0), gap=st.floats(0.0, 0.3))
def test_the_factor_is_between_one_and_its_cap(seed: int, burst: float, gap: float) -> None:
    rng = np.random.default_rng(seed)
    values = _weekly(rng)
    values[-2 * DAY :] += rng.normal(0, burst + 1e-9, 2 * DAY)
    values[rng.random(LENGTH) < gap] = np.nan
    factor = regime_factor(values[None, :], DAY, naive_scale(values[None, :], DAY))
    assert factor.shape == (1,)
    assert 1.0 <= factor[0] <= REGIME_MAX


def test_an_ordinary_weekend_is_not_a_new_regime() -> None:
    """Ends on a Monday after a quiet weekend: the last two days' change matches the same weekdays earlier."""
    rng = np.random.default_rng(3)
    values = _weekly(rng)[None, :]
    for end in range(LENGTH - 7 * DAY, LENGTH + 1, DAY):
        factor = regime_factor(values[:, :end], DAY, naive_scale(values[:, :end], DAY))
        assert factor[0] < 1.3, end


def test_a_series_that_just_became_volatile_gets_a_wider_band() -> None:
    rng = np.random.default_rng(5)
    values = _weekly(rng)
    values[-2 * DAY :] += rng.normal(0, 60, 2 * DAY)  # a tenant churning for the last two days
    matrix = values[None, :]
    grid = Grid(START, HOUR, LENGTH)
    factor = regime_factor(matrix, DAY, naive_scale(matrix, DAY))[0]
    assert factor > 1.3
    options = ForecastOptions(candidates=("trend", "trend_day"))
    widened = engine.fit_and_forecast(matrix, grid, 48, options)
    try:
        engine.REGIME_WIDENING = False
        plain = engine.fit_and_forecast(matrix, grid, 48, options)
    finally:
        engine.REGIME_WIDENING = True
    np.testing.assert_allclose(widened.p50, plain.p50)
    np.testing.assert_allclose(widened.p90 - widened.p50, factor * (plain.p90 - plain.p50), rtol=1e-9)
    np.testing.assert_allclose(widened.p50 - widened.p10, factor * (plain.p50 - plain.p10), rtol=1e-9)
    assert np.all(widened.p10 < widened.p50) and np.all(widened.p50 < widened.p90)


def test_short_histories_are_left_alone() -> None:
    values = np.linspace(0, 10, DAY * 2)[None, :]
    assert regime_factor(values, DAY, naive_scale(values, DAY))[0] == 1.0

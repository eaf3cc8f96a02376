"""Synthetic pool series with known growth, seasonality, level shifts and exhaustion dates.

Used by the tests (where the right answer must be known exactly) and by the benchmark (where the
forecasts are scored against it). Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector.analyses.forecast.preprocess import DAY


@dataclass(frozen=True)
class PoolSeriesSpec:
    """A pool series: level + growth + daily and weekly cycles + a level shift + noise."""

    level: float = 1000.0
    growth_per_day: float = 5.0
    daily_amplitude: float = 0.0
    weekly_amplitude: float = 0.0
    """Weekend dip: the series is lowered by this much on Saturdays and Sundays."""
    shift_at_day: float | None = None
    shift_size: float = 0.0
    noise: float = 0.0
    """Standard deviation of independent noise."""
    ar: float = 0.0
    """AR(1) coefficient of the noise (persistence, as real usage has)."""
    step_seconds: float = 3600.0
    days: float = 56.0


def clean_value(spec: PoolSeriesSpec, seconds: np.ndarray) -> np.ndarray:
    """The noise-free series at the given seconds since the start (a Monday 00:00)."""
    days = seconds / DAY
    value = spec.level + spec.growth_per_day * days
    value = value + spec.daily_amplitude * np.sin(2 * np.pi * (days % 1.0) - np.pi / 2)
    weekday = np.floor(days) % 7
    value = value - spec.weekly_amplitude * (weekday >= 5)
    if spec.shift_at_day is not None:
        value = value + spec.shift_size * (days >= spec.shift_at_day)
    return value


def generate(spec: PoolSeriesSpec, *, seed: int = 0, extra_days: float = 0.0) -> np.ndarray:
    """The series sampled every step for spec.days (+ extra_days of future to score against)."""
    count = round((spec.days + extra_days) * DAY / spec.step_seconds)
    seconds = np.arange(count) * spec.step_seconds
    value = clean_value(spec, seconds)
    if spec.noise:
        rng = np.random.default_rng(seed)
        shocks = rng.normal(0.0, spec.noise, count)
        if spec.ar:
            noise = np.empty(count)
            state = 0.0
            scale = np.sqrt(1 - spec.ar**2)
            for i, shock in enumerate(shocks):
                state = spec.ar * state + scale * shock
                noise[i] = state
            shocks = noise
        value = value + shocks
    return value


def exhaustion_day(spec: PoolSeriesSpec, limit: float, *, within_days: float = 400.0) -> float | None:
    """Day (from the start) when the noise-free series first reaches `limit`, at minute resolution."""
    seconds = np.arange(0, within_days * DAY, 60.0)
    reached = clean_value(spec, seconds) >= limit
    if not reached.any():
        return None
    return float(seconds[int(reached.argmax())] / DAY)


def benchmark_specs() -> dict[str, PoolSeriesSpec]:
    """The benchmark's synthetic pool series: each stresses one thing a real pool does."""
    return {
        "growth_daily": PoolSeriesSpec(level=1000, growth_per_day=4, daily_amplitude=60, noise=8, ar=0.6),
        "growth_weekly": PoolSeriesSpec(
            level=800, growth_per_day=3, daily_amplitude=40, weekly_amplitude=80, noise=6, ar=0.6
        ),
        "level_shift": PoolSeriesSpec(
            level=500, growth_per_day=2, daily_amplitude=20, shift_at_day=40, shift_size=150, noise=5, ar=0.5
        ),
        "flat_noisy": PoolSeriesSpec(level=300, growth_per_day=0.0, daily_amplitude=10, noise=12, ar=0.8),
        "allocations_steps": PoolSeriesSpec(level=2000, growth_per_day=6, noise=3, ar=0.95),
        "seasonal_strong": PoolSeriesSpec(
            level=5000, growth_per_day=10, daily_amplitude=900, weekly_amplitude=400, noise=40, ar=0.7
        ),
    }

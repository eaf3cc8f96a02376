"""Shared helpers for the forecast tests: long input frames from arrays, fast options."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.analyses.forecast.engine import ForecastOptions
from collector.analyses.forecast.models import DEFAULT_CANDIDATES

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday, 00:00 UTC: the synthetic series' day 0
HOUR = 3600.0

# The cheap candidates only: MSTL is exercised on its own, where its cost is the point.
FAST = ForecastOptions(candidates=tuple(name for name in DEFAULT_CANDIDATES if name != "mstl"))


def long_frame(
    values: np.ndarray,
    *,
    limit: float | np.ndarray,
    step: float = HOUR,
    pool: str = "az1",
    resource: str = "vcpu",
    basis: str = "allocated",
    start: pd.Timestamp = START,
) -> pd.DataFrame:
    """The forecast input for one series (NaN values are dropped: that is what a gap looks like)."""
    stamps = start + pd.to_timedelta(np.arange(len(values)) * step, unit="s")
    frame = pd.DataFrame(
        {
            "layer": "openstack",
            "cloud": "test",
            "pool": pool,
            "resource": resource,
            "basis": basis,
            "timestamp": stamps,
            "value": values,
            "limit": limit,
        }
    )
    return frame[frame["value"].notna()].reset_index(drop=True)


def end_of(values: np.ndarray, step: float = HOUR, start: pd.Timestamp = START) -> datetime:
    """`now` just after the last sample."""
    return (start + pd.Timedelta(seconds=step * len(values))).to_pydatetime()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every forecast test fails on a numpy RuntimeWarning (issue 11: none may reach the user).

    The forecast code must not raise one, and must not hide one either: the NaN-aware reductions it uses
    (preprocess.nan_mean and friends) return NaN for an empty slice without warning.
    """
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("error::RuntimeWarning"))


@pytest.fixture
def frame_of() -> Callable[..., pd.DataFrame]:
    return long_frame

"""Settings of the forecasts (docs/config.md#forecast, docs/forecasting.md)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from collector.contract.settings import Duration, StrictModel


class ForecastConfig(StrictModel):
    """How far forecasts look back and ahead (docs/forecasting.md)."""

    horizon: Duration = Field(default=timedelta(days=180), description="Exhaustion beyond this is reported +Inf.")
    lookback: Duration = Field(default=timedelta(days=56), description="History each forecast is fitted on.")

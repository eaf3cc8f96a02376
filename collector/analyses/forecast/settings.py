"""Settings of the forecasts (docs/config.md#forecast, docs/forecasting.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from collector.contract.settings import Duration, StrictModel


class ForecastConfig(StrictModel):
    """How far forecasts look back and ahead (docs/forecasting.md)."""

    horizon: Duration = Field(default=timedelta(days=180), description="Exhaustion beyond this is reported +Inf.")
    lookback: Duration = Field(default=timedelta(days=56), description="History each forecast is fitted on.")
    executor: Literal["local", "dask"] = Field(
        default="local", description="Where forecasts run: this process, or a Dask cluster (docs/scale-out.md)."
    )
    dask_scheduler: str | None = Field(
        default=None, description="Dask scheduler address (tcp://host:8786) when executor is dask."
    )
    local_cluster_workers: int | None = Field(
        default=None, ge=1, le=256, description="Start a local Dask cluster of this many worker processes instead."
    )
    dask_chunk_series: int = Field(
        default=1000, ge=500, le=2500, description="Pool keys per Dask task (each task loads its own slice)."
    )

    @model_validator(mode="after")
    def _one_cluster(self) -> ForecastConfig:
        """Dask needs exactly one of a scheduler address or a local cluster; local needs neither."""
        if self.executor == "dask":
            if (self.dask_scheduler is None) == (self.local_cluster_workers is None):
                raise ValueError(
                    "forecast.executor dask needs exactly one of dask_scheduler (tcp://host:port) "
                    "or local_cluster_workers (N)"
                )
            if self.dask_scheduler is not None and not self.dask_scheduler.startswith(("tcp://", "tls://")):
                raise ValueError(f"forecast.dask_scheduler {self.dask_scheduler!r} is not a tcp:// or tls:// address")
        elif self.dask_scheduler is not None or self.local_cluster_workers is not None:
            raise ValueError("forecast.dask_scheduler / local_cluster_workers are set but forecast.executor is local")
        return self

"""Settings of the history store (docs/config.md#history, docs/history.md)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from collector.contract.settings import Duration, StrictModel


class HistoryConfig(StrictModel):
    """How long history is kept and how it is thinned (docs/history.md)."""

    raw_retention: Duration = Field(default=timedelta(days=8), description="Keep every poll this long.")
    downsample_step: Duration = Field(default=timedelta(hours=1), description="Older data: one row per step.")
    retention: Duration = Field(default=timedelta(days=400), description="Drop downsampled data after this.")
    host_raw_retention: Duration = Field(
        default=timedelta(days=2), description="Per-host rows at full resolution (pool sums are kept longer)."
    )
    consumer_retention: Duration = Field(
        default=timedelta(days=15), description="Hourly per-VM/pod usage (reclaimable analysis) is kept this long."
    )
    host_retention: Duration = Field(
        default=timedelta(days=35), description="Per-host rows downsampled to `downsample_step` are kept this long."
    )

"""`capacity_exhaustion_seconds`: time until a pool's allocatable is reached (docs/metrics.md).

`capacity_exhaustion_info` says why a median date is or is not there (label `reason`: the forecast
frame's `exhaustion_reason`), so a `+Inf` can be told apart: not growing, growing too slowly for the
horizon, no known limit, too little history.

One sample per pool, resource, basis and quantile from the `forecast` frame: quantile 0.1 is the
earliest plausible exhaustion, 0.5 the median, 0.9 the latest (quantiles of the first crossing over
sampled demand paths, docs/forecasting.md). +Inf means not
within the forecast horizon, so `capacity_exhaustion_seconds{quantile="0.1"} < 30 * 86400` is a
ready-made "may run out within a month" alert.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from prometheus_client.core import Metric

from collector.estate import Snapshot
from exporters.prometheus.exposition import family_builder

LABELS = ["layer", "cloud", "pool", "resource", "basis", "quantile"]
QUANTILES = (("0.1", "seconds_p10"), ("0.5", "seconds_p50"), ("0.9", "seconds_p90"))


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    # Typed `summary`: the samples are quantiles of the forecast's distribution of the exhaustion time,
    # which is what a summary's `quantile` label means (and what keeps `promtool check metrics` clean).
    # A forecast has no `_sum`/`_count`, so only the quantile samples are written.
    family = Metric(
        "capacity_exhaustion_seconds",
        "Forecast seconds until the pool's allocated or used total reaches its allocatable, by quantile "
        "of the date (0.1 = earliest plausible); +Inf when not within the forecast horizon.",
        "summary",
    )
    forecast = snapshot.frames.get("forecast")
    if forecast is not None and not forecast.empty:
        keys = [forecast[column].astype(str).to_numpy() for column in LABELS[:-1]]
        for quantile, column in QUANTILES:
            seconds = forecast[column].to_numpy(dtype=float, na_value=np.nan)
            for row, value in enumerate(seconds):
                if np.isnan(value):
                    continue
                labels = {name: key[row] for name, key in zip(LABELS[:-1], keys, strict=True)}
                family.add_sample("capacity_exhaustion_seconds", {**labels, "quantile": quantile}, float(value))
    yield family
    info = Metric(
        "capacity_exhaustion_info",
        "Why the median exhaustion date is or is not within the horizon (value always 1): reason is "
        "exhausted, within_horizon, beyond_horizon, not_growing, no_limit or insufficient_history.",
        "gauge",
    )
    if forecast is not None and not forecast.empty and "exhaustion_reason" in forecast.columns:
        keys = [forecast[column].astype(str).to_numpy() for column in LABELS[:-1]]
        reasons = forecast["exhaustion_reason"]
        for row, reason in enumerate(reasons.to_numpy(dtype=object)):
            if reason is None or reason is pd.NA or (isinstance(reason, float) and np.isnan(reason)):
                continue
            labels = {name: key[row] for name, key in zip(LABELS[:-1], keys, strict=True)}
            info.add_sample("capacity_exhaustion_info", {**labels, "reason": str(reason)}, 1.0)
    yield info

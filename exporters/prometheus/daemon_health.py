"""The daemon's own health beyond sources: analyses and config reloads (docs/metrics.md).

Built from the `analyses` and `config_reload` frames the daemon puts in every snapshot, so this module
renders frames like any other exporter and never reaches into the app that computes them.

- `capacityd_analysis_success{analysis}`: 1 if the analysis' last run succeeded. A failed one keeps its
  last good frames exported, with `capacityd_analysis_stale{analysis}` 1 (the sources' convention).
- `capacityd_analysis_duration_seconds{analysis}` and `capacityd_analysis_last_success_timestamp_seconds`.
- `capacityd_analysis_worker_duration_seconds` and `capacityd_analysis_worker_peak_resident_bytes`: the last
  pass of the expensive analyses, which runs in a worker process (its start and imports included; its memory
  is not in `capacityd_memory_bytes`, which is the daemon's own).
- `capacityd_config_last_reload_successful` and `capacityd_config_last_reload_success_timestamp_seconds`
  (the names Prometheus uses for its own reloads).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily, Metric

from collector.estate import Snapshot
from exporters.prometheus.exposition import family_builder


def _seconds(column: pd.Series) -> np.ndarray:
    """Unix seconds of a UTC timestamp column; NaN where null."""
    values = column.to_numpy(dtype="datetime64[ns]")
    seconds: np.ndarray = values.astype("int64").astype(float) / 1e9
    seconds[np.isnat(values)] = np.nan
    return seconds


WORKER_GAUGES = (
    (
        "capacityd_analysis_worker_duration_seconds",
        "Wall time of the last pass of the expensive analyses in their worker process: its start, imports, "
        "the analyses and the result's way back.",
        "duration_seconds",
    ),
    (
        "capacityd_analysis_worker_peak_resident_bytes",
        "Peak RSS of the last pass' worker process (0 if it gave no result): memory the daemon's service needs "
        "beside its own for a moment every pass.",
        "peak_resident_bytes",
    ),
)
"""(metric, help, column of the `analysis_worker` frame)."""


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge without labels and its one value."""
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["analysis"]
    success = GaugeMetricFamily(
        "capacityd_analysis_success", "1 if the last run of the analysis succeeded.", labels=labels
    )
    stale = GaugeMetricFamily(
        "capacityd_analysis_stale",
        "1 if the frames exported for the analysis come from an earlier run (the last one failed).",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "capacityd_analysis_duration_seconds", "Duration of the last run of the analysis.", labels=labels
    )
    last_success = GaugeMetricFamily(
        "capacityd_analysis_last_success_timestamp_seconds",
        "Unix time of the last successful run of the analysis.",
        labels=labels,
    )
    analyses = snapshot.frames.get("analyses")
    if analyses is not None and not analyses.empty:
        names = analyses["analysis"].astype(str).tolist()
        when = _seconds(analyses["last_success"])
        for row, name in enumerate(names):
            success.add_metric([name], 1.0 if analyses["success"].iat[row] else 0.0)
            stale.add_metric([name], 1.0 if analyses["stale"].iat[row] else 0.0)
            duration.add_metric([name], float(analyses["duration_seconds"].iat[row]))
            if not np.isnan(when[row]):
                last_success.add_metric([name], float(when[row]))
    yield from (success, stale, duration, last_success)

    worker = snapshot.frames.get("analysis_worker")
    if worker is not None and not worker.empty:
        for name, documentation, column in WORKER_GAUGES:
            yield _gauge(name, documentation, float(worker[column].iat[0]))

    reload = snapshot.frames.get("config_reload")
    if reload is not None and not reload.empty:
        yield _gauge(
            "capacityd_config_last_reload_successful",
            "1 if the last configuration load (start or SIGHUP) was applied; 0 if it was refused "
            "and the previous configuration is still running.",
            1.0 if reload["successful"].iat[0] else 0.0,
        )
        when = _seconds(reload["last_success"])
        if not np.isnan(when[0]):
            yield _gauge(
                "capacityd_config_last_reload_success_timestamp_seconds",
                "Unix time the running configuration was loaded.",
                float(when[0]),
            )


@family_builder
def build_memory(snapshot: Snapshot) -> Iterator[Metric]:
    """capacityd_memory_bytes{part}: RSS and what glibc and SQLite hold, to tell a leak from a cache filling."""
    frame = snapshot.frames.get("process_memory")
    if frame is None or frame.empty:
        return
    family = GaugeMetricFamily(
        "capacityd_memory_bytes",
        "The daemon's memory by part: resident (RSS; split into resident_anonymous and resident_file), "
        "malloc_in_use / malloc_free / malloc_mmapped (glibc's heap: free is "
        "fragmentation it still holds), sqlite (history page caches, part of malloc_in_use).",
        labels=["part"],
    )
    for part, value in frame[["part", "bytes"]].itertuples(index=False):
        family.add_metric([str(part)], float(value))
    yield family

"""History store families: write errors, dropped and rejected samples (docs/metrics.md, "History store").

Built from the `history_stats` frame (collector/store/health.py) that the daemon puts into each
snapshot from `History.stats_frames()`; without history the frame is empty and these families are left out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.estate import Snapshot
from collector.store.health import HISTORY_STATS
from exporters.prometheus.exposition import family_builder


def _rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    return frame[frame["metric"] == metric]


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    frame = snapshot.frames.get(HISTORY_STATS.name)
    if frame is None or frame.empty:  # running without history (every snapshot carries the empty frame)
        return
    errors = CounterMetricFamily(
        "capacityd_history_write_errors",
        "Write transactions of the history store that failed, by reason (disk_full, io, locked, readonly, "
        "corrupt, other); each failed poll write is also counted in capacityd_history_dropped_samples_total.",
        labels=["reason"],
    )
    for reason, value in _rows(frame, "write_errors")[["reason", "value"]].itertuples(index=False):
        errors.add_metric([str(reason)], float(value))
    yield errors
    dropped = CounterMetricFamily(
        "capacityd_history_dropped_samples",
        "Frame rows (capacity and consumer rows of a poll, consumer-hour rows of a flush) that could not be "
        "written to history and were dropped.",
    )
    dropped.add_metric([], float(_rows(frame, "dropped_samples")["value"].sum()))
    yield dropped
    rejected = CounterMetricFamily(
        "capacityd_history_rejected_samples",
        "Frame rows the history store refused, by source and reason (too_old: older than full-resolution "
        "history, e.g. a clock stepped back by days).",
        labels=["source", "reason"],
    )
    for source, reason, value in _rows(frame, "rejected_samples")[["source", "reason", "value"]].itertuples(
        index=False
    ):
        rejected.add_metric([str(source), str(reason)], float(value))
    yield rejected
    last = _rows(frame, "last_write_success")
    success = GaugeMetricFamily(
        "capacityd_history_last_write_success_timestamp_seconds",
        "Unix time of the last write the history store committed (absent until the first since start).",
    )
    if len(last):
        success.add_metric([], float(last["value"].iloc[-1]))
    yield success

"""Remote-history families, modelled on Prometheus' own `prometheus_remote_storage_*` (docs/metrics.md,
"Remote history").

Built from the `remote_history_stats` frame (collector/store/remote/stats.py) that `RemoteHistory.stats_frames()`
adds to each snapshot; with the embedded backend the frame is absent and these families are left out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from collector.estate import Snapshot
from exporters.prometheus.exposition import family_builder

FRAME = "remote_history_stats"
PREFIX = "capacityd_remote_storage_"

COUNTERS = {
    "samples": "Samples the remote TSDB accepted (HTTP 2xx).",
    "failed_samples": "Samples the TSDB refused for good (HTTP 4xx other than 429, never retried). Every sample "
    "ends in exactly one of samples_total, failed_samples_total, dropped_samples_total or queue_length.",
    "retried_samples": "Samples sent again after a 5xx, 429 or network failure.",
    "dropped_samples": "Samples never sent: the in-memory retry queue was full (oldest polls dropped first).",
    "requests": "Remote-write requests made (one per poll, plus retries and queued polls).",
    "failed_requests": "Remote-write requests that did not get a 2xx answer.",
    "sent_bytes": "Compressed remote-write bytes the TSDB accepted.",
    "read_errors": "PromQL history reads that failed and were answered from the local store.",
}
GAUGES = {
    "queue_length": "Samples waiting in the in-memory retry queue.",
    "queue_capacity": "Samples the retry queue may hold (history.remote.queue_samples).",
}


def _value(frame: pd.DataFrame, metric: str) -> float | None:
    rows = frame[frame["metric"] == metric]
    return float(rows["value"].iloc[-1]) if len(rows) else None


@family_builder
def build(snapshot: Snapshot) -> Iterator[Metric]:
    frame = snapshot.frames.get(FRAME)
    if frame is None or frame.empty:
        return
    for name, doc in COUNTERS.items():
        value = _value(frame, name)
        if value is not None:
            family = CounterMetricFamily(PREFIX + name, doc)
            family.add_metric([], value)
            yield family
    for name, doc in GAUGES.items():
        value = _value(frame, name)
        if value is not None:
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)
    last = _value(frame, "last_send_success")
    success = GaugeMetricFamily(
        PREFIX + "last_send_success_timestamp_seconds",
        "Unix time of the last remote-write request the TSDB accepted (absent until the first since start).",
    )
    if last is not None:
        success.add_metric([], last)
    yield success
    buckets = frame[frame["metric"] == "sent_batch_duration_bucket"]
    total = _value(frame, "sent_batch_duration_sum")
    if len(buckets) and total is not None:
        histogram = HistogramMetricFamily(
            PREFIX + "sent_batch_duration_seconds",
            "Duration of each remote-write request (one poll's batch), including failed attempts.",
        )
        histogram.add_metric([], [(str(le), float(v)) for le, v in buckets[["le", "value"]].itertuples(index=False)],
                             total)  # fmt: skip
        yield histogram

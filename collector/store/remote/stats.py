"""Self-metrics of the remote history writer, modelled on Prometheus' own `prometheus_remote_storage_*`.

The counters live here; they reach /metrics as the `remote_history_stats` frame (`RemoteStats.frame()`),
which the daemon puts into each snapshot next to `history_stats`; exporters/prometheus/remote.py renders it
(exporters never read this module's state).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pandas as pd

from collector.contract.schema import FLOAT, STRING, Column, FrameSchema, register

REMOTE_HISTORY_STATS = register(
    FrameSchema(
        name="remote_history_stats",
        doc="Counters of the remote-write history backend, one row per sample (docs/metrics.md).",
        key=("metric", "le"),
        columns=(
            Column(
                "metric",
                STRING,
                "samples | failed_samples | retried_samples | dropped_samples | requests | "
                "failed_requests | queue_length | queue_capacity | sent_bytes | read_errors | last_send_success | "
                "sent_batch_duration_bucket | sent_batch_duration_sum | sent_batch_duration_count",
            ),
            Column("le", STRING, "Histogram bucket bound for sent_batch_duration_bucket; empty otherwise."),
            Column("value", FLOAT, "Counter value since start, a gauge, or a Unix time.", non_negative=True),
        ),
    )
)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
"""Seconds; the buckets of prometheus_remote_storage_sent_batch_duration_seconds."""


@dataclass
class RemoteStats:
    """Thread-safe counters; `frame()` is a consistent copy."""

    samples: int = 0  # accepted by the receiver (2xx)
    failed_samples: int = 0  # refused for good (4xx): never retried
    retried_samples: int = 0  # sent again after a 5xx/429/network failure
    dropped_samples: int = 0  # never sent: the retry queue was full
    requests: int = 0
    failed_requests: int = 0
    queue_length: int = 0  # samples waiting in the retry queue
    queue_capacity: int = 0
    sent_bytes: int = 0
    read_errors: int = 0  # PromQL reads that failed (answered from the local store)
    last_send_success: float | None = None
    _buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    _duration_sum: float = 0.0
    _duration_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def set(self, **values: float | None) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def observe_batch(self, seconds: float) -> None:
        with self._lock:
            for i, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            self._duration_sum += seconds
            self._duration_count += 1

    def frame(self) -> pd.DataFrame:
        with self._lock:
            rows = [(name, "", float(getattr(self, name))) for name in (
                "samples", "failed_samples", "retried_samples", "dropped_samples", "requests", "failed_requests",
                "queue_length", "queue_capacity", "sent_bytes", "read_errors")]  # fmt: skip
            if self.last_send_success is not None:
                rows.append(("last_send_success", "", self.last_send_success))
            rows += [("sent_batch_duration_bucket", repr(bound), float(count))
                     for bound, count in zip(DURATION_BUCKETS, self._buckets, strict=True)]  # fmt: skip
            rows.append(("sent_batch_duration_bucket", "+Inf", float(self._duration_count)))
            rows.append(("sent_batch_duration_sum", "", self._duration_sum))
            rows.append(("sent_batch_duration_count", "", float(self._duration_count)))
        frame = pd.DataFrame(rows, columns=["metric", "le", "value"])
        frame["metric"] = frame["metric"].astype("string")
        frame["le"] = frame["le"].astype("string")
        return frame

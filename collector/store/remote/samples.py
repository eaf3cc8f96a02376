"""Capacity frames as remote-write series, named and labelled as on /metrics (docs/metrics.md).

A poll's `capacity` frame becomes `capacity_resource_{capacity,reserved,allocatable,allocated,used}`
series with the /metrics labels (layer, cloud, pool, host, resource) plus `source` and `scope`, so
pool totals are `sum by (layer, cloud, pool, resource)` in PromQL, and dashboards built on /metrics
work on the stored history unchanged. Unknown values (NaN: `used` where it cannot be measured) are left
out, exactly as /metrics leaves them out: absent, never 0. Per-VM/pod rows (`consumers`) are not
written: at the target scale they would be ~25 M churning series; they stay in the local store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd

from collector.store.remote.wire import _varint, encode_labels, sort_labels

VALUE_METRICS = {
    "capacity": "capacity_resource_capacity",
    "reserved": "capacity_resource_reserved",
    "allocatable": "capacity_resource_allocatable",
    "allocated": "capacity_resource_allocated",
    "used": "capacity_resource_used",
}
SERIES_LABELS = ("source", "layer", "cloud", "pool", "host", "scope", "resource")
_LABEL_CACHE_LIMIT = 1_000_000


class SeriesEncoder:
    """Builds a poll's `timeseries` fields. Each row's encoded labels are cached (the metric name, which sorts
    first, is prepended), and a poll's timestamp is encoded once: a poll's request costs ~10 µs per sample."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, ...], bytes] = {}
        self._names = {metric: encode_labels((("__name__", metric),)) for metric in VALUE_METRICS.values()}

    def labels_of(self, key: tuple[str, ...]) -> bytes:
        """Encoded labels of (metric name, *SERIES_LABELS values), cached per row."""
        name = self._names.get(key[0]) or encode_labels((("__name__", key[0]),))
        return name + self._row(key[1:])

    def _row(self, row: tuple[str, ...]) -> bytes:
        cached = self._rows.get(row)
        if cached is None:
            if len(self._rows) >= _LABEL_CACHE_LIMIT:
                self._rows.clear()
            # `__name__` sorts before every lowercase label name, so name + sorted rest is the spec's order.
            cached = self._rows[row] = encode_labels(sort_labels(dict(zip(SERIES_LABELS, row, strict=True))))
        return cached

    def encode(self, source: str, capacity: pd.DataFrame | None, when: datetime) -> tuple[list[bytes], int]:
        """(timeseries fields, sample count) of one poll: one sample per known value."""
        if capacity is None or not len(capacity):
            return [], 0
        timestamp = _timestamp_part(round(when.timestamp() * 1000))
        frame = capacity.assign(source=source)
        labels = [frame[c].astype("string").fillna("").to_numpy(dtype=object) for c in SERIES_LABELS]
        encoded = [self._row(row) for row in zip(*labels, strict=True)]
        out: list[bytes] = []
        for column, metric in VALUE_METRICS.items():
            if column not in frame.columns:
                continue
            name = self._names[metric]
            values = frame[column].to_numpy(dtype=float, na_value=np.nan)
            packed = values.astype("<f8").tobytes()
            for index in np.flatnonzero(np.isfinite(values)).tolist():
                sample = _sample_field(packed[8 * index : 8 * index + 8], timestamp)
                body = name + encoded[index]
                out.append(b"\x0a" + _varint(len(body) + len(sample)) + body + sample)
        return out, len(out)


_ZERO = bytes(8)


def _timestamp_part(timestamp_ms: int) -> bytes:
    return b"\x10" + _varint(timestamp_ms) if timestamp_ms else b""


def _sample_field(packed_value: bytes, timestamp_part: bytes) -> bytes:
    """A Sample field from an 8-byte little-endian double and an encoded timestamp (zeros left out, as proto3)."""
    payload = (b"\x09" + packed_value if packed_value != _ZERO else b"") + timestamp_part
    return b"\x12" + _varint(len(payload)) + payload


def history_series(rows: pd.DataFrame) -> Iterator[tuple[tuple[str, ...], int, float]]:
    """(metric + labels, timestamp ms, value) of `History.host_series` rows, for `capacityd history export`."""
    stamps = (pd.to_datetime(rows["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    labels = [rows[c].astype("string").fillna("").to_numpy(dtype=object) for c in SERIES_LABELS]
    keys = list(zip(*labels, strict=True))
    ts = stamps.to_numpy(dtype=np.int64)
    for column, metric in VALUE_METRICS.items():
        if column not in rows.columns:
            continue
        values = rows[column].to_numpy(dtype=float, na_value=np.nan)
        for index in np.flatnonzero(np.isfinite(values)).tolist():
            yield (metric, *keys[index]), int(ts[index]), float(values[index])

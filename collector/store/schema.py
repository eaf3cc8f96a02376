"""The history file's layout: tables, key tuples, column lists, and the small conversions every part shares.

Layout (all timestamps are integer epoch seconds, UTC; label tuples are interned into small *key*
tables so the big tables hold only integers and floats):

* `pool_raw`    per (source, layer, cloud, pool, resource, scope) and poll: sums over the hosts of one
                source. Clustered by (key, ts) so one pool's series is one contiguous range.
* `host_raw`    per host row of the capacity frame and poll. Clustered by (ts, key): an append touches
                only the tail pages however many hosts a poll has (write volume beats per-host reads).
* `pool_rollup`, `host_rollup`  one row per `downsample_step` bucket: means, the max of
                allocated/used, and sample counts. Every completed bucket is rolled up by `compact()`
                (not only expired ones), so long reads never aggregate raw rows.
* `consumer_hourly`  per consumer and hour: cpu_used sum/max, memory_used max, sample counts.
                Accumulated in memory and merged in (upsert) at the hour change, every
                `CONSUMER_FLUSH_SECONDS` and on close: one write per consumer per flush instead of per poll.
* `consumer_counts` consumers per (source, layer, cloud, pool, project, flavor, state), sampled at the
                first poll of each hour per source; past `raw_retention` only the 00 UTC sample of a day is kept.
* `source_polls` one row per stored poll (source, ts), kept as long as `pool_raw`: what `verify()`
                checks ownership against (a row of a source's key at a time that source never polled is
                misfiled). Added in schema version 2; a version 1 file is migrated in place on open.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2
"""1: the original layout; 2: adds `source_polls` (ownership check, docs/history.md)."""
FILE_NAME = "history.sqlite"
CONSUMER_HOUR = 3600
CONSUMER_FLUSH_SECONDS = 600.0
"""Unflushed per-consumer usage is what a kill -9 can lose; 10 minutes of it bounds that loss."""
ROLLUP_GRACE_SECONDS = 300
"""A bucket is rolled up this long after it ends, so polls still in flight at the boundary land first."""
RAW_POOL_STEP = 300
"""Default `pool_series` step when the whole range is still at full resolution."""
_CHUNK = 900  # bound parameters per IN (...) query, below SQLite's limit
_KEY_CACHE_LIMIT = 2_000_000

POOL_KEY = ("source", "layer", "cloud", "pool", "resource", "scope")
HOST_KEY = ("source", "layer", "cloud", "pool", "host", "scope", "resource")
CONSUMER_KEY = ("source", "layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory")
COUNT_KEY = ("source", "layer", "cloud", "pool", "project", "flavor", "state")
_NUMERIC_KEY_COLUMNS = {"cpu", "memory"}

POOL_SERIES_COLUMNS = [
    "timestamp", "layer", "cloud", "pool", "resource",
    "capacity", "reserved", "allocatable", "allocated", "used", "hosts", "allocated_max", "used_max",
]  # fmt: skip
HOST_SERIES_COLUMNS = [
    "timestamp", "source", "layer", "cloud", "pool", "host", "scope", "resource",
    "capacity", "allocatable", "allocated", "used", "allocated_max", "used_max", "samples",
]  # fmt: skip
CONSUMER_USAGE_COLUMNS = [
    "hour", "source", "layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory",
    "cpu_used_mean", "cpu_used_max", "memory_used_max", "samples",
]  # fmt: skip
CONSUMER_COUNT_COLUMNS = ["timestamp", "source", "layer", "cloud", "pool", "project", "flavor", "state", "count"]

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS source_polls (
    source TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (source, ts)) WITHOUT ROWID;
"""
"""What version 2 adds to version 1 (also the in-place migration)."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sources (source TEXT PRIMARY KEY, last_ts INTEGER, counts_ts INTEGER) WITHOUT ROWID;
CREATE TABLE dirty_buckets (ts INTEGER PRIMARY KEY);

CREATE TABLE pool_keys (
    pkey INTEGER PRIMARY KEY, fp INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL, layer TEXT NOT NULL, cloud TEXT NOT NULL, pool TEXT NOT NULL,
    resource TEXT NOT NULL, scope TEXT NOT NULL);
CREATE TABLE pool_raw (
    pkey INTEGER NOT NULL, ts INTEGER NOT NULL,
    capacity REAL, reserved REAL, allocatable REAL, allocated REAL, used REAL, hosts INTEGER,
    PRIMARY KEY (pkey, ts)) WITHOUT ROWID;
CREATE INDEX pool_raw_ts ON pool_raw (ts);
CREATE TABLE pool_rollup (
    pkey INTEGER NOT NULL, ts INTEGER NOT NULL,
    capacity REAL, reserved REAL, allocatable REAL, allocated REAL, allocated_max REAL, allocated_n INTEGER,
    used REAL, used_max REAL, used_n INTEGER, hosts REAL, samples INTEGER NOT NULL,
    PRIMARY KEY (pkey, ts)) WITHOUT ROWID;
CREATE INDEX pool_rollup_ts ON pool_rollup (ts);

CREATE TABLE host_keys (
    hkey INTEGER PRIMARY KEY, fp INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL, layer TEXT NOT NULL, cloud TEXT NOT NULL, pool TEXT NOT NULL,
    host TEXT NOT NULL, scope TEXT NOT NULL, resource TEXT NOT NULL);
CREATE TABLE host_raw (
    ts INTEGER NOT NULL, hkey INTEGER NOT NULL,
    capacity REAL, allocatable REAL, allocated REAL, used REAL,
    PRIMARY KEY (ts, hkey)) WITHOUT ROWID;
CREATE TABLE host_rollup (
    hkey INTEGER NOT NULL, ts INTEGER NOT NULL,
    capacity REAL, allocatable REAL, allocated REAL, allocated_max REAL, allocated_n INTEGER,
    used REAL, used_max REAL, used_n INTEGER, samples INTEGER NOT NULL,
    PRIMARY KEY (hkey, ts)) WITHOUT ROWID;
CREATE INDEX host_rollup_ts ON host_rollup (ts);

CREATE TABLE consumer_keys (
    ckey INTEGER PRIMARY KEY, fp INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL, layer TEXT NOT NULL, cloud TEXT NOT NULL, pool TEXT NOT NULL, host TEXT,
    id TEXT NOT NULL, project TEXT, flavor TEXT, cpu REAL, memory REAL, last_hour INTEGER NOT NULL DEFAULT 0);
CREATE INDEX consumer_keys_last_hour ON consumer_keys (last_hour);
CREATE TABLE consumer_hourly (
    hour INTEGER NOT NULL, ckey INTEGER NOT NULL,
    cpu_used_sum REAL, cpu_used_n INTEGER NOT NULL, cpu_used_max REAL, memory_used_max REAL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (hour, ckey)) WITHOUT ROWID;

CREATE TABLE count_keys (
    gkey INTEGER PRIMARY KEY, fp INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL, layer TEXT NOT NULL, cloud TEXT NOT NULL, pool TEXT NOT NULL,
    project TEXT, flavor TEXT, state TEXT NOT NULL);
CREATE TABLE consumer_counts (
    ts INTEGER NOT NULL, gkey INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (ts, gkey)) WITHOUT ROWID;
"""
_SCHEMA += _SCHEMA_V2


_KEY_TABLES = {
    "pool_keys": ("pkey", POOL_KEY),
    "host_keys": ("hkey", HOST_KEY),
    "consumer_keys": ("ckey", CONSUMER_KEY),
    "count_keys": ("gkey", COUNT_KEY),
}


class HistoryError(RuntimeError):
    """The history file cannot be used (newer schema, not a database, unwritable); names the file."""


def _epoch(value: datetime | pd.Timestamp, what: str = "timestamp") -> int:
    """Timezone-aware datetime -> integer epoch seconds; a naive one is refused (its zone is a guess)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value!r} is naive; pass a timezone-aware UTC datetime")
    return math.floor(value.timestamp())


def _end_epoch(value: datetime | pd.Timestamp) -> int:
    """The exclusive upper bound, in whole seconds, of a range ending at `value`.

    Samples are stored at whole seconds (`_epoch` floors): one stored at second s was taken in [s, s+1), so a
    range ending at 21.7 s must include second 21 — flooring the end to 21 dropped it, and a forecast run in
    the same second as the poll it follows read no history at all.
    """
    _epoch(value, "end")  # the same checks (a datetime, timezone-aware)
    return math.ceil(value.timestamp())


def _floor(ts: int, step: int) -> int:
    return ts // step * step


def _to_utc(seconds: np.ndarray | pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype="int64"), unit="s", utc=True))


def _fingerprints(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Stable 64-bit fingerprint of each row's label tuple (dtypes normalized so equal tuples hash equal)."""
    normalized = pd.DataFrame(
        {
            column: (
                frame[column].astype("float64") if column in _NUMERIC_KEY_COLUMNS else frame[column].astype("string")
            )
            for column in columns
        }
    )
    hashed: np.ndarray = pd.util.hash_pandas_object(normalized, index=False).to_numpy().view(np.int64)
    return hashed


def _py(column: np.ndarray | pd.Series) -> list[Any]:
    """Column -> list of Python scalars for sqlite3. SQLite itself stores a NaN float as NULL."""
    values: list[Any]
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        values = column.tolist()
        return values
    series = pd.Series(column)
    if series.dtype.kind == "f":
        values = series.to_numpy(dtype=float, na_value=np.nan).tolist()
    elif series.dtype.kind in "iub":
        values = series.to_numpy().tolist()
    else:
        values = series.astype(object).where(series.notna(), None).tolist()
    return values


def _rows(*columns: np.ndarray | pd.Series | list[Any]) -> list[tuple[Any, ...]]:
    return list(zip(*(_py(c) if not isinstance(c, list) else c for c in columns), strict=True))


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)

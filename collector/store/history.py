"""The history store: every successful poll kept under `state_dir`, thinned as it ages (docs/history.md).

One SQLite file in WAL mode (`<state_dir>/history.sqlite`). Why SQLite and not Parquet files: a poll is
one small transaction (atomic and crash-safe for free, where Parquet would need one file per poll plus
compaction and a manifest), reads are indexed range scans, and readers never block the writer.

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

Writes go through one connection guarded by a lock (SQLite has one writer anyway); each read runs in
one read transaction on a per-thread connection, so it sees a consistent snapshot while appends go on.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from collector.contract.schema import FrameSet
from collector.store.settings import HistoryConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
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

# Per (key, bucket) from pool_rollup: sample-weighted sums and counts, combinable with raw buckets.
_ROLLUP_AGGREGATE = (
    "pkey, ts / :step * :step AS b, sum(samples), min(ts), max(ts) + :dstep - 1, sum(capacity * samples), "
    "sum(reserved * samples), sum(allocatable * samples), sum(allocated * allocated_n), sum(allocated_n), "
    "max(allocated_max), sum(used * used_n), sum(used_n), max(used_max), sum(hosts * samples)"
)
_ROLLUP_ROW = (
    "pkey, ts AS b, samples, ts, ts + :dstep - 1, capacity * samples, reserved * samples, allocatable * samples, "
    "allocated * allocated_n, allocated_n, allocated_max, used * used_n, used_n, used_max, hosts * samples"
)

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
    return pd.util.hash_pandas_object(normalized, index=False).to_numpy().view(np.int64)


def _py(column: np.ndarray | pd.Series) -> list:
    """Column -> list of Python scalars for sqlite3. SQLite itself stores a NaN float as NULL."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        return column.tolist()
    series = pd.Series(column)
    if series.dtype.kind == "f":
        return series.to_numpy(dtype=float, na_value=np.nan).tolist()
    if series.dtype.kind in "iub":
        return series.to_numpy().tolist()
    return series.astype(object).where(series.notna(), None).tolist()


def _rows(*columns: np.ndarray | pd.Series | list) -> list[tuple]:
    return list(zip(*(_py(c) if not isinstance(c, list) else c for c in columns), strict=True))


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


_STATS = ("cpu_sum", "cpu_n", "cpu_max", "mem_max", "samples")


@dataclass
class _ConsumerAccumulator:
    """One source's per-consumer usage for the current hour, not yet written: arrays aligned with `fps`."""

    hour: int
    fps: np.ndarray  # unique consumer fingerprints
    labels: pd.DataFrame  # CONSUMER_KEY columns, row for row with fps
    stats: dict[str, np.ndarray]  # _STATS arrays, row for row with fps
    poll_fps: np.ndarray | None = None
    """The fingerprint array of the poll the rows are aligned with (fast path when the next poll is alike)."""


@dataclass
class _Layout:
    """What a source's last frame resolved to, reused while its label columns stay the same."""

    labels: tuple[np.ndarray, ...]
    keys: np.ndarray  # host keys (capacity) or fingerprints (consumers), row for row
    group_ids: np.ndarray | None = None  # capacity: row -> pool group
    group_keys: np.ndarray | None = None  # capacity: pool group -> pool key
    hosts: np.ndarray | None = None  # capacity: host-scope rows per pool group


def _label_arrays(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, ...]:
    return tuple(
        frame[c].to_numpy(dtype=float, na_value=np.nan) if c in _NUMERIC_KEY_COLUMNS
        else frame[c].to_numpy(dtype=object, na_value=None)
        for c in columns
    )  # fmt: skip


def _same_labels(old: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...]) -> bool:
    """Row-for-row equality of two label tuples (None == None, NaN == NaN)."""
    if len(old) != len(new) or len(old[0]) != len(new[0]):
        return False
    for a, b in zip(old, new, strict=True):
        if a.dtype.kind == "f":
            if not np.array_equal(a, b, equal_nan=True):
                return False
        elif not (a == b).all():
            return False
    return True


class History:
    """Pool, host and consumer history of every source, in one SQLite file (docs/history.md)."""

    def __init__(self, path: Path, config: HistoryConfig):
        self.path = Path(path)
        self.config = config
        self.step = max(60, int(config.downsample_step.total_seconds()))
        self.rejected: Counter[str] = Counter()
        """Polls refused per source (older than full-resolution history), for the daemon to export."""
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._key_cache: dict[str, dict[int, int]] = {table: {} for table in _KEY_TABLES}
        self._ckey_hour: dict[int, int] = {}
        self._layouts: dict[tuple[str, str], _Layout] = {}
        self._accumulators: dict[str, _ConsumerAccumulator] = {}
        self._last_flush = time.monotonic()
        self._closed = False
        try:
            self._writer = self._connect()
        except sqlite3.DatabaseError as error:
            raise HistoryError(f"{self.path}: cannot open history database: {error}") from None
        try:
            self._writer.execute("PRAGMA cache_size = -65536")
            self._init_schema()
        except sqlite3.DatabaseError as error:
            self._writer.close()
            raise HistoryError(f"{self.path}: cannot open history database: {error}") from None
        except BaseException:
            self._writer.close()
            raise

    @classmethod
    def open(cls, state_dir: Path, config: HistoryConfig) -> History:
        """Open (creating if needed) `<state_dir>/history.sqlite`."""
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HistoryError(f"{state_dir}: cannot create state directory: {error.strerror}") from None
        return cls(state_dir / FILE_NAME, config)

    # ------------------------------------------------------------------ connections and schema

    def _connect(self) -> sqlite3.Connection:
        """WAL + synchronous=NORMAL: a commit is atomic and survives a killed process; only an OS crash
        or power cut can lose the last commits (never corrupt the file), and no fsync per poll."""
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError:
            connection.close()
            raise
        if str(mode).lower() != "wal":
            connection.close()
            raise HistoryError(f"{self.path}: cannot switch to WAL mode (got {mode}); is it on a network share?")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA journal_size_limit = 67108864")
        connection.execute("PRAGMA temp_store = MEMORY")
        return connection

    def _init_schema(self) -> None:
        with self._write() as con:
            has_meta = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if has_meta is None:
                tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
                if tables:
                    raise HistoryError(f"{self.path}: a SQLite file that is not capacityd history (no meta table)")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT INTO meta VALUES ('created', ?)", (datetime.now(UTC).isoformat(),))
                return
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema version {version} is newer than this capacityd supports "
                    f"({SCHEMA_VERSION}); upgrade capacityd, or move the file away to start a new history"
                )
            if version < SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: unknown history schema version {version}")

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise HistoryError(f"{self.path}: history is closed")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = 1")
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE .. COMMIT) under the writer lock; rolled back on error."""
        with self._lock:
            if self._closed:
                raise HistoryError(f"{self.path}: history is closed")
            con = self._writer
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                # Keys interned in the rolled-back transaction are gone: forget every cached key.
                for cache in self._key_cache.values():
                    cache.clear()
                self._layouts.clear()
                self._ckey_hour.clear()
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same snapshot, even while compact() runs."""
        con = self._reader()
        con.execute("BEGIN")
        try:
            yield con
        finally:
            con.execute("COMMIT")

    @staticmethod
    def _meta_int(con: sqlite3.Connection, key: str) -> int | None:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _set_meta(con: sqlite3.Connection, key: str, value: int) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    # ------------------------------------------------------------------ key interning

    def _intern(
        self, con: sqlite3.Connection, table: str, frame: pd.DataFrame, fps: np.ndarray | None = None
    ) -> np.ndarray:
        """Map each row's label tuple to a small integer key, inserting unseen tuples (same transaction)."""
        key_column, columns = _KEY_TABLES[table]
        if fps is None:
            fps = _fingerprints(frame, columns)
        cache = self._key_cache[table]
        keys = np.fromiter((cache.get(fp, -1) for fp in fps.tolist()), dtype=np.int64, count=len(fps))
        missing = keys < 0
        if missing.any():
            new = frame.loc[missing, list(columns)].copy()
            new.insert(0, "fp", fps[missing])
            new = new.drop_duplicates("fp")
            placeholders = ", ".join("?" * (len(columns) + 1))
            con.executemany(
                f"INSERT INTO {table} (fp, {', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT(fp) DO NOTHING",
                _rows(*(new[c] for c in new.columns)),
            )
            wanted = new["fp"].tolist()
            if len(cache) + len(wanted) > _KEY_CACHE_LIMIT:
                cache.clear()
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                query = f"SELECT fp, {key_column} FROM {table} WHERE fp IN ({', '.join('?' * len(chunk))})"
                cache.update(con.execute(query, chunk).fetchall())
            keys[missing] = [cache[fp] for fp in fps[missing].tolist()]
        return keys

    # ------------------------------------------------------------------ writing

    def append(self, source: str, frames: FrameSet, when: datetime) -> None:
        """Store one successful poll of `source` in one transaction: all of it or (after a crash) none.

        A poll older than what is kept at full resolution (a clock stepped back by days) is refused,
        logged and counted in `rejected`; any other out-of-order poll is stored in time order and the
        rollups it touches are recomputed by the next compact() (docs/history.md, "Clocks").
        """
        ts = _epoch(when, "when")
        capacity = frames.get("capacity")
        consumers = frames.get("consumers")
        with self._write() as con:
            floor = max(self._meta_int(con, "host_raw_floor") or 0, self._meta_int(con, "pool_raw_floor") or 0)
            if ts < floor:
                self.rejected[source] += 1
                log.warning(
                    "history: refused poll of %s at %s: older than the full-resolution history (%s); "
                    "is the clock wrong?",
                    source, when.isoformat(), datetime.fromtimestamp(floor, UTC).isoformat(),
                )  # fmt: skip
                return
            row = con.execute("SELECT last_ts, counts_ts FROM sources WHERE source = ?", (source,)).fetchone()
            last_ts, counts_ts = row if row else (None, None)
            rollup_until = self._meta_int(con, "rollup_until")
            if rollup_until is not None and ts < rollup_until:
                con.execute("INSERT OR IGNORE INTO dirty_buckets VALUES (?)", (_floor(ts, self.step),))
            if capacity is not None and len(capacity):
                self._append_capacity(con, source, capacity, ts)
            take_counts = consumers is not None and (
                counts_ts is None or _floor(counts_ts, CONSUMER_HOUR) != _floor(ts, CONSUMER_HOUR)
            )
            if take_counts:
                self._append_counts(con, source, consumers, ts)
                counts_ts = ts
            con.execute(
                "INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT(source) DO UPDATE SET "
                "last_ts = max(coalesce(last_ts, excluded.last_ts), excluded.last_ts), counts_ts = excluded.counts_ts",
                (source, ts if last_ts is None else max(last_ts, ts), counts_ts),
            )
        if consumers is not None and len(consumers):
            self._accumulate(source, consumers, ts)
        if time.monotonic() - self._last_flush >= CONSUMER_FLUSH_SECONDS:
            self.flush()

    def _append_capacity(self, con: sqlite3.Connection, source: str, capacity: pd.DataFrame, ts: int) -> None:
        layout = self._capacity_layout(con, source, capacity)
        values = {c: capacity[c].to_numpy(dtype=float, na_value=np.nan) for c in
                  ("capacity", "reserved", "allocatable", "allocated", "used")}  # fmt: skip
        groups, count = layout.group_ids, len(layout.group_keys)
        pool_columns = []
        for series in values.values():
            known = ~np.isnan(series)
            total = np.bincount(groups, weights=np.where(known, series, 0.0), minlength=count)
            # A pool sum is unknown only when no host knows it (docs/history.md, "Unknown values").
            pool_columns.append(np.where(np.bincount(groups, weights=known, minlength=count) > 0, total, np.nan))
        con.executemany(
            "INSERT OR REPLACE INTO pool_raw VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(layout.group_keys, [ts] * count, *pool_columns, layout.hosts),
        )
        con.executemany(
            "INSERT OR REPLACE INTO host_raw VALUES (?, ?, ?, ?, ?, ?)",
            _rows([ts] * len(capacity), layout.keys,
                  *(values[c] for c in ("capacity", "allocatable", "allocated", "used"))),
        )  # fmt: skip

    def _capacity_layout(self, con: sqlite3.Connection, source: str, capacity: pd.DataFrame) -> _Layout:
        """Keys and pool grouping of a capacity frame, reused while a source's rows keep their labels.

        A source usually reports the same hosts in the same order every poll; comparing the label
        columns is far cheaper than hashing and grouping them again.
        """
        columns = ("layer", "cloud", "pool", "host", "scope", "resource")
        labels = _label_arrays(capacity, columns)
        cached = self._layouts.get(("capacity", source))
        if cached is not None and _same_labels(cached.labels, labels):
            return cached
        frame = capacity[list(columns)].reset_index(drop=True).assign(source=source)
        grouper = frame.groupby(list(POOL_KEY), sort=False, dropna=False, observed=True)
        group_ids = grouper.ngroup().to_numpy(dtype=np.int64)
        pools = grouper.size().rename("rows").reset_index()
        hosts = np.where(pools["scope"] == "host", pools["rows"], 0)
        layout = _Layout(
            labels=labels,
            keys=self._intern(con, "host_keys", frame),
            group_ids=group_ids,
            group_keys=self._intern(con, "pool_keys", pools),
            hosts=hosts,
        )
        self._layouts[("capacity", source)] = layout
        return layout

    def _append_counts(self, con: sqlite3.Connection, source: str, consumers: pd.DataFrame, ts: int) -> None:
        frame = consumers.assign(source=source)
        counts = frame.groupby(list(COUNT_KEY), sort=False, dropna=False, observed=True).size()
        counts = counts.rename("count").reset_index()
        gkeys = self._intern(con, "count_keys", counts)
        con.executemany(
            "INSERT OR REPLACE INTO consumer_counts VALUES (?, ?, ?)", _rows([ts] * len(counts), gkeys, counts["count"])
        )

    def _accumulate(self, source: str, consumers: pd.DataFrame, ts: int) -> None:
        """Fold one poll's per-consumer usage into the source's in-memory hourly accumulator."""
        hour = _floor(ts, CONSUMER_HOUR)
        with self._lock:
            current = self._accumulators.get(source)
            if current is not None and current.hour != hour:
                self._flush_source(source)
                current = None
            key_columns = CONSUMER_KEY[1:]  # all but source, which is the same for every row
            labels = _label_arrays(consumers, key_columns)
            cached = self._layouts.get(("consumers", source))
            if cached is not None and _same_labels(cached.labels, labels):
                fps = cached.keys
            else:
                fps = _fingerprints(consumers.assign(source=source), CONSUMER_KEY)
                self._layouts[("consumers", source)] = _Layout(labels=labels, keys=fps)
            cpu = consumers["cpu_used"].to_numpy(dtype=float, na_value=np.nan)
            memory = consumers["memory_used"].to_numpy(dtype=float, na_value=np.nan)
            known = ~np.isnan(cpu)
            poll = {"cpu_sum": np.where(known, cpu, 0.0), "cpu_n": known.astype(np.int64), "cpu_max": cpu,
                    "mem_max": memory, "samples": np.ones(len(cpu), dtype=np.int64)}  # fmt: skip
            if current is not None and current.poll_fps is fps:
                # The same consumers in the same order as the last poll (the usual case): add in place.
                stats, n = current.stats, len(fps)
                for name in ("cpu_sum", "cpu_n", "samples"):
                    stats[name][:n] += poll[name]
                for name in ("cpu_max", "mem_max"):
                    stats[name][:n] = np.fmax(stats[name][:n], poll[name])
                return
            frame = pd.DataFrame(poll, index=pd.Index(fps, name="fp"))
            new_labels = consumers[list(key_columns)].assign(source=source)[list(CONSUMER_KEY)]
            new_labels.index = frame.index
            unique_poll = not frame.index.has_duplicates
            if current is not None:
                old_index = pd.Index(current.fps, name="fp")
                frame = pd.concat([pd.DataFrame(current.stats, index=old_index), frame])
                new_labels = pd.concat([current.labels.set_axis(old_index), new_labels])
            if frame.index.has_duplicates:
                aggregation = {"cpu_sum": "sum", "cpu_n": "sum", "cpu_max": "max", "mem_max": "max", "samples": "sum"}
                frame = frame.groupby(level=0, sort=False).agg(aggregation)
                new_labels = new_labels[~new_labels.index.duplicated()]
            if unique_poll:
                # This poll's consumers first, in its order, so the next alike poll takes the fast path.
                poll_index = pd.Index(fps, name="fp")
                order = poll_index.append(frame.index.difference(poll_index, sort=False))
                frame = frame.reindex(order)
            new_labels = new_labels.reindex(frame.index)
            self._accumulators[source] = _ConsumerAccumulator(
                hour=hour,
                fps=frame.index.to_numpy(dtype=np.int64),
                labels=new_labels.reset_index(drop=True),
                stats={name: frame[name].to_numpy(copy=True) for name in _STATS},
                poll_fps=fps if unique_poll else None,
            )

    def flush(self) -> None:
        """Write every source's buffered per-consumer usage (merged into existing hourly rows)."""
        with self._lock:
            for source in list(self._accumulators):
                self._flush_source(source)
            self._last_flush = time.monotonic()

    def _flush_source(self, source: str) -> None:
        accumulator = self._accumulators.pop(source, None)
        if accumulator is None or not len(accumulator.fps):
            return
        stats, labels, hour, fps = accumulator.stats, accumulator.labels, accumulator.hour, accumulator.fps
        try:
            with self._write() as con:
                ckeys = self._intern(con, "consumer_keys", labels, fps)
                con.executemany(
                    "INSERT INTO consumer_hourly VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(hour, ckey) DO UPDATE SET "
                    "cpu_used_sum = coalesce(cpu_used_sum, 0) + coalesce(excluded.cpu_used_sum, 0), "
                    "cpu_used_n = cpu_used_n + excluded.cpu_used_n, "
                    "cpu_used_max = max(coalesce(cpu_used_max, excluded.cpu_used_max), "
                    "coalesce(excluded.cpu_used_max, cpu_used_max)), "
                    "memory_used_max = max(coalesce(memory_used_max, excluded.memory_used_max), "
                    "coalesce(excluded.memory_used_max, memory_used_max)), "
                    "samples = samples + excluded.samples",
                    _rows([hour] * len(fps), ckeys, stats["cpu_sum"], stats["cpu_n"], stats["cpu_max"],
                          stats["mem_max"], stats["samples"]),
                )  # fmt: skip
                stale = [ckey for ckey in ckeys.tolist() if self._ckey_hour.get(ckey) != hour]
                con.executemany(
                    "UPDATE consumer_keys SET last_hour = ? WHERE ckey = ? AND last_hour < ?",
                    [(hour, ckey, hour) for ckey in stale],
                )
            if len(self._ckey_hour) > _KEY_CACHE_LIMIT:
                self._ckey_hour.clear()
            self._ckey_hour.update(dict.fromkeys(stale, hour))
        except Exception:
            log.exception("history: could not write consumer usage of %s (hour %s)", source, hour)
            raise

    def backfill(self, rows: pd.DataFrame) -> None:
        """Bulk insert of pool history (columns of `pool_series` plus `source`) in one transaction.

        Rows still within full-resolution history go to `pool_raw` (rollups follow at the next
        compact()); older ones are rolled up here directly. Existing samples at the same times are replaced.
        """
        required = ["timestamp", "source", "layer", "cloud", "pool", "resource", "capacity", "allocatable"]
        missing = [c for c in required if c not in rows.columns]
        if missing:
            raise ValueError(f"backfill rows lack column(s): {', '.join(missing)}")
        if not len(rows):
            return
        frame = rows.reset_index(drop=True)
        for column in ("capacity", "allocatable", "timestamp"):
            unknown = frame[column].isna().to_numpy()
            if unknown.any():
                raise ValueError(f"backfill rows: {column} is missing in row {int(np.flatnonzero(unknown)[0])}")
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        frame["ts"] = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype(np.int64)
        for column, default in (("scope", "host"), ("reserved", 0.0), ("allocated", np.nan), ("used", np.nan),
                                ("hosts", 0)):  # fmt: skip
            if column not in frame.columns:
                frame[column] = default
        frame["hosts"] = frame["hosts"].fillna(0).round().astype(np.int64)
        with self._write() as con:
            frame["pkey"] = self._intern(con, "pool_keys", frame)
            raw_floor = self._meta_int(con, "pool_raw_floor") or 0
            rollup_until = self._meta_int(con, "rollup_until")
            raw = frame[frame["ts"] >= raw_floor]
            con.executemany(
                "INSERT OR REPLACE INTO pool_raw VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(*(raw[c] for c in ("pkey", "ts", "capacity", "reserved", "allocatable", "allocated", "used",
                                          "hosts"))),
            )  # fmt: skip
            if rollup_until is not None:
                late = np.unique(_floor(raw["ts"].to_numpy(), self.step))
                late = late[late < rollup_until]
                con.executemany("INSERT OR IGNORE INTO dirty_buckets VALUES (?)", [(int(b),) for b in late])
            old = frame[frame["ts"] < raw_floor]
            if len(old):
                old = old.assign(bucket=_floor(old["ts"].to_numpy(), self.step))
                grouped = old.groupby(["pkey", "bucket"], sort=False)
                rolled = grouped.agg(
                    capacity=("capacity", "mean"), reserved=("reserved", "mean"),
                    allocatable=("allocatable", "mean"), allocated=("allocated", "mean"),
                    allocated_max=("allocated", "max"), allocated_n=("allocated", "count"),
                    used=("used", "mean"), used_max=("used", "max"), used_n=("used", "count"),
                    hosts=("hosts", "mean"), samples=("ts", "size"),
                ).reset_index()  # fmt: skip
                con.executemany(
                    "INSERT OR REPLACE INTO pool_rollup VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _rows(*(rolled[c] for c in rolled.columns)),
                )
            for source, ts in frame.groupby("source")["ts"].max().items():
                con.execute(
                    "INSERT INTO sources (source, last_ts) VALUES (?, ?) ON CONFLICT(source) DO UPDATE SET "
                    "last_ts = max(coalesce(last_ts, excluded.last_ts), excluded.last_ts)",
                    (source, int(ts)),
                )

    # ------------------------------------------------------------------ compaction

    def compact(self, now: datetime) -> None:
        """Roll up completed buckets, re-roll late ones, drop what is past retention.

        Cheap when there is nothing to do (a few indexed range probes). A long backlog (after a
        backfill or downtime) is rolled up one day per transaction so appends are never held up long.
        """
        now_ts = _epoch(now, "now")
        step = self.step
        target = _floor(now_ts - ROLLUP_GRACE_SECONDS, step)
        with self._write() as con:
            rollup_until = self._meta_int(con, "rollup_until")
            if rollup_until is None:
                first = con.execute(
                    "SELECT min(ts) FROM (SELECT min(ts) AS ts FROM pool_raw UNION ALL SELECT min(ts) FROM host_raw)"
                ).fetchone()[0]
                rollup_until = min(_floor(first, step), target) if first is not None else target
                self._set_meta(con, "rollup_until", rollup_until)
        chunk = max(step, _floor(86400, step))
        while rollup_until < target:
            upto = min(target, rollup_until + chunk)
            with self._write() as con:
                self._roll_up(con, rollup_until, upto)
                self._set_meta(con, "rollup_until", upto)
            rollup_until = upto
        with self._write() as con:
            # Buckets that received late samples (clock stepped back, backfill) are recomputed before
            # any raw row of theirs can expire.
            dirty = [row[0] for row in con.execute("SELECT ts FROM dirty_buckets WHERE ts < ?", (rollup_until,))]
            for bucket in dirty:
                self._roll_up(con, bucket, bucket + step)
            con.execute("DELETE FROM dirty_buckets WHERE ts < ?", (rollup_until,))
            self._expire(con, now_ts, rollup_until)
            # Table statistics for the query planner, refreshed daily (bounded sampling: milliseconds).
            analyzed = self._meta_int(con, "analyzed_at")
            if analyzed is None or now_ts - analyzed >= 86400:
                con.execute("PRAGMA analysis_limit = 1000")
                con.execute("ANALYZE")
                self._set_meta(con, "analyzed_at", now_ts)

    def _roll_up(self, con: sqlite3.Connection, start: int, end: int) -> None:
        step = self.step
        con.execute(
            "INSERT OR REPLACE INTO pool_rollup "
            "SELECT pkey, ts / :step * :step AS b, avg(capacity), avg(reserved), avg(allocatable), "
            "avg(allocated), max(allocated), count(allocated), avg(used), max(used), count(used), avg(hosts), count(*) "
            "FROM pool_raw WHERE ts >= :start AND ts < :end GROUP BY pkey, b",
            {"step": step, "start": start, "end": end},
        )
        con.execute(
            "INSERT OR REPLACE INTO host_rollup "
            "SELECT hkey, ts / :step * :step AS b, avg(capacity), avg(allocatable), "
            "avg(allocated), max(allocated), count(allocated), avg(used), max(used), count(used), count(*) "
            "FROM host_raw WHERE ts >= :start AND ts < :end GROUP BY hkey, b",
            {"step": step, "start": start, "end": end},
        )

    def _expire(self, con: sqlite3.Connection, now_ts: int, rollup_until: int) -> None:
        """Delete past retention. Raw rows go only once rolled up; floors are bucket-aligned."""
        step = self.step
        for table, retention, floor_key in (
            ("pool_raw", self.config.raw_retention, "pool_raw_floor"),
            ("host_raw", self.config.host_raw_retention, "host_raw_floor"),
        ):
            cutoff = min(_floor(now_ts - int(retention.total_seconds()), step), rollup_until)
            previous = self._meta_int(con, floor_key) or 0
            if cutoff > previous:
                con.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,))
                self._set_meta(con, floor_key, cutoff)
        keep_after = _floor(now_ts - int(self.config.retention.total_seconds()), step)
        con.execute("DELETE FROM pool_rollup WHERE ts < ?", (keep_after,))
        host_after = _floor(now_ts - int(self.config.host_retention.total_seconds()), step)
        con.execute("DELETE FROM host_rollup WHERE ts < ?", (host_after,))
        con.execute("DELETE FROM consumer_counts WHERE ts < ?", (keep_after,))
        consumer_cutoff = _floor(now_ts - int(self.config.consumer_retention.total_seconds()), CONSUMER_HOUR)
        con.execute("DELETE FROM consumer_hourly WHERE hour < ?", (consumer_cutoff,))
        con.execute("DELETE FROM consumer_keys WHERE last_hour < ?", (consumer_cutoff,))
        # Consumer counts: hourly within raw_retention, then one per day (the 00 UTC hour's sample).
        thin_until = _floor(now_ts - int(self.config.raw_retention.total_seconds()), CONSUMER_HOUR)
        thinned = self._meta_int(con, "counts_thinned_until") or 0
        if thin_until > thinned:
            con.execute(
                "DELETE FROM consumer_counts WHERE ts >= ? AND ts < ? AND ts % 86400 >= 3600", (thinned, thin_until)
            )
            self._set_meta(con, "counts_thinned_until", thin_until)

    # ------------------------------------------------------------------ reading

    def last_timestamp(self, source: str) -> datetime | None:
        with self._read() as con:
            row = con.execute("SELECT last_ts FROM sources WHERE source = ?", (source,)).fetchone()
        if row is None or row[0] is None:
            return None
        return datetime.fromtimestamp(row[0], UTC)

    @staticmethod
    def _keys(con: sqlite3.Connection, table: str, filters: dict[str, list[str] | None]) -> pd.DataFrame:
        key_column, columns = _KEY_TABLES[table]
        where, params = [], []
        for column, values in filters.items():
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        query = f"SELECT {key_column}, {', '.join(columns)} FROM {table}"
        if where:
            query += " WHERE " + " AND ".join(where)
        return pd.DataFrame(con.execute(query, params).fetchall(), columns=[key_column, *columns])

    @staticmethod
    def _in_chunks(keys: Sequence[int]) -> Iterator[tuple[str, list[int]]]:
        for start in range(0, len(keys), _CHUNK):
            chunk = [int(k) for k in keys[start : start + _CHUNK]]
            yield ", ".join("?" * len(chunk)), chunk

    def pool_series(
        self,
        *,
        layer: str | Iterable[str] | None = None,
        cloud: str | Iterable[str] | None = None,
        pool: str | Iterable[str] | None = None,
        resource: str | Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        step: timedelta | None = None,
    ) -> pd.DataFrame:
        """Pool totals on a regular grid, summed across sources (docs/history.md, "Reading pool series").

        Each source's samples are averaged per `step` bucket (allocated/used also keep the bucket max);
        an empty bucket carries the source's previous value for at most 2 of its poll intervals, then
        it is a gap (NaN). Sources are then summed; a total is NaN only where no source has a value.
        Host-scope and pool-scope rows (shared storage) of a pool/resource add up; `hosts` counts hosts.
        Default step: 5 minutes when the range is all at full resolution, else `downsample_step`.
        """
        start_ts = _epoch(start, "start") if start is not None else None
        end_ts = _epoch(end, "end") if end is not None else None
        filters = {"layer": _as_list(layer), "cloud": _as_list(cloud), "pool": _as_list(pool),
                   "resource": _as_list(resource)}  # fmt: skip
        with self._read() as con:
            keys = self._keys(con, "pool_keys", filters)
            if not len(keys):
                return _empty(POOL_SERIES_COLUMNS, "timestamp")
            raw_floor = self._meta_int(con, "pool_raw_floor") or 0
            rollup_until = self._meta_int(con, "rollup_until")
            if step is None:
                step_s = RAW_POOL_STEP if start_ts is not None and start_ts >= raw_floor else self.step
                if raw_floor == 0:
                    step_s = RAW_POOL_STEP
            else:
                step_s = max(1, int(step.total_seconds()))
            coarse = step_s >= self.step and rollup_until is not None
            rollup_before = rollup_until if coarse else raw_floor
            dirty = [r[0] for r in con.execute("SELECT ts FROM dirty_buckets")] if coarse else []
            buckets = self._pool_buckets(con, keys["pkey"].tolist(), step_s, start_ts, end_ts, rollup_before, dirty)
        if not len(buckets):
            return _empty(POOL_SERIES_COLUMNS, "timestamp")
        return self._grid_sum(keys, buckets, step_s, start_ts, end_ts)

    def _pool_buckets(
        self,
        con: sqlite3.Connection,
        pkeys: list[int],
        step: int,
        start_ts: int | None,
        end_ts: int | None,
        rollup_before: int | None,
        dirty: list[int],
    ) -> pd.DataFrame:
        """Per (key, bucket): sums and counts from raw and rollup rows, combined (each row in one tier)."""
        lo = start_ts if start_ts is not None else 0
        hi = end_ts if end_ts is not None else 2**62
        rollup_before = rollup_before or 0
        dirty_sql = ", ".join(str(int(d)) for d in dirty)
        columns = ["pkey", "b", "n", "first", "last", "capacity", "reserved", "allocatable",
                   "allocated", "allocated_n", "allocated_max", "used", "used_n", "used_max", "hosts"]  # fmt: skip
        parts = []
        raw_tier = "ts >= :rb" + (f" OR ts / :dstep * :dstep IN ({dirty_sql})" if dirty else "")
        roll_tier = "ts < :rb" + (f" AND ts NOT IN ({dirty_sql})" if dirty else "")
        for start in range(0, len(pkeys), _CHUNK):
            named = {f"k{i}": int(k) for i, k in enumerate(pkeys[start : start + _CHUNK])}
            marks = ", ".join(":" + name for name in named)
            raw_sql = (
                "SELECT pkey, ts / :step * :step AS b, count(*), min(ts), max(ts), sum(capacity), sum(reserved), "
                "sum(allocatable), sum(allocated), count(allocated), max(allocated), sum(used), count(used), "
                f"max(used), sum(hosts) FROM pool_raw WHERE pkey IN ({marks}) AND ts >= :raw_lo AND ts < :hi "
                f"AND ({raw_tier}) GROUP BY pkey, b"
            )
            if step == self.step:  # one rollup row per bucket already: no sort, no aggregation
                roll_select, group = _ROLLUP_ROW, ""
            else:
                roll_select, group = _ROLLUP_AGGREGATE, "GROUP BY pkey, b"
            roll_sql = (
                f"SELECT {roll_select} FROM pool_rollup WHERE pkey IN ({marks}) "
                f"AND ts >= :lo_b AND ts < :roll_hi AND {roll_tier} {group}"
            )
            # Explicit bounds per tier, so each query seeks straight to its rows instead of filtering.
            params = {**named, "step": step, "dstep": self.step, "rb": rollup_before, "hi": hi,
                      "raw_lo": max(lo, min([rollup_before, *dirty])), "lo_b": _floor(lo, self.step),
                      "roll_hi": min(hi, rollup_before)}  # fmt: skip
            for sql in (raw_sql, roll_sql):
                result = con.execute(sql, params).fetchall()
                if result:
                    # One float matrix (NULL -> NaN) is far cheaper than pandas inferring each column.
                    parts.append(pd.DataFrame(np.array(result, dtype=float), columns=columns))
        if not parts:
            return pd.DataFrame(columns=columns)
        frame = pd.concat(parts, ignore_index=True)
        frame[["pkey", "b", "n", "first", "last"]] = frame[["pkey", "b", "n", "first", "last"]].astype(np.int64)
        if len(parts) > 1:
            frame = frame.groupby(["pkey", "b"], sort=False).agg(
                {c: ("min" if c == "first" else "max" if c in ("last", "allocated_max", "used_max") else "sum")
                 for c in columns[2:]}
            ).reset_index()  # fmt: skip
        return frame.sort_values(["pkey", "b"], ignore_index=True)

    def _grid_sum(
        self, keys: pd.DataFrame, buckets: pd.DataFrame, step: int, start_ts: int | None, end_ts: int | None
    ) -> pd.DataFrame:
        """Align each key on the step grid (bounded carry-forward), then sum keys per output series."""
        n = buckets["n"].to_numpy(dtype=float)
        values = {
            "capacity": buckets["capacity"].to_numpy(dtype=float) / n,
            "reserved": buckets["reserved"].to_numpy(dtype=float) / n,
            "allocatable": buckets["allocatable"].to_numpy(dtype=float) / n,
            "allocated": _ratio(buckets["allocated"], buckets["allocated_n"]),
            "used": _ratio(buckets["used"], buckets["used_n"]),
            "hosts": buckets["hosts"].to_numpy(dtype=float) / n,
            "allocated_max": buckets["allocated_max"].to_numpy(dtype=float, na_value=np.nan),
            "used_max": buckets["used_max"].to_numpy(dtype=float, na_value=np.nan),
        }
        matrix = np.column_stack(list(values.values()))
        pkey = buckets["pkey"].to_numpy(dtype=np.int64)
        b = buckets["b"].to_numpy(dtype=np.int64)
        last = buckets["last"].to_numpy(dtype=np.int64)
        # Poll interval per key: its span over its sample count (gaps inflate it a little, harmlessly).
        per_key = buckets.groupby("pkey").agg(n=("n", "sum"), first=("first", "min"), last=("last", "max"))
        interval = ((per_key["last"] - per_key["first"]) / (per_key["n"] - 1).clip(lower=1)).where(per_key["n"] > 1, 0)
        valid_until = last + 2 * interval.reindex(pkey).to_numpy()
        bounds = np.flatnonzero(np.diff(pkey)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(pkey)]))
        labels_of = keys[["layer", "cloud", "pool", "resource"]].itertuples(index=False, name=None)
        series_of = dict(zip(keys["pkey"].tolist(), labels_of, strict=True))
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            label = series_of[int(pkey[s])]
            groups.setdefault(label, []).append((s, e))
        # The grid spans [start, end) when given (capped where the data can still be carried), else the
        # buckets holding data: every series of one call shares the same grid when start/end are given.
        lo_bucket = _floor(start_ts, step) if start_ts is not None else None
        hi_bucket = None
        if end_ts is not None:
            hi_bucket = min(_floor(end_ts - 1, step), _floor(int(np.nanmax(valid_until)), step))
        grids, results, labels = [], [], []
        for label, spans in groups.items():
            first_b = lo_bucket if lo_bucket is not None else min(int(b[s]) for s, _ in spans)
            last_b = hi_bucket if hi_bucket is not None else max(int(b[e - 1]) for _, e in spans)
            grid = np.arange(first_b, last_b + step, step, dtype=np.int64)
            total = np.zeros((len(grid), matrix.shape[1]))
            present = np.zeros((len(grid), matrix.shape[1]), dtype=np.int64)
            for s, e in spans:
                index = np.searchsorted(b[s:e], grid, side="right") - 1
                ok = index >= 0
                taken = np.where(ok, index, 0) + s
                ok &= grid <= valid_until[taken]
                picked = np.where(ok[:, None], matrix[taken], np.nan)
                known = ~np.isnan(picked)
                total += np.where(known, picked, 0.0)
                present += known
            grids.append(grid)
            results.append(np.where(present > 0, total, np.nan))
            labels.append(label)
        if not grids:
            return _empty(POOL_SERIES_COLUMNS, "timestamp")
        lengths = [len(grid) for grid in grids]
        frame = pd.DataFrame(np.concatenate(results), columns=list(values))
        frame.insert(0, "timestamp", _to_utc(np.concatenate(grids)))
        for position, name in enumerate(("layer", "cloud", "pool", "resource")):
            column = np.repeat(np.array([label[position] for label in labels], dtype=object), lengths)
            frame.insert(position + 1, name, pd.array(column, dtype="string"))
        return frame.sort_values(["layer", "cloud", "pool", "resource", "timestamp"], ignore_index=True)

    def host_series(
        self,
        *,
        layer: str | Iterable[str] | None = None,
        cloud: str | Iterable[str] | None = None,
        pool: str | Iterable[str] | None = None,
        host: str | Iterable[str] | None = None,
        resource: str | Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Stored per-host rows: every poll within `host_raw_retention`, one row per step before that.

        Raw rows have `samples` 1 and max = value; rolled-up rows hold means, maxima and their sample count.
        """
        lo = _epoch(start, "start") if start is not None else 0
        hi = _epoch(end, "end") if end is not None else 2**62
        filters = {"layer": _as_list(layer), "cloud": _as_list(cloud), "pool": _as_list(pool),
                   "host": _as_list(host), "resource": _as_list(resource)}  # fmt: skip
        rows = []
        with self._read() as con:
            keys = self._keys(con, "host_keys", filters)
            if not len(keys):
                return _empty(HOST_SERIES_COLUMNS, "timestamp")
            floor = self._meta_int(con, "host_raw_floor") or 0
            for marks, chunk in self._in_chunks(keys["hkey"].tolist()):
                rows += con.execute(
                    "SELECT hkey, ts, capacity, allocatable, allocated, used, allocated_max, used_max, samples "
                    f"FROM host_rollup WHERE hkey IN ({marks}) AND ts >= ? AND ts < ? AND ts < ?",
                    [*chunk, _floor(lo, self.step), hi, floor],
                ).fetchall()
            hkeys, bounds = keys["hkey"].tolist(), [max(lo, floor), hi]
            if len(hkeys) <= _CHUNK and self.config.raw_retention >= self.config.host_raw_retention:
                # host_raw is clustered by time. Every host row has its pool row (same poll, pool_raw kept
                # longer), so the host's poll times come from pool_raw, clustered by key, and each host row
                # is then one primary-key seek. CROSS JOIN fixes that order for the planner.
                marks = ", ".join("?" * len(hkeys))
                rows += con.execute(
                    "SELECT r.hkey, r.ts, r.capacity, r.allocatable, r.allocated, r.used, r.allocated, r.used, 1 "
                    "FROM host_keys h CROSS JOIN pool_keys k CROSS JOIN pool_raw p CROSS JOIN host_raw r "
                    f"WHERE h.hkey IN ({marks}) AND k.source = h.source AND k.layer = h.layer "
                    "AND k.cloud = h.cloud AND k.pool = h.pool AND k.resource = h.resource AND k.scope = h.scope "
                    "AND p.pkey = k.pkey AND p.ts >= ? AND p.ts < ? AND r.ts = p.ts AND r.hkey = h.hkey",
                    [*hkeys, *bounds],
                ).fetchall()
            else:  # many hosts: one pass over the time range
                wanted = set(hkeys)
                rows += [
                    r for r in con.execute(
                        "SELECT hkey, ts, capacity, allocatable, allocated, used, allocated, used, 1 "
                        "FROM host_raw WHERE ts >= ? AND ts < ?", bounds,
                    ) if r[0] in wanted
                ]  # fmt: skip
        columns = ["hkey", "ts", "capacity", "allocatable", "allocated", "used", "allocated_max", "used_max", "samples"]
        data = pd.DataFrame(rows, columns=columns)
        if not len(data):
            return _empty(HOST_SERIES_COLUMNS, "timestamp")
        data = data.merge(keys, on="hkey", how="left")
        data["timestamp"] = _to_utc(data["ts"]).to_numpy()
        for name in ("capacity", "allocatable", "allocated", "used", "allocated_max", "used_max"):
            data[name] = data[name].astype(float)
        for name in ("source", "layer", "cloud", "pool", "host", "scope", "resource"):
            data[name] = data[name].astype("string")
        return data.sort_values(["source", "host", "resource", "timestamp"], ignore_index=True)[HOST_SERIES_COLUMNS]

    def consumer_usage(
        self,
        *,
        layer: str | Iterable[str] | None = None,
        cloud: str | Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Hourly usage per consumer, ordered by hour (flushed rows only: see `flush()`).

        cpu_used_mean is NaN when no sample of the hour knew it. The labels are read once per consumer
        and the hourly rows as plain numbers, then joined here: a window of days is millions of rows.
        """
        lo = _floor(_epoch(start, "start"), CONSUMER_HOUR) if start is not None else 0
        hi = _epoch(end, "end") if end is not None else 2**62
        where, params = ["last_hour >= ?"], [lo]
        for column, values in (("layer", _as_list(layer)), ("cloud", _as_list(cloud))):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        label_columns = ["source", "layer", "cloud", "pool", "host", "id", "project", "flavor", "cpu", "memory"]
        with self._read() as con:
            keys = con.execute(
                f"SELECT ckey, {', '.join(label_columns)} FROM consumer_keys WHERE {' AND '.join(where)}", params
            ).fetchall()
            rows = con.execute(
                "SELECT hour, ckey, CASE WHEN cpu_used_n > 0 THEN cpu_used_sum / cpu_used_n END, cpu_used_max, "
                "memory_used_max, samples FROM consumer_hourly WHERE hour >= ? AND hour < ?",
                (lo, hi),
            ).fetchall()
        if not keys or not rows:
            return _empty(CONSUMER_USAGE_COLUMNS, "hour")
        labels = pd.DataFrame(keys, columns=["ckey", *label_columns])
        numbers = np.array(rows, dtype=float)
        position = pd.Index(labels["ckey"]).get_indexer(numbers[:, 1].astype(np.int64))
        keep = position >= 0  # rows of consumers outside the layer/cloud filter
        numbers, position = numbers[keep], position[keep]
        frame = pd.DataFrame({"hour": _to_utc(numbers[:, 0].astype(np.int64))})
        for name in label_columns:
            if name in _NUMERIC_KEY_COLUMNS:
                frame[name] = labels[name].to_numpy(dtype=float, na_value=np.nan)[position]
            else:
                frame[name] = labels[name].astype("string").array.take(position)
        for offset, name in enumerate(("cpu_used_mean", "cpu_used_max", "memory_used_max"), start=2):
            frame[name] = numbers[:, offset]
        frame["samples"] = numbers[:, 5].astype(np.int64)
        return frame[CONSUMER_USAGE_COLUMNS]

    def consumer_counts(self, *, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Consumers per (source, layer, cloud, pool, project, flavor, state): hourly, daily past raw_retention."""
        lo = _epoch(start, "start") if start is not None else 0
        hi = _epoch(end, "end") if end is not None else 2**62
        with self._read() as con:
            rows = con.execute(
                "SELECT c.ts, k.source, k.layer, k.cloud, k.pool, k.project, k.flavor, k.state, c.count "
                "FROM consumer_counts c JOIN count_keys k ON k.gkey = c.gkey WHERE c.ts >= ? AND c.ts < ? "
                "ORDER BY c.ts, k.source",
                (lo, hi),
            ).fetchall()
        frame = pd.DataFrame(rows, columns=CONSUMER_COUNT_COLUMNS)
        frame["timestamp"] = (
            _to_utc(frame["timestamp"]).to_numpy() if len(frame) else pd.Series(dtype="datetime64[ns, UTC]")
        )
        for name in ("source", "layer", "cloud", "pool", "project", "flavor", "state"):
            frame[name] = frame[name].astype("string")
        frame["count"] = frame["count"].astype(np.int64)
        return frame

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush buffered consumer usage, close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                with self._readers_lock:
                    for connection in self._readers:
                        connection.close()
                    self._readers.clear()
                try:
                    self._writer.execute("PRAGMA optimize")
                finally:
                    self._writer.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ratio(total: pd.Series, count: pd.Series) -> np.ndarray:
    numerator = total.to_numpy(dtype=float, na_value=np.nan)
    denominator = count.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _empty(columns: list[str], time_column: str) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    frame[time_column] = pd.Series(dtype="datetime64[ns, UTC]")
    for name in columns:
        if name in ("source", "layer", "cloud", "pool", "host", "scope", "resource", "id", "project", "flavor",
                    "state"):  # fmt: skip
            frame[name] = pd.Series(dtype="string")
    return frame

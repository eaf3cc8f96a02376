"""Writing history: appends of polls, the hourly consumer accumulator and its flushes, and backfill.

Each public write is one transaction (`Database._write`). When the file or the disk fails, what the
write held is dropped and counted (`capacityd_history_dropped_samples_total`): a bounded spool would
have to hold whole polls of 150k pods in memory for as long as the disk stays full, and the polls
that matter most to a planner (the recent ones) are served from memory by /metrics anyway.
The next poll simply tries again; nothing half-written is ever kept (docs/history.md, "When writes fail").
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from collector.contract.schema import FrameSet
from collector.store.database import Database
from collector.store.health import is_store_failure
from collector.store.schema import (
    _CHUNK,
    _KEY_CACHE_LIMIT,
    _KEY_TABLES,
    _NUMERIC_KEY_COLUMNS,
    CONSUMER_FLUSH_SECONDS,
    CONSUMER_HOUR,
    CONSUMER_KEY,
    COUNT_KEY,
    POOL_KEY,
    _epoch,
    _fingerprints,
    _floor,
    _rows,
)

log = logging.getLogger("collector.store.history")

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


class Writer(Database):
    """The write side of History."""

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

    def append(self, source: str, frames: FrameSet, when: datetime) -> bool:
        """Store one successful poll of `source` in one transaction: all of it or none. True if stored.

        A poll older than what is kept at full resolution (a clock stepped back by days) is refused,
        logged and counted in `rejected`; any other out-of-order poll is stored in time order and the
        rollups it touches are recomputed by the next compact() (docs/history.md, "Clocks").
        When the file or the disk fails (full, I/O error, locked), the poll is dropped and counted,
        the failure logged once per episode, and False returned: the caller goes on polling.
        """
        ts = _epoch(when, "when")
        capacity = frames.get("capacity")
        consumers = frames.get("consumers")
        try:
            stored = self._append(source, capacity, consumers, ts, when)
        except sqlite3.Error as error:
            if not is_store_failure(error):
                raise
            self._health.dropped_rows(_length(capacity) + _length(consumers))
            return False
        if not stored:
            return False
        if consumers is not None and len(consumers):
            self._accumulate(source, consumers, ts)
        if time.monotonic() - self._last_flush >= CONSUMER_FLUSH_SECONDS:
            self.flush()
        return True

    def _append(
        self, source: str, capacity: pd.DataFrame | None, consumers: pd.DataFrame | None, ts: int, when: datetime
    ) -> bool:
        with self._write(f"storing a poll of {source}") as con:
            floor = max(self._meta_int(con, "host_raw_floor") or 0, self._meta_int(con, "pool_raw_floor") or 0)
            if ts < floor:
                self.rejected[source] += 1
                self._health.rejected_rows(source, "too_old", _length(capacity) + _length(consumers))
                log.warning(
                    "history: refused poll of %s at %s: older than the full-resolution history (%s); "
                    "is the clock wrong?",
                    source, when.isoformat(), datetime.fromtimestamp(floor, UTC).isoformat(),
                )  # fmt: skip
                return False
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
                assert consumers is not None
                self._append_counts(con, source, consumers, ts)
                counts_ts = ts
            con.execute(
                "INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT(source) DO UPDATE SET "
                "last_ts = max(coalesce(last_ts, excluded.last_ts), excluded.last_ts), counts_ts = excluded.counts_ts",
                (source, ts if last_ts is None else max(last_ts, ts), counts_ts),
            )
            con.execute("INSERT OR IGNORE INTO source_polls VALUES (?, ?)", (source, ts))
        return True

    def _append_capacity(self, con: sqlite3.Connection, source: str, capacity: pd.DataFrame, ts: int) -> None:
        layout = self._capacity_layout(con, source, capacity)
        values = {c: capacity[c].to_numpy(dtype=float, na_value=np.nan) for c in
                  ("capacity", "reserved", "allocatable", "allocated", "used")}  # fmt: skip
        assert layout.group_ids is not None and layout.group_keys is not None  # capacity layouts have both
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
            with self._write(f"flushing consumer usage of {source}") as con:
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
        except sqlite3.Error as error:
            if not is_store_failure(error):
                raise
            self._health.dropped_rows(len(fps))  # counted and logged (once per episode) by _write

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
        with self._write("backfilling") as con:
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
            polls = raw[["source", "ts"]].drop_duplicates()
            con.executemany("INSERT OR IGNORE INTO source_polls VALUES (?, ?)", _rows(polls["source"], polls["ts"]))
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


def _length(frame: pd.DataFrame | None) -> int:
    return 0 if frame is None else len(frame)

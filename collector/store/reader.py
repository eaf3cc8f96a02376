"""Reading history: pool series on a regular grid, host rows, hourly consumer usage and consumer counts.

Each read runs in one read transaction (`Database._read`), so it sees one consistent snapshot while
appends and compaction go on (docs/history.md, "Reading pool series").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from collector.store.database import Database
from collector.store.schema import (
    _CHUNK,
    _KEY_TABLES,
    _NUMERIC_KEY_COLUMNS,
    CONSUMER_COUNT_COLUMNS,
    CONSUMER_HOUR,
    CONSUMER_USAGE_COLUMNS,
    HOST_SERIES_COLUMNS,
    POOL_SERIES_COLUMNS,
    RAW_POOL_STEP,
    _as_list,
    _end_epoch,
    _epoch,
    _floor,
    _to_utc,
)

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


class Reader(Database):
    """The read side of History."""

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
        end_ts = _end_epoch(end) if end is not None else None
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
        groups: dict[tuple[str, ...], list[tuple[int, int]]] = {}
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
        hi = _end_epoch(end) if end is not None else 2**62
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
        hi = _end_epoch(end) if end is not None else 2**62
        where, params = ["last_hour >= ?"], [lo]  # type: list[str], list[int | str]
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
        hi = _end_epoch(end) if end is not None else 2**62
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

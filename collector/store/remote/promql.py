"""Reading pool and host history back from a Prometheus-compatible TSDB through the PromQL HTTP API.

Pool totals are summed by the TSDB (`sum by (layer, cloud, pool, resource)`), so a forecast pass moves
one series per pool and resource, never every host series. Each `step` bucket [b, b + step) is the
evaluation at `b + step - 1 ms` of `avg_over_time(...[step])` (PromQL windows are left-open), labelled `b`,
which is the embedded store's bucketing. Long ranges are split so that no query asks for more than
`MAX_POINTS` points per series (Prometheus refuses more than 11,000). This class needs no local store:
a planner process can read pooled history with it alone (docs/scale-out.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from collector.store.remote.client import HttpClient
from collector.store.remote.samples import VALUE_METRICS
from collector.store.schema import HOST_SERIES_COLUMNS, POOL_SERIES_COLUMNS
from collector.store.settings import RemoteHistoryConfig

MAX_POINTS = 10_000
"""Points per series per query_range call: under Prometheus' hard limit of 11,000."""
DEFAULT_STEP = timedelta(minutes=5)
DEFAULT_RANGE = timedelta(days=8)
HOST_CHUNK = timedelta(days=1)
"""Raw host samples are fetched one day per query (range selectors at an instant)."""

POOL_BY = ("layer", "cloud", "pool", "resource")
PARALLEL_QUERIES = 4
_MS = 0.001


def matchers(**filters: str | Iterable[str] | None) -> str:
    """`{a=~"x|y",...}` from filters (None = any); values are matched literally (regex-escaped)."""
    parts = []
    for name, value in filters.items():
        if value is None:
            continue
        values = [value] if isinstance(value, str) else list(value)
        escaped = "|".join(re.escape(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
        parts.append(f'{name}=~"{escaped}"')
    return "{" + ",".join(parts) + "}"


class PromReader:
    """pool_series, host_series and last_timestamp of collector.store.reader.Reader, from PromQL."""

    def __init__(self, config: RemoteHistoryConfig, http: HttpClient | None = None):
        self.http = http or HttpClient(config)

    # ------------------------------------------------------------------ raw calls

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Matrix result of one query, split into calls of at most MAX_POINTS points per series."""
        results: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        chunk = step * MAX_POINTS
        lo = start
        while lo <= end:
            hi = min(end, lo + chunk - step)
            data = self.http.get_json("/api/v1/query_range", {
                "query": query, "start": _fmt(lo), "end": _fmt(hi), "step": _fmt(step), "nocache": "1",
            })  # fmt: skip
            for item in data["result"]:
                key = tuple(sorted(item["metric"].items()))
                results.setdefault(key, {"metric": item["metric"], "values": []})["values"] += item["values"]
            lo = hi + step
        return list(results.values())

    def query(self, query: str, at: float) -> list[dict[str, Any]]:
        return list(self.http.get_json("/api/v1/query", {"query": query, "time": _fmt(at), "nocache": "1"})["result"])

    # ------------------------------------------------------------------ Reader's API

    def last_timestamp(self, source: str) -> datetime | None:
        """Time of the newest capacity sample of `source` within the TSDB's lookback (5 min by default)."""
        result = self.query(f"max(timestamp(capacity_resource_capacity{matchers(source=source)}))",
                            datetime.now(UTC).timestamp())  # fmt: skip
        if not result:
            return None
        return datetime.fromtimestamp(float(result[0]["value"][1]), UTC)

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
        """Pool totals on the `step` grid of [start, end), like Reader.pool_series (docs/scale-out.md).

        capacity/reserved/allocatable/allocated/used: per-host means over the bucket, summed. hosts: host-scope
        providers with a sample in the bucket. allocated_max/used_max: the sum of per-host maxima (an upper
        bound of the embedded store's maximum of the pool sum; equal when hosts peak together).
        No carry-forward: a bucket without samples is absent (NaN), not the previous value.
        """
        step_s = int((step or DEFAULT_STEP).total_seconds())
        end_dt = end or datetime.now(UTC)
        start_dt = start or end_dt - DEFAULT_RANGE
        lo = int(start_dt.timestamp()) // step_s * step_s
        hi = (int(np.ceil(end_dt.timestamp())) - 1) // step_s * step_s
        if hi < lo:
            return _empty(POOL_SERIES_COLUMNS)
        sel = matchers(layer=layer, cloud=cloud, pool=pool, resource=resource)
        by = ", ".join(POOL_BY)
        window = f"{step_s}s"
        queries = {name: f"sum by ({by}) (avg_over_time({metric}{sel}[{window}]))"
                   for name, metric in VALUE_METRICS.items()}  # fmt: skip
        queries["hosts"] = (f"count by ({by}) (count_over_time(capacity_resource_capacity"
                            f"{sel[:-1]}{',' if len(sel) > 2 else ''}scope=\"host\"}}[{window}]))")  # fmt: skip
        queries["allocated_max"] = f"sum by ({by}) (max_over_time(capacity_resource_allocated{sel}[{window}]))"
        queries["used_max"] = f"sum by ({by}) (max_over_time(capacity_resource_used{sel}[{window}]))"

        def run(query: str) -> pd.Series:
            result = self.query_range(query, lo + step_s - _MS, hi + step_s - _MS, step_s)
            return _matrix_series(result, POOL_BY, shift=step_s - _MS)

        # The TSDB does the work: a few queries in flight at once cut a forecast pass's wall time.
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as executor:
            columns = dict(zip(queries, executor.map(run, queries.values()), strict=True))
        frame = pd.DataFrame(columns)
        if frame.empty:
            return _empty(POOL_SERIES_COLUMNS)
        frame = frame.dropna(how="all", subset=["capacity", "allocatable", "allocated", "used"]).reset_index()
        if "hosts" in frame.columns:
            frame["hosts"] = frame["hosts"].fillna(0.0)
        frame["timestamp"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        for name in POOL_BY:
            frame[name] = frame[name].astype("string")
        for name in POOL_SERIES_COLUMNS:
            if name not in frame.columns:
                frame[name] = np.nan
        return frame.sort_values([*POOL_BY, "timestamp"], ignore_index=True)[POOL_SERIES_COLUMNS]

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
        """Every stored per-host sample in [start, end) (raw: `samples` 1, maxima = values)."""
        end_ts = (end or datetime.now(UTC)).timestamp()
        start_ts = (start or datetime.fromtimestamp(end_ts, UTC) - DEFAULT_RANGE).timestamp()
        sel = matchers(layer=layer, cloud=cloud, pool=pool, host=host, resource=resource)
        by = ("source", "layer", "cloud", "pool", "host", "scope", "resource")
        columns: dict[str, pd.Series] = {}
        for name in ("capacity", "allocatable", "allocated", "used"):
            parts = []
            lo = start_ts
            while lo < end_ts:
                hi = min(end_ts, lo + HOST_CHUNK.total_seconds())
                window = f"{round((hi - lo) * 1000)}ms"
                result = self.query(f"{VALUE_METRICS[name]}{sel}[{window}]", hi - _MS)
                parts.append(_matrix_series(result, by, shift=0.0))
                lo = hi
            non_empty = [p for p in parts if len(p)]
            columns[name] = pd.concat(non_empty) if non_empty else pd.Series(dtype=float)
        frame = pd.DataFrame(columns)
        if frame.empty:
            return _empty(HOST_SERIES_COLUMNS)
        frame = frame.reset_index()
        frame["timestamp"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        frame["allocated_max"] = frame["allocated"]
        frame["used_max"] = frame["used"]
        frame["samples"] = 1
        for name in by:
            frame[name] = frame[name].astype("string")
        return frame.sort_values(["source", "host", "resource", "timestamp"], ignore_index=True)[HOST_SERIES_COLUMNS]


def _matrix_series(result: list[dict[str, Any]], by: tuple[str, ...], shift: float) -> pd.Series:
    """A matrix result as one float Series indexed by (*by, ts), ts = evaluation time - shift, in seconds."""
    stamps, values, labels = [], [], []
    for item in result:
        points = np.asarray(item["values"], dtype=object).reshape(-1, 2)
        stamps.append(points[:, 0].astype(float))
        values.append(points[:, 1].astype(float))  # strings, incl. "NaN" and "+Inf"
        labels.append((tuple(item["metric"].get(name, "") for name in by), len(points)))
    if not stamps:
        return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=[*by, "ts"]))
    counts = [n for _, n in labels]
    columns = {name: np.repeat(np.array([key[i] for key, _ in labels], dtype=object), counts)
               for i, name in enumerate(by)}  # fmt: skip
    columns["ts"] = np.rint(np.concatenate(stamps) - shift).astype(np.int64)
    index = pd.MultiIndex.from_frame(pd.DataFrame(columns))
    series = pd.Series(np.concatenate(values), index=index)
    return series[~series.index.duplicated(keep="last")]


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f}"


def _empty(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    frame["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
    for name in ("source", "layer", "cloud", "pool", "host", "scope", "resource"):
        if name in columns:
            frame[name] = pd.Series(dtype="string")
    return frame

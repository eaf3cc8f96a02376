"""The planner's current frames: `/snapshot` on each collector, pulled by the planner (docs/scale-out.md).

Collector side: `GET /snapshot` is a JSON index (identity, time, every polled source with its kind,
status and interval, and the row count of each frame); `GET /snapshot/<frame>` is that frame over all
the collector's sources as an Arrow IPC stream. Lists and dicts (traits, resources) travel as JSON text
in their column (named in the stream's metadata), so they come back exactly as they left — Arrow would
otherwise turn dicts into structs with every row's keys.

Planner side: `SnapshotPuller` fetches every collector at each interval, splits each frame by its
`source` column and records every source in the planner's estate as if the planner had polled it
(a collector that does not answer marks its sources failed with `reason="unreachable"`; their last
frames stay, marked stale, as after any failed poll).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from collector.contract.schema import OBJECT, SCHEMAS, FrameSet, concat
from collector.estate import Estate
from collector.sources.base import PollResult

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON_COLUMNS_KEY = b"capacityd.json_columns"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_frame(frame: pd.DataFrame) -> bytes:
    """A frame as an Arrow IPC stream; object (list/dict) columns as JSON text."""
    out = frame.reset_index(drop=True).copy()
    json_columns = [c for c in out.columns if out[c].dtype == OBJECT]
    for column in json_columns:
        out[column] = [
            None
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
            else orjson.dumps(_plain(v)).decode()
            for v in out[column].tolist()
        ]
    table = pa.Table.from_pandas(out, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), JSON_COLUMNS_KEY: orjson.dumps(json_columns)}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_frame(name: str, data: bytes) -> pd.DataFrame:
    """The inverse of encode_frame, cast to the contract (SchemaError names a column that does not fit)."""
    table = pa.ipc.open_stream(data).read_all()
    json_columns = orjson.loads((table.schema.metadata or {}).get(JSON_COLUMNS_KEY, b"[]"))
    frame = table.to_pandas()
    for column in json_columns:
        frame[column] = pd.Series(
            [None if v is None else orjson.loads(v) for v in frame[column].tolist()], index=frame.index, dtype=OBJECT
        )
    schema = SCHEMAS.get(name)
    return schema.coerce(frame) if schema is not None else frame


class SnapshotServing:
    """What a collector answers on /snapshot and /snapshot/<frame>, from its estate."""

    def __init__(self, estate: Estate, identity: str):
        self.estate = estate
        self.identity = identity

    def document(self, path: str) -> tuple[int, bytes, str]:
        snapshot = self.estate.snapshot()
        frames = concat(status.frames for status in snapshot.statuses if status.frames)
        if path.rstrip("/") == "/snapshot":
            index = {
                "identity": self.identity,
                "taken_at": snapshot.taken_at.isoformat(),
                "sources": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "up": s.up,
                        "interval_seconds": s.interval.total_seconds(),
                        "last_success": s.last_success.isoformat() if s.last_success else None,
                        "last_error": s.last_error,
                    }
                    for s in snapshot.statuses
                ],
                "frames": {name: len(frame) for name, frame in frames.items() if len(frame)},
            }
            return 200, orjson.dumps(index), "application/json"
        name = path.removeprefix("/snapshot/")
        if name not in frames:
            return 404, f"no frame {name!r}; GET /snapshot lists them\n".encode(), "text/plain; charset=utf-8"
        return 200, encode_frame(frames[name]), ARROW_STREAM


class SnapshotFetchError(Exception):
    pass


def fetch(url: str, timeout: float) -> tuple[dict[str, Any], FrameSet]:
    """One collector's index and frames."""
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/snapshot", timeout=timeout) as answer:
            index = orjson.loads(answer.read())
        frames: FrameSet = {}
        for name, rows in index.get("frames", {}).items():
            if rows:
                with urllib.request.urlopen(f"{base}/snapshot/{quote(name)}", timeout=timeout) as answer:
                    frames[name] = decode_frame(name, answer.read())
    except (OSError, urllib.error.URLError, ValueError, pa.ArrowException) as error:
        raise SnapshotFetchError(f"{base}/snapshot: {type(error).__name__}: {error}") from None
    return index, frames


class SnapshotPuller:
    """The planner's collection: every interval, every collector's snapshot into the planner's estate."""

    def __init__(
        self,
        estate: Estate,
        urls: Callable[[], list[str]],
        interval: float,
        timeout: float,
        on_success: Callable[[str, PollResult, datetime], None] | None = None,
        on_round: Callable[[], None] | None = None,
    ):
        self.estate = estate
        self.urls = urls
        self.interval = interval
        self.timeout = timeout
        self.on_success = on_success
        self.on_round = on_round
        self._sources_of: dict[str, list[str]] = {}  # collector URL -> source names it last served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_round_failures = 0

    def pull_once(self) -> None:
        """Fetch every collector, then record each source from the collector serving it now."""
        answers: dict[str, tuple[dict[str, Any], FrameSet, datetime, float]] = {}
        failures: dict[str, tuple[str, datetime, float]] = {}
        for url in self.urls():
            when, started = datetime.now(UTC), time.monotonic()
            try:
                index, frames = fetch(url, self.timeout)
                answers[url] = (index, frames, when, time.monotonic() - started)
            except SnapshotFetchError as error:
                log.warning("snapshot: %s", error)
                failures[url] = (str(error), when, time.monotonic() - started)
        served: set[str] = set()
        for url, (index, frames, when, duration) in answers.items():
            names = []
            for source in index.get("sources", []):
                name = source["name"]
                names.append(name)
                served.add(name)
                self.estate.add_source(name, source["kind"], timedelta(seconds=source["interval_seconds"]))
                own = {
                    frame_name: frame[frame["source"] == name].reset_index(drop=True)
                    for frame_name, frame in frames.items()
                    if "source" in frame.columns
                }
                if source["up"] or source["last_success"] is not None:
                    self.estate.record_success(name, own, when, duration)
                    if source["up"] and self.on_success is not None:
                        self.on_success(name, PollResult(frames=own), when)
                if not source["up"]:  # the collector's poll failed: same status here (frames kept, stale)
                    self.estate.record_failure(name, "collector_failed", source.get("last_error") or "", when, duration)
            self._sources_of[url] = names
        for url, (message, when, duration) in failures.items():
            for name in self._sources_of.get(url, []):
                if name not in served:
                    self.estate.record_failure(name, "unreachable", message, when, duration)
        known = {name for url, names in self._sources_of.items() for name in names}
        for url in list(self._sources_of):
            if url not in answers and url not in failures:  # no longer a live collector
                for name in self._sources_of.pop(url):
                    if name not in served:
                        self.estate.remove_source(name)
        for status in self.estate.snapshot().statuses:
            if status.name not in known and status.name not in served:
                self.estate.remove_source(status.name)
        self.rounds += 1
        self.last_round_failures = len(failures)
        if self.on_round is not None:
            self.on_round()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.pull_once()
                except Exception:
                    log.exception("snapshot: pull failed")
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="snapshot-pull", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)

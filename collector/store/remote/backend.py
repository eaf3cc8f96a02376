"""`history.backend: remote`: the embedded store plus a TSDB written by remote write and read by PromQL.

Every poll is still appended to the local store (per-VM/pod usage and consumer counts live only there:
they are too many churning series for a TSDB at the target scale), and its capacity rows go to the TSDB
in one remote-write request. Pool and host history are read from the TSDB, which holds every
collector's polls; when a read fails the local store answers (this process's own polls) and the failure
is logged and counted, so a TSDB outage degrades forecasts rather than stopping them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from collector.contract.schema import FrameSet
from collector.store.history import History
from collector.store.remote.client import RemoteError, RemoteWriter
from collector.store.remote.promql import PromReader
from collector.store.remote.samples import SeriesEncoder
from collector.store.remote.stats import REMOTE_HISTORY_STATS, RemoteStats
from collector.store.settings import HistoryConfig

log = logging.getLogger("collector.store.remote")


class RemoteHistory:
    """History's API over a local History (consumers, fallback) and a remote TSDB (pool and host rows)."""

    def __init__(self, local: History, config: HistoryConfig):
        assert config.remote is not None
        self.local = local
        self.config = config
        self.remote_stats = RemoteStats()
        self.writer = RemoteWriter(config.remote, self.remote_stats)
        self.reader = PromReader(config.remote, self.writer.http)
        self.encoder = SeriesEncoder()

    # ------------------------------------------------------------------ writing

    def append(self, source: str, frames: FrameSet, when: datetime) -> bool:
        """Store locally, then send the poll's capacity rows in one remote-write request."""
        stored = self.local.append(source, frames, when)
        series, samples = self.encoder.encode(source, frames.get("capacity"), when)
        self.writer.write(series, samples)
        return stored

    # ------------------------------------------------------------------ reading

    def pool_series(self, **filters: Any) -> pd.DataFrame:
        return self._read("pool_series", filters)

    def host_series(self, **filters: Any) -> pd.DataFrame:
        return self._read("host_series", filters)

    def last_timestamp(self, source: str) -> datetime | None:
        return self.local.last_timestamp(source)

    def consumer_usage(self, **filters: Any) -> pd.DataFrame:
        return self.local.consumer_usage(**filters)

    def consumer_counts(self, **filters: Any) -> pd.DataFrame:
        return self.local.consumer_counts(**filters)

    def _read(self, method: str, filters: dict[str, Any]) -> pd.DataFrame:
        try:
            frame: pd.DataFrame = getattr(self.reader, method)(**filters)
            return frame
        except (RemoteError, OSError, ValueError, KeyError) as error:
            self.remote_stats.add(read_errors=1)
            log.warning("history.remote: %s from the TSDB failed (%s); answering from the local store", method, error)
            result: pd.DataFrame = getattr(self.local, method)(**filters)
            return result

    # ------------------------------------------------------------------ housekeeping

    def stats(self) -> Any:
        return self.local.stats()

    def stats_frames(self) -> FrameSet:
        return {**self.local.stats_frames(), REMOTE_HISTORY_STATS.name: self.remote_stats.frame()}

    def compact(self, now: datetime) -> Any:
        return self.local.compact(now)

    def flush(self) -> None:
        self.local.flush()

    def close(self) -> None:
        self.local.close()

    def __getattr__(self, name: str) -> Any:  # anything else History offers (verify, backfill, ...)
        if name == "local":  # not yet set (a failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self.local, name)

    def __enter__(self) -> RemoteHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(state_dir: Path, config: HistoryConfig) -> History | RemoteHistory:
    """The history the config asks for: the embedded store, or the embedded store plus a remote TSDB."""
    local = History.open(state_dir, config)
    if config.backend != "remote":
        return local
    return RemoteHistory(local, config)


__all__ = ["RemoteHistory", "open_backend"]

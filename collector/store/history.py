"""The history store: every successful poll kept under `state_dir`, thinned as it ages (docs/history.md).

One SQLite file in WAL mode (`<state_dir>/history.sqlite`). Why SQLite and not Parquet files: a poll is
one small transaction (atomic and crash-safe for free, where Parquet would need one file per poll plus
compaction and a manifest), reads are indexed range scans, and readers never block the writer.

`History` is put together from one module per concern, all under collector/store/:

* schema.py     tables and key tuples (the file's layout is described there), shared conversions
* database.py   connections, schema creation and migration, the write transaction and its rollback
* writer.py     append, the hourly consumer accumulator, flush, backfill
* retention.py  compact(): rollups and expiry
* reader.py     pool_series, host_series, consumer_usage, consumer_counts
* health.py     write failures: classified, counted, logged once per episode; `HistoryStats`
* verify.py     `verify(path)`: integrity and ownership of every stored row
"""

from __future__ import annotations

from pathlib import Path

from collector.contract.schema import FrameSet
from collector.store.health import HISTORY_STATS, HistoryStats
from collector.store.reader import Reader
from collector.store.retention import Retention
from collector.store.schema import (
    CONSUMER_COUNT_COLUMNS,
    CONSUMER_FLUSH_SECONDS,
    CONSUMER_HOUR,
    CONSUMER_KEY,
    CONSUMER_USAGE_COLUMNS,
    COUNT_KEY,
    FILE_NAME,
    HOST_KEY,
    HOST_SERIES_COLUMNS,
    POOL_KEY,
    POOL_SERIES_COLUMNS,
    RAW_POOL_STEP,
    ROLLUP_GRACE_SECONDS,
    SCHEMA_VERSION,
    HistoryError,
)
from collector.store.settings import HistoryConfig
from collector.store.verify import verify
from collector.store.writer import Writer

__all__ = [
    "CONSUMER_COUNT_COLUMNS", "CONSUMER_FLUSH_SECONDS", "CONSUMER_HOUR", "CONSUMER_KEY", "CONSUMER_USAGE_COLUMNS",
    "COUNT_KEY", "FILE_NAME", "HOST_KEY", "HOST_SERIES_COLUMNS", "POOL_KEY", "POOL_SERIES_COLUMNS",
    "RAW_POOL_STEP", "ROLLUP_GRACE_SECONDS", "SCHEMA_VERSION", "History", "HistoryError", "HistoryStats", "verify",
]  # fmt: skip


class History(Writer, Retention, Reader):
    """Pool, host and consumer history of every source, in one SQLite file (docs/history.md)."""

    @classmethod
    def open(cls, state_dir: Path, config: HistoryConfig) -> History:
        """Open (creating if needed) `<state_dir>/history.sqlite`."""
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HistoryError(f"{state_dir}: cannot create state directory: {error.strerror}") from None
        return cls(state_dir / FILE_NAME, config)

    def stats(self) -> HistoryStats:
        """Write errors, dropped and rejected samples since open (for /metrics)."""
        return self._health.stats()

    def stats_frames(self) -> FrameSet:
        """`stats()` as the `history_stats` frame, which the daemon adds to each snapshot."""
        return {HISTORY_STATS.name: self.stats().frame()}

    def close(self) -> None:
        """Flush buffered consumer usage, close every connection. Idempotent; never fails for a full disk
        (what cannot be flushed is dropped and counted like any failed write)."""
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                self._close_connections()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""History opened read-only, by a process that is not the daemon's writer (a forecast task on Dask, the
analysis worker).

A read-only SQLite connection takes no write lock and changes no schema: WAL readers never block the
daemon's writer. With `history.backend: remote`, pool and host series are read from the TSDB with the
local file as the fallback, exactly as the daemon reads them (collector.store.remote.backend).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from collector.store.reader import Reader
from collector.store.settings import HistoryConfig


class ReadOnlyHistory(Reader):
    """collector.store Reader on read-only connections: no writer, no schema change, no lock."""

    def __init__(self, path: Path, config: HistoryConfig):  # Database.__init__ would open a writer
        self.path = Path(path)
        self.config = config
        self.step = max(60, int(config.downsample_step.total_seconds()))
        self._init_reads()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: history file not found on this host")
        connection = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        connection.execute("PRAGMA busy_timeout = 30000")
        return connection

    def close(self) -> None:
        self._closed = True
        self._close_readers()

    def __enter__(self) -> ReadOnlyHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_read_only(path: Path, config: HistoryConfig) -> Any:
    """The read side of the history `config` describes: the SQLite file read-only, plus the TSDB when remote."""
    local = ReadOnlyHistory(path, config)
    if config.backend != "remote":
        return local
    from collector.store.remote.backend import RemoteHistory

    return RemoteHistory(local, config)  # type: ignore[arg-type]  # reads only: never appends


__all__ = ["ReadOnlyHistory", "open_read_only"]
